"""Baselines (BASELINES.md §7 numerical checks)."""

import pytest
import torch

from syncsde.backbones import GaussianBackbone, StableDiffusion
from syncsde.errors import InputError
from syncsde.strategies import Independent, MultiDiffusion, SyncSDE, SyncTweedies
from syncsde.tasks import AmbiguousImage, WideImage
from syncsde.testing import save_tiny_sd

BATCH = [{"prompt": "a wide valley", "sample_id": 0, "seed": 0}]


@pytest.mark.parametrize("kw", [{"width": 2048}, {"width": 1024, "circular": True}, {"width": 1024, "stride": 64}])
def test_g_of_f_is_identity_for_crops(kw):
    task = WideImage(GaussianBackbone(), SyncSDE(), **kw)
    canon = task.problem(BATCH).canonical
    z = torch.randn(2, *canon.shape)
    torch.testing.assert_close(canon.aggregate(canon.forward(z)), z)
    assert canon.forward(z).shape == (2, task.n, 4, 64, 64)


@pytest.mark.parametrize("view", ["rotate_cw", "skew", "pixel_permute"])
def test_g_of_f_is_identity_for_views(view):
    canon = (
        AmbiguousImage(GaussianBackbone(channels=3, sample_size=16, scale_factor=1), view=view).problem(BATCH).canonical
    )
    z = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(canon.aggregate(canon.forward(z)), z)


@pytest.fixture(scope="module")
def sd(tiny_sd_dir):
    return StableDiffusion(str(tiny_sd_dir))


def wide(sd, strategy, **kw):
    kw = {"height": 64, "width": 128, "stride": 16, "num_inference_steps": 5, "progress": False, **kw}
    return WideImage(sd, strategy, **kw)


def test_cases_1_to_6_agree_for_crops_with_shared_noise_and_ddim(sd):
    runs = {c: wide(sd, SyncTweedies(case=c)).trajectories(BATCH) for c in range(1, 7)}
    for c in range(2, 7):
        torch.testing.assert_close(runs[c], runs[1], atol=1e-4, rtol=1e-4)
    # the instances stay consistent crops of one canvas
    task = wide(sd, SyncTweedies())
    canon = task.problem(BATCH).canonical
    torch.testing.assert_close(canon.forward(canon.aggregate(runs[2])), runs[2], atol=1e-5, rtol=1e-5)


def test_cases_differ_with_independent_noise(sd):
    a = wide(sd, SyncTweedies(case=2), init_from_canonical=False).trajectories(BATCH)
    b = wide(sd, SyncTweedies(case=3), init_from_canonical=False).trajectories(BATCH)
    assert not torch.allclose(a, b, atol=1e-3)


def test_case_0_and_late_steps_are_independent(sd):
    free = wide(sd, Independent(), init_from_canonical=False).trajectories(BATCH)
    assert torch.equal(wide(sd, SyncTweedies(case=0), init_from_canonical=False).trajectories(BATCH), free)
    assert torch.equal(wide(sd, SyncTweedies(sync_t_min=1000), init_from_canonical=False).trajectories(BATCH), free)


def test_one_window_multidiffusion_is_plain_ddim(sd):
    task = wide(sd, MultiDiffusion(), width=64)
    assert task.n == 1
    torch.testing.assert_close(task.trajectories(BATCH), wide(sd, Independent(), width=64).trajectories(BATCH))


def test_synctweedies_ddpm_is_deterministic_per_sample(sd):
    task = wide(sd, SyncTweedies(case=5))
    task.sampler = "ddpm"
    a, b = task.trajectories(BATCH), task.trajectories(BATCH)
    assert torch.equal(a, b) and torch.isfinite(a).all()


def test_needs_canonical_space():
    from syncsde.coupling import SyncProblem
    from syncsde.schedule import Schedule

    step = Schedule.from_config(GaussianBackbone().scheduler_config(), 5).steps[0]
    x = torch.randn(1, 2, 4, 8, 8)
    with pytest.raises(InputError, match="canonical space"):
        SyncTweedies().step(x, x, step, SyncProblem(2))
    with pytest.raises(InputError, match="0..6"):
        SyncTweedies(case=9)


