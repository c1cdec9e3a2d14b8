"""`syncsde reproduce`: the paper's protocols on the embedded models at a tiny scale (one step, a sample or two)."""

import contextlib
import io
import json
import math
import re
from pathlib import Path

import pytest
import yaml

from syncsde.data import MeshDataModule, PromptDataModule, PromptPairDataModule
from syncsde.errors import InputError
from syncsde.evaluation.reproduce import PROTOCOLS, folder_statistics, main, protocol_config

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--configs", "configs/tiny", "--model.num_inference_steps", "1", "--trainer.enable_progress_bar", "false"]


def run(args):
    """main(args) with its stderr captured: (result, stderr text)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        result = main(args)
    return result, err.getvalue()


@pytest.fixture(scope="module")
def mask_run(tmp_path_factory):
    """Table 1's protocol for the config's SyncSDE alone: 2 samples (scale 0.008), a reference set of 16, 1 step."""
    out = tmp_path_factory.mktemp("reproduce") / "mask_t2i"
    args = [
        "mask_t2i",
        "--scale",
        "0.008",
        "--methods",
        "syncsde",
        "--probe",
        "1",
        "--bootstrap",
        "20",
        "--output_dir",
        str(out),
        *FAST,
        "--model.save_trajectories",
        "false",
    ]
    result, err = run(args)
    return out, args, result, err


def test_mask_t2i_table_beside_the_paper(mask_run):
    out, _, result, _ = mask_run
    rows = {r["label"]: r for r in result["rows"]}
    ours = rows["SyncSDE 1/λ = 5"]["figures"]
    assert (ours["KID×10³"]["paper"], ours["FID"]["paper"], ours["CLIP-S"]["paper"]) == (43.774, 82.878, 0.332)
    metrics = json.loads((out / "syncsde" / "metrics.json").read_text())["metrics"]
    assert metrics["num_samples"] == 2
    assert ours["FID"]["measured"] == pytest.approx(metrics["fid"]["value"])
    assert ours["KID×10³"]["measured"] == pytest.approx(1000 * metrics["kid"]["value"])
    assert ours["CLIP-S"]["measured"] == pytest.approx(metrics["clip_score"]["value"] / 100)  # ours: 100·cos
    assert ours["FID"]["difference"] == pytest.approx(ours["FID"]["measured"] - 82.878)
    assert ours["FID"]["se"] > 0 and ours["CLIP-S"]["se"] > 0
    # the rows not run keep the paper's figures, and say why they were not run
    assert rows["SyncTweedies"]["figures"]["FID"] == {"paper": 149.470}
    assert "not asked for" in rows["MultiDiffusion"]["not_run"]
    table = (out / "table.md").read_text()
    assert "| SyncSDE 1/λ = 5 | 43.77 |" in table and "149.5" in table and "not checked against the paper" in table
    subs = result["substitutions"]
    for line in (
        "backbone: syncsde:tiny-ldm instead of the paper's stabilityai/stable-diffusion-2-base",
        "feature_network: syncsde:tiny-clip instead of the paper's inception",
        "clip_model: syncsde:tiny-clip instead of the paper's openai/clip-vit-base-patch32",
        "samples: 2 per record instead of 250 (--scale 0.008)",
        "reference: 16 images per prompt instead of 2000",
    ):
        assert line in subs, subs
    assert '"preset": "canonical"' in next(s for s in subs if s.startswith("SyncSDE: "))  # the tiny config's own
    assert json.loads((out / "reproduction.json").read_text())["substitutions"] == subs
    assert all(s in table for s in subs)


def test_mask_t2i_estimate(mask_run):
    """The work is counted before anything runs (3 trajectories × 1 step per sample, 1 step per reference image),
    and the hours are estimated from the probe's seconds."""
    _, _, result, err = mask_run
    lines = [x for x in err.splitlines() if "denoiser evaluations" in x]
    total = 2 * 3 * 1 + 16 * 1
    assert lines[0] == f"syncsde reproduce: {total} denoiser evaluations in all, {total} left"
    after_probe = lines[1]  # the probe made 1 sample (3 evaluations)
    assert f"{total - 3} left; about" in after_probe and "ms per evaluation measured" in after_probe
    assert result["evaluations"] == total


