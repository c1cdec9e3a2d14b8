"""The wide_prompts task: one prompt per window along the width, on the wide-image geometry; a task added as a
plug-in (its file, its YAML, its entry point)."""

import json
from pathlib import Path

import pytest

from syncsde import registry
from syncsde.backbones import GaussianBackbone
from syncsde.cli import main, methods_table
from syncsde.errors import InputError
from syncsde.strategies import Independent
from syncsde.tasks import PromptedWideImage

ROOT = Path(__file__).resolve().parents[1]


def task(**kw):
    backbone = GaussianBackbone(channels=4, sample_size=8, scale_factor=8)
    return PromptedWideImage(backbone, Independent(), height=64, width=256, stride=16, progress=False, **kw)


def test_the_prompts_are_laid_out_left_to_right_over_the_windows():
    t = task()  # 13 windows of 64 px at a stride of 16 px over 256 px
    assert t.window_prompts(["a"]) == ["a"] * 13  # one prompt: the wide-image task
    assert t.window_prompts(["a", "b"]) == ["a"] * 7 + ["b"] * 6  # window j gets prompt floor(2j/13)
    assert t.window_prompts(["a", "b", "c"]) == ["a"] * 5 + ["b"] * 4 + ["c"] * 4
    assert t.window_prompts(list("abcdefghijklm")) == list("abcdefghijklm")  # one prompt per window
    with pytest.raises(InputError, match="at most 13"):
        t.window_prompts([str(k) for k in range(14)])
    with pytest.raises(InputError, match="non-empty list of strings"):
        t.window_prompts("a sunny day")


def test_grid_rows_repeat_the_column_prompts():
    backbone = GaussianBackbone(channels=4, sample_size=8, scale_factor=8)
    grid = PromptedWideImage(backbone, Independent(), height=96, width=128, stride=32, progress=False)
    prompts = grid.window_prompts(["left", "right"])
    cols = grid.grid.cols.n
    assert len(prompts) == grid.n and prompts[:cols] == prompts[cols:]


def test_registered_and_run_by_short_names(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert registry.get("task", "wide_prompts") is PromptedWideImage
    assert "wide_prompts" in [t for t in methods_table("wide_prompts").split() if t.strip(",") == "wide_prompts"]
    out = tmp_path / "o"
    main([
        "predict", "--config", "configs/tiny/wide_prompts.yaml", "--method", "canonical", "--output_dir", str(out),
        "--model.num_inference_steps", "2", "--trainer.enable_progress_bar", "false",
        "--data.records", '[{"prompts": ["a sunny day over sand", "a sunset over the sea"]}]',
    ])  # fmt: skip
    meta = json.loads((out / "00000.json").read_text())
    assert meta["task"] == "wide_prompts" and meta["preset"] == "canonical"
    assert meta["prompt"] == "a sunny day over sand | a sunset over the sea"
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["clip_score_reading1"]["available"] and metrics["clip_score_reading2"]["available"]


def test_a_bad_record_stops_before_anything_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "o"
    records = '[{"prompts": ["a sunny day over sand"]}, {"prompt": "no list"}]'
    with pytest.raises(SystemExit) as e:
        main(["predict", "--config", "configs/tiny/wide_prompts.yaml", "--output_dir", str(out), "--data.records", records])
    assert e.value.code == 2 and "non-empty list of strings" in capsys.readouterr().err
    assert not out.exists() or not list(out.iterdir())
