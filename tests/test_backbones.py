"""SDXL, SD3 and Flux backbones on tiny random-weight pipelines saved to disk: diffusers' own pipelines as the
reference, every strategy on every family, SyncSDE in flow-matching coordinates on an exact Gaussian model, the
tasks each family serves and the ones it refuses (the real-weight configs through the CLI: test_tiny_native.py)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from syncsde.backbones import (
    Flux,
    GaussianBackbone,
    StableDiffusion,
    StableDiffusion3,
    StableDiffusionXL,
    StableDiffusionXLControlNet,
)
from syncsde.backbones.base import guided_eps
from syncsde.backbones.flux import pack, unpack
from syncsde.cli import main
from syncsde.coupling import Coupling, SyncProblem, coupling_residuals
from syncsde.errors import InputError
from syncsde.strategies import Independent, MultiDiffusion, SyncSDE, SyncTweedies, VisualAnagrams
from syncsde.tasks import ImageEdit, MaskTextToImage, MeshTexturing, WideImage
from syncsde.testing import save_tiny_controlnet, save_tiny_flux, save_tiny_sd3, save_tiny_sdxl

ROOT = Path(__file__).resolve().parents[1]
FLUX_T5 = 32  # T5 tokens of the tiny Flux in the tests (512 for Flux.1-dev)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {
        "sdxl": save_tiny_sdxl(root / "sdxl"),
        "sd3": save_tiny_sd3(root / "sd3"),
        "flux": save_tiny_flux(root / "flux"),
    }


@pytest.fixture(scope="module")
def backbones(folders):
    return {
        "sdxl": StableDiffusionXL(str(folders["sdxl"])),
        "sd3": StableDiffusion3(str(folders["sd3"])),
        "flux": Flux(str(folders["flux"]), max_sequence_length=FLUX_T5),
    }


def wide(backbone, strategy, **kw):
    """A small wide image: 64 px windows, two windows at a stride of 32 px (two Flux tokens)."""
    kw = {"height": 64, "width": 96, "stride": 32, "num_inference_steps": 4, "progress": False, **kw}
    return WideImage(backbone, strategy, **kw)


# -- one window = the diffusers pipeline ----------------------------------------------------------------------------
def test_sdxl_one_window_equals_diffusers_pipeline(backbones, folders):
    from diffusers import DDIMScheduler, StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(folders["sdxl"], local_files_only=True, add_watermarker=False)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)  # syncsde samples SDXL with DDIM, as SD
    x_T = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    kw = dict(height=64, width=64, num_inference_steps=6, guidance_scale=5.0, output_type="pt")
    ref = pipe("a red boat", latents=x_T.clone(), **kw).images[0]
    task = wide(backbones["sdxl"], SyncSDE(5.0), width=64, num_inference_steps=6, guidance_scale=5.0)
    ours = task.generate(["a red boat"], x_T=x_T[:, None])[0].image
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)
    other = pipe("a green field", latents=x_T.clone(), **kw).images[0]
    assert (other - ref).abs().max() > 1e-2  # the comparison can tell prompts apart


def test_sd3_one_window_equals_diffusers_pipeline(backbones, folders):
    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline.from_pretrained(folders["sd3"], local_files_only=True)
    x_T = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(0))
    kw = dict(height=64, width=64, num_inference_steps=6, guidance_scale=7.0, output_type="pt")
    ref = pipe("a red boat", latents=x_T.clone(), **kw).images[0]
    task = wide(backbones["sd3"], SyncSDE(0.9), width=64, num_inference_steps=6, guidance_scale=7.0)
    ours = task.generate(["a red boat"], x_T=x_T[:, None])[0].image
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)
    other = pipe("a green field", latents=x_T.clone(), **kw).images[0]
    assert (other - ref).abs().max() > 1e-2


def test_flux_one_window_equals_diffusers_pipeline(backbones, folders):
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(folders["flux"], local_files_only=True)
    x_T = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(0))
    tokens = pipe._pack_latents(x_T, 1, 16, 8, 8)  # the pipeline's own packing
    torch.testing.assert_close(tokens, pack(x_T).flatten(2).transpose(1, 2))
    kw = dict(height=64, width=64, num_inference_steps=6, max_sequence_length=FLUX_T5, output_type="pt")
    ref = pipe("a red boat", latents=tokens.clone(), guidance_scale=3.5, **kw).images[0]
    task = wide(backbones["flux"], SyncSDE(0.9), width=64, num_inference_steps=6, guidance_scale=3.5)
    ours = task.generate(["a red boat"], x_T=pack(x_T)[:, None])[0].image
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)
    other = pipe("a red boat", latents=tokens.clone(), guidance_scale=1.0, **kw).images[0]
    assert (other - ref).abs().max() > 1e-3  # the guidance embedding matters


# -- every strategy on every family ----------------------------------------------------------------------------------
STRATEGIES = {
    "independent": Independent,
    "syncsde": lambda: SyncSDE(0.9),
    **{f"synctweedies{c}": (lambda c=c: SyncTweedies(c)) for c in range(7)},
    "multidiffusion": MultiDiffusion,
    "visual_anagrams": VisualAnagrams,
}


@pytest.mark.parametrize("family", ["sdxl", "sd3", "flux"])
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_every_strategy_runs_on_every_family(backbones, family, strategy):
    task = wide(backbones[family], STRATEGIES[strategy](), num_inference_steps=3)
    out = task.generate(["a wide river"])[0]
    assert out.image.shape == (3, 64, 96) and torch.isfinite(out.image).all()


@pytest.mark.parametrize("family", ["sdxl", "sd3", "flux"])
def test_zero_inv_lambda_gives_independent_windows(backbones, family):
    batch = [{"prompt": "a wide river", "sample_id": 0, "seed": 3}]
    runs = {
        name: wide(backbones[family], strategy, init_from_canonical=False).trajectories(batch)
        for name, strategy in {"zero": SyncSDE(0.0), "ind": Independent(), "sync": SyncSDE(0.9)}.items()
    }
    assert torch.equal(runs["zero"], runs["ind"])
    torch.testing.assert_close(runs["sync"][:, 0], runs["ind"][:, 0])  # window 0 is free
    assert not torch.allclose(runs["sync"][:, 1], runs["ind"][:, 1])


@pytest.mark.parametrize("family", ["sdxl", "sd3", "flux"])
def test_circular_wide_image(backbones, family):
    task = wide(backbones[family], SyncSDE(0.9), width=128, circular=True, num_inference_steps=3)
    assert task.n == 4 and task.generate(["a 360 view"])[0].image.shape == (3, 64, 128)


@pytest.mark.parametrize("family", ["sdxl", "sd3", "flux"])
def test_mask_t2i_with_region_multidiffusion(backbones, family, tmp_path):
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    mask.save(tmp_path / "mask.png")
    record = {
        "background": "a sky",
        "object": "a cat",
        "prompt": "a cat in the sky",
        "mask": str(tmp_path / "mask.png"),
    }
    for strategy in (SyncSDE(0.9), MultiDiffusion(bootstrap_steps=2)):  # bootstrapping encodes colours with the VAE
        task = MaskTextToImage(backbones[family], strategy, num_inference_steps=3, progress=False)
        out = task.generate([record])[0]
        assert out.image.shape == (3, 64, 64) and torch.isfinite(out.image).all()


# -- flow matching: SyncSDE at the derived rate ---------------------------------------------------------------------
def test_flow_syncsde_pulls_at_the_derived_rate():
    """On an exact flow-matching Gaussian model (x₀ ~ N(0, std²)) with one identity coupling, the residual
    d_σ = x_σ^1 − x_σ^0 in flow coordinates follows, step by step (README "Backbones", schedule docstring):

        d_σ' = [1 + (σ'−σ)(σ − (1−σ) std²)/D − (1/λ)(σ−σ')/(1−σ)] · d_σ,   D = (1−σ)² std² + σ²,

    the Euler step's own gain on d minus the SyncSDE pull; at σ = 1 there is no pull. σ_k are read from diffusers'
    scheduler, the rest is closed form: an independent check of the VP-equivalent coefficient γ_t (1/λ)(t/T)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    std, inv_lambda, steps = 0.5, 0.9, 28  # SD3's steps; 1/λ = 0.9 keeps every explicit c_t below 1
    backbone = GaussianBackbone(channels=2, sample_size=4, scale_factor=1, std=std, flow_shift=3.0)
    ref = FlowMatchEulerDiscreteScheduler(shift=3.0)
    ref.set_timesteps(steps)
    sigmas = ref.sigmas.double().tolist()
    schedule = backbone.schedule(steps)
    problem = SyncProblem(2, [Coupling(1, 0)])
    ctx = backbone.encode_prompts(["x"] * 2)
    x = torch.randn(1, 2, 2, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    strategy = SyncSDE(inv_lambda)
    rates = []
    for k, step in enumerate(schedule):
        s, s_next = sigmas[k], sigmas[k + 1]
        r, r_next = ((1 - s) ** 2 + s**2) ** 0.5, ((1 - s_next) ** 2 + s_next**2) ** 0.5
        v = guided_eps(backbone, x.flatten(0, 1).float(), step, ctx, None, 1.0).double().view_as(x)
        x_next = strategy.step(x, v, step, problem)
        d = r * coupling_residuals(x, problem.couplings)[:, 1]
        d_next = r_next * (x_next[:, 1] - x_next[:, 0])
        D = (1 - s) ** 2 * std**2 + s**2
        gain = 1 + (s_next - s) * (s - (1 - s) * std**2) / D
        pull = 0.0 if s == 1 else inv_lambda * (s - s_next) / (1 - s)
        torch.testing.assert_close(d_next, (gain - pull) * d, rtol=1e-5, atol=1e-6)
        rates.append((gain - pull) / gain)
        x = x_next
    assert rates[0] == 1 and all(0 < q < 1 for q in rates[1:])  # at 1/λ = 0.9 a pull that never overshoots


def exact_flow_model(mean: float, std: float):
    """The exact flow-matching model (shift 3) of Gaussian data on one 64×64 channel, its guided network call on a
    (B, N, ...) stack, and one x_T."""
    backbone = GaussianBackbone(channels=1, sample_size=64, scale_factor=1, mean=mean, std=std, flow_shift=3.0)
    ctx = backbone.encode_prompts(["x"])

    def denoise(x, step):
        return guided_eps(backbone, x.flatten(0, 1), step, ctx.expand(x.shape[1], -1), None, 1.0).view_as(x)

    return backbone, denoise, torch.randn(1, 1, 1, 64, 64, generator=torch.Generator().manual_seed(1))


def test_flow_sampling_equals_diffusers_euler_on_an_exact_model():
    """The flow steps in VP coordinates reproduce FlowMatchEulerDiscreteScheduler's Euler steps in flow coordinates,
    on the exact velocity of Gaussian data; their result approaches the data distribution as steps grow."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from syncsde.sampler import sample

    mean, std = 0.3, 0.5
    backbone, denoise, x_T = exact_flow_model(mean, std)
    errors = []
    for steps in (10, 40, 200):
        ours = sample(denoise, x_T, backbone.schedule(steps), Independent(), SyncProblem(1))[0, 0]
        ref = FlowMatchEulerDiscreteScheduler(shift=3.0)
        ref.set_timesteps(steps)
        x = x_T[0, 0].clone()
        for t in ref.timesteps:
            sigma = float(t) / 1000
            d, D = x - (1 - sigma) * mean, (1 - sigma) ** 2 * std**2 + sigma**2
            x = ref.step(sigma * d / D - (mean + (1 - sigma) * std**2 * d / D), t, x).prev_sample
        torch.testing.assert_close(ours, x, atol=1e-5, rtol=0)
        errors.append(abs(float(ours.std()) - std))
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.01  # Euler's discretisation error, vanishing


def test_stochastic_flow_steps_sample_the_data_and_eta_0_is_euler():
    """Sampler ddpm on a flow schedule (the DDPM posterior on the VP-equivalent ᾱ = DDIM with η = 1) and DDIM with
    η = 0.5 sample the exact model's Gaussian data (mean and std of 4096 pixels: within 0.015 at 1000 steps, 0.35
    off at 4); η = 0 is the Euler step bit for bit; the noise comes from each sample's generator."""
    from syncsde.sampler import sample

    mean, std = 0.3, 0.5
    backbone, denoise, x_T = exact_flow_model(mean, std)

    def run(steps, kind, eta=0.0, seed=2):
        schedule = backbone.schedule(steps, kind, eta)
        return sample(denoise, x_T, schedule, Independent(), SyncProblem(1), [torch.Generator().manual_seed(seed)])

    assert torch.equal(run(10, "ddim"), sample(denoise, x_T, backbone.schedule(10), Independent(), SyncProblem(1)))
    for kind, eta in (("ddpm", 0.0), ("ddim", 0.5)):
        assert all(s.stochastic for s in backbone.schedule(10, kind, eta).steps)
        errors = [
            max(abs(float(x.mean()) - mean), abs(float(x.std()) - std)) for x in (run(n, kind, eta) for n in (4, 1000))
        ]
        assert errors[1] < 0.015 and errors[1] < errors[0], (kind, errors)
        assert torch.equal(run(4, kind, eta), run(4, kind, eta)) and not torch.equal(
            run(4, kind, eta), run(4, kind, eta, 3)
        )


# -- family specifics -----------------------------------------------------------------------------------------------
def test_flux_packing_and_guidance(backbones):
    flux = backbones["flux"]
    assert (flux.channels, flux.scale_factor, flux.sample_size) == (64, 16, 4)  # 64 px native, 2x2-packed tokens
    z = torch.randn(2, 16, 8, 6)
    assert pack(z).shape == (2, 64, 4, 3) and torch.equal(unpack(pack(z)), z)
    with pytest.raises(InputError, match="scale factor 16"):
        wide(flux, SyncSDE(0.9), stride=8)  # one latent: not a whole token
    rows = []
    hook = flux.transformer.register_forward_hook(
        lambda m, args, kw, out: rows.append(kw["hidden_states"].shape[0]), with_kwargs=True
    )
    try:
        wide(flux, SyncSDE(0.9), num_inference_steps=2, guidance_scale=3.5).generate(["a cat"])
    finally:
        hook.remove()
    assert rows == [2, 2]  # two windows, one row each: no unconditional branch
    with pytest.raises(InputError, match="guidance-distilled.*no negative prompt"):
        wide(flux, SyncSDE(0.9), negative_prompt="blurry")


def test_sdxl_conditioning(backbones):
    sdxl = backbones["sdxl"]
    emb = sdxl.encode_prompts(["a cat", ""])
    assert emb["prompt_embeds"].shape == (2, 77, 64) and emb["pooled_prompt_embeds"].shape == (2, 32)
    assert emb["prompt_embeds"][1].abs().sum() == 0 and emb["pooled_prompt_embeds"][1].abs().sum() == 0  # zeros
    step = sdxl.schedule(4).steps[0]
    x = torch.randn(3, 4, 8, 8)
    cond = {k: v[[0, 0, 0]] for k, v in emb.items()}
    uncond = {k: v[[1, 1, 1]] for k, v in emb.items()}
    whole = guided_eps(sdxl, x, step, cond, uncond, 5.0)
    torch.testing.assert_close(guided_eps(sdxl, x, step, cond, uncond, 5.0, max_batch=2), whole)


def test_sdxl_vae_stays_float32_under_float16(folders, tiny_sd_dir):
    sdxl = StableDiffusionXL(str(folders["sdxl"]), dtype="float16")
    sdxl.adapt_dtype(torch.device("cpu"))
    assert sdxl.unet.dtype == torch.float16 and sdxl.vae.dtype == torch.float32  # force_upcast
    sd = StableDiffusion(str(tiny_sd_dir), dtype="float16")
    sd.adapt_dtype(torch.device("cpu"))
    assert sd.vae.dtype == torch.float16


def test_sdxl_editing(backbones, tmp_path):
    path = tmp_path / "cat.png"
    Image.fromarray((np.random.default_rng(0).random((70, 90, 3)) * 255).astype(np.uint8)).save(path)
    task = ImageEdit(backbones["sdxl"], SyncSDE(5.0), mask_res=4, num_inference_steps=4, progress=False)
    rec = {"image": str(path), "prompt": "a cat on grass", "source_word": "cat", "target_word": "dog"}
    batch = task.prepare([{**rec, "sample_id": 0, "seed": 0}])
    assert batch[0]["mask"].shape == (1, 8, 8) and set(batch[0]["mask"].unique().tolist()) <= {0.0, 1.0}
    out = task.run([{**rec, "sample_id": 0, "seed": 0}])[0]
    assert out.image.shape == (3, 64, 64) and set(out.extras) == {"reconstruction", "mask", "source"}


def test_sdxl_mesh_with_depth_controlnet(folders, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    cn = StableDiffusionXLControlNet(str(folders["sdxl"]), str(save_tiny_controlnet(tmp_path / "cn", folders["sdxl"])))
    rec = {"mesh": "configs/assets/ball.obj", "prompt": "a blue ball", "sample_id": 0, "seed": 0}
    kw = dict(view_size=64, latent_texture_size=32, rgb_texture_size=64, num_inference_steps=4, progress=False)
    kw["multiview_attention"] = False  # view 0 is free only without the attention that couples views in the network
    sync = MeshTexturing(cn, SyncSDE(5.0, sync_t_min=0), turntable_frames=2, guidance_scale=5.0, **kw)
    x_sync = sync.trajectories([rec])
    assert cn.control.shape == (10, 3, 64, 64)
    x_free = MeshTexturing(cn, Independent(), turntable_frames=2, guidance_scale=5.0, **kw).trajectories([rec])
    torch.testing.assert_close(x_sync[:, 0], x_free[:, 0])
    assert not torch.allclose(x_sync[:, 1:], x_free[:, 1:])
    mv = MeshTexturing(cn, SyncSDE(5.0), turntable_frames=0, **{**kw, "multiview_attention": True})
    assert mv.run([rec])[0].image.shape == (3, 64, 64)


# -- the ControlNet conditioning scale: the official code's arithmetic, re-derived -----------------------------------
def official_loop_scales(timesteps, frozen, start=0.7, end=0.9, guidance_start=0.0, guidance_end=0.99):
    """The scale each step's ControlNet call receives, written as the official loops compute it:
    hjl1013/SyncSDE's pipeline_mesh_texturing.py (``frozen``: the network reads ``func_params``, a dict built before
    the loop with the initial scale, while the loop anneals a local variable) and LIU-Yuxin/SyncMVD's pipeline.py (the
    annealed variable itself). ``timesteps`` is the scheduler's int64 tensor, as there; ``cond_scale =
    scale * controlnet_keep[i]`` as their ``compute_noise_preds``."""
    num_timesteps = 1000  # scheduler.config.num_train_timesteps
    n = len(timesteps)
    controlnet_keep = [1.0 - float(i / n < guidance_start or (i + 1) / n > guidance_end) for i in range(n)]
    controlnet_conditioning_scale = start
    func_params = {"controlnet_conditioning_scale": controlnet_conditioning_scale}
    seen = []
    for i, t in enumerate(timesteps):
        scale = func_params["controlnet_conditioning_scale"] if frozen else controlnet_conditioning_scale
        seen.append(float(scale * controlnet_keep[i]))
        if (1 - t / num_timesteps) < guidance_start:
            controlnet_conditioning_scale = start
        elif (1 - t / num_timesteps) > guidance_end:
            controlnet_conditioning_scale = end
        else:
            alpha = ((1 - t / num_timesteps) - guidance_start) / (guidance_end - guidance_start)
            controlnet_conditioning_scale = alpha * start + (1 - alpha) * end
    return seen


@pytest.fixture(scope="module")
def tiny_sd_controlnet(tiny_sd_dir, tmp_path_factory):
    return tiny_sd_dir, save_tiny_controlnet(tmp_path_factory.mktemp("sd_cn") / "cn", tiny_sd_dir)


def received_scales(backbone, timesteps):
    """The conditioning scale the ControlNet receives at each timestep of a backbone call (0 where it is not run)."""
    seen = []
    forward = backbone.controlnet.forward

    def spy(*args, conditioning_scale, **kwargs):
        seen[-1] = conditioning_scale
        return forward(*args, conditioning_scale=conditioning_scale, **kwargs)

    backbone.controlnet.forward = spy
    x, ctx = torch.randn(2, 4, 8, 8), backbone.encode_prompts(["a ball", ""])
    for t in timesteps:
        seen.append(0.0)
        backbone(x, torch.full((2,), int(t)), ctx)
    del backbone.controlnet.forward
    return seen


@pytest.mark.parametrize("steps", [30, 7])
def test_controlnet_scale_official_schedules(tiny_sd_controlnet, steps):
    """``scale_schedule: official`` gives exactly what the official SyncSDE code feeds its ControlNet (0.7 throughout,
    off at the last step); ``syncmvd`` what SyncMVD's code feeds it (0.7, then from about 0.89 down to
    0.7; its float32 tensors aside)."""
    from diffusers import DDPMScheduler

    from syncsde.backbones import StableDiffusionControlNet

    sd, cn = map(str, tiny_sd_controlnet)
    scheduler = DDPMScheduler.from_pretrained(sd, subfolder="scheduler")
    scheduler.set_timesteps(steps)
    timesteps = scheduler.timesteps  # int64, as the official loops iterate them
    for schedule, frozen in (("official", True), ("syncmvd", False)):
        backbone = StableDiffusionControlNet(sd, cn, scale_schedule=schedule)
        backbone.set_control(torch.rand(1, 3, 64, 64), timesteps.tolist())
        ours, official = received_scales(backbone, timesteps), official_loop_scales(timesteps, frozen)
        if frozen:
            assert ours == official  # exactly
            assert set(ours[:-1]) == {0.7} and ours[-1] == 0.0
        else:
            np.testing.assert_allclose(ours, official, rtol=1e-6)
            assert ours[0] == 0.7 and ours[1] > 0.85 and np.all(np.diff(ours[1:-1]) < 0)
    linear = StableDiffusionControlNet(sd, cn)  # the clean default: increasing in 1 - t/1000, off at the last step
    linear.set_control(torch.rand(1, 3, 64, 64), timesteps.tolist())
    ours = received_scales(linear, timesteps)
    np.testing.assert_allclose(ours[:-1], [0.7 + 0.2 * (1 - int(t) / 1000) for t in timesteps[:-1]], rtol=1e-12)
    assert ours[-1] == 0.0


def test_mesh_task_feeds_the_controlnet_its_timesteps(tiny_sd_controlnet, monkeypatch):
    """The mesh task hands the sampling timesteps to the backbone, so the official schedule counts steps as the official
    loop does: 3 DDPM steps give 0.7, 0.7, and no ControlNet at the last step ((i + 1)/3 > 0.99)."""
    from syncsde.backbones import StableDiffusionControlNet

    monkeypatch.chdir(ROOT)
    backbone = StableDiffusionControlNet(*map(str, tiny_sd_controlnet), scale_schedule="official")
    seen = []
    forward = backbone.controlnet.forward
    monkeypatch.setattr(
        backbone.controlnet, "forward", lambda *a, conditioning_scale, **k: seen.append(conditioning_scale) or forward(
            *a, conditioning_scale=conditioning_scale, **k)
    )  # fmt: skip
    task = MeshTexturing(
        backbone, SyncSDE(5.0), view_size=64, latent_texture_size=32, rgb_texture_size=64, num_inference_steps=3,
        sampler="ddpm", multiview_attention=False, progress=False,
    )  # fmt: skip
    task.trajectories([{"mesh": "configs/assets/ball.obj", "prompt": "a ball", "sample_id": 0, "seed": 0}])
    assert seen == [0.7, 0.7]
    assert backbone.timesteps == [s.t for s in task.schedule().steps]


def test_paper_mesh_preset_uses_the_official_controlnet_schedule():
    import yaml

    config = yaml.safe_load((ROOT / "configs/paper/mesh.yaml").read_text())
    assert config["model"]["init_args"]["backbone"]["init_args"]["scale_schedule"] == "official"
    with pytest.raises(InputError, match="scale_schedule 'decreasing': choose one of linear, official, syncmvd"):
        from syncsde.backbones import StableDiffusionControlNet

        StableDiffusionControlNet("unused", "unused", scale_schedule="decreasing")


# -- refusals --------------------------------------------------------------------------------------------------------
def test_checkpoint_of_another_family_is_refused(folders, tiny_sd_dir, tmp_path):
    with pytest.raises(InputError, match="StableDiffusionXLPipeline checkpoint.*syncsde.backbones.StableDiffusionXL"):
        StableDiffusion(str(folders["sdxl"]))
    with pytest.raises(InputError, match="syncsde.backbones.StableDiffusion3$"):
        Flux(str(folders["sd3"]))
    with pytest.raises(InputError, match="syncsde.backbones.Flux$"):
        StableDiffusion3(str(folders["flux"]))
    with pytest.raises(InputError, match="syncsde.backbones.StableDiffusion$"):
        StableDiffusionXL(str(tiny_sd_dir))
    sd_controlnet = save_tiny_controlnet(tmp_path / "cn", tiny_sd_dir)
    with pytest.raises(InputError, match="does not fit"):
        StableDiffusionXLControlNet(str(folders["sdxl"]), str(sd_controlnet))


def test_flow_backbones_refuse_tasks_that_cannot_work(backbones):
    # the mesh runs on SD3 (tests/test_mesh_flow.py) but not with SyncMVD's multi-view attention, nor on packed tokens
    with pytest.raises(InputError, match="the mesh task with multiview_attention true needs a backbone with unet_att"):
        MeshTexturing(backbones["sd3"])
    with pytest.raises(InputError, match=r"the mesh task bakes .*\(Flux\) works on 2x2-packed tokens"):
        MeshTexturing(backbones["flux"], multiview_attention=False)
    with pytest.raises(InputError, match="the edit task .* guidance-distilled"):  # SD3 edits: tests/test_edit_flow.py
        ImageEdit(backbones["flux"])


def test_flow_backbone_on_unsupported_task_through_the_cli(folders, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    args = [
        "predict",
        "--config",
        "configs/tiny/mesh.yaml",
        "--model.init_args.backbone",
        "syncsde.backbones.Flux",
    ]
    with pytest.raises(SystemExit) as e:
        main([*args, "--model.init_args.backbone.init_args.model", str(folders["flux"])])
    assert e.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("syncsde: error: ")
    assert "the mesh task bakes and renders single latents" in errors[0] and "(Flux) works on 2x2-packed" in errors[0]
    assert "use sd3_controlnet" in errors[0]  # what would serve, by short name


def test_variant_folders_load_with_variant_and_are_refused_in_one_line_without(tiny_sd_dir, tmp_path, capsys):
    """A download holding only *.fp16.safetensors (diffusers' variant="fp16"): --model.backbone.variant fp16 loads it,
    for the base and its ControlNet; without it, one line naming that option (not "incomplete or corrupt")."""
    import inspect

    from diffusers import ControlNetModel, StableDiffusionPipeline

    from syncsde.backbones import Flux, StableDiffusion3, StableDiffusionControlNet, StableDiffusionXL
    from syncsde.backbones.sdxl import StableDiffusionXLControlNet
    from syncsde.backbones.upscaler import IFUpscaler
    from syncsde.errors import ModelNotFoundError

    for cls in (
        StableDiffusion,
        StableDiffusionXL,
        StableDiffusion3,
        Flux,
        StableDiffusionControlNet,
        StableDiffusionXLControlNet,
        IFUpscaler,
    ):
        assert inspect.signature(cls).parameters["variant"].default is None, cls
    sd16, cn, cn16 = tmp_path / "sd16", tmp_path / "cn", tmp_path / "cn16"
    StableDiffusionPipeline.from_pretrained(tiny_sd_dir).save_pretrained(sd16, variant="fp16")
    save_tiny_controlnet(cn, tiny_sd_dir)
    ControlNetModel.from_pretrained(cn).save_pretrained(cn16, variant="fp16")
    assert not list(sd16.glob("unet/*model.safetensors")) and list(sd16.glob("unet/*.fp16.safetensors"))

    with pytest.raises(ModelNotFoundError, match="holds only fp16 weights .*; pass --model.backbone.variant fp16$"):
        StableDiffusion(str(sd16))
    with pytest.raises(ModelNotFoundError, match=f"'{cn16}' holds only fp16 .*--model.backbone.variant fp16$"):
        StableDiffusionControlNet(str(tiny_sd_dir), str(cn16))
    plain, variant = StableDiffusion(str(tiny_sd_dir)), StableDiffusion(str(sd16), variant="fp16")
    for a, b in zip(plain.state_dict().values(), variant.state_dict().values()):
        assert torch.equal(a, b)
    both = StableDiffusionControlNet(str(sd16), str(cn16), variant="fp16")
    assert torch.equal(both.controlnet.conv_in.weight, ControlNetModel.from_pretrained(cn).conv_in.weight)
    cpu = torch.device("cpu")  # the variant is recorded: a resumed run with other weight files is refused
    assert variant.settings(cpu)["variant"] == "fp16" and plain.settings(cpu)["variant"] is None
    assert both.settings(cpu)["variant"] == "fp16"

    with pytest.raises(SystemExit):
        main(
            ["predict", "--config", str(Path(__file__).parents[1] / "configs/tiny/wide.yaml")]
            + ["--model.backbone.model", str(sd16), "--output_dir", str(tmp_path / "out")]
        )
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("syncsde: error: ") and err[-1].endswith("pass --model.backbone.variant fp16")
