"""Nothing moved per step (issue 17): a task places its couplings, maps, masks and canonical indices on its device once
per batch (``SyncProblem.to``), and the step loop outside the network moves nothing. On a GPU every ``Tensor.to`` that
names a device or a tensor, or ``Tensor.cuda``, on host data is a host-to-device copy; the test counts every such
call made after the first step, outside the denoiser call, with SyncSDE on the wide image, mask T2I and mesh tasks.

The one move left is by design: stochastic steps (DDPM) draw their noise from per-sample CPU generators, so that a
sample's noise does not depend on the device, and move it to the state's device (``syncsde.sampler.sample``'s
``noise``); those calls are left out of the count."""

from __future__ import annotations

import traceback
from collections import Counter
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image

import syncsde.task
from syncsde.backbones import StableDiffusion
from syncsde.strategies import SyncSDE
from syncsde.tasks import MaskTextToImage, MeshTexturing, WideImage

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:SyncSDE coefficient")  # few steps: this counts moves, not images


def moves_after_first_step(task, batch) -> Counter:
    """Would-be host-to-device copies ("file:line code" → count) after the first step, outside the network."""
    state = {"steps": 0, "network": 0}
    moves: Counter = Counter()
    to, cuda, guided_eps, step = torch.Tensor.to, torch.Tensor.cuda, syncsde.task.guided_eps, task.strategy.step

    def record():
        stack = traceback.extract_stack()[:-2]
        if state["steps"] and not state["network"]:
            if not any(f.name == "noise" and f.filename.endswith("sampler.py") for f in stack):
                moves[f"{Path(stack[-1].filename).name}:{stack[-1].lineno} {stack[-1].line}"] += 1

    def counted_to(self, *args, **kwargs):
        if any(isinstance(a, (torch.Tensor, torch.device, str)) for a in (*args, *kwargs.values())):
            record()
        return to(self, *args, **kwargs)

    def counted_cuda(self, *args, **kwargs):
        record()
        return cuda(self, *args, **kwargs)

    def network(*args, **kwargs):
        state["network"] += 1
        try:
            return guided_eps(*args, **kwargs)
        finally:
            state["network"] -= 1

    def counted_step(*args, **kwargs):
        out = step(*args, **kwargs)
        state["steps"] += 1
        return out

    with (
        mock.patch.object(torch.Tensor, "to", counted_to),
        mock.patch.object(torch.Tensor, "cuda", counted_cuda),
        mock.patch.object(syncsde.task, "guided_eps", network),
        mock.patch.object(task.strategy, "step", counted_step),
    ):
        task.trajectories(batch)
    assert state["steps"] == task.num_inference_steps
    return moves


@pytest.fixture(scope="module")
def backbone():
    return StableDiffusion("syncsde:tiny-ldm")


@pytest.fixture
def mask_png(tmp_path):
    a = np.zeros((32, 32), np.uint8)
    a[8:20, 8:20] = 255
    Image.fromarray(a).save(tmp_path / "m.png")
    return str(tmp_path / "m.png")


@pytest.mark.parametrize(
    "sampler_dtype, preset, blend",
    [("float32", "paper", "mean"), ("float16", "paper", "mean"), ("float32", "canonical", "feather")],
)
def test_wide_image_moves_nothing_per_step(backbone, sampler_dtype, preset, blend):
    task = WideImage(
        backbone, SyncSDE(5.0, preset=preset), height=64, width=256, stride=16, num_inference_steps=4,
        sampler_dtype=sampler_dtype, canonical_blend=blend, progress=False,
    )  # fmt: skip
    assert task.n == 13
    assert moves_after_first_step(task, [{"prompt": "a sunny day", "sample_id": 0, "seed": 0}]) == Counter()


def test_mask_t2i_moves_nothing_per_step(backbone, mask_png):
    task = MaskTextToImage(backbone, SyncSDE(5.0), num_inference_steps=4, progress=False)
    record = {"background": "a sunny day", "object": "a red ball", "prompt": "a sunny day with a red ball",
              "mask": mask_png, "sample_id": 0, "seed": 0}  # fmt: skip
    assert moves_after_first_step(task, [record]) == Counter()


def test_mesh_moves_nothing_per_step(backbone, monkeypatch):
    monkeypatch.chdir(ROOT)
    task = MeshTexturing(
        backbone, SyncSDE(5.0, sync_t_min=0), view_size=64, latent_texture_size=64, rgb_texture_size=64,
        num_inference_steps=4, prompt_prefix="", view_suffix=False, negative_prompt="", multiview_attention=False,
        progress=False,
    )  # fmt: skip
    record = {"mesh": "configs/assets/ball.obj", "prompt": "a sunny day", "sample_id": 0, "seed": 0}
    assert moves_after_first_step(task, [record]) == Counter()


def test_the_count_sees_maps_left_on_the_host(backbone, monkeypatch):
    """The counter is not blind: with the problem not placed, and maps that move their indices and masks to the
    state's device when called (as before), every coupling shows two moves per step."""
    from syncsde.coupling import SyncProblem
    from syncsde.windows import ShiftMap

    def moving(m, x):
        valid = m.valid.view(-1, *[1] * (-1 - m.axis)).to(x)
        return x.index_select(m.axis, m.src.to(x.device)) * valid

    monkeypatch.setattr(SyncProblem, "to", lambda problem, device, dtype: problem)
    monkeypatch.setattr(ShiftMap, "__call__", moving)
    task = WideImage(backbone, SyncSDE(5.0), height=64, width=256, stride=16, num_inference_steps=3, progress=False)
    moves = moves_after_first_step(task, [{"prompt": "a sunny day", "sample_id": 0, "seed": 0}])
    assert sum(moves.values()) == 2 * 12 * 2  # 2 moves, 12 couplings, 2 steps after the first
