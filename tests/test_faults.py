"""Faults under load: a process killed mid-sample, a full disk, two runs on one output folder.

- kill -9 mid-sample leaves no partial file under a final name (files are written to a temporary name and renamed;
  the sidecar, written last, marks a finished sample), and rerunning completes exactly the missing samples.
- A full disk ends the run with one line; the finished samples stay intact.
- Two runs on one output folder: the second is **refused** while the first holds the folder's lock (the operating
  system releases the lock of a killed run, so a rerun after a kill is never blocked).
"""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture()
def config(tmp_path, tiny_sd_dir):
    cfg = yaml.safe_load((ROOT / "configs/wide.yaml").read_text())
    init = cfg["model"]["init_args"]
    init["backbone"]["init_args"]["model"] = str(tiny_sd_dir)
    init.update(height=64, width=128, stride=16, num_inference_steps=3)
    init["strategy"]["init_args"]["inv_lambda"] = 0.1  # stable at 3 steps: no warning on stderr
    prompts = ["a red sky", "a green field", "a blue sea", "a grey town", "a white hill", "a black cat"]
    cfg["data"]["init_args"].update(prompts=prompts, samples_per_prompt=1)
    cfg["trainer"].update(accelerator="cpu", callbacks=[])
    path = tmp_path / "wide.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def start(config, out, *extra):
    cmd = [sys.executable, "-m", "syncsde.cli", "predict", "--config", str(config), "--output_dir", str(out), *extra]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def finish(proc, timeout=600):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def wait_for(predicate, timeout=300):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError


def finished(folder: Path) -> list[int]:
    return sorted(int(p.stem) for p in folder.glob("[0-9]*.json"))


def assert_intact(folder: Path):
    """Every file under a final name is complete: sidecars parse, the files they list exist and images open."""
    for sidecar in folder.glob("[0-9]*.json"):
        meta = json.loads(sidecar.read_text())
        for name in meta["files"].values():
            with Image.open(folder / name) as im:
                im.load()
    for png in folder.glob("[0-9]*.png"):
        with Image.open(png) as im:
            im.load()  # an image whose sidecar is missing (killed before it) is still whole


def test_kill_mid_sample_then_rerun_completes_exactly_the_missing(config, tmp_path):
    reference, out = tmp_path / "reference", tmp_path / "out"
    code, err = finish(start(config, reference, "--model.init_args.num_inference_steps", "100"))
    assert code == 0, err[-2000:]

    proc = start(config, out, "--model.init_args.num_inference_steps", "100")
    wait_for(lambda: len(finished(out)) >= 2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = finished(out)
    assert 2 <= len(done) < 6, done
    assert_intact(out)
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("[0-9]*.*")}

    code, err = finish(start(config, out, "--model.init_args.num_inference_steps", "100"))
    assert code == 0, err[-2000:]
    assert finished(out) == list(range(6))
    for name, mtime in before.items():
        if int(name[:5]) in done:
            assert (out / name).stat().st_mtime_ns == mtime, f"{name} was regenerated"
    assert not list(out.rglob("*.tmp")), "temporary files of the killed run were left"
    same = [p.name for p in sorted(reference.glob("0*.png"))]
    assert [p.name for p in sorted(out.glob("0*.png"))] == same
    for name in same:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    assert json.loads((out / "manifest.json").read_text())["num_samples"] == 6


def test_second_run_on_the_same_folder_is_refused(config, tmp_path):
    out, steps = tmp_path / "out", ["--model.init_args.num_inference_steps", "300"]
    first = start(config, out, *steps)
    wait_for(lambda: (out / "config.yaml").exists())  # the first run holds the lock and is generating
    code, err = finish(start(config, out, *steps))
    assert first.poll() is None, "the first run ended too early for this test"
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "another syncsde run" in lines[0] and "--output_dir" in lines[0]
    code, err = finish(first)
    assert code == 0, err[-2000:]
    assert finished(out) == list(range(6))  # every sample exactly once, all by the first run
    assert json.loads((out / "manifest.json").read_text())["num_samples"] == 6


@pytest.fixture()
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mount)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {r.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_full_disk_is_one_line_and_keeps_finished_samples(config, small_disk):
    out = small_disk / "out"
    code, err = finish(start(config, out))
    lines = err.strip().splitlines()
    assert code == 2, err[-2000:]
    assert len(lines) == 1 and lines[0].startswith("syncsde: error: no space left"), err
    assert 1 <= len(finished(out)) < 6, finished(out)
    assert_intact(out)


def test_simulated_full_disk_in_process(tmp_path, config, monkeypatch, capsys):
    """The same without a tmpfs: the third image write fails with ENOSPC."""
    from PIL import Image as PILImage

    from syncsde.cli import main

    save, calls = PILImage.Image.save, []

    def failing_save(self, fp, *args, **kwargs):
        calls.append(fp)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(self, fp, *args, **kwargs)

    monkeypatch.setattr(PILImage.Image, "save", failing_save)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(["predict", "--config", str(config), "--output_dir", str(out), "--trainer.enable_progress_bar", "false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "no space left" in err[0], err
    assert finished(out) == [0, 1]
    assert_intact(out)
    assert not list(out.rglob("*.tmp"))
