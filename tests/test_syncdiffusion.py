"""SyncDiffusion (BASELINES.md §9): the public code's arithmetic, re-derived here; its limits; its gradient."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from syncsde.backbones import StableDiffusion
from syncsde.backbones.base import guided_eps, take_rows
from syncsde.coupling import Differentiable
from syncsde.errors import InputError
from syncsde.perceptual import clip_network, torchvision_installed
from syncsde.strategies import MultiDiffusion, SyncDiffusion
from syncsde.tasks import SpherePanorama, WideImage

ROOT = Path(__file__).resolve().parents[1]
BATCH = [{"prompt": "a wide river", "sample_id": 0, "seed": 0}]
GUIDANCE = 3.0


@pytest.fixture(scope="module")
def sd(tiny_sd_dir):
    return StableDiffusion(str(tiny_sd_dir))  # 8x8 latents, 64 px images


@pytest.fixture(scope="module")
def net():
    return clip_network()  # the embedded tiny CLIP (LPIPS needs torchvision)


def wide(sd, strategy, height=64, width=128, steps=2):
    """A 64 x 128 px wide image (3 windows at a stride of 4 latents), or 96 x 96 (a 2 x 2 grid)."""
    return WideImage(
        sd, strategy, height=height, width=width, stride=32, vertical_stride=32, init_from_canonical=True,
        num_inference_steps=steps, guidance_scale=GUIDANCE, progress=False,
    )  # fmt: skip


def canvas_noise(height=64, width=128, seed=0):
    return torch.randn(1, 4, height // 8, width // 8, generator=torch.Generator().manual_seed(seed))


def public_syncdiffusion(backbone, net, z, steps, weight, decay, thres, freq=1, tile=8, stride=4):
    """The public ``sample_syncdiffusion`` loop on the canvas latent z (1, C, H, W): views row by row, the middle one
    the anchor; per step, the anchor's x̂₀ decoded without gradient, then every view in turn: its gradient of the
    perceptual loss through the UNet, DDIM's x̂₀ and the VAE, a step of w·decay^i down it (not for the anchor), one
    DDIM step from the moved view, and the views' average."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(backbone.scheduler_config())
    scheduler.set_timesteps(steps)
    context = backbone.encode_prompts(["", BATCH[0]["prompt"]])  # unconditional, conditional
    H, W = z.shape[-2:]
    views = [(r, c) for r in range(0, H - tile + 1, stride) for c in range(0, W - tile + 1, stride)]
    anchor_index = len(views) // 2

    def eps(v, t):
        u, c = backbone.unet(torch.cat([v, v]), t, encoder_hidden_states=context).sample.chunk(2)
        return u + GUIDANCE * (c - u)

    def decode(x0):
        return (backbone.vae.decode(x0 / backbone.vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)

    for i, t in enumerate(scheduler.timesteps):
        value, count = torch.zeros_like(z), torch.zeros_like(z)
        sync = (i + 1) % freq == 0 and i < thres
        if sync:
            r, c = views[anchor_index]
            va = z[:, :, r : r + tile, c : c + tile]
            anchor = decode(scheduler.step(eps(va, t), t, va).pred_original_sample)
        for k, (r, c) in enumerate(views):
            view = z[:, :, r : r + tile, c : c + tile].clone()
            if sync:
                with torch.enable_grad():
                    v = view.clone().requires_grad_()
                    loss = net.distance(decode(scheduler.step(eps(v, t), t, v).pred_original_sample), anchor)
                    g = torch.autograd.grad(loss.sum(), v)[0]
                if k != anchor_index:
                    view = view - weight * decay**i * g
            value[:, :, r : r + tile, c : c + tile] += scheduler.step(eps(view, t), t, view).prev_sample
            count[:, :, r : r + tile, c : c + tile] += 1
        z = torch.where(count > 0, value / count, value)
    return z


@pytest.mark.parametrize("size", [(64, 128), (96, 96)], ids=["one row", "2-D grid"])
def test_equals_the_public_code(sd, net, size):
    """Two steps, the gradient step in the second only (sync_freq 2), with 3 windows in a row or 2 x 2."""
    strategy = SyncDiffusion(sync_weight=200.0, sync_decay_rate=0.5, sync_freq=2, network="clip")
    task = wide(sd, strategy, *size)
    z = canvas_noise(*size)
    with torch.no_grad():
        ours = task.assemble_latent(task.trajectories(BATCH, x_T=task.crops(z)))
        reference = public_syncdiffusion(sd, net, z, 2, 200.0, 0.5, 10, freq=2)
        multidiffusion = public_syncdiffusion(sd, net, z, 2, 200.0, 0.5, 0)
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4)
    assert (ours - multidiffusion).abs().max() > 1e-2  # the gradient step matters: the comparison can fail


