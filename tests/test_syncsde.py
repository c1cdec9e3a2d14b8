"""The SyncSDE update against independent computations (SYNCSDE.md §3, §4, §9.3–9.5, 9.7)."""

import pytest
import torch

from syncsde.coupling import Coupling, SyncProblem, coupling_residuals
from syncsde.schedule import Schedule, ddim_step, tweedie_x0
from syncsde.strategies import Independent, SyncSDE
from syncsde.testing import SD_SCHEDULER

torch.manual_seed(0)
B, N = 2, 3
X = torch.randn(B, N, 4, 8, 8, dtype=torch.float64)
EPS = torch.randn(B, N, 4, 8, 8, dtype=torch.float64)
M = (torch.rand(B, 1, 8, 8) > 0.5).double()
SHIFT = lambda x: torch.roll(x, 2, dims=-1)  # noqa: E731  any map f_ij
# the mask-T2I pattern (§6.1): 1 <- 0 outside M; 2 <- 0 outside M, 2 <- 1 inside M; one shifted map
COUPLINGS = [Coupling(1, 0, None, 1 - M), Coupling(2, 0, SHIFT, 1 - M), Coupling(2, 1, None, M)]
PROBLEM = SyncProblem(N, COUPLINGS)
STEPS = Schedule.from_config(SD_SCHEDULER, 50).steps


def manual_update(x, eps, step, inv_lambda):
    """§3 written out term by term, trajectory by trajectory."""
    out = []
    for i in range(N):
        xi = ddim_step(tweedie_x0(x[:, i], eps[:, i], step.abar_t), eps[:, i], step.abar_prev)
        corr = torch.zeros_like(xi)
        for c in COUPLINGS:
            if c.target == i:
                f = x[:, c.source] if c.map is None else c.map(x[:, c.source])
                corr = corr + c.weight * (x[:, i] - f)
        out.append(xi - step.gamma * inv_lambda * (step.t / step.T) * corr)
    return torch.stack(out, 1)


@pytest.mark.parametrize("k", [0, 17, 49])
def test_update_matches_manual(k):
    step = STEPS[k]
    torch.testing.assert_close(SyncSDE(5.0).step(X, EPS, step, PROBLEM), manual_update(X, EPS, step, 5.0))


@pytest.mark.parametrize("k", [0, 25, 49])
def test_eps_form_equals_x_form(k):
    """ε̃_i = ε_i + Σ W ⊙ (x^i − f(x^j))(t/T)/(λσ_t), then plain DDIM = §3's x_{t−1} (§4, §9.3)."""
    step, inv_lambda = STEPS[k], 3.0
    eps_tilde = EPS + coupling_residuals(X, COUPLINGS) * (step.t / step.T) * inv_lambda / step.sigma
    x_eps = Independent().step(X, eps_tilde, step, PROBLEM)
    torch.testing.assert_close(x_eps, SyncSDE(inv_lambda).step(X, EPS, step, PROBLEM))


def test_inv_lambda_zero_is_independent_and_trajectory0_free():
    step = STEPS[10]
    free = Independent().step(X, EPS, step, PROBLEM)
    assert torch.equal(SyncSDE(0.0).step(X, EPS, step, PROBLEM), free)
    coupled = SyncSDE(7.0).step(X, EPS, step, PROBLEM)
    assert torch.equal(coupled[:, 0], free[:, 0])
    assert not torch.allclose(coupled[:, 1:], free[:, 1:])


def test_fixed_point_and_zero_weight():
    x = X.clone()
    x[:, 1] = x[:, 0]  # x^1 = f_10(x^0) everywhere
    res = coupling_residuals(x, [Coupling(1, 0)])
    assert torch.count_nonzero(res) == 0
    zero = [Coupling(1, 0, None, torch.zeros(1)), Coupling(2, 1, SHIFT, torch.zeros(1))]
    step = STEPS[3]
    torch.testing.assert_close(
        SyncSDE(5.0).step(X, EPS, step, SyncProblem(N, zero)), Independent().step(X, EPS, step, PROBLEM)
    )


def test_jacobi_reads_only_the_snapshot_and_ignores_order():
    step = STEPS[5]
    a = SyncSDE(5.0).step(X, EPS, step, SyncProblem(N, COUPLINGS))
    b = SyncSDE(5.0).step(X, EPS, step, SyncProblem(N, COUPLINGS[::-1]))
    torch.testing.assert_close(a, b)
    assert torch.equal(X, X.clone())  # inputs untouched


def test_sync_t_min_turns_coupling_off():
    s = SyncSDE(5.0, sync_t_min=500)
    late = [st for st in STEPS if st.t <= 500][0]
    assert torch.equal(s.step(X, EPS, late, PROBLEM), Independent().step(X, EPS, late, PROBLEM))


def test_coupling_validation():
    with pytest.raises(ValueError, match="earlier"):
        Coupling(1, 1)
    with pytest.raises(ValueError, match="beyond"):
        SyncProblem(2, [Coupling(2, 0)])
    with pytest.raises(ValueError, match="inv_lambda"):
        SyncSDE(-1.0)


def test_unstable_coefficient_warns_once():
    s = SyncSDE(1000.0)
    with pytest.warns(UserWarning, match="unstable"):
        s.step(X, EPS, STEPS[0], PROBLEM)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s.step(X, EPS, STEPS[1], PROBLEM)  # once only
