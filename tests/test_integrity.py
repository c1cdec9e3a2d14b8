"""A run that stops on a mistake never changes an existing output folder: every pending record is validated before
anything is written (syncsde.task.SyncTask.validate, syncsde.lightning_cli.validate)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from syncsde.cli import main

ROOT = Path(__file__).resolve().parents[1]


def hashes(folder: Path) -> dict[str, str]:
    """Every file of the folder and its content hash; the lock file names the last run's process and is left out."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".syncsde.lock"
    }


def black(path: Path) -> str:
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(path)
    return str(path)


def bad_records(kind: str, tmp: Path) -> tuple[str, list[dict]]:
    """The tiny config of a task and its records: a good one, then a bad one (last)."""
    cfg = yaml.safe_load((ROOT / f"configs/tiny/{kind}.yaml").read_text())
    records = cfg["data"]["init_args"]["records"]
    good = records[0]
    if kind == "mask_t2i":
        bad = {**good, "mask": black(tmp / "black.png")}
    elif kind == "regions":
        bad = {**good, "regions": [good["regions"][0], {"prompt": "a boat", "mask": black(tmp / "black.png")}]}
    elif kind == "edit":
        (tmp / "broken.png").write_bytes(b"not an image")
        bad = {**good, "image": str(tmp / "broken.png")}
    elif kind == "mesh":
        (tmp / "broken.obj").write_text("v 0 0\nf 1 2 9\n")
        bad = {**good, "mesh": str(tmp / "broken.obj")}
    elif kind == "motion":
        bad = {"texts": ["a person walks forward", "a person sings"]}  # the embedded model knows no singing
    elif kind == "ambiguous":
        np.save(tmp / "perm3.npy", np.arange(9)[::-1].copy())  # a 3x3 grid: the 16x16 latents are not a multiple
        bad = {"prompts": ["a sunny day", "a night sky"], "views": ["identity", str(tmp / "perm3.npy")]}
    cfg["data"]["init_args"].update(records=[good, bad], samples_per_record=1)
    cfg["data"]["init_args"].pop("base_dir", None)
    if kind == "edit":
        good["image"] = str(ROOT / "configs/assets" / good["image"])
    cfg["model"]["init_args"]["num_inference_steps"] = 2
    cfg["trainer"].update(accelerator="cpu", callbacks=[])
    path = tmp / f"{kind}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.mark.parametrize("kind", ["mask_t2i", "regions", "edit", "mesh", "motion", "ambiguous"])