def test_statistics_recompute_the_folder_metrics(mask_run):
    """The bootstrap's full-sample figures are the metrics callback's: the same features, the same formula."""
    out = mask_run[0] / "syncsde"
    stats = folder_statistics(out, {"fid", "kid", "clip_score"}, draws=10)
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert stats["fid"]["value"] == pytest.approx(metrics["fid"]["value"], rel=1e-3)
    assert stats["clip_score"]["value"] == pytest.approx(metrics["clip_score"]["value"], rel=1e-5)
    assert stats["kid"]["se"] > 0


def test_resume_skips_finished_samples(mask_run):
    out, args, first, _ = mask_run
    made = {p.name: p.stat().st_mtime_ns for p in (out / "syncsde").glob("0*.png")}
    made_ref = {p.name: p.stat().st_mtime_ns for p in (out / "reference").glob("0*.png")}
    result, err = run(args)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "syncsde").glob("0*.png")} == made
    assert {p.name: p.stat().st_mtime_ns for p in (out / "reference").glob("0*.png")} == made_ref
    assert re.search(r"22 denoiser evaluations in all, 0 left", err)
    assert result["rows"] == first["rows"]


def test_edit_needs_the_papers_images(tmp_path):
    with pytest.raises(InputError) as e:
        main(["edit", *FAST, "--output_dir", str(tmp_path / "e")])
    assert "\n" not in str(e.value) and "--data DIR" in str(e.value) and "LAION" in str(e.value)
    with pytest.raises(InputError, match="holds no images"):
        main(["edit", *FAST, "--data", str(tmp_path), "--output_dir", str(tmp_path / "e")])
    assert not (tmp_path / "e").exists()
    with pytest.raises(InputError, match="not a row of the paper's mask_t2i table; choose from multidiffusion_boot"):
        main(["mask_t2i", "--methods", "syncsde,masactrl", "--output_dir", str(tmp_path / "e")])


def test_edit_end_to_end(tmp_path):
    """Table 2's protocol on one image: SyncSDE and MasaCtrl measured beside the paper's rows; LPIPS without
    torchvision is reported as not measured, in the table and the JSON."""
    data = tmp_path / "edits.jsonl"
    record = {
        "image": str(ROOT / "configs/assets/house_64.png"),
        "source_word": "house",
        "target_word": "tree",
        "prompt": "a sunny day over grass with mountains, a red house in the middle",
    }
    data.write_text(json.dumps(record) + "\n")
    result, _ = run(
        ["edit", "--scale", "0.004", "--data", str(data), "--probe", "0", "--output_dir", str(tmp_path / "e"), *FAST]
    )
    rows = {r["label"]: r for r in result["rows"]}
    assert rows["MasaCtrl"]["figures"]["LPIPS"]["paper"] == 0.290
    masactrl = rows["MasaCtrl"]["figures"]["CLIP-S"]
    assert "not_run" not in rows["MasaCtrl"] and masactrl["difference"] == pytest.approx(masactrl["measured"] - 0.285)
    clip = rows["SyncSDE"]["figures"]["CLIP-S"]
    assert clip["paper"] == 0.313 and clip["difference"] == pytest.approx(clip["measured"] - 0.313)
    try:
        import torchvision  # noqa: F401
    except ImportError:
        assert "unavailable" in rows["SyncSDE"]["figures"]["LPIPS"]
        assert any(s.startswith("LPIPS: not measured") for s in result["substitutions"])


def test_dry_run_counts_the_papers_work(tmp_path):
    """Denoiser evaluations of each protocol at the paper's settings: samples × trajectories × steps per method,
    plus the reference set's samples × steps; nothing is written."""
    out = tmp_path / "dry"
    r = main(["mask_t2i", "--dry_run", "--output_dir", str(out)])
    assert r["evaluations"] == 3 * 250 * 3 * 50 + 2000 * 50  # 1 public prompt: MultiDiffusion, SyncTweedies, SyncSDE
    assert main(["wide", "--dry_run", "--output_dir", str(out)])["evaluations"] == 250 * (25 + 13 + 13) * 50 + 2000 * 50
    assert main(["ambiguous", "--dry_run", "--output_dir", str(out)])["evaluations"] == 3 * 4 * 250 * 2 * 30
    assert main(["mesh", "--dry_run", "--output_dir", str(out)])["evaluations"] == 2 * 100 * 10 * 30
    assert not out.exists()


