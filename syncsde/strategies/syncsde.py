"""SyncSDE: the conditional-score correction on x_{t−1} (SYNCSDE.md §3)."""

from __future__ import annotations

import warnings

from syncsde.coupling import coupling_residuals
from syncsde.errors import InputError
from syncsde.schedule import inv_lambda_schedule
from syncsde.strategies.base import Strategy


class SyncSDE(Strategy):
    """x_{t−1}^i = x̃_{t−1}^i − γ_t (1/λ)(t/T) Σ_{j<i} W_ij ⊙ (x_t^i − f_ij(x_t^j))   (SYNCSDE.md §3).

    x̃ is the scheduler's plain step of each trajectory; the residuals read the pre-step snapshot x_t of all
    trajectories (Jacobi, §3.1); trajectory 0 — and any trajectory the task leaves uncoupled — is free.

    Args:
        inv_lambda: 1/λ, the coupling inverse variance (0 = independent trajectories). Paper default 5.
        sync_t_min: couple only while t > sync_t_min (the mesh task uses 200, §6.5); 0 = every step.
    """

    name = "syncsde"

    def __init__(self, inv_lambda: float = 5.0, sync_t_min: int = 0):
        if inv_lambda < 0:
            raise InputError(
                f"--model.init_args.strategy.init_args.inv_lambda {inv_lambda}: 1/lambda is a precision and must "
                "be >= 0 (0 = independent trajectories); the paper uses 5"
            )
        if sync_t_min < 0:
            raise InputError(
                f"--model.init_args.strategy.init_args.sync_t_min {sync_t_min}: give a timestep >= 0 (0 = every step)"
            )
        self.inv_lambda = float(inv_lambda)
        self.sync_t_min = int(sync_t_min)
        self._warned = False

    def coefficient(self, step) -> float:
        """c_t = γ_t (1/λ)(t/T)."""
        return step.gamma * inv_lambda_schedule(self.inv_lambda, step.t, step.T)

    def step(self, x, eps, step, problem, noise=None):
        out = self.plain_update(x, eps, step, noise)
        if self.inv_lambda == 0 or step.t <= self.sync_t_min or not problem.couplings:
            return out
        c = self.coefficient(step)
        if c > 2 and not self._warned:  # the explicit correction then overshoots the target by more than it closes
            warnings.warn(
                f"SyncSDE coefficient c_t = {c:.2f} > 2 at t = {step.t}: the correction is unstable; "
                "lower inv_lambda or use more steps",
                stacklevel=2,
            )
            self._warned = True
        return out - c * coupling_residuals(x, problem.couplings)

    def describe(self):
        return {"method": self.name, "inv_lambda": self.inv_lambda, "sync_t_min": self.sync_t_min}