def test_no_weight_or_no_steps_is_multidiffusion(sd):
    z = canvas_noise(seed=1)  # 2 steps, a gradient step in the first when synced
    runs = {}
    for name, strategy in {
        "multidiffusion": MultiDiffusion(),
        "weight 0": SyncDiffusion(sync_weight=0.0, network="clip"),
        "thres 0": SyncDiffusion(sync_thres=0, network="clip"),
        "synced": SyncDiffusion(sync_weight=200.0, sync_thres=1, network="clip"),
    }.items():
        task = wide(sd, strategy)
        runs[name] = task.trajectories(BATCH, x_T=task.crops(z))
    assert torch.equal(runs["weight 0"], runs["multidiffusion"])
    assert torch.equal(runs["thres 0"], runs["multidiffusion"])
    assert not torch.allclose(runs["synced"], runs["multidiffusion"], atol=1e-3)


def test_weights_follow_decay_frequency_and_threshold():
    s = SyncDiffusion(sync_weight=20.0, sync_decay_rate=0.5, sync_freq=2, sync_thres=5, network="clip")
    assert [s.weight(i) for i in range(7)] == [0.0, 10.0, 0.0, 2.5, 0.0, 0.0, 0.0]  # i = 1, 3 only; 20·0.5^i


def problem_and_step(sd):
    """The 3-window wide image's problem with the differentiable provision, its states and its first step."""
    task = wide(sd, SyncDiffusion(network="clip"))
    cond, uncond = task.conditioning(BATCH)

    def eps(x, step, trajectories):  # the guided ε of those windows, with gradients (as the task's own call)
        B, k = x.shape[:2]
        rows = [b * task.n + j for b in range(B) for j in trajectories]
        c, u = take_rows(cond, rows), None if uncond is None else take_rows(uncond, rows)
        return guided_eps(task.backbone, x.flatten(0, 1), step, c, u, task.guidance_scale).unflatten(0, (B, k))

    problem = replace(task.problem(BATCH), differentiable=Differentiable(eps, task.backbone.decode))
    x = task.crops(canvas_noise(seed=2)) + 0.3 * torch.randn(1, 3, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    return task, problem, x, task.schedule(x.shape[2:]).steps[0]


def window_losses(strategy, problem, x, step):
    """L(D(x̂₀^j), D(x̂₀^a)) of every window j, in float64."""
    diff, a = problem.differentiable, x.shape[1] // 2
    with torch.no_grad():
        images = diff.decode(step.x0(x, diff.eps(x, step, range(x.shape[1]))).flatten(0, 1))
        return strategy.perceptual(x.device).distance(images, images[a : a + 1].expand_as(images))


def test_the_step_moves_windows_toward_the_anchor(sd):
    task, problem, x, step = problem_and_step(sd)
    g = task.strategy.gradient(x, step, problem)
    assert torch.equal(g[:, 1], torch.zeros_like(g[:, 1])) and (g[:, [0, 2]].abs().sum(dim=(2, 3, 4)) > 0).all()
    before = window_losses(task.strategy, problem, x, step)
    after = window_losses(task.strategy, problem, x - 0.2 * before.max() / g.pow(2).sum() * g, step)
    assert after[1] == before[1] == 0  # the anchor stays
    assert (after[[0, 2]] < before[[0, 2]]).all(), (before, after)


def test_the_gradient_equals_a_finite_difference(sd):
    task, problem, x, step = problem_and_step(sd)
    g = task.strategy.gradient(x, step, problem)
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(4))
    v[:, 1] = 0  # the anchor's image is the fixed target
    h = 1e-2
    plus = window_losses(task.strategy, problem, x + h * v, step).sum()
    minus = window_losses(task.strategy, problem, x - h * v, step).sum()
    finite = float(plus - minus) / (2 * h)
    assert finite == pytest.approx(float((g * v).sum()), rel=2e-2)
    assert abs(finite) > 1e-3  # a derivative that can be wrong


