"""Mesh texturing on flow-matching models (SYNCSDE.md §6.7.1): SD3 with a depth ControlNet (``sd3_controlnet``) against
diffusers' StableDiffusion3ControlNetPipeline arithmetic, the mesh on it end to end, and what stays refused (the
embedded flow model's mesh config runs in tests/test_tiny_flow.py with every flow config)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from syncsde.backbones import StableDiffusion3, StableDiffusion3ControlNet
from syncsde.cli import main
from syncsde.errors import InputError
from syncsde.strategies import Independent, SyncSDE
from syncsde.tasks import MeshTexturing
from syncsde.testing import save_tiny_sd3, save_tiny_sd3_controlnet

ROOT = Path(__file__).resolve().parents[1]
INSTANTX = {}  # SD3-medium ControlNets (InstantX): a context embedder, zero pooled projections, latents without shift
SD35 = dict(joint_attention_dim=None, use_pos_embed=False, force_zeros_for_pooled_projection=False)  # SD3.5's
RECORD = {"mesh": "configs/assets/ball.obj", "prompt": "a blue ball", "sample_id": 0, "seed": 0}


@pytest.fixture(scope="module")
def sd3(tmp_path_factory):
    return save_tiny_sd3(tmp_path_factory.mktemp("sd3") / "sd3", num_layers=2)  # the last block takes no residual


@pytest.fixture(scope="module")
def controlnets(sd3, tmp_path_factory):
    root = tmp_path_factory.mktemp("sd3_cn")
    return {name: save_tiny_sd3_controlnet(root / name, sd3, **kw) for name, kw in (("instantx", INSTANTX),
                                                                                   ("sd35", SD35))}  # fmt: skip


def pipeline_velocity(pipe, x_sigma, t, prompt, depth_pil, scale, max_sequence_length):
    """One network call of diffusers' StableDiffusion3ControlNetPipeline (its __call__'s loop body, conditional
    branch), re-derived: the control image preprocessed to [−1, 1], through the VAE (the posterior mean where the
    pipeline samples), (z − shift)·scaling with no shift for force_zeros_for_pooled_projection ControlNets, which also
    get zero pooled projections; the prompt embeddings only for a ControlNet with joint_attention_dim."""
    cfg, ccfg = pipe.vae.config, pipe.controlnet.config
    image = pipe.image_processor.preprocess(depth_pil, height=64, width=64)
    shift = 0 if ccfg.force_zeros_for_pooled_projection else cfg.shift_factor
    control = (pipe.vae.encode(image).latent_dist.mean - shift) * cfg.scaling_factor
    embeds, _, pooled, _ = pipe.encode_prompt(prompt, None, None, do_classifier_free_guidance=False,
                                              max_sequence_length=max_sequence_length)  # fmt: skip
    blocks = pipe.controlnet(
        hidden_states=x_sigma,
        timestep=t,
        encoder_hidden_states=embeds if ccfg.joint_attention_dim is not None else None,
        pooled_projections=torch.zeros_like(pooled) if ccfg.force_zeros_for_pooled_projection else pooled,
        controlnet_cond=control,
        conditioning_scale=scale,
        return_dict=False,
    )[0]
    return pipe.transformer(
        hidden_states=x_sigma,
        timestep=t,
        encoder_hidden_states=embeds,
        pooled_projections=pooled,
        block_controlnet_hidden_states=blocks,
        return_dict=False,
    )[0]


@pytest.mark.parametrize("layout", ["instantx", "sd35"])
def test_sd3_controlnet_call_equals_the_pipeline_arithmetic(sd3, controlnets, layout):
    from diffusers import SD3ControlNetModel, StableDiffusion3ControlNetPipeline

    backbone = StableDiffusion3ControlNet(str(sd3), str(controlnets[layout]))
    controlnet = SD3ControlNetModel.from_pretrained(controlnets[layout], local_files_only=True)
    pipe = StableDiffusion3ControlNetPipeline.from_pretrained(sd3, controlnet=controlnet, local_files_only=True)
    depth = (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)
    depth_pil = Image.fromarray(np.repeat(depth[..., None], 3, -1))
    x_sigma = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([700.0])
    timesteps = [1000.0, 700.0, 400.0]
    backbone.set_control(torch.from_numpy(depth).float().div(255).expand(1, 3, -1, -1), timesteps)
    scale = backbone.control_scale(700.0)
    assert scale == pytest.approx(0.7 + 0.2 * 0.3)  # linear in the progress 1 − σ
    with torch.no_grad():
        ref = pipeline_velocity(pipe, x_sigma, t, "a blue ball", depth_pil, scale, backbone.max_sequence_length)
        x = x_sigma / (0.3**2 + 0.7**2) ** 0.5  # the backbone takes the VP state x = x_σ / r(σ), σ = 0.7
        context = backbone.encode_prompts(["a blue ball"])
        ours = backbone(x, t, context)
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)
        backbone.set_control(None, timesteps)
        plain = backbone(x, t, context)
    assert (plain - ours).abs().max() > 1e-2  # the control acts


def test_sd3_controlnet_that_does_not_fit_is_refused(sd3, tmp_path):
    narrow = save_tiny_sd3_controlnet(tmp_path / "narrow", sd3, num_attention_heads=2)
    with pytest.raises(InputError, match=r"does not fit .*\(width 16 vs 32\): use a ControlNet trained for this base"):
        StableDiffusion3ControlNet(str(sd3), str(narrow))
    inpaint = save_tiny_sd3_controlnet(tmp_path / "inpaint", sd3, extra_conditioning_channels=1)
    with pytest.raises(InputError, match=r"does not fit .*\(extra_conditioning_channels 1 vs 0\)"):
        StableDiffusion3ControlNet(str(sd3), str(inpaint))


def mesh(backbone, strategy, **kw):
    kw = dict(view_size=64, latent_texture_size=32, rgb_texture_size=64, num_inference_steps=3, progress=False,
              multiview_attention=False, turntable_frames=2, guidance_scale=5.0, **kw)  # fmt: skip
    return MeshTexturing(backbone, strategy, **kw)


def test_mesh_runs_on_sd3_with_its_depth_controlnet(sd3, controlnets, monkeypatch):
    monkeypatch.chdir(ROOT)
    backbone = StableDiffusion3ControlNet(str(sd3), str(controlnets["sd35"]))
    scales = []
    forward = backbone.controlnet.forward
    monkeypatch.setattr(backbone.controlnet, "forward", lambda *a, conditioning_scale, **k: scales.append(
        conditioning_scale) or forward(*a, conditioning_scale=conditioning_scale, **k))  # fmt: skip
    sync = mesh(backbone, SyncSDE(5.0, correction="exact", sync_t_min=0))
    assert sync.sampler == "ddim"  # the Euler step
    x_sync = sync.trajectories([RECORD])
    assert backbone.control.shape == (10, 16, 8, 8)  # the depth of each view, as latents
    steps = sync.schedule((16, 8, 8)).steps
    progress = [1 - s.t / 1000 for s in steps]  # 0, 0.25, 0.991: off past guidance_end 0.99
    assert scales == [pytest.approx(0.7 + 0.2 * p) for p in progress if p <= 0.99] and len(scales) == 2
    x_free = mesh(backbone, Independent()).trajectories([RECORD])
    torch.testing.assert_close(x_sync[:, 0], x_free[:, 0])  # view 0 is free
    assert not torch.allclose(x_sync[:, 1:], x_free[:, 1:])


def test_mesh_sd3_config_runs_on_the_tiny_folders(sd3, controlnets, tmp_path, monkeypatch):
    """configs/mesh_sd3.yaml through the CLI on the tiny SD3 and its tiny SD3.5-layout ControlNet, small and 2 steps."""
    monkeypatch.chdir(ROOT)
    small = {"view_size": 64, "latent_texture_size": 32, "rgb_texture_size": 64, "num_inference_steps": 2,
             "turntable_frames": 0}  # fmt: skip
    main(
        ["predict", "--config", "configs/mesh_sd3.yaml", "--model.backbone.model", str(sd3),
         "--model.backbone.controlnet", str(controlnets["sd35"]), "--trainer.enable_progress_bar=false",
         "--trainer.callbacks=[]", "--output_dir", str(tmp_path), *(f"--model.{k}={v}" for k, v in small.items())]
    )  # fmt: skip
    side = json.loads((tmp_path / "00000.json").read_text())
    assert side["controlnet_name"] == str(controlnets["sd35"]) and side["sampler"] == "ddim"
    assert (side["correction"], side["sync_t_min"], side["multiview_attention"]) == ("exact", 364, False)
    assert Image.open(tmp_path / "00000.png").size == (64, 64) and (tmp_path / "00000" / "mesh.glb").is_file()


def test_mesh_on_sd3_refuses_what_is_unet_or_ddpm_only(sd3):
    backbone = StableDiffusion3(str(sd3))
    with pytest.raises(InputError, match="with multiview_attention true needs a backbone with unet_attention .*"
                       r"\(StableDiffusion3\) has not; .*or set --model.multiview_attention false"):  # fmt: skip
        MeshTexturing(backbone)
    with pytest.raises(InputError, match="--model.gamma_steps reads .*flow-matching model: unset --model.gamma_steps"):
        MeshTexturing(backbone, multiview_attention=False, gamma_steps=30)
    assert MeshTexturing(backbone, multiview_attention=False).sampler == "ddim"  # the Euler step by default
    assert MeshTexturing(backbone, multiview_attention=False, sampler="ddpm").sampler == "ddpm"  # DDPM in VP terms
