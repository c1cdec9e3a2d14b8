"""The synchronization benchmark's figures (syncsde.evaluation.benchmarks.sync) on constructed inputs, and one small run."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from syncsde.evaluation.benchmarks import sync
from syncsde.windows import Windows

ROOT = Path(__file__).resolve().parents[1]


def test_switch_positions_follow_the_assembly():
    w = Windows(32, 8, 4)  # windows start at 0, 4, ..., 24
    assert sync.switch_positions(sync.assembly_weights(w, "overwrite")) == list(range(4, 28, 4))
    # feathered windows switch where any window starts or ends
    assert sync.switch_positions(sync.assembly_weights(w, "feather")) == list(range(4, 32, 4))


def test_seam_ratio_sees_steps_at_the_seams_only():
    x = torch.linspace(0, 1, 64).expand(1, 3, 16, 64).clone()  # a smooth ramp: every neighbouring jump is equal
    jumps = lambda im: (im[..., 1:] - im[..., :-1]).pow(2).mean(dim=(0, 1, 2))  # noqa: E731
    assert abs(sync.seam_ratio(jumps(x), [16, 32, 48]) - 1) < 1e-4
    banded = x.clone()
    banded[..., 16:32] += 0.1
    assert sync.seam_ratio(jumps(banded), [16, 32, 48]) > 10


def test_standard_errors_and_their_column():
    ids = [(0, i) for i in range(3)]
    assert sync.Figure(ids, np.array([1.0, 2.0, 3.0])).summary("x") == {"x": 2.0, "x_se": 1 / np.sqrt(3)}
    assert sync.standard_error([5.0]) == 0.0
    assert sync.bootstrap_error(lambda idx: 1.0, 8) == 0.0  # a statistic that does not depend on the samples
    spread = sync.bootstrap_error(lambda idx: float(np.mean(np.arange(100.0)[idx])), 100)
    assert abs(spread - np.arange(100.0).std() / 10) < 3  # the mean's standard error, 2.9
    table = sync.to_markdown({"wide_image": {"m": {"num_samples": 3, "seam_ratio": 1.5, "seam_ratio_se": 0.12}}})
    assert "| m | 1.5 ± 0.12 |" in table


def test_paired_differences_see_what_the_spread_between_prompts_hides():
    rng = np.random.default_rng(0)
    ids = [(0, i) for i in range(32)]
    base = rng.uniform(1, 3, 32)  # prompts differ a lot
    better = sync.Figure(ids, base - 0.05 + 0.001 * rng.standard_normal(32))  # every sample a little lower
    a, b = better.summary("x"), sync.Figure(ids, base).summary("x")
    assert abs(a["x"] - b["x"]) < a["x_se"]  # within one standard error in the table of figures
    d, se = better.minus(sync.Figure(ids, base))
    assert abs(d + 0.05) < 0.002 and se < 0.001  # clear once paired
    # pairs by (seed, sample id), not by position; samples only one side has are left out
    shuffled = sync.Figure(ids[::-1] + [(0, 99)], np.r_[base[::-1], 100.0])
    assert sync.Figure(ids, base).minus(shuffled) == (0.0, 0.0)
    # a pooled figure (a ratio of means): the same statistic on both sides, resampled together
    jumps = rng.uniform(0.5, 2, (32, 8)) * rng.uniform(1, 10, (32, 1))  # per-sample scale differs a lot
    stepped = jumps.copy()
    stepped[:, 3] *= 1.2  # a 20% larger jump at the seam in every sample
    ratio = lambda j: sync.seam_ratio(torch.from_numpy(j).mean(0), [4])  # noqa: E731
    d, se = sync.Figure(ids, stepped, ratio).minus(sync.Figure(ids, jumps, ratio))
    assert d > 0.1 and d > 10 * se
    at_5 = lambda j: sync.seam_ratio(torch.from_numpy(j).mean(0), [5])  # noqa: E731  (another method's stride)
    d, _ = sync.Figure(ids, jumps, at_5).minus(sync.Figure(ids, stepped, ratio))
    assert d == at_5(jumps) - ratio(stepped)  # each side by its own seams
    rows = {"b": {"num_samples": 32, "x": 1.0}, "a": {"num_samples": 32, "paired_with": "b"}}
    rows["a"].update(sync.paired({"seam_ratio": better}, {"seam_ratio": sync.Figure(ids, base)}, "b"))
    table = "\n".join(sync.paired_markdown(rows))
    assert "Paired with b" in table and "| a | **-0.0497 ± 0.00017** |" in table and "| b |" not in table


def test_block_spread_is_larger_for_bands():
    g = torch.Generator().manual_seed(0)
    plain = 0.5 + 0.01 * torch.randn(8, 3, 16, 16, generator=g)
    banded = plain.clone()
    banded[..., 4:8] += 0.2
    assert sync.block_spread(banded, 4) > 10 * sync.block_spread(plain, 4)


def test_acceleration_ratio():
    t = np.linspace(0, 4 * np.pi, 300)
    joints = np.stack([np.sin(t), np.cos(t), t], -1)[:, None, :].repeat(22, 1)  # smooth motion
    assert 0.5 < sync.acceleration_ratio(joints, [90, 180]) < 2
    jumped = joints.copy()
    jumped[90:] += 0.5  # a jump at the first seam
    assert sync.acceleration_ratio(jumped, [90, 180]) > 50


def test_mask_figures(tmp_path):
    from syncsde.io import save_json, save_png

    image = torch.full((3, 16, 16), 0.5)
    mask = torch.zeros(3, 16, 16)
    mask[:, 4:12, 4:12] = 1
    image[:, 5:11, 5:11] = torch.tensor([0.85, 0.1, 0.1])[:, None, None]  # a red object inside the mask
    save_png(tmp_path / "00000.png", image)
    save_png(tmp_path / "00000_mask.png", mask)
    files = {"image": "00000.png", "mask": "00000_mask.png"}
    save_json(tmp_path / "manifest.json", {"samples": [{"object": "a red boat", "files": files, "sample_id": 0}]})
    figures = sync.summaries(sync.mask_figures(tmp_path))
    assert figures["object_in_mask"] == 1.0 and figures["object_in_mask_se"] == 0.0  # one sample
    assert figures["seam_ratio"] == 0  # the mask boundary runs through flat grey: no jump there


def test_a_small_run_through_the_cli(tmp_path, monkeypatch):
    """Two wide-image methods, at least 2 samples (one per prompt of the config), 2 steps, through `syncsde predict`
    on the embedded config: the config's own SyncSDE and independent windows, paired with it."""
    config = yaml.safe_load((ROOT / "configs/tiny/wide.yaml").read_text())
    own = sync.anchor(sync.methods("wide_image", config))
    assert own.startswith("syncsde (canonical")  # the embedded config's preset
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    monkeypatch.chdir(tmp_path)
    results = sync.main(
        [
            "--tasks",
            "wide_image",
            "--samples",
            "2",
            "--methods",
            f"{sync.slug(own)},independent",  # folder names (method names may hold commas)
            "--output_dir",
            "bench",
            "--model.init_args.num_inference_steps",
            "2",
            "--figures",
            "figures",
        ]
    )
    rows = results["wide_image"]
    assert set(rows) == {own, "independent"}
    for row in rows.values():
        assert row["num_samples"] >= 2 and row["seam_ratio"] > 0 and row["coherence"] > 0
        assert row["seam_ratio_se"] > 0 and row["coherence_se"] > 0
        assert row["nfe"] == 2 * 2 * 13  # steps × guidance branches × the config's 13 windows
        assert 0 < row["intra_lpips"] and row["intra_style"] > 0 and "tiny-clip" in row["measures_network"]
    paired = rows["independent"]
    assert paired["paired_with"] == own and "seam_ratio_diff" not in rows[own]
    assert paired["seam_ratio_diff_se"] > 0 and paired["coherence_diff_se"] > 0
    assert abs(paired["coherence_diff"] - (paired["coherence"] - rows[own]["coherence"])) < 1e-9  # a mean: exact
    saved = json.loads((tmp_path / "bench" / "sync_benchmark.json").read_text())
    assert saved["wide_image"]["independent"] == rows["independent"]
    figure = Image.open(
        tmp_path / "figures" / "tiny_wide_methods.png"
    )  # 2 methods side by side, one row per sample (4 at most), upscaled
    init = yaml.safe_load((ROOT / "configs/tiny/wide.yaml").read_text())["model"]["init_args"]
    scale = figure.width // (2 * init["width"])
    assert scale >= 1 and figure.width == 2 * init["width"] * scale
    assert figure.height > min(rows["independent"]["num_samples"], 4) * init["height"] * scale


