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
