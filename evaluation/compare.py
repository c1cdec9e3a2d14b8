"""Compare SyncSDE with every applicable baseline on the same prompts and seeds:

    syncsde compare --config configs/tiny/wide.yaml [--methods syncsde,multidiffusion,canonical] [--output_dir DIR]
                    [any other `syncsde predict` override, e.g. --trainer.devices 2]

Each method runs `syncsde predict` with the config plus ``--method NAME`` (:mod:`syncsde.registry`; by default the
config's own SyncSDE and the task's baselines, :func:`methods`; any method that applies can be named) into
``DIR/<method>``; finished samples are skipped on a re-run. Then ``DIR/grid.png`` shows one row per
sample and one column per method (upscaled, wide images such as motion filmstrips wrapped into rows of at most
2048 px, the mesh's views instead of its UV atlas, method names in their own row), ``DIR/comparison.json`` lists every
method's folder, sidecar averages and metrics (``metrics.json``, recomputed over every finished folder when the
config has the ``syncsde.evaluation.Metrics`` callback), and the table is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import sys
from pathlib import Path

import yaml
from PIL import Image, ImageDraw, ImageFont

from syncsde import registry
from syncsde.errors import InputError
from syncsde.io import save_json, save_png

# the comparison protocol beyond the method itself: MultiDiffusion's panoramas at its paper stride (1/8 window)
PROTOCOL = {("wide_image", "multidiffusion"): ["--model.stride", "{window_8}"]}


def methods(task: str) -> list[str]:
    """The methods a comparison runs on ``task`` by default: the config's own SyncSDE (``syncsde``), then every
    registered method that is a baseline of the task (``Method.baseline_for``) and applies to it."""
    cls = registry.get("task", task)
    found = [
        name
        for name in registry.names("method")
        if {task, "*"} & set(registry.get("method", name).baseline_for) and registry.get("method", name).applies_to(cls)
    ]
    return ["syncsde", *found]


def task_of(config: dict) -> str:
    """The task name of the config's model class (its ``task_name``), if it has trajectories to synchronize."""
    path = config.get("model", {}).get("class_path", "")
    module, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        cls = registry.find("task", path)
    task = getattr(cls, "task_name", None)
    if cls is None or not getattr(cls, "provides", None):
        comparable = [n for n, c in registry.task_classes().items() if c.provides]
        raise InputError(f"no comparison is defined for model {path!r}; tasks with baselines: {', '.join(comparable)}")
    return task


