"""The comparison command: every method of the README's methods table on every task it lists, on the tiny configs."""

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from syncsde.errors import InputError
from syncsde.evaluation.compare import main, methods, task_of

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
    assert set(summary["methods"]) == set(methods("wide_image"))
    md = json.loads((out / "multidiffusion" / "00000.json").read_text())
    assert md["method"] == "multidiffusion" and md["stride"] == 8  # window/8 for this 64 px backbone
    grid = Image.open(out / "grid.png")
    columns = len(methods("wide_image"))  # one per method
    assert grid.size == (columns * 128 * 3, 26 + 2 * 64 * 3)  # upscaled 3x to rows of at least 192 px, labels on top
    assert len(grid.crop((0, 0, grid.width, 26)).getcolors()) > 1  # the labels are drawn in their own row
    main(["--config", str(path), "--output_dir", str(out), "--methods", "syncsde"])  # re-run: samples skipped
    with pytest.raises(InputError, match="does not apply"):
        main(["--config", str(path), "--output_dir", str(out), "--methods", "visual_anagrams"])


def test_task_of_unknown_model():
    with pytest.raises(InputError, match="no comparison"):
        task_of({"model": {"class_path": "syncsde.tasks.TextToImage"}})
    assert task_of({"model": {"class_path": "syncsde.tasks.wide_image.WideImage"}}) == "wide_image"


TINY_CONFIG = {
    "wide_image": "wide",
    "mask_t2i": "mask_t2i",
    "ambiguous": "ambiguous",
    "edit": "edit",
    "mesh": "mesh",
    "motion": "motion",
}
# what each method's folder records as its strategy (sidecar "method")
STRATEGY_NAME = {"syncmvd": "synctweedies", "multidiffusion_bootstrap": "multidiffusion"}
# the comparison of each task: the config's SyncSDE and the paper's baselines
METHODS = {
    "wide_image": ["syncsde", "independent", "synctweedies", "multidiffusion", "spotdiffusion", "stochsync",
                   "syncdiffusion"],
    "mask_t2i": ["syncsde", "independent", "synctweedies", "multidiffusion_bootstrap"],
    "ambiguous": ["syncsde", "independent", "synctweedies", "visual_anagrams"],
    "edit": ["syncsde", "independent", "masactrl"],
    "mesh": ["syncsde", "independent", "syncmvd", "stochsync"],
    "motion": ["syncsde", "independent", "synctweedies", "multidiffusion", "doubletake"],
}


