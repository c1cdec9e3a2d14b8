"""Mixture of Diffusers (BASELINES.md §8) against the public code's arithmetic, re-derived here, and its limits."""

import math

import pytest
import torch

from syncsde.backbones import GaussianBackbone
from syncsde.errors import InputError
from syncsde.strategies import MixtureOfDiffusers, SyncTweedies
from syncsde.tasks import WideImage

BATCH = [{"prompt": "a wide river", "sample_id": 0, "seed": 0}]


def public_weights(h: int, w: int) -> torch.Tensor:
    """The public code's ``_gaussian_weights`` (per latent position): variance 0.01, columns centred at (w − 1)/2,
    rows at h/2."""
    var = 0.01
    xs = [math.exp(-((x - (w - 1) / 2) ** 2) / (w * w) / (2 * var)) / math.sqrt(2 * math.pi * var) for x in range(w)]
    ys = [math.exp(-((y - h / 2) ** 2) / (h * h) / (2 * var)) / math.sqrt(2 * math.pi * var) for y in range(h)]
    return torch.outer(torch.tensor(ys, dtype=torch.float64), torch.tensor(xs, dtype=torch.float64))


def public_mixture(backbone, z, tile, stride, steps):
    """The public pipeline's loop on the canvas latent z (1, C, H, W): every tile's ε at its crop, stitched with the
    Gaussian weights, one DDIM step of diffusers' scheduler on the whole canvas."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(backbone.scheduler_config())
    scheduler.set_timesteps(steps)
    H, W = z.shape[-2:]
    tiles = [(r, c) for r in range(0, H - tile + 1, stride[0]) for c in range(0, W - tile + 1, stride[1])]
    weights = public_weights(tile, tile).float()
    context = backbone.encode_prompts([""])
    for t in scheduler.timesteps:
        eps, contributors = torch.zeros_like(z), torch.zeros_like(z)
        for r, c in tiles:
            crop = z[:, :, r : r + tile, c : c + tile]
            eps[:, :, r : r + tile, c : c + tile] += backbone(crop, t.view(1), context) * weights
            contributors[:, :, r : r + tile, c : c + tile] += weights
        z = scheduler.step(eps / contributors, t, z).prev_sample
    return z


@pytest.mark.parametrize("height", [8, 16], ids=["one row", "2-D grid"])
def test_equals_the_public_code(height):
    backbone = GaussianBackbone(channels=4, sample_size=8, scale_factor=1)
    task = WideImage(
        backbone, MixtureOfDiffusers(), height=height, width=20, stride=4, init_from_canonical=True,
        num_inference_steps=6, guidance_scale=1.0, progress=False,
    )  # fmt: skip
    z = torch.randn(1, 4, height, 20, generator=torch.Generator().manual_seed(0))
    ours = task.assemble_latent(task.trajectories(BATCH, x_T=task.crops(z)))
    reference = public_mixture(backbone, z, 8, (4, 4), 6)
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(ours, public_mixture(backbone, z, 8, (4, 4), 5))  # the comparison can fail


def test_flat_weights_are_canonical_eps_averaging():
    """Weights that do not vary across the window (an infinite variance) give SyncTweedies' case 4."""
    backbone = GaussianBackbone(channels=4, sample_size=8, scale_factor=1)
    z = torch.randn(1, 4, 8, 20, generator=torch.Generator().manual_seed(1))
    runs = {}
    for name, strategy in {"flat": MixtureOfDiffusers(variance=1e12), "case4": SyncTweedies(4)}.items():
        task = WideImage(backbone, strategy, height=8, width=20, stride=4, num_inference_steps=5, progress=False)
        runs[name] = task.trajectories(BATCH, x_T=task.crops(z))
    torch.testing.assert_close(runs["flat"], runs["case4"], rtol=1e-5, atol=1e-5)


