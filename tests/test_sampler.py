"""The sampler's contract (SYNCSDE.md §3.1, §9.5) and the Python example of the docs (syncsde/docs/python-api.md)."""

import re
from pathlib import Path

import torch

from syncsde.backbones import GaussianBackbone
from syncsde.strategies import SyncSDE
from syncsde.tasks import WideImage

ROOT = Path(__file__).resolve().parents[1]


class Counting(GaussianBackbone):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls = []

    def forward(self, x, t, context):
        self.calls.append(x.shape[0])
        return super().forward(x, t, context)


def test_one_batched_network_call_per_step_with_both_cfg_branches():
    b = Counting(sample_size=8)
    task = WideImage(b, SyncSDE(5.0), height=64, width=256, stride=16, num_inference_steps=7, progress=False)
    batch = [{"prompt": p, "sample_id": i, "seed": 0} for i, p in enumerate(["a", "b", "c"])]
    task.trajectories(batch)
    assert task.n == 13 and b.calls == [2 * 3 * 13] * 7  # 2N rows per sample, all samples, once per step


def test_max_batch_splits_the_call_without_changing_results():
    b = Counting(sample_size=8)
    batch = [{"prompt": "a", "sample_id": 0, "seed": 0}]
    full = WideImage(b, SyncSDE(5.0), height=64, width=128, stride=16, num_inference_steps=3, progress=False)
    ref = full.trajectories(batch)
    b.calls.clear()
    full.max_batch = 4
    torch.testing.assert_close(full.trajectories(batch), ref)
    assert max(b.calls) <= 4


def test_readme_python_example_runs():
    text = (ROOT / "syncsde" / "docs" / "python-api.md").read_text()
    block = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    scope: dict = {}
    exec(compile(block, "syncsde/docs/python-api.md", "exec"), scope)
    assert scope["image"].shape == (3, 64, 256)
    assert 0 <= float(scope["image"].min()) and float(scope["image"].max()) <= 1
