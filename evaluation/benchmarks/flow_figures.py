"""Pictures of every task on the embedded flow-matching model, for the docs:

    python -m syncsde.evaluation.benchmarks.flow_figures [--steps 50] [--output_dir outputs/flow_figures]

Runs each config of ``configs/tiny/flow/`` (but the reference set) through ``syncsde predict`` as shipped (its
records, prompts and seeds; ``--steps`` overrides the step count), saves the main image of its first sample (the
mesh: its views), upscaled with nearest neighbours, as ``notebooks/figures/tiny_flow_<task>.png``, then the 2-D
canvas's first prompt as eight single native-size images of the model alone (diffusers' own SD3 pipeline, seeds 0–7,
CFG 3: what each window's model draws without synchronization, ``tiny_flow_single.png``), and writes the docs block
``flow_figures``.
Resumable: a task whose folder holds its samples is not run again.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml
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


def single_images(prompt: str, steps: int, n: int = 8) -> Image.Image:
    """``n`` native-size images of ``prompt`` by diffusers' SD3 pipeline on tiny-flow (one generator, seed 0), in a
    row."""
    import numpy as np
    import torch
    from diffusers import StableDiffusion3Pipeline

    from syncsde.backbones.diffusers import resolve_model

    pipe = StableDiffusion3Pipeline.from_pretrained(resolve_model("syncsde:tiny-flow"), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(
        [prompt] * n, num_inference_steps=steps, guidance_scale=3.0, height=64, width=64, output_type="np",
        generator=torch.Generator().manual_seed(0), max_sequence_length=pipe.tokenizer_3.model_max_length,
    ).images  # fmt: skip
    return Image.fromarray((np.concatenate(list(images), axis=1) * 255).round().astype(np.uint8))


def save_upscaled(image: Image.Image, name: str) -> str:
    """``image`` enlarged by a whole factor (nearest neighbours) to about 192 px high, as notebooks/figures/NAME."""
    scale = max(1, 192 // image.height)
    path = FIGURES / name
    atomic_write(
        path, lambda p: image.resize((image.width * scale, image.height * scale), Image.NEAREST).save(p, format="PNG")
    )
    return str(path.relative_to(ROOT))


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
        pictures[task] = save_upscaled(image, f"tiny_flow_{task}.png")
    prompt = yaml.safe_load((CONFIGS / "canvas.yaml").read_text())["data"]["init_args"]["prompts"][0]
    single = save_upscaled(single_images(prompt, args.steps), "tiny_flow_single.png")
    lines = [
        "Made by `python -m syncsde.evaluation.benchmarks.flow_figures` (`syncsde:tiny-flow`, each config of "
        f"`configs/tiny/flow/` as shipped, {args.steps} steps, its first sample).",
        "",
    ]
    caption = f'the 2-D canvas\'s prompt "{prompt}" as eight single 64-px images of the model alone (seeds 0–7)'
    for text, path in [*((CAPTIONS[task], path) for task, path in pictures.items()), (caption, single)]:
        lines += [f"![{text}]({path})", "", f"{text[0].upper()}{text[1:]}.", ""]  # str.capitalize lowers the rest
    write_result("flow_figures", "\n".join(lines))
    return pictures


if __name__ == "__main__":
    main()
