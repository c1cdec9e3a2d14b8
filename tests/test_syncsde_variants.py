"""SyncSDE's options beyond the paper (SYNCSDE.md §4.1): limits, fixed points and equivalences that could fail."""

import pytest
import torch
from test_syncsde import COUPLINGS, EPS, PROBLEM, STEPS, X

from syncsde.coupling import SyncProblem, coupling_residuals
from syncsde.errors import InputError
from syncsde.strategies import Independent, MultiDiffusion, SyncSDE
from syncsde.windows import Grid, Windows

VARIANTS = [
    dict(preset="chain"),
    dict(preset="canonical"),
    dict(correction="exact"),
    dict(target="post_step"),
    dict(schedule_floor=0.5),
    dict(preset="chain", target="pre_step"),
]

WINDOWS = Windows(24, 8, 2)
CANONICAL = WINDOWS.canonical((4, 8))
WIDE = SyncProblem(WINDOWS.n, WINDOWS.couplings(), canonical=CANONICAL)
XW = torch.randn(2, WINDOWS.n, 4, 8, 8, dtype=torch.float64)
EW = torch.randn(2, WINDOWS.n, 4, 8, 8, dtype=torch.float64)


def test_paper_preset_is_the_default_and_explicit_options_match_it():
    step = STEPS[7]
    default = SyncSDE(5.0).step(X, EPS, step, PROBLEM)
    spelled = SyncSDE(5.0, 0, "paper", "autoregressive", 0.0, "explicit", "pre_step").step(X, EPS, step, PROBLEM)
    assert torch.equal(SyncSDE(5.0, preset="paper").step(X, EPS, step, PROBLEM), default)
    # the general code path with the paper's options agrees with the official one to rounding
    general = SyncSDE(5.0, preset="chain", schedule_floor=0.0, correction="explicit", target="pre_step")
    torch.testing.assert_close(general.step(X, EPS, step, PROBLEM), default)
    assert torch.equal(spelled, default)


@pytest.mark.parametrize("options", VARIANTS)
def test_inv_lambda_zero_is_independent(options):
    step = STEPS[10]
    free = Independent().step(XW, EW, step, WIDE)
    assert torch.equal(SyncSDE(0.0, **options).step(XW, EW, step, WIDE), free)


@pytest.mark.parametrize("options", VARIANTS)
def test_consistent_trajectories_are_a_fixed_point(options):
    """Windows cut from one canvas, with network outputs cut from one canvas: every variant leaves them as the plain
    step does (the plain step keeps them consistent, so every residual is zero)."""
    step = STEPS[20]
    x, eps = CANONICAL.forward(torch.randn(2, 4, 8, 24)), CANONICAL.forward(torch.randn(2, 4, 8, 24))
    torch.testing.assert_close(SyncSDE(5.0, **options).step(x, eps, step, WIDE), Independent().step(x, eps, step, WIDE))


def test_exact_correction_equals_explicit_to_first_order():
    step = STEPS[25]
    diffs = []
    for inv_lambda in (1e-2, 1e-3):
        exact = SyncSDE(inv_lambda, correction="exact").step(X, EPS, step, PROBLEM)
        explicit = SyncSDE(inv_lambda, correction="explicit").step(X, EPS, step, PROBLEM)
        plain = Independent().step(X, EPS, step, PROBLEM)
        assert (explicit - plain).abs().max() > 0
        diffs.append(float((exact - explicit).abs().max() / (explicit - plain).abs().max()))
    assert diffs[1] < diffs[0] / 5  # the relative difference shrinks with c: agreement to first order


def test_exact_post_step_pull_shrinks_the_residual_by_exp_minus_c():
    """With post-step targets, x^i − f(x^j) after the step is e^{−cP} times the plain step's (never overshoots)."""
    step = STEPS[40]
    s = SyncSDE(50.0, preset="chain")  # c_t ≈ 20: the explicit form would diverge
    c = s.coefficient(step)
    assert c > 2
    out = s.step(XW, EW, step, WIDE)
    plain = Independent().step(XW, EW, step, WIDE)
    link = WIDE.couplings[0]  # window 1 <- window 0 (window 0 is free)
    torch.testing.assert_close(link.residual(out), link.residual(plain) * torch.exp(torch.tensor(-c)))


def test_post_step_chain_makes_windows_agree_in_the_hard_limit():
    step = STEPS[30]
    out = SyncSDE(1e6, preset="chain").step(XW, EW, step, WIDE)
    assert coupling_residuals(out, WIDE.couplings).abs().max() < 1e-8


def test_canonical_model_in_the_hard_limit_is_multidiffusion():
    """λ → 0 with the canonical model and post-step targets averages x_{t'} over windows: SyncTweedies case 3."""
    step = STEPS[30]
    hard = SyncSDE(1e6, preset="canonical").step(XW, EW, step, WIDE)
    torch.testing.assert_close(hard, MultiDiffusion().step(XW, EW, step, WIDE))


