"""Mask-based text-to-image (SYNCSDE.md §6.1, §9.8)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from syncsde.backbones import GaussianBackbone, StableDiffusion
from syncsde.coupling import coupling_residuals
from syncsde.data import MaskPromptDataModule
from syncsde.errors import InputError
from syncsde.masks import load_mask
from syncsde.strategies import Independent, SyncSDE
from syncsde.tasks import MaskTextToImage


@pytest.fixture()
def mask_png(tmp_path):
    a = np.zeros((100, 80), np.uint8)
    a[20:60, 10:50] = 200  # > 0.5 after /255
    a[70:90, 60:70] = 100  # < 0.5: background
    path = tmp_path / "m.png"
    Image.fromarray(a).save(path)
    return str(path)


def record(mask, i=0):
    return {
        "background": "a beach",
        "object": "a boat",
        "prompt": "a beach with a boat",
        "mask": mask,
        "sample_id": i,
        "seed": 0,
    }


def test_mask_binarised_and_resized(mask_png):
    m = load_mask(mask_png, 10, 8)
    assert m.shape == (1, 10, 8) and set(m.unique().tolist()) == {0.0, 1.0}
    expected = torch.zeros(10, 8)
    expected[2:6, 1:5] = 1
    assert torch.equal(m[0], expected)


def test_couplings_exactly_as_spec(mask_png):
    task = MaskTextToImage(GaussianBackbone(sample_size=8), SyncSDE(5.0), progress=False)
    problem = task.problem([record(mask_png)])
    m = load_mask(mask_png, 8, 8)
    got = {(c.target, c.source): c.weight[0] for c in problem.couplings}
    assert set(got) == {(1, 0), (2, 0), (2, 1)}  # trajectory 0 (background) free
    assert torch.equal(got[(1, 0)], 1 - m) and torch.equal(got[(2, 0)], 1 - m) and torch.equal(got[(2, 1)], m)
    assert torch.all(got[(2, 0)] + got[(2, 1)] == 1)  # W_31 + W_32 = 1
    assert torch.all(got[(1, 0)][m.bool()] == 0)  # W_21 = 0 inside the mask
    assert all(c.map is None for c in problem.couplings)  # identity maps


def test_runs_on_tiny_sd_and_couples(tiny_sd_dir, mask_png):
    sd = StableDiffusion(str(tiny_sd_dir))
    batch = [record(mask_png)]
    sync = MaskTextToImage(sd, SyncSDE(5.0), num_inference_steps=8, save_trajectories=True, progress=False)
    free = MaskTextToImage(sd, Independent(), num_inference_steps=8, progress=False)
    problem = sync.problem(batch)
    gap = {
        name: coupling_residuals(t.trajectories(batch), problem.couplings).abs().sum()
        for name, t in (("sync", sync), ("free", free))
    }
    assert gap["sync"] < 0.5 * gap["free"]
    out = sync.run(batch)[0]
    assert out.image.shape == (3, 64, 64) and set(out.extras) == {"mask", "background", "object"}


def test_empty_and_unreadable_masks(tmp_path):
    empty = tmp_path / "empty.png"
    Image.fromarray(np.full((16, 16), 90, np.uint8)).save(empty)
    with pytest.raises(InputError, match="empty"):
        load_mask(str(empty), 8, 8)
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with pytest.raises(InputError, match="cannot read image"):
        load_mask(str(bad), 8, 8)


def test_records_from_jsonl_with_relative_masks(tmp_path, mask_png):
    (tmp_path / "recs.jsonl").write_text(
        json.dumps({"background": "b", "object": "o", "prompt": "w", "mask": "m.png"}) + "\n"
    )
    dm = MaskPromptDataModule(records_file=str(tmp_path / "recs.jsonl"), samples_per_record=2)
    samples = dm.samples()
    assert [s["sample_id"] for s in samples] == [0, 1] and samples[0]["mask"] == mask_png
    (tmp_path / "bad.jsonl").write_text(json.dumps({"background": "b", "prompt": "w"}) + "\n")
    with pytest.raises(InputError, match="lacks object, mask"):
        MaskPromptDataModule(records_file=str(tmp_path / "bad.jsonl")).samples()
