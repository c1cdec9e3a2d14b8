"""The plug-in contract (syncsde/registry.py): short names on the command line and in configs, one compatibility
check with one-line refusals, and errors in the option form the user typed."""

import json
import sys
from pathlib import Path

import pytest
import yaml

from syncsde import registry
from syncsde.backbones import GaussianBackbone, StableDiffusion
from syncsde.cli import main, methods_table
from syncsde.errors import InputError
from syncsde.lightning_cli import expand
from syncsde.motion.procedural import ProceduralMotion
from syncsde.strategies import MultiDiffusion, SyncSDE, SyncTweedies
from syncsde.tasks import ImageEdit, MaskTextToImage, WideImage

ROOT = Path(__file__).resolve().parents[1]


def error_line(capsys, *args) -> str:
    with pytest.raises(SystemExit) as e:
        main(list(args))
    assert e.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("syncsde: error: "), lines
    return lines[0]


def test_every_method_builds_and_names_are_forgiving():
    for name in registry.names("method"):
        method = registry.get("method", name)
        assert method.build().describe()["method"] == method.strategy.name
    assert registry.get("method", "Visual-Anagrams") is registry.get("method", "visual_anagrams")
    with pytest.raises(InputError, match="no method named 'nosuch'; choose one of paper, canonical"):
        registry.get("method", "nosuch")


def test_method_switch_expands_after_the_config_and_before_later_options(monkeypatch):
    monkeypatch.chdir(ROOT)
    argv = expand(
        ["predict", "--method", "syncmvd", "--config", "configs/tiny/mesh.yaml", "--model.strategy.case", "1"]
    )
    i = argv.index("--model.strategy")
    assert argv.index("--config") < i < argv.index("--model.strategy.case")  # config, method, then the user's option
    assert json.loads(argv[i + 1]) == {
        "class_path": "syncsde.strategies.synctweedies.SyncTweedies",
        "init_args": {"case": 5, "sync_t_min": 200},
    }
    assert argv[argv.index("--model.multiview_attention") + 1] == "true"  # the task option the method sets
    wide = expand(["predict", "--config", "configs/tiny/wide.yaml", "--model.strategy=independent"])
    assert "--model.multiview_attention" not in wide  # a mesh-only option is not set on another task
    assert expand(["--model.backbone", "sdxl"])[1] == "syncsde.backbones.sdxl.StableDiffusionXL"
    assert expand(["--model.strategy", "SyncTweedies"]) == ["--model.strategy", "SyncTweedies"]  # class names pass


def test_short_names_in_a_config_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    cfg = yaml.safe_load((ROOT / "configs/tiny/wide.yaml").read_text())
    cfg["model"]["class_path"] = "wide_image"
    cfg["model"]["init_args"]["backbone"]["class_path"] = "sd"
    cfg["model"]["init_args"]["strategy"] = "synctweedies_5"
    path = tmp_path / "short.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(SystemExit):
        main(["predict", "--config", str(path), "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)["model"]
    assert printed["class_path"] == "syncsde.tasks.wide_image.WideImage"
    assert printed["init_args"]["backbone"]["class_path"] == "syncsde.backbones.diffusers.StableDiffusion"
    assert printed["init_args"]["strategy"]["class_path"] == "syncsde.strategies.synctweedies.SyncTweedies"
    assert printed["init_args"]["strategy"]["init_args"]["case"] == 5
    cfg["method"] = "canonical"  # a top-level method, as --method: it replaces the model's strategy
    cfg["model"]["init_args"]["strategy"] = {"class_path": "SyncTweedies"}
    cfg["model"]["init_args"]["guidance_scale"] = "1e-3"  # numbers keep jsonargparse's YAML reading
    path.write_text(yaml.safe_dump(cfg).replace("'1e-3'", "1e-3"))
    with pytest.raises(SystemExit):
        main(["predict", "--config", str(path), "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert "method" not in printed or printed["method"] is None
    assert printed["model"]["init_args"]["strategy"]["init_args"]["preset"] == "canonical"
    assert printed["model"]["init_args"]["guidance_scale"] == 0.001


def test_errors_show_the_option_form_the_user_typed(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    short = error_line(capsys, "predict", "--config", "configs/tiny/wide.yaml", "--model.strategy.zz", "3")
    assert "--model.strategy.zz is not an option of" in short and "init_args" not in short
    long = error_line(
        capsys, "predict", "--config", "configs/tiny/wide.yaml", "--model.init_args.strategy.init_args.zz", "3"
    )
    assert "--model.init_args.strategy.init_args.zz is not an option of" in long
    unknown = error_line(capsys, "predict", "--config", "configs/tiny/wide.yaml", "--method", "nosuch")
    assert "no method named 'nosuch'" in unknown and "syncmvd" in unknown


def test_one_check_refuses_in_one_line_with_what_is_missing_and_what_serves(tiny_sd_dir):
    image = GaussianBackbone(channels=4, sample_size=8, scale_factor=8)
    with pytest.raises(
        InputError,
        match="SyncTweedies needs a task that provides canonical .*; the edit task does "
        "not; tasks that do: .*wide_image",
    ):
        ImageEdit(StableDiffusion(str(tiny_sd_dir)), SyncTweedies())
    with pytest.raises(
        InputError, match="MultiDiffusion needs a task that provides regions .*tasks that do: .*mask_t2i"
    ):
        WideImage(image, MultiDiffusion(bootstrap_steps=20), height=64, width=128, stride=32)
    MaskTextToImage(image, MultiDiffusion(bootstrap_steps=20))  # the regions are there
    with pytest.raises(InputError, match="the wide_image task needs a backbone with images .*ProceduralMotion"):
        WideImage(ProceduralMotion(clips=8, rank=4), SyncSDE())
    with pytest.raises(
        InputError, match="the edit task needs a backbone with attention_maps .*backbones that serve: sd"
    ):
        ImageEdit(image, SyncSDE())


def test_methods_listing_follows_what_tasks_provide(capsys):
    edit = methods_table("edit")
    assert "--method paper" in edit and "--method canonical" not in edit  # editing has no canonical variable
    assert "--method syncmvd" in methods_table("mesh") and "--method syncmvd" not in methods_table("wide_image")
    main(["methods", "--task", "mask_t2i"])
    assert "--method multidiffusion_bootstrap" in capsys.readouterr().out


def test_help_lists_plug_in_commands_without_importing_lightning():
    import subprocess

    code = "import sys; from syncsde.cli import main; main(['--help']); print('lightning' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.stdout.strip().endswith("False") and "compare" in r.stdout and "evaluate" in r.stdout, r.stdout
