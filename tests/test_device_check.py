"""The device check (evaluation/benchmarks/device.py): its --tiny run on the CPU, so that it never rots, and the logic
of its GPU path without a GPU: the real-width configs against the released checkpoints' parameter counts (built on
the meta device), the folders it loads with random weights, and the table."""

import json

import pytest
import torch

from syncsde.evaluation.benchmarks import device as D


@pytest.mark.parametrize("family,component", sorted(D.KNOWN_PARAMETERS))
def test_real_width_configs_match_the_released_parameter_counts(family, component):
    with torch.device("meta"):
        module = D.build_component(D.family_config(family)[component])
    millions = sum(p.numel() for p in module.parameters()) / 1e6
    published, tolerance = D.KNOWN_PARAMETERS[family, component]
    assert millions == pytest.approx(published, abs=tolerance)


def test_config_folder_loads_through_the_backbone_with_random_weights_on_meta(tmp_path):
    """The GPU path's loading (configs only, random weights created on the device), here on the meta device: SD-1.5
    + its ControlNet at real width, no memory allocated."""
    folders = D.save_config_folder("sd15", tmp_path / "sd15")
    assert not list(tmp_path.rglob("*.safetensors"))
    backbone = D.make_backbone("syncsde.backbones.StableDiffusionControlNet", folders, torch.device("meta"))
    assert backbone.unet.dtype == torch.float32 and backbone.unet.device.type == "meta"  # auto off CUDA
    assert sum(p.numel() for p in backbone.unet.parameters()) / 1e6 == pytest.approx(859.5, abs=0.1)
    assert backbone.unet.config.cross_attention_dim == backbone.controlnet.config.cross_attention_dim == 768
    assert torch.get_default_dtype() == torch.float32  # restored


def test_deepfloyd_and_mdm_folders_load_with_random_weights_on_meta(tmp_path):
    """IF-I-M with its T5-XXL encoder and IF-II-M as its upscaler, MDM with CLIP ViT-B/32: real width, no memory."""
    from syncsde.backbones.upscaler import IFUpscaler

    folders = D.save_config_folder("if", tmp_path / "if")
    meta = torch.device("meta")
    stage1 = D.make_backbone("syncsde.backbones.DeepFloydIF", folders, meta)
    with D.random_weights(meta, torch.float16):
        stage2 = IFUpscaler(str(folders["upscaler"]))
    count = lambda m: sum(p.numel() for p in m.parameters()) / 1e6  # noqa: E731
    assert count(stage1.text_encoder) == pytest.approx(4762.3, abs=0.1)
    assert stage2.unet.dtype == torch.float16 and stage2.unet.config.sample_size == 256
    mdm = D.make_backbone("syncsde.motion.mdm.MDM", D.save_config_folder("mdm", tmp_path / "mdm"), meta)
    assert count(mdm._load_clip()[0]) == pytest.approx(151.3, abs=0.1) and mdm.net.embed_text.in_features == 512
    assert count(mdm.net) == pytest.approx(17.9, abs=0.1)


def test_table_names_the_gpu_and_gives_the_ratios():
    rows = [
        {"section": "task", "name": "wide", "ok": True, "shape": [3, 512, 2048], "dtype": "torch.float16",
         "seconds": 3.0, "peak_mib": 9000.0},
        {"section": "task", "name": "wide_flux", "ok": False, "error": "RuntimeError: boom"},
        {"section": "panorama 512×2048", "name": "syncsde SyncSDE (13 windows)", "ok": True, "s_per_step": 0.5,
         "seconds": 2.0, "peak_mib": 4000.0},
        {"section": "panorama 512×2048", "name": "diffusers StableDiffusionPanoramaPipeline (25 windows), "
         "view_batch_size 1", "ok": True, "s_per_step": 2.0, "seconds": 5.0, "peak_mib": 3000.0},
        {"section": "panorama 512×2048", "name": "diffusers pipeline, view_batch_size 25", "ok": True,
         "s_per_step": 1.0, "seconds": 3.0, "peak_mib": 8000.0},
    ]  # fmt: skip
    text = D.table(rows, "NVIDIA H100 80GB HBM3", 2)
    assert "**NVIDIA H100 80GB HBM3**" in text and "FAILED: RuntimeError: boom" in text
    assert "ok 3 × 512 × 2048 (float16)" in text
    assert "0.25× its default view_batch_size, 0.50× its best (diffusers pipeline, view_batch_size 25)" in text
    assert "Peak memory: 0.50× its best's." in text


def test_tiny_run_on_the_cpu(tmp_path):
    data = D.main(["--tiny", "--out", str(tmp_path / "device.json")])
    assert json.loads((tmp_path / "device.json").read_text()) == data
    failed = [r for r in data["rows"] if not r["ok"]]
    assert not failed
    names = {r["name"] for r in data["rows"]}
    assert {name for name, _, _ in D.RUNS} <= names
    assert sum(r["section"] == "panorama 512×2048" for r in data["rows"]) >= 4
    assert len(data["rows"]) == len(D.RUNS) + D.PANORAMA_CHECKS
