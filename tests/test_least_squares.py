"""Least-squares fusion (BASELINES.md §11): the solver against dense least squares, the adjoint, the crop limit
(MultiDiffusion), the μ → ∞ limit, and the sphere task from the command line."""

import json
from pathlib import Path

import pytest
import torch

from syncsde.backbones import GaussianBackbone
from syncsde.coupling import SyncProblem
from syncsde.errors import InputError
from syncsde.sphere import SPHERE_VIEWS, Sphere
from syncsde.strategies import LeastSquares, MultiDiffusion, SyncTweedies
from syncsde.strategies.least_squares import least_squares
from syncsde.tasks import SpherePanorama, WideImage

ROOT = Path(__file__).resolve().parents[1]
BATCH = [{"prompt": "a wide river", "sample_id": 0, "seed": 0}]


@pytest.mark.parametrize("mu", [0.0, 0.3])
def test_conjugate_gradients_match_dense_least_squares(mu):
    """A random tall 30×12 map with per-row weights: CG on the normal equations = torch.linalg.lstsq of the stacked
    problem [√ρ F; √μ I] z = [√ρ v; √μ z̄], for each of two samples."""
    g = torch.Generator().manual_seed(0)
    F = torch.randn(30, 12, generator=g, dtype=torch.float64)
    v = torch.randn(2, 30, generator=g, dtype=torch.float64)
    prior = torch.randn(2, 12, generator=g, dtype=torch.float64)
    rho = torch.rand(30, generator=g, dtype=torch.float64) + 0.1
    z, steps = least_squares(lambda z: z @ F.T, v, prior, rho, mu, iterations=100, tolerance=1e-12)
    A = torch.cat([rho.sqrt()[:, None] * F, mu**0.5 * torch.eye(12, dtype=torch.float64)])
    for b in range(2):
        rhs = torch.cat([rho.sqrt() * v[b], mu**0.5 * prior[b]])
        torch.testing.assert_close(z[b], torch.linalg.lstsq(A, rhs[:, None]).solution[:, 0], rtol=1e-8, atol=1e-8)
    assert 1 < steps <= 12  # CG ends in at most n steps, and the warm start was not the answer
    few, _ = least_squares(lambda z: z @ F.T, v, prior, rho, mu, iterations=2, tolerance=0.0)
    assert not torch.allclose(few, z, atol=1e-4)  # fewer iterations do not reach it: the comparison can fail


@pytest.mark.parametrize("geometry", ["sphere", "crops"])
def test_the_adjoint_passes_the_dot_product_test(geometry):
    """<f(z), y> = <z, fᵀ(y)> for the vector-Jacobian product the solver uses as fᵀ."""
    if geometry == "sphere":
        canon = Sphere(SPHERE_VIEWS[:6], 72.0, 8, 16).canonical((2,))
    else:
        canon = WideImage(GaussianBackbone(4, 8, 1), height=8, width=20, stride=4, progress=False)._canonical
    g = torch.Generator().manual_seed(1)
    z = torch.randn(3, *canon.shape, generator=g, dtype=torch.float64)
    y = torch.randn_like(canon.forward(z))
    _, vjp = torch.func.vjp(canon.forward, torch.zeros_like(z))
    lhs, rhs = (canon.forward(z) * y).sum(), (z * vjp(y)[0]).sum()
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(rhs, (z * canon.aggregate(y)).sum())  # the mean g is not the adjoint