def test_weights_peak_at_the_centre_and_official_rows_sit_half_a_position_low():
    exact, official = MixtureOfDiffusers(centre="exact").weights(8, 8), MixtureOfDiffusers().weights(8, 8)
    torch.testing.assert_close(exact, exact.flip(0).flip(1))  # centred on both axes
    torch.testing.assert_close(official, public_weights(8, 8))
    assert official[4, 3] > official[3, 3]  # rows centred at h/2 = 4, not 3.5
    with pytest.raises(InputError, match="choose official or exact"):
        MixtureOfDiffusers(centre="middle")


def public_canvas_weights(h: int, w: int) -> torch.Tensor:
    """The public canvas pipeline's ``_gaussian_weights`` of a region of h × w latents: both axes centred at (n − 1)/2."""
    axis = [
        torch.tensor([math.exp(-((p - (n - 1) / 2) ** 2) / (n * n) / 0.02) / math.sqrt(0.02 * math.pi) for p in range(n)])
        for n in (h, w)
    ]
    return torch.outer(*axis)


def public_canvas(backbone, z, regions, steps, gaussian=True):
    """The public canvas pipeline's loop (``mixdiff/canvas.py``) on the latent z (1, C, h, w) for ``regions``
    [(prompt, (row0, row1, col0, col1))]: each region's ε weighted on its rectangle, divided by the weights' sum, one
    DDIM step. Each region's ε is predicted on the whole latent, as the regions task's trajectories are whole images."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(backbone.scheduler_config())
    scheduler.set_timesteps(steps)
    for t in scheduler.timesteps:
        eps, contributors = torch.zeros_like(z), torch.zeros_like(z)
        for prompt, (r0, r1, c0, c1) in regions:
            weights = public_canvas_weights(r1 - r0, c1 - c0).float() if gaussian else torch.ones(r1 - r0, c1 - c0)
            e = backbone(z, t.view(1), backbone.encode_prompts([prompt]))
            eps[:, :, r0:r1, c0:c1] += e[:, :, r0:r1, c0:c1] * weights
            contributors[:, :, r0:r1, c0:c1] += weights
        z = scheduler.step(eps / contributors, t, z).prev_sample
    return z


def test_regions_equal_the_public_canvas_pipeline(tiny_sd_dir, tmp_path):
    """Two overlapping rectangular regions on the background's full-canvas region, on a prompt-conditioned tiny
    random UNet: the whole-image output is the public canvas pipeline's latent."""
    import numpy as np
    from PIL import Image

    from syncsde.backbones import StableDiffusion
    from syncsde.tasks import RegionTextToImage

    def mask(name, box):  # box in pixels (row0, row1, col0, col1) on a 64-px image (8 latents)
        a = np.zeros((64, 64), np.uint8)
        a[box[0] : box[1], box[2] : box[3]] = 255
        Image.fromarray(a).save(tmp_path / name)
        return str(tmp_path / name)

    sd = StableDiffusion(str(tiny_sd_dir))
    boxes = {"a sun": (0, 40, 0, 40), "a boat": (24, 64, 24, 56)}
    record = {
        "prompt": "a beach with a sun and a boat", "background": "a beach", "sample_id": 0, "seed": 0,
        "regions": [{"prompt": p, "mask": mask(f"{i}.png", b)} for i, (p, b) in enumerate(boxes.items())],
    }  # fmt: skip
    task = RegionTextToImage(sd, MixtureOfDiffusers(), num_inference_steps=3, guidance_scale=1.0, progress=False)
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    ours = task.trajectories([record], x_T=z[:, None].expand(1, 4, 4, 8, 8))
    regions = [("a beach", (0, 8, 0, 8))] + [(p, tuple(v // 8 for v in b)) for p, b in boxes.items()]
    torch.testing.assert_close(ours[:, 3], public_canvas(sd, z, regions, 3), rtol=1e-4, atol=1e-4)
    assert torch.equal(ours[:, 0], ours[:, 3])  # every trajectory holds the canvas
    assert not torch.allclose(ours[:, 3], public_canvas(sd, z, regions, 3, gaussian=False), rtol=1e-4, atol=1e-4)
