"""Every shipped config parses; every tiny config runs end to end on the embedded models."""

import json
from pathlib import Path

import pytest

from syncsde.cli import main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml"))
TINY = ["wide", "mask_t2i", "ambiguous", "edit", "motion", "mesh", "canvas", "regions", "sphere", "wide_prompts"]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_config_parses(config, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    command = "fit" if config.name.startswith("train_") else "predict"
    with pytest.raises(SystemExit) as e:
        main([command, "--config", str(config), "--print_config"])
    assert e.value.code in (0, None)
    assert "class_path" in capsys.readouterr().out


@pytest.mark.parametrize("name", TINY)
def test_tiny_config_runs(name, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / name
    main(
        [
            "predict",
            "--config",
            f"configs/tiny/{name}.yaml",
            "--output_dir",
            str(out),
            "--model.init_args.num_inference_steps",
            "3",
            "--trainer.enable_progress_bar",
            "false",
        ]
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_samples"] >= 2
    assert all((out / s["files"]["image"]).exists() for s in manifest["samples"])
    if name != "motion":  # the image tasks' configs carry the metrics callback
        metrics = json.loads((out / "metrics.json").read_text())["metrics"]
        assert metrics["clip_score"]["available"]
