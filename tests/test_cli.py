"""`syncsde predict` end to end in subprocesses on the tiny pipeline: one and two processes, resume, errors."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def syncsde(*args, timeout=300):
    # one thread per process in every run: Lightning's CPU DDP sets it anyway, and bitwise equality of float
    # results needs the same reduction order
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "syncsde.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture()
def config(tmp_path, tiny_sd_dir):
    cfg = yaml.safe_load((ROOT / "configs/wide.yaml").read_text())
    init = cfg["model"]["init_args"]
    init["backbone"]["init_args"]["model"] = str(tiny_sd_dir)
    init.update(height=64, width=128, stride=16, num_inference_steps=3, progress=False)
    cfg["data"]["init_args"].update(prompts=["a red sky", "a green field", "a blue sea"], samples_per_prompt=1)
    cfg["trainer"].update(accelerator="cpu", enable_progress_bar=False, callbacks=[])
    path = tmp_path / "wide.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def outputs(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("0*.png"))}


def test_predict_one_then_two_processes_identical(config, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    r = syncsde("predict", "--config", str(config), "--output_dir", str(one))
    assert r.returncode == 0, r.stderr[-3000:]
    manifest = json.loads((one / "manifest.json").read_text())
    assert manifest["num_samples"] == 3
    assert [s["sample_id"] for s in manifest["samples"]] == [0, 1, 2]
    side = json.loads((one / "00001.json").read_text())
    assert side["prompt"] == "a green field" and side["method"] == "syncsde" and side["inv_lambda"] == 5.0
    for key in ("seed", "task", "steps", "backbone", "width", "height", "seconds"):
        assert key in side
    assert (one / "config.yaml").exists()
    assert not list(one.glob(".*tmp"))  # nothing half-written left behind

    r = syncsde(
        "predict",
        "--config",
        str(config),
        "--output_dir",
        str(two),
        "--trainer.devices",
        "2",
        "--trainer.strategy",
        "ddp",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert outputs(one) == outputs(two)  # every sample exactly once, byte-identical to one process
    assert json.loads((two / "manifest.json").read_text())["num_samples"] == 3


def test_resume_skips_finished_samples(config, tmp_path):
    out = tmp_path / "out"
    assert syncsde("predict", "--config", str(config), "--output_dir", str(out)).returncode == 0
    (out / "00001.json").unlink()  # as if killed before sample 1 was finished
    (out / "00001.png").unlink()
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("0000[02].*")}
    time.sleep(0.01)
    r = syncsde("predict", "--config", str(config), "--output_dir", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "00001.png").exists()
    assert before == {p.name: p.stat().st_mtime_ns for p in out.glob("0000[02].*")}  # untouched
    r = syncsde("predict", "--config", str(config), "--output_dir", str(out))
    assert r.returncode == 0 and "nothing to do" in r.stderr
    r = syncsde("predict", "--config", str(config), "--output_dir", str(out), "--overwrite", "true")
    assert r.returncode == 0
    assert before != {p.name: p.stat().st_mtime_ns for p in out.glob("0000[02].*")}


def test_prompt_file_and_samples_per_prompt(config, tmp_path):
    pf = tmp_path / "prompts.txt"
    pf.write_text("# two prompts\na castle\n\na forest\n")
    out = tmp_path / "out"
    r = syncsde(
        "predict",
        "--config",
        str(config),
        "--output_dir",
        str(out),
        "--data.init_args.prompts",
        "[]",
        "--data.init_args.prompt_file",
        str(pf),
        "--data.init_args.samples_per_prompt",
        "2",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    prompts = [s["prompt"] for s in json.loads((out / "manifest.json").read_text())["samples"]]
    assert prompts == ["a castle", "a castle", "a forest", "a forest"]


@pytest.mark.parametrize(
    "model, words",
    [
        ("/nonexistent/sd-folder", "not found"),
        ("someone/no-such-model", "cannot load model 'someone/no-such-model'"),
    ],
)
def test_missing_weights_one_line_error_within_seconds(config, tmp_path, model, words):
    start = time.time()
    r = syncsde(
        "predict",
        "--config",
        str(config),
        "--output_dir",
        str(tmp_path / "x"),
        "--model.init_args.backbone.init_args.model",
        model,
    )
    assert time.time() - start < 60
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("syncsde: error:") and words in last and "Traceback" not in r.stderr
    assert "backbone.init_args.model" in last  # says how to point at a local folder


def test_bad_geometry_one_line_error(config, tmp_path):
    r = syncsde(
        "predict", "--config", str(config), "--output_dir", str(tmp_path / "x"), "--model.init_args.width", "120"
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "does not fit" in r.stderr.strip().splitlines()[-1]


def test_pending_list_is_frozen_when_output_is_attached(tmp_path):
    from syncsde.data import PromptDataModule

    dm = PromptDataModule(prompts=["a", "b", "c"])
    dm.attach_output(tmp_path)
    assert [s["sample_id"] for s in dm.pending()] == [0, 1, 2]
    (tmp_path / "00000.json").write_text(json.dumps({"prompt": "a", "seed": 0}))  # another process finished one
    assert [s["sample_id"] for s in dm.pending()] == [0, 1, 2]  # the split of the work does not change
    dm.attach_output(tmp_path)
    assert [s["sample_id"] for s in dm.pending()] == [1, 2]  # a new run resumes
