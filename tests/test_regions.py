"""Region prompts (tasks/regions.py): N masks with their prompts plus a background."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from syncsde.backbones import GaussianBackbone, StableDiffusion
from syncsde.coupling import coupling_residuals
from syncsde.data import RegionPromptDataModule
from syncsde.errors import InputError
from syncsde.strategies import Independent, MultiDiffusion, SyncSDE, SyncTweedies
from syncsde.tasks import MaskTextToImage, RegionTextToImage
from syncsde.tasks.regions import region_weights


def mask(path, box, size=64):
    a = np.zeros((size, size), np.uint8)
    y0, x0, y1, x1 = box
    a[y0:y1, x0:x1] = 255
    Image.fromarray(a).save(path)
    return str(path)


@pytest.fixture()
def masks(tmp_path):
    """Three masks on a 64-px image: two overlapping boxes and one apart."""
    return [
        mask(tmp_path / "a.png", (0, 0, 40, 40)),
        mask(tmp_path / "b.png", (24, 24, 64, 56)),
        mask(tmp_path / "c.png", (48, 0, 64, 16)),
    ]


def record(masks, i=0):
    return {
        "prompt": "a beach with a boat, a sun and a crab",
        "background": "a beach",
        "regions": [{"prompt": p, "mask": m} for p, m in zip(["a sun", "a boat", "a crab"], masks)],
        "sample_id": i,
        "seed": 0,
    }


@pytest.fixture(scope="module")
def sd(tiny_sd_dir):
    return StableDiffusion(str(tiny_sd_dir))


@pytest.mark.parametrize("overlap", ["share", "last"])
def test_region_weights_partition_the_canvas(masks, overlap):
    task = RegionTextToImage(GaussianBackbone(sample_size=8), SyncSDE(5.0), overlap=overlap, progress=False)
    problem = task.problem([record(masks)])
    m = torch.stack([problem.regions.masks[k] for k in (1, 2, 3)], 1)  # (1, 3, 1, 8, 8)
    whole = {c.source: c.weight for c in problem.couplings if c.target == 4}
    assert set(whole) == {0, 1, 2, 3}
    total = sum(whole.values())
    assert torch.equal(total, torch.ones_like(total))  # one unit of precision everywhere
    for k in (1, 2, 3):
        assert torch.all(whole[k][m[:, k - 1] == 0] == 0) and torch.all(whole[k] >= 0)  # inside its own mask only
    both = (m[:, 0] * m[:, 1]).bool()
    assert both.any()
    expected = {"share": (0.5, 0.5), "last": (0.0, 1.0)}[overlap]
    assert torch.all(whole[1][both] == expected[0]) and torch.all(whole[2][both] == expected[1])
    # the region trajectories follow the background outside their masks
    for c in problem.couplings:
        if c.target in (1, 2, 3):
            assert c.source == 0 and torch.equal(c.weight, 1 - m[:, c.target - 1])


def test_canonical_is_region_multidiffusion(masks):
    """J = Σ_k m_k x^k / Σ_k m_k with m_0 = max(0, 1 − Σ_k m_k) (BASELINES.md §2.2), computed independently."""
    task = RegionTextToImage(GaussianBackbone(sample_size=8), MultiDiffusion(), progress=False)
    problem = task.problem([record(masks)])
    m = torch.stack([problem.regions.masks[k] for k in (1, 2, 3)], 1)[:, :, 0]  # (1, 3, 8, 8)
    x = torch.randn(1, 5, 4, 8, 8, dtype=torch.float64)
    m0 = (1 - m.sum(1)).clamp_min(0)
    weights = torch.cat([m0[:, None], m], 1)[:, :, None].double()
    expected = (weights * x[:, :4]).sum(1) / weights.sum(1)
    torch.testing.assert_close(problem.canonical.aggregate(x), expected)
    assert set(problem.regions.masks) == {1, 2, 3}  # every region is bootstrapped with its own mask


@pytest.mark.parametrize("strategy", [SyncSDE(5.0), MultiDiffusion(bootstrap_steps=2)], ids=["syncsde", "md"])
def test_one_region_is_the_mask_task_exactly(sd, masks, strategy):
    one = record(masks[:1])
    two = {
        "prompt": one["prompt"],
        "background": "a beach",
        "object": "a sun",
        "mask": masks[0],
        "sample_id": 0,
        "seed": 0,
    }
    a = RegionTextToImage(sd, strategy, num_inference_steps=4, progress=False).run([one])[0].image
    b = MaskTextToImage(sd, strategy, num_inference_steps=4, progress=False).run([two])[0].image
    assert torch.equal(a, b)


def test_every_method_runs_and_syncsde_couples(sd, masks):
    batch = [record(masks)]
    gaps = {}
    for name, strategy in {
        "sync": SyncSDE(5.0),
        "chain": SyncSDE(5.0, preset="chain"),
        "canonical": SyncSDE(5.0, preset="canonical"),
        "synctweedies": SyncTweedies(),
        "multidiffusion": MultiDiffusion(bootstrap_steps=3),
        "free": Independent(),
    }.items():
        task = RegionTextToImage(sd, strategy, num_inference_steps=8, save_trajectories=True, progress=False)
        gaps[name] = float(coupling_residuals(task.trajectories(batch), task.problem(batch).couplings).abs().sum())
    assert gaps["sync"] < 0.5 * gaps["free"]
    out = task.run(batch)[0]
    assert out.image.shape == (3, 64, 64) and out.meta["num_regions"] == 3
    assert set(out.extras) == {"masks", "background", "region1", "region2", "region3"}
    bootstrapped = RegionTextToImage(sd, MultiDiffusion(bootstrap_steps=3), num_inference_steps=4, progress=False)
    plain = RegionTextToImage(sd, MultiDiffusion(bootstrap_steps=0), num_inference_steps=4, progress=False)
    assert not torch.allclose(bootstrapped.trajectories(batch), plain.trajectories(batch))


def test_empty_or_full_masks_and_bad_batches_are_one_line_errors(tmp_path, masks):
    task = RegionTextToImage(GaussianBackbone(sample_size=8), SyncSDE(5.0), progress=False)
    full = mask(tmp_path / "full.png", (0, 0, 64, 64))
    with pytest.raises(InputError, match="full.png' covers the whole image"):
        task.problem([record([masks[0], full])])
    empty = mask(tmp_path / "empty.png", (0, 0, 0, 0))
    with pytest.raises(InputError, match="empty.png' is empty"):
        task.problem([record([empty])])
    with pytest.raises(InputError, match="same number of regions"):
        task.problem([record(masks), record(masks[:2], 1)])
    with pytest.raises(InputError, match="overlap"):
        region_weights(torch.ones(1, 1, 1, 2, 2), "first")


def test_records_from_jsonl_with_relative_masks(tmp_path, masks):
    rec = {
        "prompt": "w",
        "background": "b",
        "regions": [{"prompt": "o", "mask": "a.png"}, {"prompt": "p", "mask": "b.png"}],
    }
    (tmp_path / "recs.jsonl").write_text(json.dumps(rec) + "\n")
    samples = RegionPromptDataModule(records_file=str(tmp_path / "recs.jsonl"), samples_per_record=2).samples()
    assert [s["sample_id"] for s in samples] == [0, 1]
    assert [r["mask"] for r in samples[0]["regions"]] == masks[:2]
    for bad, msg in [
        ({"prompt": "w", "background": "b", "regions": []}, "non-empty list"),
        ({"prompt": "w", "background": "b", "regions": [{"prompt": "o"}]}, "region 0"),
        ({"prompt": "w", "regions": [{"prompt": "o", "mask": "a.png"}]}, "lacks background"),
    ]:
        with pytest.raises(InputError, match=msg):
            RegionPromptDataModule(records=[bad]).samples()
