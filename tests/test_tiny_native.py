"""The real-weight configs configs/wide_sdxl.yaml, wide_sd3.yaml and wide_flux.yaml run end to end, as shipped (native
1024 px: 13 windows of 128 latents on a 1024x4096 canvas), on the tiny native-size folders of
``python -m syncsde.testing --save-tiny DIR`` — only the model path, one prompt and one step differ (issue 13, "Done
when"; README "Backbones")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from syncsde.cli import main
from syncsde.testing import main as save_tiny

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("sdxl", "sd3", "flux")


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    save_tiny(["--save-tiny", str(folder)])
    return folder


def test_save_tiny_writes_native_size_folders_and_keeps_existing_ones(native, capsys):
    for base in ("sd", "sdxl"):  # a ControlNet fitted to each base UNet
        control = json.loads((native / f"{base}-controlnet" / "config.json").read_text())
        unet = json.loads((native / base / "unet" / "config.json").read_text())
        assert control["_class_name"] == "ControlNetModel"
        assert all(control[k] == unet[k] for k in ("cross_attention_dim", "addition_embed_type", "block_out_channels"))
    assert json.loads((native / "sd" / "unet" / "config.json").read_text())["sample_size"] == 64  # SD-1.5's 512 px
    for family in FAMILIES:
        model_index = json.loads((native / family / "model_index.json").read_text())
        denoiser = "transformer" if family != "sdxl" else "unet"
        config = json.loads((native / family / denoiser / "config.json").read_text())
        vae = json.loads((native / family / "vae" / "config.json").read_text())
        assert model_index["_class_name"].endswith("Pipeline") and vae["sample_size"] == 1024
        if family != "flux":  # Flux's transformer has no native size; its VAE's sets it
            assert config["sample_size"] == 128
    with pytest.raises(SystemExit):
        save_tiny(["--save-tiny", str(native)])
    assert "already exist" in capsys.readouterr().err


@pytest.mark.parametrize("family", FAMILIES)
def test_wide_config_runs_as_shipped_on_the_native_tiny_folder(native, family, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    shipped = yaml.safe_load((ROOT / f"configs/wide_{family}.yaml").read_text())["model"]["init_args"]
    assert (shipped["height"], shipped["width"], shipped["stride"]) == (1024, 4096, 256)
    out = tmp_path / family
    main(
        [
            "predict",
            "--config",
            f"configs/wide_{family}.yaml",
            "--model.init_args.backbone.init_args.model",
            str(native / family),
            "--model.init_args.num_inference_steps=1",
            "--data.init_args.prompts=[a red sky]",
            "--trainer.enable_progress_bar=false",
            "--output_dir",
            str(out),
        ]
    )
    side = json.loads((out / "00000.json").read_text())
    assert side["backbone"] == str(native / family) and (side["height"], side["width"]) == (1024, 4096)
    assert Image.open(out / "00000.png").size == (4096, 1024)
    assert json.loads((out / "manifest.json").read_text())["num_samples"] == 1


@pytest.mark.parametrize("config", ["mesh_sdxl", "edit_sdxl"])
def test_sdxl_mesh_and_edit_configs_run_as_shipped_on_the_tiny_folders(native, config, tmp_path, monkeypatch):
    """The commands of syncsde/docs/backbones.md, "Trying the configs without the weights": the mesh on the tiny SDXL
    and its tiny ControlNet, the edit without the BLIP weights (its record carries a prompt), 1 step."""
    monkeypatch.chdir(ROOT)
    control = ["--model.backbone.controlnet", str(native / "sdxl-controlnet")] if config == "mesh_sdxl" else []
    out = tmp_path / config
    main(
        ["predict", "--config", f"configs/{config}.yaml", "--model.backbone.model", str(native / "sdxl"), *control]
        + ["--model.num_inference_steps", "1", "--trainer.enable_progress_bar=false", "--output_dir", str(out)]
    )
    side = json.loads((out / "00000.json").read_text())
    assert side["backbone"] == str(native / "sdxl")
    assert Image.open(out / "00000.png").size == (1024, 1024)  # the texture (rgb_texture_size), the edited image


def test_controlnet_refusal_names_the_family(native, tmp_path):
    from syncsde.backbones import StableDiffusionControlNet, StableDiffusionXLControlNet
    from syncsde.errors import ModelNotFoundError

    for cls, base, title in (
        (StableDiffusionXLControlNet, "sdxl", "Stable Diffusion XL"),
        (StableDiffusionControlNet, "sd", "Stable Diffusion"),
    ):
        with pytest.raises(ModelNotFoundError, match=f"{cls.__name__} needs {title} \\('.*{base}'\\) and its ControlNet"):
            cls(str(native / base), str(tmp_path / "missing"))


@pytest.mark.parametrize("config", ["regions_sd3", "canvas_sd3", "sphere_sd3"])
def test_sd3_configs_of_the_other_tasks_run_as_shipped_on_the_tiny_folder(native, config, tmp_path, monkeypatch):
    """Regions, 2-D canvases and the sphere on SD3 (flow matching), at the native 1024 px, 1 step, one prompt."""
    monkeypatch.chdir(ROOT)
    out = tmp_path / config
    main(
        ["predict", "--config", f"configs/{config}.yaml", "--model.backbone.model", str(native / "sd3")]
        + ["--model.num_inference_steps", "1", "--trainer.enable_progress_bar=false", "--output_dir", str(out)]
        + ([] if config == "regions_sd3" else ["--data.init_args.prompts=[a red sky]"])
    )
    side = json.loads((out / "00000.json").read_text())
    assert side["backbone"] == str(native / "sd3") and side["max_sequence_length"] == 256
    size = {"regions_sd3": (1024, 1024), "canvas_sd3": (2048, 2048), "sphere_sd3": (2048, 1024)}[config]
    assert Image.open(out / side["files"]["image"]).size == size