def overrides(task: str, method: str, config: dict) -> list[str]:
    """The `syncsde predict` options that switch the config to ``method`` ("syncsde": the config as it is)."""
    if method == "syncsde":
        return []
    entry = registry.find("method", method)
    if entry is None or not entry.applies_to(registry.get("task", task)):
        applicable = ["syncsde"] + [
            n for n in registry.names("method") if registry.get("method", n).applies_to(registry.get("task", task))
        ]
        raise InputError(f"method '{method}' does not apply to {task}; choose from {', '.join(applicable)}")
    init = config["model"]["init_args"]
    # MultiDiffusion's panorama windows move by 1/8 of the window (8 latent columns of 64): in pixels, for this backbone
    window_8 = str(init.get("height", 512) // 8)
    return ["--method", method, *(a.replace("{window_8}", window_8) for a in PROTOCOL.get((task, method), []))]


# the file of each task's samples that the grid shows (default: the main image): the mesh's decoded views, which a
# person can compare, rather than its UV atlas
PREVIEW = {"mesh": "views"}


def wrap(image: Image.Image, max_width: int) -> Image.Image:
    """``image`` cut into pieces at most ``max_width`` wide, stacked top to bottom (a filmstrip in rows); the cuts
    fall at multiples of the image's height where that fits, so square frames and views stay whole."""
    if image.width <= max_width:
        return image
    piece = max_width // image.height * image.height or max_width
    n = -(-image.width // piece)
    out = Image.new("RGB", (piece, n * image.height), "white")
    for i in range(n):
        out.paste(image.crop((i * piece, 0, min((i + 1) * piece, image.width), image.height)), (0, i * image.height))
    return out


def grid(
    folders: dict[str, Path], min_height: int = 192, rows: int | None = None, key: str = "image", max_width: int = 2048
) -> Image.Image:
    """One row per sample (``rows`` samples common to all folders, evenly spaced by id, default all), one column per
    method (each sample's file ``key``, else its main image), upscaled by an integer factor (nearest neighbour, so
    pixels stay visible) until a row is at least ``min_height`` px tall, and wrapped (:func:`wrap`) so that a column
    is at most ``max_width`` px wide; method names in a row of their own above the images, each column at least as
    wide as its name."""
    manifests = {m: json.loads((f / "manifest.json").read_text())["samples"] for m, f in folders.items()}
    ids = sorted(set.intersection(*({s["sample_id"] for s in v} for v in manifests.values())))
    ids = ids[:: max(1, len(ids) // rows)][:rows] if rows else ids
    images = {
        m: {
            s["sample_id"]: Image.open(folders[m] / s["files"].get(key, s["files"]["image"])).convert("RGB")
            for s in v
            if s["sample_id"] in ids
        }
        for m, v in manifests.items()
    }
    scale = max(1, -(-min_height // max(im.height for v in images.values() for im in v.values())))
    images = {m: {i: wrap(im, max(1, max_width // scale)) for i, im in v.items()} for m, v in images.items()}
    w = max(im.width for v in images.values() for im in v.values())
    h = max(im.height for v in images.values() for im in v.values())
    font = ImageFont.load_default(size=16)
    text_w = {m: int(font.getlength(m)) + 12 for m in folders}
    col_w = max(w * scale, *text_w.values())
    label_h = 26
    canvas = Image.new("RGB", (col_w * len(folders), label_h + h * scale * len(ids)), "white")
    draw = ImageDraw.Draw(canvas)
    for c, m in enumerate(folders):
        draw.text((c * col_w + (col_w - text_w[m]) // 2 + 6, 4), m, fill="black", font=font)
        for r, i in enumerate(ids):
            im = images[m][i]
            im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
            canvas.paste(im, (c * col_w + (col_w - im.width) // 2, label_h + r * h * scale))
    return canvas


def recompute_metrics(folders) -> None:
    """Each folder's metrics.json recomputed over its finished samples (``syncsde evaluate``), where its config has the
    metrics callback: a method's metrics must not depend on what existed when it ran (a reference folder that is
    another method's, samples of an earlier run)."""
    from syncsde.evaluation.evaluate import METRICS_CLASSES, evaluate_folder

    for folder in folders:
        config = yaml.safe_load((folder / "config.yaml").read_text()) or {}
        callbacks = config.get("trainer", {}).get("callbacks") or []
        if any(isinstance(c, dict) and c.get("class_path") in METRICS_CLASSES for c in callbacks):
            with contextlib.redirect_stdout(io.StringIO()):  # evaluate prints the metrics; compare prints the table
                evaluate_folder(folder)


def run_in_process(cmd: list[str], label: str) -> None:
    """``syncsde CMD`` in this process, announced on stderr as ``LABEL: syncsde CMD``; a run with nothing left to do
    (every sample already in its folder) is not an error."""
    from syncsde.cli import main as syncsde_main

    print(f"{label}: syncsde {' '.join(cmd)}", file=sys.stderr)
    argv, sys.argv = sys.argv, sys.argv[:1]  # the run's arguments are cmd alone
    try:
        syncsde_main(cmd)
    except SystemExit as e:  # predict exits 0 when every sample already exists
        if e.code:
            raise
    finally:
        sys.argv = argv


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--methods", default=None, help="comma-separated; default: every method applicable to the task")
    ap.add_argument("--output_dir", default=None, help="default outputs/compare/<task>")
    args, rest = ap.parse_known_args(argv)
    config = yaml.safe_load(Path(args.config).read_text())
    task = task_of(config)
    names = args.methods.split(",") if args.methods else methods(task)
    out = Path(args.output_dir or f"outputs/compare/{task}")
    folders = {}
    for method in names:
        folders[method] = out / method
        cmd = [
            "predict",
            "--config",
            args.config,
            *overrides(task, method, config),
            "--output_dir",
            str(folders[method]),
            *rest,
        ]
        run_in_process(cmd, f"syncsde compare: {method}")
    recompute_metrics(folders.values())
    summary = {"task": task, "config": args.config, "methods": {}}
    for method, folder in folders.items():
        samples = json.loads((folder / "manifest.json").read_text())["samples"]
        summary["methods"][method] = {
            "folder": str(folder),
            "num_samples": len(samples),
            "mean_seconds": sum(s["seconds"] for s in samples) / max(len(samples), 1),
        }
        metrics = folder / "metrics.json"
        if metrics.exists():
            summary["methods"][method]["metrics"] = json.loads(metrics.read_text())
    save_png(out / "grid.png", grid(folders, key=PREVIEW.get(task, "image")))
    save_json(out / "comparison.json", summary)
    from syncsde.evaluation.table import table, to_markdown

    print(to_markdown(table(folders.values())))
    print(f"syncsde compare: wrote {out / 'grid.png'} and {out / 'comparison.json'}", file=sys.stderr)
    return summary


if __name__ == "__main__":
    main()
