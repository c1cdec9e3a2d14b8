"""Ambiguous images on tiny DeepFloyd IF pipelines (SYNCSDE.md §6.4)."""

import pytest
import torch

from syncsde.backbones import DeepFloydIF, GaussianBackbone
from syncsde.backbones.upscaler import IFUpscaler
from syncsde.coupling import coupling_residuals
from syncsde.strategies import Independent, SyncSDE
from syncsde.testing import save_tiny_if, save_tiny_if_upscaler
from syncsde.views import get_view
from tasks import AmbiguousImage


@pytest.fixture(scope="module")
def tiny_if(tmp_path_factory):
    root = tmp_path_factory.mktemp("if")
    return str(save_tiny_if(root / "stage1")), str(save_tiny_if_upscaler(root / "stage2"))


BATCH = [{"prompt": "an oil painting of a horse", "prompt2": "an oil painting of a village", "sample_id": 0, "seed": 0}]


def test_coupling_is_view_of_trajectory_1_with_unit_weight(tiny_if):
    task = AmbiguousImage(DeepFloydIF(tiny_if[0]), SyncSDE(5.0), view="rotate_cw", progress=False)
    (c,) = task.problem(BATCH).couplings
    assert (c.target, c.source, c.weight) == (1, 0, None)  # W = 1 on the whole image
    x = torch.randn(1, 2, 3, 16, 16)
    assert torch.equal(c.pulled_toward(x), get_view("rotate_cw").view(x[:, 0]))


def test_learned_variance_dropped_and_if_scheduler_applied(tiny_if):
    b = DeepFloydIF(tiny_if[0])
    assert (
        b.learned_variance
        and b(torch.randn(2, 3, 16, 16), torch.tensor([10, 10]), b.encode_prompts(["a", "b"])).shape[1] == 3
    )
    step = AmbiguousImage(b, progress=False).schedule().steps[0]
    assert step.threshold == (0.95, 1.5) and step.clip_sample == 1.0


@pytest.mark.parametrize("view", ["rotate_cw", "skew", "square_hinge"])
def test_sync_brings_x2_toward_view_of_x1(view):
    # the exact Gaussian denoiser (a random tiny IF saturates x̂₀ under its thresholding, hiding any coupling)
    b = GaussianBackbone(channels=3, sample_size=16, scale_factor=1)
    gaps = {}
    for name, strat in (("sync", SyncSDE(5.0)), ("free", Independent())):
        task = AmbiguousImage(b, strat, view=view, num_inference_steps=10, progress=False)
        gaps[name] = coupling_residuals(task.trajectories(BATCH), task.problem(BATCH).couplings).abs().mean()
    assert gaps["sync"] < 0.5 * gaps["free"]


def test_outputs_with_stage_two(tiny_if):
    up = IFUpscaler(tiny_if[1], num_inference_steps=3)
    task = AmbiguousImage(
        DeepFloydIF(tiny_if[0]),
        SyncSDE(5.0),
        view="rotate_cw",
        upscaler=up,
        num_inference_steps=4,
        animation_frames=6,
        progress=False,
    )
    out = task.run(BATCH)[0]
    r1, r2 = out.extras["reading1"], out.extras["reading2"]
    assert r2.shape == (3, 64, 64) and out.image.shape == (3, 64, 128)
    assert torch.equal(get_view("rotate_cw").view(r1), r2)  # prompt-1 image = V⁻¹(x^2)
    frames = out.animations["animation"]
    assert torch.equal(frames[0], r1) and torch.equal(frames[5], r2) and len(frames) == 2 * 6 + 2 * 8
    assert out.meta["upscaler"] == tiny_if[1] and out.meta["view"] == "rotate_cw"