def test_schedule_floor():
    step = STEPS[45]  # late: t/T small
    assert step.t / step.T < 0.5
    s = SyncSDE(4.0, schedule_floor=0.5)
    assert s.coefficient(step) == pytest.approx(step.gamma * 4.0 * 0.5)
    assert SyncSDE(4.0, schedule_floor=1.0).coefficient(step) == pytest.approx(step.gamma * 4.0)
    assert SyncSDE(4.0).coefficient(step) == pytest.approx(step.gamma * 4.0 * step.t / step.T)


def test_post_step_chain_reads_corrected_earlier_trajectories():
    """In the autoregressive order the pull of trajectory 2 reads trajectory 1 after its own correction, so
    reversing the list of couplings does not change the result (the order is the trajectories', not the list's)."""
    step = STEPS[12]
    s = SyncSDE(5.0, preset="chain")
    a = s.step(X, EPS, step, PROBLEM)
    b = s.step(X, EPS, step, SyncProblem(3, COUPLINGS[::-1]))
    torch.testing.assert_close(a, b)
    jacobi = SyncSDE(5.0, preset="chain", target="pre_step").step(X, EPS, step, PROBLEM)
    assert not torch.allclose(a, jacobi)


def test_exact_correction_never_warns():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SyncSDE(1000.0, correction="exact").step(X, EPS, STEPS[0], PROBLEM)
    with pytest.warns(UserWarning, match="correction: exact"):
        SyncSDE(1000.0).step(X, EPS, STEPS[0], PROBLEM)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(inv_lambda=float("nan")), "inv_lambda"),
        (dict(inv_lambda=float("inf")), "inv_lambda"),
        (dict(preset="best"), "preset"),
        (dict(correlation="chain"), "correlation"),
        (dict(schedule_floor=2.0), "schedule_floor"),
        (dict(correction="implicit"), "correction"),
        (dict(target="both"), "target"),
    ],
)
def test_bad_options_are_one_line_errors(kwargs, match):
    with pytest.raises(InputError, match=match):
        SyncSDE(**kwargs)


def test_canonical_model_needs_a_canonical_space():
    with pytest.raises(InputError, match="canonical"):
        SyncSDE(5.0, preset="canonical").step(X, EPS, STEPS[0], PROBLEM)


# -- the precision-weighted canonical model (``canonical_blend: feather``) ------------------------------------------
FEATHER = WINDOWS.canonical((4, 8), "feather")
WIDE_FEATHER = SyncProblem(WINDOWS.n, WINDOWS.couplings(), canonical=FEATHER)


def test_feather_canonical_is_the_feather_assembly_and_keeps_consistent_windows():
    x = torch.randn(2, WINDOWS.n, 4, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(FEATHER.aggregate(x), WINDOWS.assemble(x, "feather"))
    z = torch.randn(2, 4, 8, 24, dtype=torch.float64)
    torch.testing.assert_close(FEATHER.aggregate(FEATHER.forward(z)), z)  # g(f(z)) = z for any weights
    assert CANONICAL.precision(x) is None  # the plain mean: every position counts once
    rho = FEATHER.precision(x)
    assert rho.shape == (WINDOWS.n, 1, 1, 8) and rho.max() == 1 and rho.min() == 1 / 4  # 1/4 at the edges (w = 8)
    grid = Grid((16, 24), (8, 8), (4, 4))  # the 2-D canvas: the same, with the product of both axes' weights
    canvas = grid.canonical((3,), "feather")
    xg = torch.randn(2, grid.n, 3, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(canvas.aggregate(xg), grid.assemble(xg, "feather"))
    assert canvas.precision(xg).shape == (grid.n, 1, 8, 8)


def test_feather_canonical_pull_scales_with_the_precision():
    """Post-step, exact: each position's residual to the canvas estimate shrinks by e^{−c ρ}, ρ its precision: the
    centre of a window is pulled harder than its edges. λ → 0 gives the feathered canvas in every window."""
    step = STEPS[40]
    s = SyncSDE(5.0, preset="canonical")
    c = s.coefficient(step)
    plain = Independent().step(XW, EW, step, WIDE_FEATHER)
    out = s.step(XW, EW, step, WIDE_FEATHER)
    target = FEATHER.forward(FEATHER.aggregate(plain))
    torch.testing.assert_close(out - target, (plain - target) * torch.exp(-c * FEATHER.precision(XW)))
    hard = SyncSDE(1e6, preset="canonical").step(XW, EW, step, WIDE_FEATHER)
    torch.testing.assert_close(hard, target)
    assert SyncSDE(0.0, preset="canonical").step(XW, EW, step, WIDE_FEATHER).equal(plain)