def test_every_method_runs_once_per_task():
    """The config's own SyncSDE is not run a second time under another name: not as "syncsde (paper)" where the
    config is the faithful update already (ambiguous images, the mesh), nor as the method its preset is (the sphere's
    preset "global")."""
    rows = {}
    for task, name in sync.CONFIGS.items():
        config = yaml.safe_load((ROOT / "configs/tiny" / name).read_text())
        rows[task] = list(sync.methods(task, config))
    assert [m for m in rows["ambiguous"] if m.startswith("syncsde")] == ["syncsde (paper, 1/λ = 5)"]
    assert "global" not in rows["sphere"] and "syncsde (global, 1/λ = 20)" in rows["sphere"]
    assert {"syncsde (paper)", "syncdiffusion", "spotdiffusion", "stochsync"} <= set(rows["wide_image"])
    assert "doubletake" in rows["motion"] and "stochsync" in rows["mesh"] and "least_squares" in rows["sphere"]


def test_inv_lambda_rows():
    """`--inv_lambdas 2,paper:0.9`: the config's preset at 1/λ = 2 (only 1/λ overridden) and the faithful row (the
    official assembly on wide images) with only its 1/λ changed; a malformed entry is refused in one line."""
    config = yaml.safe_load((ROOT / "configs/tiny/wide.yaml").read_text())
    rows = sync.methods("wide_image", config, inv_lambdas=[sync.inv_lambda_row("2"), sync.inv_lambda_row("paper:0.9")])
    assert rows["syncsde (canonical, 1/λ = 2)"] == sync.option("inv_lambda", 2.0)
    faithful, changed = rows["syncsde (paper)"], rows["syncsde (paper, 1/λ = 0.9)"]
    assert changed == [a if a != "5.0" else "0.9" for a in faithful]
    assert "--model.init_args.assembly" in changed
    with pytest.raises(SystemExit, match="PRESET:1/λ"):
        sync.inv_lambda_row("paper:x")