@pytest.mark.parametrize(
    "task,data_module", [("wide", PromptDataModule), ("ambiguous", PromptPairDataModule), ("mesh", MeshDataModule)]
)
def test_protocol_records_are_valid(task, data_module):
    """Each protocol's records, as its config lists them, pass the task's data module (files, views, prompts)."""
    proto = PROTOCOLS[task]
    base = yaml.safe_load((ROOT / "configs/tiny" / f"{proto.config}.yaml").read_text())
    recs = proto.records(None, 3, base)
    cfg = protocol_config(base, proto, recs.records, None, None)
    dm = data_module(**cfg["data"]["init_args"])
    samples = dm.samples()
    assert len(samples) == len(recs.records) and len(samples) % 3 == 0
    assert [s["sample_id"] for s in samples] == list(range(len(samples)))
    assert recs.notes  # the public data differ from the paper's: said
    swapped = protocol_config(base, proto, recs.records, None, "some/model")
    assert swapped["model"]["init_args"]["backbone"]["init_args"]["model"] == "some/model"


def test_motion_protocol_measures_the_transitions(tmp_path):
    """The motion protocol on the embedded motion model (2 motions, 1 step): no paper column, PJ and AUJ as
    syncsde.evaluation.coherence measures them (another code path), bootstrap standard errors, and the protocol
    said to be ours."""
    from syncsde.evaluation.coherence import measure_folder

    data = tmp_path / "motion.jsonl"
    data.write_text(json.dumps({"texts": ["a person walks forward", "a person jumps", "a person kicks"]}))
    out = tmp_path / "m"
    args = ["motion", "--scale", "0.02", "--data", str(data), "--methods", "syncsde", "--probe", "0"]
    result = main([*args, "--bootstrap", "20", "--output_dir", str(out), *FAST, "--model.render_size", "32"])
    rows = {r["label"]: r for r in result["rows"]}
    ours = rows["SyncSDE"]["figures"]
    measures = measure_folder(out / "syncsde")["measures"]
    assert rows["SyncSDE"]["num_samples"] == 2 and measures["peak_jerk"]["transitions"] == 4
    for label, key in (("PJ", "peak_jerk"), ("AUJ", "auj")):
        assert ours[label]["paper"] is None and "difference" not in ours[label]
        assert ours[label]["measured"] == pytest.approx(measures[key]["value"], rel=1e-9)
        assert ours[label]["se"] > 0
    assert rows["DoubleTake"]["not_run"] == "not asked for (--methods)"
    assert not (out / "syncsde" / "metrics.json").exists()  # no image metrics computed on a motion
    assert any(s.startswith("protocol: ours (the paper publishes no motion figures") for s in result["substitutions"])
    assert "no published figures were found" in (out / "table.md").read_text()
    dry = main(["motion", "--dry_run", "--output_dir", str(tmp_path / "d")])  # the config's record: 3 texts
    assert dry["evaluations"] == 100 * (3 + 3 + 5 + 3) * 50


@pytest.mark.parametrize("task", ["wide", "ambiguous", "mesh"])
def test_protocol_end_to_end(tmp_path, task):
    """Wide images, ambiguous images and the mesh, each end to end on the embedded models: SyncSDE alone, one sample
    per record at scale 0.004, one step; its figures measured from its folder (or said unavailable, with why) beside
    the paper's row (no published figure: none shown), the table written."""
    out = tmp_path / task
    args = [task, "--scale", "0.004", "--methods", "syncsde", "--probe", "0", "--bootstrap", "10"]
    result = main([*args, "--output_dir", str(out), *FAST])
    ours = next(r for r in result["rows"] if r["method"] == "syncsde")
    assert ours["num_samples"] >= 1 and (out / "syncsde" / "manifest.json").exists()
    figures = ours["figures"].values()
    assert all(f["paper"] is None and ("measured" in f or f["unavailable"]) for f in figures)
    assert any("measured" in f for f in figures)
    assert all(math.isfinite(f["measured"]) for f in figures if "measured" in f)
    assert (out / "table.md").exists()
