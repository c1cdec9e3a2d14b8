"""Pictures of every task on the embedded flow-matching model, for the docs:

    python -m syncsde.evaluation.benchmarks.flow_figures [--steps 50] [--output_dir outputs/flow_figures]

Runs each config of ``configs/tiny/flow/`` (but the reference set) through ``syncsde predict`` as shipped (its
records, prompts and seeds; ``--steps`` overrides the step count), saves the main image of its first sample (the
mesh: its views), upscaled with nearest neighbours, as ``notebooks/figures/tiny_flow_<task>.png``, and writes the docs
block ``flow_figures``.
Resumable: a task whose folder holds its samples is not run again.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image

from syncsde.evaluation.benchmarks.readme import ROOT, write_result
from syncsde.evaluation.compare import run_in_process
from syncsde.io import atomic_write

CONFIGS = ROOT / "configs" / "tiny" / "flow"
FIGURES = ROOT / "notebooks" / "figures"
# what each picture shows, in the order of the docs
CAPTIONS = {
    "wide": "wide image, 13 windows (SyncSDE `canonical`, 1/λ = 20)",
    "canvas": "2-D canvas 128×128 from 3×3 windows (SyncSDE `global`)",
    "sphere": "360×180 panorama from 20 views, equirectangular (SyncSDE `global`)",
    "mask_t2i": "mask-based text-to-image (SyncSDE `canonical`)",
    "regions": "two region prompts (SyncSDE)",
    "ambiguous": "ambiguous image: both readings side by side (flip, on latents)",
    "edit": "editing: the edit of the house picture (house → tree)",
    "mesh": "mesh texturing: the 10 views of the textured ball (SyncSDE, no depth control)",
}
PICTURE = {"mesh": "views"}  # the file shown where the main image is not the picture (the mesh's: its UV texture)


def first_image(folder: Path, name: str = "image") -> Path:
    manifest = json.loads((folder / "manifest.json").read_text())
    first = min(manifest["samples"], key=lambda s: s["sample_id"])
    return folder / first["files"][name]


def main(argv=None) -> dict[str, str]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--output_dir", default="outputs/flow_figures")
    args = ap.parse_args(argv)
    pictures = {}
    for task in CAPTIONS:
        folder = Path(args.output_dir) / task
        run_in_process(
            ["predict", "--config", str(CONFIGS / f"{task}.yaml"), "--model.init_args.num_inference_steps"]
            + [str(args.steps), "--trainer.callbacks=[]", "--trainer.enable_progress_bar=false"]
            + ["--output_dir", str(folder)],
            "flow_figures",
        )
        image = Image.open(first_image(folder, PICTURE.get(task, "image"))).convert("RGB")
        scale = max(1, 192 // image.height)
        path = FIGURES / f"tiny_flow_{task}.png"
        atomic_write(
            path,
            lambda p, im=image, s=scale: im.resize((im.width * s, im.height * s), Image.NEAREST).save(p, format="PNG"),
        )
        pictures[task] = str(path.relative_to(ROOT))
    lines = [
        "Made by `python -m syncsde.evaluation.benchmarks.flow_figures` (`syncsde:tiny-flow`, each config of "
        f"`configs/tiny/flow/` as shipped, {args.steps} steps, its first sample).",
        "",
    ]
    for task, path in pictures.items():
        lines += [f"![{CAPTIONS[task]}]({path})", "", f"{CAPTIONS[task].capitalize()}.", ""]
    write_result("flow_figures", "\n".join(lines))
    return pictures


if __name__ == "__main__":
    main()
