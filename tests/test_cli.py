"""`syncsde predict` end to end in subprocesses on the tiny pipeline: one and two processes, resume, errors."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
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


def run_in_process(args, capsys) -> tuple[int, list[str]]:
    from syncsde.cli import main

    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return code, [line for line in (captured.err + captured.out).splitlines() if line.strip()]


def test_resume_refuses_other_settings_then_overwrite_replaces_them(config, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["predict", "--config", str(config), "--output_dir", str(out), "--trainer.enable_progress_bar", "false"]
    assert run_in_process(base, capsys)[0] == 0
    (out / "00002.json").unlink()  # as if killed before the last sample was finished
    before = sorted(p.name for p in out.iterdir())
    other = ["--model.init_args.strategy.init_args.inv_lambda", "0", "--model.init_args.num_inference_steps", "2"]
    code, lines = run_in_process([*base, *other], capsys)
    assert code == 2 and len(lines) == 1, lines
    assert all(word in lines[0] for word in ("other settings", "inv_lambda", "steps", "--overwrite")), lines
    assert sorted(p.name for p in out.iterdir()) == before  # nothing written, config.yaml not replaced
    code, lines = run_in_process([*base, *other, "--overwrite", "true"], capsys)
    assert code == 0, lines
    samples = json.loads((out / "manifest.json").read_text())["samples"]
    assert len(samples) == 3 and {(s["inv_lambda"], s["steps"]) for s in samples} == {(0.0, 2)}
    assert "inv_lambda: 0.0" in (out / "config.yaml").read_text()


def test_metrics_cover_every_sample_and_evaluate_recomputes_them(config, tmp_path, capsys):
    cfg = yaml.safe_load(config.read_text())
    metrics = {"class_path": "syncsde.evaluation.Metrics", "init_args": {"clip_model": "syncsde:tiny-clip"}}
    cfg["trainer"]["callbacks"] = [metrics]
    config.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    base = ["predict", "--config", str(config), "--output_dir", str(out), "--trainer.enable_progress_bar", "false"]
    assert run_in_process(base, capsys)[0] == 0
    whole = json.loads((out / "metrics.json").read_text())["metrics"]
    assert whole["num_samples"] == 3
    (out / "00001.json").unlink()  # killed before sample 1 was finished: the rerun makes only that one
    (out / "metrics.json").unlink()
    assert run_in_process(base, capsys)[0] == 0
    resumed = json.loads((out / "metrics.json").read_text())["metrics"]
    assert resumed["num_samples"] == 3  # every sample of the manifest, not only the rerun's
    assert resumed["clip_score"]["value"] == pytest.approx(whole["clip_score"]["value"], abs=1e-4)
    code, lines = run_in_process(["evaluate", str(out)], capsys)
    assert code == 0, lines
    evaluated = json.loads((out / "metrics.json").read_text())["metrics"]
    assert evaluated["num_samples"] == 3
    assert evaluated["clip_score"]["value"] == pytest.approx(whole["clip_score"]["value"], abs=1e-4)
    code, lines = run_in_process(["evaluate", str(tmp_path / "nothing")], capsys)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("syncsde: error:")


def test_too_many_processes_refused_before_they_start(config, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["predict", "--config", str(config), "--output_dir", str(out)]
    start = time.time()
    code, lines = run_in_process([*args, "--trainer.devices", "8", "--trainer.strategy", "ddp"], capsys)
    assert code == 2 and len(lines) == 1 and "3 sample(s) to generate on 8 processes" in lines[0], lines
    assert time.time() - start < 60 and not out.exists()


def test_output_folder_that_cannot_be_written_is_one_line(config, tmp_path, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for out in (a_file, a_file / "below", Path("/proc/syncsde-out")):
        code, lines = run_in_process(["predict", "--config", str(config), "--output_dir", str(out)], capsys)
        assert code == 2 and len(lines) == 1 and "--output_dir" in lines[0], lines


def test_read_only_output_folder_is_one_line(config, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=16k", "tmpfs", str(ro)], capture_output=True)
    if r.returncode:
        pytest.skip(f"cannot mount a read-only tmpfs here (needs root): {r.stderr.decode().strip()}")
    try:
        for out in (ro, ro / "out"):
            code, lines = run_in_process(["predict", "--config", str(config), "--output_dir", str(out)], capsys)
            assert code == 2 and len(lines) == 1 and "Read-only file system" in lines[0], lines
    finally:
        subprocess.run(["umount", str(ro)], check=True)


def test_predict_on_a_training_config_and_fit_on_a_task_are_one_line(capsys):
    code, lines = run_in_process(["predict", "--config", "configs/tiny/train_ldm.yaml"], capsys)
    assert code == 2 and len(lines) == 1 and "syncsde fit --config configs/tiny/train_ldm.yaml" in lines[0], lines
    code, lines = run_in_process(["fit", "--config", "configs/tiny/wide.yaml"], capsys)
    assert code == 2 and len(lines) == 1 and "syncsde predict --config configs/tiny/wide.yaml" in lines[0], lines


def test_quiet_by_default_with_one_progress_line_in_a_log(config, tmp_path):
    cfg = yaml.safe_load(config.read_text())
    cfg["model"]["init_args"]["strategy"]["init_args"]["inv_lambda"] = 0.1  # stable at 3 steps: no warning
    cfg["trainer"].pop("enable_progress_bar")
    config.write_text(yaml.safe_dump(cfg))
    r = syncsde("predict", "--config", str(config), "--output_dir", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [line for line in (r.stdout + r.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("syncsde: 3/3 samples, 100%"), lines  # output to a file: lines
    r = syncsde("predict", "--config", str(config), "--output_dir", str(tmp_path / "v"), "--verbose", "true")
    assert "GPU available" in r.stderr  # the libraries speak again


def test_quiet_silences_library_warnings_such_as_the_kid_buffer_notice():
    """KID (the metrics callback of a config with a reference) warns about its feature buffer on every run."""
    import warnings

    from torchmetrics.image.kid import KernelInceptionDistance

    from syncsde.cli import quiet

    features = torch.nn.Flatten()
    features.num_features = 12
    with pytest.warns(UserWarning, match="Kernel Inception Distance"):
        KernelInceptionDistance(feature=features, subset_size=2)
    quiet()
    with warnings.catch_warnings(record=True) as caught:
        KernelInceptionDistance(feature=features, subset_size=2)
    assert not caught, [str(w.message) for w in caught]


def test_help_does_not_import_lightning():
    code = "import sys; from syncsde.cli import main; main(['--help']); print('lightning' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip().endswith("False"), r.stdout + r.stderr
    assert "predict" in r.stdout and "evaluate" in r.stdout


def test_threads_default_and_option(monkeypatch):
    from syncsde.lightning_cli import default_threads

    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads(2) == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    cores = len(os.sched_getaffinity(0))
    assert default_threads(1) == cores and default_threads(2) == max(1, cores // 2)