@pytest.mark.parametrize("task", list(METHODS))
def test_compare_runs_every_method_on_the_tiny_config(task, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / task
    args = ["--model.init_args.num_inference_steps", "2", "--trainer.enable_progress_bar", "false"]
    summary = main(["--config", f"configs/tiny/{TINY_CONFIG[task]}.yaml", "--output_dir", str(out), *args])
    assert list(summary["methods"]) == METHODS[task] == methods(task)
    for method, r in summary["methods"].items():
        assert r["num_samples"] >= 2
        assert json.loads((out / method / "00000.json").read_text())["method"] == STRATEGY_NAME.get(method, method)
    assert Image.open(out / "grid.png").height >= 26 + 2 * 192


def test_the_methods_table_is_generated_from_the_registry():
    """The docs' methods table is `syncsde methods --markdown`, written by the docs tooling: every registered method
    and, for each, the tasks it applies to."""
    from syncsde.cli import methods_table

    table = methods_table(markdown=True)
    for task, names in METHODS.items():
        for name in names[1:]:
            row = next(line for line in table.splitlines() if line.startswith(f"| `--method {name}`"))
            assert task in row.split("|")[3], (name, task)
    assert "| `--method canonical` |" in table and "edit" not in table.split("--method canonical")[1].split("\n")[0]


@pytest.fixture(scope="module")
def mesh_comparison(tmp_path_factory):
    """`syncsde compare` of SyncSDE and the independent baseline on configs/tiny/mesh.yaml, 2 steps."""
    out = tmp_path_factory.mktemp("mesh_compare")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        summary = main(
            ["--config", "configs/tiny/mesh.yaml", "--methods", "syncsde,independent", "--output_dir", str(out)]
            + ["--model.num_inference_steps", "2", "--trainer.enable_progress_bar", "false"]
        )
    return out, summary


def test_mesh_independent_baseline_has_no_multiview_attention(mesh_comparison, tmp_path, monkeypatch):
    """The independent baseline's views are independent: `compare` and `predict --method independent` both turn the
    mesh task's multi-view attention off, and the sidecar says so."""
    out, _ = mesh_comparison
    assert json.loads((out / "syncsde" / "00000.json").read_text())["multiview_attention"] is True
    assert json.loads((out / "independent" / "00000.json").read_text())["multiview_attention"] is False
    from syncsde.cli import main as syncsde_main

    monkeypatch.chdir(ROOT)
    syncsde_main(
        ["predict", "--config", "configs/tiny/mesh.yaml", "--method", "independent", "--output_dir", str(tmp_path)]
        + ["--model.num_inference_steps", "1", "--trainer.enable_progress_bar", "false"]
    )
    side = json.loads((tmp_path / "00000.json").read_text())
    assert side["method"] == "independent" and side["multiview_attention"] is False


def test_mesh_grid_shows_the_views_not_the_uv_atlas(mesh_comparison):
    out, _ = mesh_comparison
    grid = Image.open(out / "grid.png").convert("RGB")
    views = Image.open(out / "syncsde" / "00000_views.png").convert("RGB")  # 5 x 2 views of 64 px
    scale = -(-192 // views.height)
    cell = views.resize((views.width * scale, views.height * scale), Image.NEAREST)
    assert grid.size == (2 * cell.width, 26 + 2 * cell.height)
    assert grid.crop((0, 26, cell.width, 26 + cell.height)).tobytes() == cell.tobytes()


def test_motion_grid_wraps_filmstrips_into_rows_of_at_most_2048_px(tmp_path, monkeypatch):
    from syncsde.evaluation.compare import wrap

    strip = Image.new("RGB", (10 * 64, 64))
    for i in range(10):
        strip.paste((i * 20, 0, 0), (i * 64, 0, (i + 1) * 64, 64))
    rows = wrap(strip, 200)  # three whole frames a row, four rows
    assert rows.size == (192, 256) and rows.getpixel((0, 64)) == (60, 0, 0) and rows.getpixel((100, 192)) == (0xFF,) * 3

    monkeypatch.chdir(ROOT)
    out = tmp_path / "motion"
    main(
        ["--config", "configs/tiny/motion.yaml", "--methods", "syncsde", "--output_dir", str(out)]
        + ["--model.num_inference_steps", "2", "--trainer.enable_progress_bar", "false"]
    )
    film = Image.open(out / "syncsde" / "00000.png")
    assert film.width > 2048  # the filmstrip the grid wraps
    grid = Image.open(out / "grid.png")
    assert grid.width <= 2048 and grid.height >= 26 + 2 * 2 * film.height


def test_compare_recomputes_every_folders_metrics_after_all_methods_ran(tmp_path, monkeypatch):
    """The reference of the wide config is the independent baseline's folder, which does not exist yet when SyncSDE
    runs first: the comparison's metrics are those of the finished folders, FID for both methods."""
    monkeypatch.chdir(ROOT)
    out = tmp_path / "cmp"
    cfg = yaml.safe_load((ROOT / "configs/tiny/wide.yaml").read_text())
    cfg["trainer"]["callbacks"][0]["init_args"]["reference"] = str(out / "independent")
    cfg["data"]["init_args"]["prompts"] = cfg["data"]["init_args"]["prompts"][:3]
    path = tmp_path / "wide.yaml"
    path.write_text(yaml.safe_dump(cfg))
    summary = main(
        ["--config", str(path), "--methods", "syncsde,independent", "--output_dir", str(out)]
        + ["--model.num_inference_steps", "2", "--trainer.enable_progress_bar", "false"]
    )
    for method in ("syncsde", "independent"):
        fid = summary["methods"][method]["metrics"]["metrics"]["fid"]
        assert fid["available"] is not False, (method, fid)
        assert json.loads((out / method / "metrics.json").read_text()) == summary["methods"][method]["metrics"]
    assert summary == json.loads((out / "comparison.json").read_text())
