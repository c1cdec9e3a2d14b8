"""Compare SyncSDE with every applicable baseline on the same prompts and seeds:

    python -m syncsde.evaluation.compare --config configs/tiny/wide.yaml [--methods syncsde,multidiffusion] [--output_dir DIR]
                              [any other `syncsde predict` override, e.g. --trainer.devices 2]

Each method runs `syncsde predict` with the config plus that method's switch (``METHODS`` below, also listed in
the README) into ``DIR/<method>``; finished samples are skipped on a re-run. Then ``DIR/grid.png`` shows one row per
sample and one column per method (upscaled, method names in their own row), ``DIR/comparison.json`` lists every
method's folder, sidecar averages and metrics (from ``metrics.json`` when the config has the ``syncsde.evaluation.Metrics``
callback), and the table is printed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

import yaml
from PIL import Image, ImageDraw, ImageFont

from syncsde.errors import InputError
from syncsde.io import save_json, save_png

STRATEGY = "--model.init_args.strategy"

# task name -> method -> `syncsde predict` overrides that switch the config (a SyncSDE config) to that method
METHODS: dict[str, dict[str, list[str]]] = {
    "wide_image": {
        "syncsde": [],
        "independent": [STRATEGY, "syncsde.strategies.Independent"],
        "synctweedies": [STRATEGY, "syncsde.strategies.SyncTweedies"],
        "multidiffusion": [STRATEGY, "syncsde.strategies.MultiDiffusion", "--model.init_args.stride", "{window_8}"],
    },
    "mask_t2i": {
        "syncsde": [],
        "independent": [STRATEGY, "syncsde.strategies.Independent"],
        "synctweedies": [STRATEGY, "syncsde.strategies.SyncTweedies"],
        "multidiffusion": [
            STRATEGY,
            "syncsde.strategies.MultiDiffusion",
            f"{STRATEGY}.init_args.bootstrap_steps",
            "20",
        ],
    },
    "ambiguous": {
        "syncsde": [],
        "independent": [STRATEGY, "syncsde.strategies.Independent"],
        "synctweedies": [STRATEGY, "syncsde.strategies.SyncTweedies", "--model.init_args.init_from_canonical", "true"],
        "visual_anagrams": [
            STRATEGY,
            "syncsde.strategies.VisualAnagrams",
            "--model.init_args.init_from_canonical",
            "true",
            "--model.init_args.sampler",
            "ddpm",
        ],
    },
    "edit": {
        "syncsde": [],
        "independent": [STRATEGY, "syncsde.strategies.Independent"],
    },
    "mesh": {
        "syncsde": [],
        "independent": [STRATEGY, "syncsde.strategies.Independent"],
        "syncmvd": [
            STRATEGY,
            "syncsde.strategies.SyncTweedies",
            f"{STRATEGY}.init_args.case",
            "5",
            f"{STRATEGY}.init_args.sync_t_min",
            "200",
        ],
    },
    "motion": {
        "syncsde": [],
        "independent": [STRATEGY, "syncsde.strategies.Independent"],
        "synctweedies": [STRATEGY, "syncsde.strategies.SyncTweedies"],
        "averaging": [STRATEGY, "syncsde.strategies.MultiDiffusion"],
    },
}


def task_of(config: dict) -> str:
    """The task name of the config's model class (its ``task_name``)."""
    path = config.get("model", {}).get("class_path", "")
    module, _, name = path.rpartition(".")
    try:
        task = getattr(getattr(importlib.import_module(module), name), "task_name", None)
    except (ImportError, AttributeError, ValueError):
        task = None
    if task not in METHODS:
        raise InputError(f"no comparison is defined for model {path!r}; tasks with baselines: {', '.join(METHODS)}")
    return task


def overrides(task: str, method: str, config: dict) -> list[str]:
    if method not in METHODS[task]:
        raise InputError(f"method '{method}' does not apply to {task}; choose from {', '.join(METHODS[task])}")
    init = config["model"]["init_args"]
    # MultiDiffusion's panorama windows move by 1/8 of the window (8 latent columns of 64): in pixels, for this backbone
    window_8 = str(init.get("height", 512) // 8)
    return [a.replace("{window_8}", window_8) for a in METHODS[task][method]]


def grid(folders: dict[str, Path], min_height: int = 192, rows: int | None = None) -> Image.Image:
    """One row per sample (``rows`` samples common to all folders, evenly spaced by id, default all), one column per
    method (the main image of each), upscaled by an integer factor (nearest neighbour, so pixels stay visible) until
    a row is at least ``min_height`` px tall; method names in a row of their own above the images, each column at
    least as wide as its name."""
    manifests = {m: json.loads((f / "manifest.json").read_text())["samples"] for m, f in folders.items()}
    ids = sorted(set.intersection(*({s["sample_id"] for s in v} for v in manifests.values())))
    ids = ids[:: max(1, len(ids) // rows)][:rows] if rows else ids
    images = {
        m: {s["sample_id"]: Image.open(folders[m] / s["files"]["image"]).convert("RGB") for s in v}
        for m, v in manifests.items()
    }
    w = max(im.width for v in images.values() for im in v.values())
    h = max(im.height for v in images.values() for im in v.values())
    scale = max(1, -(-min_height // h))
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
    methods = args.methods.split(",") if args.methods else list(METHODS[task])
    out = Path(args.output_dir or f"outputs/compare/{task}")
    folders = {}
    for method in methods:
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
    save_png(out / "grid.png", grid(folders))
    save_json(out / "comparison.json", summary)
    from syncsde.evaluation.table import table, to_markdown

    print(to_markdown(table(folders.values())))
    print(f"syncsde compare: wrote {out / 'grid.png'} and {out / 'comparison.json'}", file=sys.stderr)
    return summary


if __name__ == "__main__":
    main()
