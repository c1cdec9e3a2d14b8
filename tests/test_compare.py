"""The comparison command on the tiny pipeline."""

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from syncsde.compare import METHODS, main, task_of
from syncsde.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


def test_compare_wide_methods(tmp_path, tiny_sd_dir):
    cfg = yaml.safe_load((ROOT / "configs/wide.yaml").read_text())
    init = cfg["model"]["init_args"]
    init["backbone"]["init_args"]["model"] = str(tiny_sd_dir)
    init.update(height=64, width=128, stride=16, num_inference_steps=2, progress=False)
    cfg["data"]["init_args"]["prompts"] = ["a red sky", "a green field"]
    cfg["trainer"].update(accelerator="cpu", enable_progress_bar=False, callbacks=[])
    path = tmp_path / "wide.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "cmp"
    summary = main(["--config", str(path), "--output_dir", str(out)])
    assert set(summary["methods"]) == set(METHODS["wide_image"])
    md = json.loads((out / "multidiffusion" / "00000.json").read_text())
    assert md["method"] == "multidiffusion" and md["stride"] == 8  # window/8 for this 64 px backbone
    grid = Image.open(out / "grid.png")
    assert grid.size == (4 * 128, 14 + 2 * 64)
    main(["--config", str(path), "--output_dir", str(out), "--methods", "syncsde"])  # re-run: samples skipped
    with pytest.raises(InputError, match="does not apply"):
        main(["--config", str(path), "--output_dir", str(out), "--methods", "visual_anagrams"])


def test_task_of_unknown_model():
    with pytest.raises(InputError, match="no comparison"):
        task_of({"model": {"class_path": "tasks.TextToImage"}})
    assert task_of({"model": {"class_path": "tasks.wide_image.WideImage"}}) == "wide_image"
