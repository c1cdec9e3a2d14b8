"""Training-step time of the embedded models' recipes, with the recipes' channels-last memory format against
PyTorch's default (contiguous NCHW), measured side by side in one run.

    python -m syncsde.evaluation.benchmarks.recipes [--steps 12] [--repeats 2] [--threads 2] [--no-readme]

Each recipe is built from its YAML in ``configs/tiny`` (model and data as configured; nothing is exported, the LDM
step reads the shipped pipeline's autoencoder) and trained for ``--steps`` batches in each memory format, the two
alternating ``--repeats`` times. A batch's time is from the start of the batch (data included) to the end of its
optimizer steps; the first two batches of each run are left out (warm-up). The figures are medians, and the ratio is
default / channels-last: how many times faster the recipe's format is. The table goes to
``notebooks/results/recipes.md`` and the README block ``recipes``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from contextlib import nullcontext
from unittest import mock

import torch
import yaml
from lightning import Callback, Trainer

from syncsde.evaluation.benchmarks.readme import ROOT, write_result
from syncsde.lightning_cli import load_class
from syncsde.tiny import train

RECIPES = ("train_vae", "train_ldm", "train_decoder")


class BatchTimer(Callback):
    def __init__(self):
        self.times = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.times.append(time.perf_counter() - self._start)


def build(spec: dict, **overrides):
    return load_class(spec["class_path"])(**{**spec.get("init_args", {}), **overrides})


def batch_times(recipe: str, steps: int, channels_last: bool) -> list[float]:
    config = yaml.safe_load((ROOT / "configs" / "tiny" / f"{recipe}.yaml").read_text())
    overrides = {"export_dir": None}
    if recipe == "train_ldm":
        overrides["vae"] = str(train.EMBEDDED / "tiny-ldm" / "vae")
    model, data = build(config["model"], **overrides), build(config["data"])
    timer = BatchTimer()
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps * (2 if recipe == "train_decoder" else 1),  # the decoder recipe counts 2 optimizers per batch
        callbacks=[timer],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    default_format = mock.patch.object(train._Recipe, "on_fit_start", lambda self: None)
    with nullcontext() if channels_last else default_format:
        trainer.fit(model, data)
    return timer.times[2:]


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12, help="batches per run (the first two are not counted)")
    ap.add_argument("--repeats", type=int, default=2, help="runs per memory format, alternating")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (the recipes' training times used 1 or 2)")
    ap.add_argument("--recipes", nargs="+", choices=RECIPES, default=list(RECIPES))
    ap.add_argument("--no-readme", action="store_true", help="print only")
    args = ap.parse_args(argv)
    if args.steps < 3:
        ap.error("--steps must be at least 3: the first two batches of each run are warm-up")
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    rows = []
    for recipe in args.recipes:
        times = {False: [], True: []}
        for _ in range(args.repeats):
            for channels_last in (False, True):
                times[channels_last] += batch_times(recipe, args.steps, channels_last)
        default, last = statistics.median(times[False]), statistics.median(times[True])
        rows.append({"recipe": recipe, "default_s": default, "channels_last_s": last, "speed-up": default / last})
    table = "\n".join(
        [
            f"Seconds per training batch (`python -m syncsde.evaluation.benchmarks.recipes`): medians of {args.repeats} "
            f"alternating runs × {args.steps - 2} batches per memory format, {args.threads} torch thread(s), CPU, "
            "on a shared machine.",
            "",
            "| recipe | default (NCHW) | channels-last (the recipes') | speed-up |",
            "|---|---|---|---|",
            *(
                f"| `configs/tiny/{r['recipe']}.yaml` | {r['default_s']:.3f} | {r['channels_last_s']:.3f} | "
                f"{r['speed-up']:.2f}× |"
                for r in rows
            ),
        ]
    )
    print(table)
    if not args.no_readme:
        write_result("recipes", table, {"rows": rows, "args": vars(args)})
    return rows


if __name__ == "__main__":
    main()