def test_multidiffusion_panorama_equals_diffusers_pipeline(tmp_path):
    """Our MultiDiffusion (case 3 on 64-latent crops at stride 8) against diffusers' StableDiffusionPanoramaPipeline,
    same tiny model (native 64-latent window, as the pipeline hard-codes) and the same initial latents."""
    from diffusers import StableDiffusionPanoramaPipeline

    folder = save_tiny_sd(tmp_path / "sd64", sample_size=64)
    pipe = StableDiffusionPanoramaPipeline.from_pretrained(folder, local_files_only=True)
    z = torch.randn(1, 4, 64, 128, generator=torch.Generator().manual_seed(0))
    ref = pipe(
        "a wide valley",
        height=512,
        width=1024,
        num_inference_steps=3,
        guidance_scale=7.5,
        latents=z.clone(),
        output_type="pt",
    ).images[0]
    task = WideImage(
        StableDiffusion(str(folder)), MultiDiffusion(), width=1024, stride=64, num_inference_steps=3, progress=False
    )
    assert task.n == 9
    ours = task.generate(["a wide valley"], x_T=task.crops(z))[0].image
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


def mask_record(tmp_path):
    import numpy as np
    from PIL import Image

    a = np.zeros((64, 64), np.uint8)
    a[16:48, 24:56] = 255
    Image.fromarray(a).save(tmp_path / "m.png")
    return {
        "background": "a beach",
        "object": "a boat",
        "prompt": "a beach with a boat",
        "mask": str(tmp_path / "m.png"),
        "sample_id": 0,
        "seed": 0,
    }


def test_region_weights_cover_every_pixel(tmp_path):
    from syncsde.tasks import MaskTextToImage

    task = MaskTextToImage(GaussianBackbone(sample_size=8), MultiDiffusion(), progress=False)
    canon = task.problem([mask_record(tmp_path)]).canonical
    assert torch.all(canon.weights.sum(1) >= 1)  # m0 + Σ m_k ≥ 1
    z = torch.randn(1, *canon.shape)
    torch.testing.assert_close(canon.aggregate(canon.forward(z)), z)


def test_region_multidiffusion_with_bootstrapping(sd, tmp_path):
    from syncsde.tasks import MaskTextToImage

    rec = mask_record(tmp_path)
    task = MaskTextToImage(sd, MultiDiffusion(bootstrap_steps=2), num_inference_steps=4, progress=False)
    problem = task.problem([rec])
    x = torch.randn(1, 3, 4, 8, 8)
    step = task.schedule().steps[0]
    noise = lambda shape=None: torch.zeros(1, *(shape or x.shape[1:]))  # noqa: E731
    boot = task.strategy.before_denoise(x, step, problem, noise)
    m = problem.regions.masks[1]
    assert torch.equal(boot[:, [0, 2]], x[:, [0, 2]])  # only the foreground trajectory is bootstrapped
    assert torch.equal((boot[:, 1] * m), (x[:, 1] * m)) and not torch.equal(boot[:, 1], x[:, 1])  # outside its mask
    late = task.schedule().steps[2]
    assert torch.equal(task.strategy.before_denoise(x, late, problem, noise), x)  # after bootstrap_steps
    out = task.trajectories([rec])
    torch.testing.assert_close(out[:, 2], out[:, 0])  # all trajectories equal the canonical image
    torch.testing.assert_close(out[:, 1], out[:, 0])


def test_visual_anagrams_identity_views_equal_plain_if_sampling(tmp_path):
    """Two identity views with one prompt = diffusers' own IFPipeline (DDPM, learned variance, thresholding) on the
    same initial noise and step noise (BASELINES.md §7.5)."""
    from diffusers import IFPipeline

    from syncsde.backbones import DeepFloydIF
    from syncsde.sampler import sample_generator
    from syncsde.strategies import VisualAnagrams
    from syncsde.testing import save_tiny_if

    folder = save_tiny_if(tmp_path / "if")
    backbone = DeepFloydIF(str(folder))
    task = AmbiguousImage(
        backbone,
        VisualAnagrams(),
        view="identity",
        init_from_canonical=True,
        num_inference_steps=5,
        guidance_scale=7.0,
        progress=False,
    )
    task.sampler = "ddpm"
    rec = {"prompt": "a horse", "prompt2": "a horse", "sample_id": 3, "seed": 1}
    ours = task.trajectories([rec])
    torch.testing.assert_close(ours[:, 0], ours[:, 1])
    pipe = IFPipeline.from_pretrained(folder, local_files_only=True)
    ref = pipe(
        prompt_embeds=backbone.encode_prompts(["a horse"]),
        negative_prompt_embeds=backbone.encode_prompts([""]),
        num_inference_steps=5,
        guidance_scale=7.0,
        generator=sample_generator(1, 3),
        output_type="pt",
        height=16,
        width=16,
    ).images
    torch.testing.assert_close(ours[:, 0], ref, atol=1e-4, rtol=1e-4)
