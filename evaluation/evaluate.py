"""``syncsde evaluate DIR``: recompute the metrics of an existing output folder, over every sample of it.

The samples are read back from their files (:func:`syncsde.writer.read_sample`) and fed to the same
``syncsde.evaluation.Metrics`` callback a ``predict`` run uses, with the options of the callback in the folder's
``config.yaml`` (defaults if it has none), through a Lightning ``predict`` over the folder. It writes
``metrics.json`` and appends a row to ``metrics.csv`` in the folder, as the run itself does. The writer stores
exactly the 8-bit images the run's metrics judged, so a folder's metrics come out the same either way.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml
from lightning import LightningDataModule, LightningModule, Trainer
from torch.utils.data import DataLoader

from syncsde.console import THREADS_HELP, VERBOSE_HELP, quiet
from syncsde.errors import InputError
from syncsde.strategies import Strategy, description_keys
from syncsde.writer import read_sample, sidecars

# the metrics callback's class path in a folder's config.yaml (also as written before it moved into syncsde.evaluation)
METRICS_CLASSES = ("syncsde.evaluation.Metrics", "syncsde.evaluation.metrics.Metrics", "evaluation.Metrics",
                   "evaluation.metrics.Metrics")


class RecordedStrategy(Strategy):
    """The method a folder's samples were made with, as their sidecars record it."""

    def __init__(self, description: dict):
        self.description = description

    def describe(self) -> dict:
        return dict(self.description)


class FolderSamples(LightningModule):
    """A ``predict`` "model" that returns the saved samples of its batch of sidecars."""

    def __init__(self, folder: Path, first: dict):
        super().__init__()
        self.folder = folder
        self.task_name = first.get("task")
        keys = description_keys(first.get("method", ""))
        self.strategy = RecordedStrategy({k: first[k] for k in keys if k in first})

    def predict_step(self, batch, batch_idx=0):
        return [read_sample(self.folder, meta) for meta in batch]


class FolderData(LightningDataModule):
    """Every sample of a folder: all of them are "pending" (read in this run)."""

    def __init__(self, samples: list[dict], batch_size: int = 8):
        super().__init__()
        self.samples, self.batch_size = samples, batch_size

    def pending(self) -> list[dict]:
        return self.samples

    def predict_dataloader(self):
        return DataLoader(self.samples, batch_size=self.batch_size, shuffle=False, collate_fn=list)


def metrics_options(folder: Path) -> dict:
    """The init_args of the ``syncsde.evaluation.Metrics`` callback in the folder's config.yaml ({} when there is none)."""
    config = folder / "config.yaml"
    if not config.is_file():
        return {}
    callbacks = (yaml.safe_load(config.read_text()) or {}).get("trainer", {}).get("callbacks") or []
    for c in callbacks if isinstance(callbacks, list) else [callbacks]:
        if isinstance(c, dict) and c.get("class_path") in METRICS_CLASSES:
            return dict(c.get("init_args") or {})
    return {}


def evaluate_folder(folder: Path, reference: str | None = None, threads: int | None = None, metrics=None) -> dict:
    """Write ``metrics.json`` for ``folder`` over all its samples; returns its record. ``metrics``: the callback to
    use (default: one with the options of the folder's config.yaml)."""
    import torch

    from syncsde.evaluation.metrics import Metrics

    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder; give a `syncsde predict` output folder")
    samples = [json.loads(p.read_text()) for p in sidecars(folder)]
    if not samples:
        raise InputError(f"{folder} holds no samples (no NNNNN.json sidecars); give a `syncsde predict` output folder")
    if threads:
        torch.set_num_threads(threads)
    if metrics is None:
        options = {**metrics_options(folder), "output_dir": str(folder)}
        if reference is not None:
            options["reference"] = reference
        metrics = Metrics(**options)
    metrics.output_dir = str(folder)
    trainer = Trainer(
        accelerator="auto",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[metrics],
    )
    trainer.predict(FolderSamples(folder, samples[0]), datamodule=FolderData(samples), return_predictions=False)
    record = json.loads((folder / "metrics.json").read_text())
    print(json.dumps(record["metrics"], indent=2))
    return record


def main(argv: list[str] | None = None) -> None:
    """``syncsde evaluate DIR [--reference R] [--threads N]``."""
    p = argparse.ArgumentParser(
        prog="syncsde evaluate",
        description="Recompute metrics.json (and a metrics.csv row) for an existing output folder, over every sample "
        "of its manifest, with the options of the syncsde.evaluation.Metrics callback in the folder's config.yaml.",
    )
    p.add_argument("folder", help="a `syncsde predict` output folder")
    p.add_argument("--reference", default=None, help="override the callback's reference folder (FID/KID)")
    p.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    p.add_argument("--verbose", default="false", help=VERBOSE_HELP)
    args = p.parse_args(argv)
    quiet(args.verbose.lower() not in ("true", "1", "yes"))  # again: importing Lightning reset its loggers' level
    evaluate_folder(Path(args.folder), reference=args.reference, threads=args.threads)
