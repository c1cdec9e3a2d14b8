"""README pictures of the big-canvas tasks on the embedded model: a 2-D canvas, region prompts, a 360×180 panorama.

    python -m syncsde.evaluation.benchmarks.canvas_figures [--steps 30]

Runs the embedded configs' tasks (``configs/tiny/canvas.yaml``, ``regions.yaml``, ``sphere.yaml``) on their first
prompt with seed 0, saves the pictures (upscaled with nearest neighbours) under ``notebooks/figures/`` and writes the
README block ``canvas_figures``.
"""

from __future__ import annotations

import argparse
import warnings

import torch
import torch.nn.functional as F

from syncsde.backbones import StableDiffusion
from syncsde.evaluation.benchmarks.readme import ROOT, write_result
from syncsde.io import atomic_write, to_pil
from syncsde.strategies import Independent, SyncSDE
from syncsde.tasks import RegionTextToImage, SpherePanorama, WideImage

FIGURES = ROOT / "notebooks" / "figures"
GLOBAL = SyncSDE(20.0, preset="global")  # the embedded canvas and sphere configs' strategy (SYNCSDE.md §4.2)


def save(name: str, image: torch.Tensor, scale: int) -> str:
    big = F.interpolate(image[None].clamp(0, 1), scale_factor=scale, mode="nearest")[0]
    path = FIGURES / f"{name}.png"
    atomic_write(path, lambda p: to_pil(big).save(p, format="PNG"))
    return str(path.relative_to(ROOT))


def side_by_side(images: list[torch.Tensor], gap: int = 2) -> torch.Tensor:
    pad = torch.ones(3, images[0].shape[1], gap)
    return torch.cat([t for img in images for t in (img, pad)][:-1], -1)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", message="SyncSDE coefficient")
    backbone = StableDiffusion("syncsde:tiny-ldm")
    common = dict(num_inference_steps=args.steps, guidance_scale=3.0, progress=False)
    prompt = "a sunny day over grass with mountains"
    n = backbone.sample_size * backbone.scale_factor  # native window size in pixels

    geometry = dict(height=2 * n, width=3 * n, stride=n // 2, vertical_stride=n // 2)
    canvases = [
        WideImage(backbone, strategy, **geometry, **common).generate([prompt])[0]
        for strategy in (SyncSDE(5.0), SyncSDE(5.0, preset="canonical"), GLOBAL, Independent())
    ]
    canvas = save("canvas_2d", side_by_side([o.image for o in canvases]), 2)

    masks = ROOT / "configs" / "assets"
    record = {
        "prompt": "a sunny day over grass, a red boat and a yellow house",
        "background": "a sunny day over grass with mountains",
        "regions": [
            {"prompt": "a sunny day over grass, a red boat in the middle", "mask": str(masks / "mask_center.png")},
            {"prompt": "a sunny day over grass, a yellow house on the right", "mask": str(masks / "mask_right.png")},
        ],
    }
    regions = RegionTextToImage(backbone, SyncSDE(5.0), height=2 * n, width=2 * n, **common).generate([record])[0]
    region = save("regions", side_by_side([regions.extras["masks"], regions.image]), 2)

    sphere = SpherePanorama(backbone, GLOBAL, height=4 * n, prompt_prefix="", viewer_size=2 * n, **common)
    out = sphere.generate([prompt])[0]
    panorama, viewer = save("sphere_equirect", out.image, 2), save("sphere_viewer", out.extras["viewer"], 2)

    markdown = "\n".join(
        [
            f"Made by `python -m syncsde.evaluation.benchmarks.canvas_figures` (embedded latent model, {n}-px windows, "
            f'{args.steps} steps, seed 0, prompt "{prompt}").',
            "",
            f"![2-D canvas: SyncSDE, SyncSDE canonical preset, global preset, independent windows]({canvas})",
            "",
            f"2-D canvas {2 * n}×{3 * n} from 3×5 windows of {n} px: SyncSDE (paper update), SyncSDE "
            "`preset: canonical`, SyncSDE `preset: global` (1/λ = 20, the embedded config's: one horizon), "
            "independent windows.",
            "",
            f"![region prompts: the masks and the image]({region})",
            "",
            "Region prompts: the two masks (red: boat, blue: house; the overlap shared) and the image.",
            "",
            f"![360x180 panorama, equirectangular]({panorama})",
            "",
            f"![viewer: four horizon crops, up and down]({viewer})",
            "",
            f"A 360×180 panorama from 20 views of {n} px (SyncSDE `preset: global`, the embedded config's: sky above, "
            "ground below), as the equirectangular PNG and the viewer picture (90° crops: four on the horizon, then "
            "up and down).",
        ]
    )
    write_result("canvas_figures", markdown)
    print(markdown)


if __name__ == "__main__":
    main()
