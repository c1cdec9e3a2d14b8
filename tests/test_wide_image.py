"""The wide-image task (SYNCSDE.md §6.3, §9.4, §9.9)."""

import pytest
import torch

from syncsde.backbones import GaussianBackbone, StableDiffusion
from syncsde.coupling import coupling_residuals
from syncsde.errors import InputError
from syncsde.strategies import Independent, SyncSDE
from syncsde.tasks import WideImage


@pytest.fixture(scope="module")
def paper():
    """The paper's geometry (512x2048, stride 128 px) on an exact Gaussian denoiser with SD's latent shape."""
    return WideImage(GaussianBackbone(), SyncSDE(5.0), num_inference_steps=4, progress=False)


@pytest.fixture(scope="module")
def sd(tiny_sd_dir):
    return StableDiffusion(str(tiny_sd_dir))


def test_paper_geometry(paper):
    assert (paper.n, paper.w, paper.s, paper.W) == (13, 64, 16, 256)
    assert [c.source for c in paper._couplings] == list(range(12))  # chain: j <- j-1 only
    x = torch.randn(1, 64, 64)
    for c in paper._couplings:
        f = c.map(x)
        torch.testing.assert_close(f[..., :48], x[..., 16:64])
        assert torch.count_nonzero(f[..., 48:]) == 0
        assert torch.equal(c.weight, (torch.arange(64) < 48).float())


def test_assembly_block_k_from_patch_min_k_12(paper):
    x = torch.arange(13.0).view(1, 13, 1, 1, 1).expand(1, 13, 4, 64, 64).clone()
    canvas = paper.assemble_latent(x)
    assert canvas.shape == (1, 4, 64, 256)
    for k in range(16):
        assert torch.all(canvas[..., 16 * k : 16 * k + 16] == min(k, 12))


def test_canonical_noise_makes_first_correction_zero(paper):
    from syncsde.sampler import sample_generator

    batch = [{"prompt": "p", "sample_id": 0, "seed": 0}]
    x_T = paper.initial_noise(batch, [sample_generator(0, 0)])
    assert x_T.shape == (1, 13, 4, 64, 64)
    assert torch.count_nonzero(coupling_residuals(x_T, paper._couplings)) == 0
    paper.init_from_canonical = False
    try:
        x_T = paper.initial_noise(batch, [sample_generator(0, 0)])
        assert torch.count_nonzero(coupling_residuals(x_T, paper._couplings)) > 0
    finally:
        paper.init_from_canonical = True


def test_output_size_at_paper_settings(paper):
    out = paper.generate(["a landscape"])[0]
    assert out.image.shape == (3, 512, 2048) and out.meta["num_patches"] == 13


def small(backbone, strategy, **kw):
    kw = {"height": 64, "width": 128, "stride": 16, "num_inference_steps": 4, "progress": False, **kw}
    return WideImage(backbone, strategy, **kw)


def test_patch0_free_and_zero_inv_lambda_is_independent(sd):
    batch = [{"prompt": "a wide river", "sample_id": 3, "seed": 1}]
    runs = {}
    for name, strat in {"sync": SyncSDE(5.0), "zero": SyncSDE(0.0), "ind": Independent()}.items():
        runs[name] = small(sd, strat, init_from_canonical=False).trajectories(batch)
    assert torch.equal(runs["zero"], runs["ind"])
    torch.testing.assert_close(runs["sync"][:, 0], runs["ind"][:, 0])
    assert not torch.allclose(runs["sync"][:, 1:], runs["ind"][:, 1:])


def test_sync_reduces_overlap_disagreement(sd):
    batch = [{"prompt": "a wide river", "sample_id": 0, "seed": 0}]
    gaps = {}
    for name, strat in {"sync": SyncSDE(5.0), "ind": Independent()}.items():
        task = small(sd, strat, init_from_canonical=False, num_inference_steps=10)
        gaps[name] = coupling_residuals(task.trajectories(batch), task._couplings).abs().mean()
    assert gaps["sync"] < 0.5 * gaps["ind"]


def test_single_patch_equals_diffusers_pipeline(sd, tiny_sd_dir):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_dir, local_files_only=True)
    x_T = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    ref = pipe(
        "a red boat",
        height=64,
        width=64,
        num_inference_steps=6,
        guidance_scale=7.5,
        latents=x_T.clone(),
        output_type="pt",
    ).images
    task = small(sd, SyncSDE(5.0), width=64, num_inference_steps=6)
    assert task.n == 1
    ours = task.generate(["a red boat"], x_T=x_T[:, None])[0].image
    torch.testing.assert_close(ours, ref[0], atol=1e-5, rtol=1e-4)


def test_batch_composition_does_not_change_a_sample(sd):
    task = small(sd, SyncSDE(5.0))
    s0, s1 = ({"prompt": p, "sample_id": i, "seed": 7} for i, p in enumerate(["a cat", "a dog"]))
    together = task.run([s0, s1])
    alone = task.run([s1])
    torch.testing.assert_close(together[1].image, alone[0].image, atol=1e-5, rtol=1e-5)


def test_circular_geometry():
    task = WideImage(GaussianBackbone(), SyncSDE(5.0), width=1024, circular=True, progress=False)
    assert task.n == 8  # 128 latent columns / stride 16
    x = torch.arange(8.0).view(1, 8, 1, 1, 1).expand(1, 8, 4, 64, 64).clone()
    canvas = task.assemble_latent(x)
    for k in range(8):
        assert torch.all(canvas[..., 16 * k : 16 * k + 16] == k)  # every block from exactly one patch
    # the last patch (canvas columns 112..127, 0..47) is tied to patch 0 across the seam, to patch 6 before it
    last = {c.source: c for c in task._couplings if c.target == 7}
    assert set(last) == {0, 6}
    assert torch.equal(last[0].weight, (torch.arange(64) >= 16).float())
    assert torch.equal(last[6].weight, (torch.arange(64) < 16).float())
    z = torch.randn(1, 4, 64, 128)
    patches = task.crops(z)
    assert torch.count_nonzero(coupling_residuals(patches, task._couplings)) == 0  # consistent canvas: no pull
    out = task.generate(["a 360 view"])[0]
    assert out.image.shape == (3, 512, 1024)


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"width": 2000}, "does not fit"),
        ({"height": 256}, "native size"),
        ({"stride": 100}, "scale factor"),
        ({"stride": 1024}, "between"),
        ({"width": 1000, "circular": True}, "multiple of the stride"),
    ],
)
def test_bad_geometry_errors(kw, msg):
    with pytest.raises(InputError, match=msg):
        WideImage(GaussianBackbone(), SyncSDE(5.0), **kw)