def test_grouping_of_windows_does_not_change_the_gradient(sd):
    _, problem, x, step = problem_and_step(sd)
    one, whole = SyncDiffusion(network="clip"), SyncDiffusion(network="clip", grad_batch=None)
    torch.testing.assert_close(one.gradient(x, step, problem), whole.gradient(x, step, problem), rtol=1e-4, atol=1e-6)


def test_settings_are_checked_and_recorded(sd, monkeypatch):
    s = SyncDiffusion()
    assert s.describe() == {
        "method": "syncdiffusion", "sync_weight": 20.0, "sync_decay_rate": 0.95, "sync_freq": 1, "sync_thres": 10,
        "anchor": None, "grad_batch": 1, "network": "lpips-vgg" if s.kind == "lpips" else "tiny-clip",
    }  # fmt: skip
    monkeypatch.setattr("syncsde.perceptual.torchvision_installed", lambda: False)
    assert SyncDiffusion().describe()["network"] == "tiny-clip"  # auto without torchvision: the tiny CLIP
    with pytest.raises(InputError, match="--model.strategy.network lpips: LPIPS/VGG need torchvision"):
        SyncDiffusion(network="lpips")
    with pytest.raises(InputError, match="--model.strategy.network 'vgg': choose auto, lpips or clip"):
        SyncDiffusion(network="vgg")
    with pytest.raises(InputError, match="calls the network again within a step.*parallel: samples"):
        WideImage(sd, SyncDiffusion(network="clip"), height=64, width=128, stride=32, parallel="windows")
    task = wide(sd, SyncDiffusion(anchor=3, network="clip"))
    with pytest.raises(InputError, match="--model.strategy.anchor 3: the sample has 3 windows"):
        task.trajectories(BATCH)


def test_lpips_gradient_where_torchvision_is_installed():
    pytest.importorskip("torchvision", reason="LPIPS-VGG needs torchvision, which is not installed")
    try:
        net = SyncDiffusion(network="lpips").perceptual(torch.device("cpu"))
    except InputError as e:  # the VGG weights are downloaded on first use
        pytest.skip(f"LPIPS-VGG weights unavailable offline: {e}")
    a = torch.rand(2, 3, 64, 64, requires_grad=True)
    d = net.distance(a, torch.rand(2, 3, 64, 64))
    assert d.shape == (2,) and torch.autograd.grad(d.sum(), a)[0].abs().sum() > 0


def test_applies_to_the_sphere(sd):
    """Three horizon views averaged in the equirectangular canvas (MultiDiffusion there), a gradient step first."""
    runs = {}
    for name, strategy in {"synced": SyncDiffusion(network="clip", sync_weight=200.0, sync_thres=1),
                           "plain": MultiDiffusion()}.items():  # fmt: skip
        task = SpherePanorama(
            sd, strategy, views=[(0, 0), (0, 60), (0, 120)], height=64, viewer_size=32, prompt_prefix="",
            num_inference_steps=2, guidance_scale=GUIDANCE, progress=False,
        )  # fmt: skip
        runs[name] = task.trajectories(BATCH)
    assert torch.isfinite(runs["synced"]).all() and not torch.allclose(runs["synced"], runs["plain"], atol=1e-3)


def test_predict_from_the_command_line(tmp_path, monkeypatch):
    """`syncsde predict --method syncdiffusion` on the embedded wide config (13 windows), 2 steps, a gradient step in
    the first; `syncsde compare` runs it among the wide-image baselines (tests/test_compare.py)."""
    from syncsde.cli import main

    monkeypatch.chdir(ROOT)
    out = tmp_path / "predict"
    main(["predict", "--config", "configs/tiny/wide.yaml", "--method", "syncdiffusion", "--output_dir", str(out),
          "--data.prompts", '["a sunny day over sand"]', "--trainer.callbacks", "[]", "--model.num_inference_steps",
          "2", "--model.strategy.sync_thres", "1", "--trainer.enable_progress_bar", "false"])  # fmt: skip
    meta = json.loads((out / "00000.json").read_text())
    assert meta["method"] == "syncdiffusion" and meta["sync_weight"] == 20.0 and meta["sync_thres"] == 1
    assert meta["network"] == ("lpips-vgg" if torchvision_installed() else "tiny-clip")