@pytest.mark.parametrize("blend", ["mean", "feather"])
def test_on_crops_it_is_multidiffusion(blend):
    """Crops make the normal matrix diagonal: the least-squares canvas is the (precision-weighted) overlap average,
    for any μ, so whole runs equal MultiDiffusion (x_{t-1}) and SyncTweedies' case 2 (x̂₀)."""
    backbone = GaussianBackbone(channels=4, sample_size=8, scale_factor=1)
    g = torch.Generator().manual_seed(2)
    z, apart = torch.randn(1, 4, 8, 20, generator=g), 0.3 * torch.randn(1, 4, 4, 8, 8, generator=g)
    runs = {}
    for name, strategy in {
        "ls": LeastSquares(mu=0.5), "md": MultiDiffusion(), "ls_x0": LeastSquares(fuse="x0"), "st": SyncTweedies(2)
    }.items():  # fmt: skip
        task = WideImage(
            backbone, strategy, height=8, width=20, stride=4, num_inference_steps=5, canonical_blend=blend,
            progress=False,
        )  # fmt: skip
        runs[name] = task.trajectories(BATCH, x_T=task.crops(z) + apart)  # views that disagree
    torch.testing.assert_close(runs["ls"], runs["md"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(runs["ls_x0"], runs["st"], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(runs["ls"], runs["ls_x0"], atol=1e-3)


def test_large_mu_on_the_sphere_is_the_bake_and_small_mu_is_the_fit():
    """On the sphere (nearest views, not crops), μ → ∞ gives f(g(v)) (MultiDiffusion's re-projection of the bake);
    μ → 0 reproduces the views where each cell is read by one pixel only (the least-squares fit is exact there)."""
    sphere = Sphere(SPHERE_VIEWS[:6], 72.0, 8, 16)
    problem = SyncProblem(6, canonical=sphere.canonical((2,)))
    v = torch.randn(2, 6, 2, 8, 8, generator=torch.Generator().manual_seed(3))
    canon = problem.canonical
    bake = canon.forward(canon.aggregate(v))
    torch.testing.assert_close(LeastSquares(mu=1e8).sync(v, problem), bake, rtol=1e-4, atol=1e-4)
    fit = LeastSquares(mu=1e-9, tolerance=1e-10, iterations=200).sync(v, problem)
    idx = sphere.forward_index
    readers = torch.zeros(16 * 32).index_add_(0, idx.flatten(), torch.ones(idx.numel()))[idx]  # (6, 64)
    alone = (readers == 1).view(6, 1, 8, 8).expand_as(v[0])
    torch.testing.assert_close(fit[:, alone], v[:, alone], rtol=1e-5, atol=1e-5)
    shared = ~alone
    assert shared.any() and not torch.allclose(fit[:, shared], v[:, shared], atol=1e-2)
    assert not torch.allclose(fit, bake, atol=1e-2)


def test_a_sample_does_not_depend_on_its_batch():
    """CG runs per sample (two steps, short of convergence, on a canvas coarse enough that views share cells: there a
    step size shared by the batch would show), and DDPM noise comes from each sample's own generator: a sample beside
    another equals the sample alone."""
    ls = LeastSquares(iterations=2, tolerance=0)
    task = SpherePanorama(
        GaussianBackbone(4, 8, 1), ls, views="synctweedies", canonical_height=16, sampler="ddpm",
        num_inference_steps=3, prompt_prefix="", progress=False,
    )  # fmt: skip
    first, second = ({"prompt": "a sky", "sample_id": k, "seed": 0} for k in (0, 1))
    scale = torch.tensor([1.0, 3.0]).view(2, 1, 1, 1, 1)  # samples of different sizes
    v = torch.randn(2, 8, 4, 8, 8, generator=torch.Generator().manual_seed(4)) * scale
    problem = task.problem([first])
    torch.testing.assert_close(ls.sync(v, problem)[1:], ls.sync(v[1:], problem), rtol=1e-6, atol=1e-6)
    both, alone = task.trajectories([first, second]), task.trajectories([second])
    torch.testing.assert_close(both[1], alone[0], rtol=1e-6, atol=1e-6)
    assert not torch.allclose(both[0], both[1], atol=1e-2)


def test_bad_fuse_is_one_line():
    with pytest.raises(InputError, match="choose x_prev or x0"):
        LeastSquares(fuse="eps")


def test_sphere_from_the_command_line(tmp_path, monkeypatch):
    """`syncsde predict --method least_squares` and `syncsde compare --methods least_squares` on the tiny sphere, with
    SyncTweedies' 8 views and 2 steps."""
    from syncsde.cli import main as cli
    from syncsde.evaluation.compare import main as compare

    monkeypatch.chdir(ROOT)
    quick = [
        "--model.init_args.num_inference_steps", "2", "--model.init_args.views", "synctweedies",
        "--trainer.enable_progress_bar", "false", "--data.init_args.prompts", "[a sunny day]",
    ]  # fmt: skip
    out = tmp_path / "predict"
    cli(["predict", "--config", "configs/tiny/sphere.yaml", "--method", "least_squares", "--output_dir", str(out),
         *quick])  # fmt: skip
    meta = json.loads((out / "00000.json").read_text())
    assert meta["method"] == "least_squares" and meta["fuse"] == "x_prev" and meta["num_views"] == 8
    summary = compare(["--config", "configs/tiny/sphere.yaml", "--output_dir", str(tmp_path / "cmp"), "--methods",
                       "least_squares", *quick])  # fmt: skip
    assert list(summary["methods"]) == ["least_squares"]
    assert json.loads((tmp_path / "cmp" / "least_squares" / "00000.json").read_text())["method"] == "least_squares"