def test_a_bad_last_record_leaves_the_folder_byte_identical(kind, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    config = bad_records(kind, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.yaml").write_text("an earlier run's config\n")
    (out / "notes.txt").write_text("kept\n")
    before = hashes(out)
    with pytest.raises(SystemExit) as e:
        main(["predict", "--config", config, "--output_dir", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("syncsde: error: "), err
    assert hashes(out) == before


def tiny_wide(tmp: Path, reference: str | None = None, **model) -> str:
    """configs/tiny/wide.yaml, small and fast: two prompts, 64x128, 2 steps, the metrics callback (CLIP score; FID
    and KID against ``reference``)."""
    cfg = yaml.safe_load((ROOT / "configs/tiny/wide.yaml").read_text())
    cfg["model"]["init_args"].update({"width": 128, "num_inference_steps": 2, "progress": False, **model})
    cfg["data"]["init_args"]["prompts"] = ["a sunny day over grass", "a sunset over the sea"]
    cfg["trainer"].update(accelerator="cpu", enable_progress_bar=False)
    cfg["trainer"]["callbacks"][0]["init_args"].update(reference=reference, crops_per_image=1)
    path = tmp / "wide.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_a_rerun_computes_missing_metrics(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    config, out = tiny_wide(tmp_path), tmp_path / "out"
    main(["predict", "--config", config, "--output_dir", str(out)])
    first = json.loads((out / "metrics.json").read_text())
    (out / "metrics.json").unlink()  # killed after the last sample, before the metrics
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["predict", "--config", config, "--output_dir", str(out)])
    assert e.value.code == 0 and "computing its missing metrics" in capsys.readouterr().err
    again = json.loads((out / "metrics.json").read_text())
    assert again["metrics"]["num_samples"] == 2 and again["metrics"] == first["metrics"]
    before = hashes(out)
    with pytest.raises(SystemExit) as e:  # metrics up to date: nothing to do, nothing written
        main(["predict", "--config", config, "--output_dir", str(out)])
    assert e.value.code == 0 and "nothing to do" in capsys.readouterr().err and hashes(out) == before


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_ends_a_run_cleanly(signum, code, tmp_path):
    config, out = tiny_wide(tmp_path, num_inference_steps=150), tmp_path / "out"
    cfg = yaml.safe_load(Path(config).read_text())
    cfg["data"]["init_args"]["prompts"] = [f"a sunny day over grass {i}" for i in range(20)]
    Path(config).write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncsde.cli", "predict", "--config", config, "--output_dir", str(out)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    end = time.time() + 300
    while not (out / "00000.json").exists() and proc.poll() is None and time.time() < end:
        time.sleep(0.05)
    proc.send_signal(signum)
    sent = time.time()
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    lines = err.strip().splitlines()
    assert proc.returncode == code and time.time() - sent < 10, (proc.returncode, err[-2000:])
    done = sorted(int(p.stem) for p in out.glob("[0-9]*.json"))
    assert 1 <= len(done) < 20 and len(lines) == 1, err[-2000:]
    name = signal.Signals(signum).name
    assert lines[0] == (
        f"syncsde: stopped by {name}: {len(done)} of 20 samples are finished in {out}; rerun the same command to make "
        "the rest"
    )
    assert not list(out.rglob("*.tmp")) and not list(out.rglob(".*.tmp"))
    for n in done:  # finished samples are whole, and the manifest lists them
        meta = json.loads((out / f"{n:05d}.json").read_text())
        for f in meta["files"].values():
            with Image.open(out / f) as im:
                im.load()
    assert json.loads((out / "manifest.json").read_text())["num_samples"] == len(done)


def fake_folder(folder: Path, count: int, seed: int, **config) -> Path:
    """An output folder of ``count`` random 32x32 samples (sidecars, manifest) and a config.yaml whose metrics
    callback has the options ``config``."""
    folder.mkdir()
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")
        meta = {"sample_id": i, "prompt": "a sunny day", "task": "wide_image", "method": "syncsde",
                "preset": "paper", "inv_lambda": 5.0, "files": {"image": f"{i:05d}.png"}}  # fmt: skip
        (folder / f"{i:05d}.json").write_text(json.dumps(meta))
        samples.append(meta)
    (folder / "manifest.json").write_text(json.dumps({"num_samples": count, "samples": samples}))
    metrics = {"class_path": "syncsde.evaluation.Metrics", "init_args": config}
    (folder / "config.yaml").write_text(yaml.safe_dump({"trainer": {"callbacks": [metrics]}}))
    return folder


def test_kid_is_the_same_every_time(tmp_path):
    from syncsde.evaluation.evaluate import evaluate_folder

    reference = fake_folder(tmp_path / "reference", 8, seed=1)
    folder = fake_folder(tmp_path / "out", 8, seed=2, reference=str(reference), kid_subset_size=3)
    kids = [evaluate_folder(folder)["metrics"]["kid"] for _ in range(3)]
    assert kids[0]["available"] and kids[0] == kids[1] == kids[2], kids


def test_vae_tiling_is_in_the_sidecar_and_mode_on_reads_in_yaml(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    config, out = tiny_wide(tmp_path), tmp_path / "out"
    cfg = yaml.safe_load(Path(config).read_text())
    cfg["data"]["init_args"]["prompts"] = ["a sunny day over grass"]
    cfg["trainer"]["callbacks"] = []
    Path(config).write_text(yaml.safe_dump(cfg) + "")
    text = Path(config).read_text().replace("    width: 128\n", "    width: 128\n    vae_tiling: {mode: on}\n")
    Path(config).write_text(text)
    main(["predict", "--config", config, "--output_dir", str(out)])  # {mode: on}: read as 'on', not refused
    meta = json.loads((out / "00000.json").read_text())
    assert meta["vae_tiling"] == {"tile_size": None, "overlap": 0.25}
    Path(config).write_text(text.replace("{mode: on}", "{mode: 'off'}"))
    with pytest.raises(SystemExit) as e:  # a resumed run compares it
        main(["predict", "--config", config, "--output_dir", str(out), "--data.prompts", '["a", "b"]'])
    err = capsys.readouterr().err
    assert e.value.code == 2 and 'vae_tiling: {"tile_size": null, "overlap": 0.25} there, "off" now' in err, err


def test_prompt_file_replaces_the_configs_prompts(tmp_path):
    from syncsde.data import PromptDataModule

    (tmp_path / "p.txt").write_text("a castle\n")
    data = PromptDataModule(prompts=["a", "b", "c", "d"], prompt_file=str(tmp_path / "p.txt"))
    assert [s["prompt"] for s in data.samples()] == ["a castle"]


def test_table_skips_folders_without_samples(tmp_path, capsys):
    from syncsde.evaluation.table import main as table_main

    run = fake_folder(tmp_path / "run", 2, seed=0)
    (tmp_path / "analysis").mkdir()  # what the notebook command writes beside a sweep's folders
    (tmp_path / "analysis" / "lambda.png").write_bytes(b"")
    rows = table_main([str(run), str(tmp_path / "analysis")])
    err = capsys.readouterr().err.strip().splitlines()
    assert [r["folder"] for r in rows] == [str(run)] and rows[0]["preset"] == "paper"
    assert err == [f"table: skipping {tmp_path / 'analysis'}: it holds no samples (no manifest.json listing any)"]


def test_evaluate_is_quiet_and_keeps_the_method(tmp_path):
    folder = fake_folder(tmp_path / "out", 2, seed=0)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "syncsde.cli", "evaluate", str(folder)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert r.returncode == 0 and r.stderr == "", r.stderr  # no Lightning lines, no "💡 Tip"
    assert json.loads(r.stdout)["num_samples"] == 2  # the metrics JSON only
    record = json.loads((folder / "metrics.json").read_text())
    assert record["strategy"] == {"method": "syncsde", "inv_lambda": 5.0, "preset": "paper"}
    header, row = (folder / "metrics.csv").read_text().splitlines()
    assert dict(zip(header.split(","), row.split(",")))["strategy.preset"] == "paper"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", "{path} is empty; give a config with model: and data: (e.g. configs/tiny/wide.yaml)"),
        ("model:\n  a: [1, 2\n  b: 3\n", "{path} line 3, column 4: expected ',' or ']', but got ':' (YAML syntax); fix the file"),
    ],
)  # fmt: skip
def test_empty_and_broken_config_files_are_one_line_naming_the_file(text, expected, tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(SystemExit) as e:
        main(["predict", "--config", str(path)])
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines() == [f"syncsde: error: {expected.format(path=path)}"]


def test_the_rows_of_a_call_and_the_dtype_are_in_the_sidecar_and_a_resume_compares_them(tmp_path, monkeypatch, capsys):
    from syncsde.backbones import StableDiffusion

    monkeypatch.chdir(ROOT)
    config, out = tiny_wide(tmp_path), tmp_path / "out"
    cfg = yaml.safe_load(Path(config).read_text())
    cfg["data"]["init_args"]["prompts"] = ["a sunny day over grass"]
    cfg["trainer"]["callbacks"] = []
    Path(config).write_text(yaml.safe_dump(cfg))
    main(["predict", "--config", config, "--output_dir", str(out)])
    meta = json.loads((out / "00000.json").read_text())
    assert (meta["max_batch"], meta["batch_size"], meta["dtype"]) == (None, 1, "float32")
    before = hashes(out)
    for option, value, expected in [
        ("--model.max_batch", "2", "max_batch: null there, 2 now"),
        ("--data.batch_size", "2", "batch_size: 1 there, 2 now"),
        ("--model.backbone.dtype", "bfloat16", 'dtype: "float32" there, "bfloat16" now'),
    ]:
        with pytest.raises(SystemExit) as e:
            main(["predict", "--config", config, "--output_dir", str(out), option, value])
        err = capsys.readouterr().err
        assert e.value.code == 2 and expected in err, err
    with pytest.raises(SystemExit) as e:  # auto is float32 on the CPU: the same samples, nothing to do
        main(["predict", "--config", config, "--output_dir", str(out), "--model.backbone.dtype", "float32"])
    assert e.value.code == 0 and "nothing to do" in capsys.readouterr().err and hashes(out) == before
    backbone = StableDiffusion("syncsde:tiny-ldm")  # auto: float16 on CUDA, so a GPU's folder is refused on the CPU
    assert backbone.settings(torch.device("cuda"))["dtype"] == "float16"
    assert backbone.settings(torch.device("cpu"))["dtype"] == "float32"


@pytest.mark.parametrize("guidance, batch", [(7.5, 1), (1.0, 2)])
def test_sidecar_counts_network_evaluations(guidance, batch):
    """``nfe`` in a sample's sidecar is the rows the network evaluated for it: steps × windows × guidance branches."""
    from syncsde.backbones import GaussianBackbone
    from syncsde.strategies import SyncSDE
    from syncsde.tasks import WideImage

    task = WideImage(GaussianBackbone(sample_size=8), SyncSDE(), height=64, width=128, stride=32,
                     num_inference_steps=3, guidance_scale=guidance, progress=False)
    records = [{"prompt": "p", "sample_id": i, "seed": 0} for i in range(batch)]
    outputs = task.run(records)
    branches = 2 if guidance != 1.0 else 1
    assert [o.meta["nfe"] for o in outputs] == [3 * task.n * branches] * batch


def test_a_strategy_and_its_task_never_describe_the_same_key():
    """The sidecar merges the strategy's and the task's descriptions: a key both use would keep only one value (the
    global view's share ρ was overwritten by the task's flag). Every registered method on the tasks it applies to,
    built on the exact Gaussian model where the task takes it; a clash is refused when the settings are read."""
    from syncsde.backbones import GaussianBackbone
    from syncsde.errors import InputError
    from syncsde.registry import get, names
    from syncsde.strategies import SyncSDE
    from syncsde.tasks import SpherePanorama, WideImage

    build = {"wide_image": lambda s: WideImage(GaussianBackbone(sample_size=8), s, height=64, width=128, stride=32),
             "sphere": lambda s: SpherePanorama(GaussianBackbone(sample_size=8), s, height=32)}  # fmt: skip
    checked = 0
    for name in names("method"):
        method = get("method", name)
        for task_name in sorted(set(method.tasks or build) & set(build)):
            try:
                task = build[task_name](method.strategy(**method.args))
            except InputError:  # the method does not apply to this task (refused in one line when built)
                continue
            strategy, described = task.strategy.describe(), task.describe()
            assert not (strategy.keys() & described.keys()) - {"method"}, (name, task_name)
            task.settings()
            checked += 1
    assert checked > 10
    glob = WideImage(GaussianBackbone(sample_size=8), SyncSDE(preset="global", global_view=0.5), height=64, width=128,
                     stride=32)
    assert glob.settings()["global_view"] == 0.5 and glob.settings()["global_trajectory"] is True
