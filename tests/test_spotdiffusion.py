"""SpotDiffusion (BASELINES.md §10) against the public code's arithmetic, re-derived here, and its limits."""

import pytest
import torch

from syncsde.backbones import StableDiffusion
from syncsde.errors import InputError
from syncsde.strategies import Independent, SpotDiffusion
from syncsde.tasks import WideImage

PROMPT = "a wide river"
BATCH = [{"prompt": PROMPT, "sample_id": 0, "seed": 0}]


@pytest.fixture(scope="module")
def sd(tiny_sd_dir):
    """A tiny random UNet (8x8 latent windows): unlike an element-wise denoiser, its ε depends on where the tiles
    are cut, so every comparison below can fail."""
    return StableDiffusion(str(tiny_sd_dir))


def task(sd, strategy, height=64, width=128, **kw):
    return WideImage(
        sd, strategy, height=height, width=width, stride="window", vertical_stride="window", num_inference_steps=3,
        guidance_scale=1.0, progress=False, **kw,
    )  # fmt: skip


class Fixed(SpotDiffusion):
    """SpotDiffusion with given offset increments (rows, columns) per step instead of random ones."""

    def __init__(self, increments, **kw):
        super().__init__(**kw)
        self.plan = list(increments)

    def increments(self, size):
        return torch.tensor([self.plan.pop(0)])


def public_spotdiffusion(backbone, latent, crops, steps):
    """The public code's loop (panorama.py) on the canvas latent (1, C, H, W): every non-overlapping 8x8 view stepped
    by diffusers' DDIM scheduler on its own ε, written into ``value``, then the canvas doubled along the columns and
    cropped at ``crops[k]`` — the rolled canvas is what the next step tiles, and what it returns."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(backbone.scheduler_config())
    scheduler.set_timesteps(steps)
    H, W = latent.shape[-2:]
    context = backbone.encode_prompts([PROMPT])
    for t, crop in zip(scheduler.timesteps, crops):
        value = torch.zeros_like(latent)
        for r in range(0, H, 8):
            for c in range(0, W, 8):
                view = latent[:, :, r : r + 8, c : c + 8]
                eps = backbone(view, t.view(1), context)
                value[:, :, r : r + 8, c : c + 8] = scheduler.step(eps, t, view).prev_sample
        latent = torch.cat((value, value), -1)[:, :, :, crop : W + crop]
    return latent


@pytest.mark.parametrize("height", [64, 128], ids=["one row", "2-D grid"])
def test_equals_the_public_code(sd, height):
    """Ours stays in the canvas's frame; the public code's canvas ends rolled left by the sum of its crops."""
    crops = [5, 9, 3]  # after steps 1 and 2, and the public code's last crop after the final step
    t = task(sd, Fixed([(0, c) for c in crops[:2]], vertical=False), height=height)
    z = torch.randn(1, 4, height // 8, 16, generator=torch.Generator().manual_seed(0))
    ours = t.assemble_latent(t.trajectories(BATCH, x_T=t.crops(z)))
    reference = public_spotdiffusion(sd, z, crops, 3)
    torch.testing.assert_close(torch.roll(ours, -sum(crops), -1), reference, rtol=1e-4, atol=1e-4)
    other = public_spotdiffusion(sd, z, [5, 8, 4], 3)  # the same total shift, another tiling at step 3
    assert not torch.allclose(torch.roll(ours, -sum(crops), -1), other, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("increment", [(0, 0), (8, 16)], ids=["no shift", "whole tiles"])
def test_unshifted_tiling_is_independent_tiles(sd, increment):
    """Offsets of no tile, or of whole tiles (the same tiles in another order of the network's rows), give plain
    non-overlapping tiles: the independent method at stride = window size (exactly, when nothing moves)."""
    z = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    runs = {}
    for name, strategy in {"spot": Fixed([increment] * 2), "independent": Independent()}.items():
        t = task(sd, strategy, height=128)
        runs[name] = t.assemble_latent(t.trajectories(BATCH, x_T=t.crops(z)))
    if increment == (0, 0):
        assert torch.equal(runs["spot"], runs["independent"])
    torch.testing.assert_close(runs["spot"], runs["independent"], rtol=1e-5, atol=1e-5)
    t = task(sd, Fixed([(0, 3)] * 2), height=128)
    assert not torch.allclose(t.assemble_latent(t.trajectories(BATCH, x_T=t.crops(z))), runs["independent"])


def test_a_sample_depends_only_on_its_seed_and_id(sd):
    t = task(sd, SpotDiffusion(), height=128)
    s0, s1 = ({"prompt": PROMPT, "sample_id": i, "seed": 3} for i in range(2))
    together, alone = t.trajectories([s0, s1]), t.trajectories([s1])
    torch.testing.assert_close(together[1], alone[0], rtol=1e-5, atol=1e-5)
    drawn = []
    recording = SpotDiffusion()
    recording.before_denoise = lambda x, step, problem, noise=None: (
        drawn.append(recording.offsets(x, step, problem, noise).clone()) or x
    )
    task(sd, recording, height=128).trajectories([s0, s1])
    offsets = torch.stack(drawn)  # (steps, samples, axes)
    assert offsets[0].eq(0).all() and offsets[1:].ne(0).any(-1).all()  # unshifted first, shifted after
    assert not torch.equal(offsets[:, 0], offsets[:, 1])  # each sample its own shifts
    assert offsets[..., 0].ne(0).any()  # rows shift too on a 2-D canvas


def test_refuses_overlapping_windows(sd):
    t = WideImage(sd, SpotDiffusion(), height=64, width=128, stride=32, num_inference_steps=2, progress=False)
    with pytest.raises(InputError, match="without overlap.*--model.stride window"):
        t.trajectories(BATCH)
