"""The embedded flow-matching model ``syncsde:tiny-flow``: its recipe trains and exports an SD3 folder, the shipped
folder samples as diffusers' own StableDiffusion3Pipeline, and every task's flow config runs on it through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_tiny import run_fit

from syncsde.backbones import StableDiffusion3
from syncsde.backbones.diffusers import embedded_path, load_backbone
from syncsde.cli import main
from syncsde.strategies import SyncSDE
from syncsde.tasks import TextToImage, WideImage
from syncsde.tiny import models as M

ROOT = Path(__file__).resolve().parents[1]
FLOW_CONFIGS = sorted(p.stem for p in (ROOT / "configs/tiny/flow").glob("*.yaml"))


@pytest.fixture(scope="module")
def flow():
    return StableDiffusion3("syncsde:tiny-flow")


def test_flow_recipe_trains_and_exports_an_sd3_folder(tmp_path):
    ema = '[{"class_path": "lightning.pytorch.callbacks.EMAWeightAveraging", "init_args": {"decay": 0.9}}]'
    small = ["--model.init_args.width", "32", "--model.init_args.layers", "1", "--model.init_args.warmup_steps", "1"]
    folder = run_fit("configs/tiny/train_flow.yaml", tmp_path, *small, callbacks=ema)
    backbone = load_backbone(str(folder))  # the SD3 family, by its model_index.json
    assert isinstance(backbone, StableDiffusion3) and backbone.prediction_type == "flow"
    assert (backbone.channels, backbone.sample_size, backbone.scale_factor) == (4, 16, 4)
    assert backbone.max_sequence_length == M.MAX_TOKENS  # the T5 length it was trained with
    trained = embedded_path("tiny-ldm") / "vae"
    assert json.loads((folder / "vae" / "config.json").read_text())["shift_factor"] == 0.0
    assert json.loads((trained / "config.json").read_text())["scaling_factor"] == backbone.vae.config.scaling_factor
    context = backbone.encode_prompts(["a sunny day over grass"])
    v = backbone(torch.randn(1, 4, 16, 16), torch.tensor([500.0]), context)
    assert v.shape == (1, 4, 16, 16) and torch.isfinite(v).all()


def test_shipped_flow_model_samples_as_the_diffusers_pipeline(flow):
    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline.from_pretrained(embedded_path("tiny-flow"), local_files_only=True)
    x_T = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    prompt = "a sunset over the sea, a white boat in the middle"
    kw = dict(height=64, width=64, num_inference_steps=5, guidance_scale=3.0, max_sequence_length=M.MAX_TOKENS)
    ref = pipe(prompt, latents=x_T.clone(), output_type="pt", **kw).images[0]
    task = TextToImage(flow, num_inference_steps=5, guidance_scale=3.0, progress=False)
    ours = task.generate([prompt], x_T=x_T[:, None])[0].image
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)
    # one window of a wide image is the same plain sample
    wide = WideImage(flow, SyncSDE(5.0), height=64, width=64, stride=16, num_inference_steps=5, guidance_scale=3.0)
    torch.testing.assert_close(wide.generate([prompt], x_T=x_T[:, None])[0].image, ref, atol=1e-4, rtol=0)


def test_flow_model_defaults(flow):
    assert flow.max_sequence_length == M.MAX_TOKENS and flow.scheduler_config()["shift"] == M.FLOW_SCHEDULER["shift"]
    assert flow.settings(torch.device("cpu"))["max_sequence_length"] == M.MAX_TOKENS  # in every sidecar


@pytest.mark.parametrize("config", FLOW_CONFIGS)
def test_every_flow_config_runs_on_the_embedded_flow_model(config, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / config
    main(
        [
            "predict",
            "--config",
            f"configs/tiny/flow/{config}.yaml",
            "--model.init_args.num_inference_steps=2",
            "--trainer.enable_progress_bar=false",
            "--trainer.callbacks=[]",
            "--output_dir",
            str(out),
        ]
    )
    sidecars = sorted(out.glob("0*.json"))
    assert sidecars
    side = json.loads(sidecars[0].read_text())
    assert side["backbone"] == "syncsde:tiny-flow" and (out / side["files"]["image"]).is_file()
