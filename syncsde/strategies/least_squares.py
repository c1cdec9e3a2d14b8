"""Least-squares fusion (BASELINES.md §11): MultiDiffusion generalised to any linear maps f_i from a canonical variable
to the instances (LF-MultiDiffusion, Hayakawa, Mukuta and Harada).

Each step every instance takes its own scheduler step, v^i = U(x_t^i, x̂₀^i) (``fuse: x_prev``, MultiDiffusion's
choice; ``fuse: x0`` fuses v^i = x̂₀^i instead, SyncTweedies' choice), and the canonical variable is the regularised
weighted least-squares fit to them,

    z* = argmin_z Σ_i ‖√ρ_i ⊙ (f_i(z) − v^i)‖² + μ ‖z − z̄‖²,      z̄ = g(v), the task's own aggregate,

the solution of the normal equations (Σ_i f_iᵀ ρ_i f_i + μ I) z = Σ_i f_iᵀ ρ_i v^i + μ z̄, found by conjugate gradients
started at z̄ (per sample, so that a sample's result does not depend on its batch). Every instance is then re-projected,
x^i ← f_i(z*) (keeping its own values where f_i does not reach it, the "bg" compositing of BASELINES.md §1.1); with
``fuse: x0``, x^i ← U(x_t^i, f_i(z*)). ρ_i is the task's precision of each instance element (``Canonical.precision``,
1 when it has none). fᵀ is the vector-Jacobian product of the task's forward map (``torch.func.vjp``), exact for a
linear map, so any task whose ``Canonical.forward`` is linear in z works without an adjoint of its own.

Where the f_i are crops, Σ_i f_iᵀ ρ_i f_i is diagonal and z* is the ρ-weighted mean over the instances covering a
position, which is g itself: z* = z̄ for every μ, and this is MultiDiffusion exactly. μ → ∞ gives f_i(g(v)) on any task
(SyncTweedies' case 3); μ → 0 the plain least-squares fit, with z̄ kept on what no instance observes.
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
from jsonargparse.typing import NonNegativeFloat, PositiveInt
from torch import Tensor

from syncsde.errors import InputError
from syncsde.schedule import eps_from_x0
from syncsde.strategies.base import Strategy


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Per-sample inner products (B,), shaped to broadcast against ``a``."""
    return (a * b).flatten(1).sum(1).view(-1, *[1] * (a.ndim - 1))


def conjugate_gradients(
    operator: Callable[[Tensor], Tensor], b: Tensor, start: Tensor, iterations: int, tolerance: float
) -> tuple[Tensor, int]:
    """Solve A z = b for a symmetric positive definite ``operator`` A, every sample (leading axis) on its own: a sample
    stops once ‖b − A z‖ ≤ ``tolerance``·‖b‖ or after ``iterations`` steps. Returns z and the steps taken."""
    z = start.clone()
    r = b - operator(z)
    p, rr = r.clone(), _dot(r, r)
    bound = tolerance**2 * _dot(b, b)
    taken = 0
    for _ in range(iterations):
        active = rr > bound
        if not active.any():
            break
        taken += 1
        q = operator(p)
        pq = _dot(p, q)
        alpha = torch.where(active & (pq > 0), rr / torch.where(pq > 0, pq, 1), 0)
        z = z + alpha * p
        r = r - alpha * q
        rr_new = _dot(r, r)
        beta = torch.where(active, rr_new / torch.where(rr > 0, rr, 1), 0)
        p = torch.where(active, r + beta * p, p)
        rr = torch.where(active, rr_new, rr)
    return z, taken


def least_squares(
    forward: Callable[[Tensor], Tensor],
    v: Tensor,
    prior: Tensor,
    weights: Tensor | None = None,
    mu: float = 0.01,
    iterations: int = 50,
    tolerance: float = 1e-5,
) -> tuple[Tensor, int]:
    """z* = argmin_z ‖√ρ ⊙ (F z − v)‖² + μ ‖z − prior‖² for a linear ``forward`` F (z (B, ...) → (B, ...) like ``v``)
    and ρ = ``weights`` (broadcastable to ``v``; None: 1), by conjugate gradients on the normal equations, started at
    ``prior``. Fᵀ is F's vector-Jacobian product. Returns z* and the iterations taken."""
    _, vjp = torch.func.vjp(forward, prior)

    def weighted(y):
        return y if weights is None else weights * y

    def normal(z):  # (Fᵀ ρ F + μ I) z
        return vjp(weighted(forward(z)))[0] + mu * z

    b = vjp(weighted(v))[0] + mu * prior
    return conjugate_gradients(normal, b, prior, iterations, tolerance)


class LeastSquares(Strategy):
    """Args:
    fuse: ``x_prev`` (the instances' x_{t−1}, MultiDiffusion's choice) or ``x0`` (their Tweedie x̂₀, SyncTweedies').
    mu: μ, the weight of z̄ = g(v) (the task's aggregate) against the instances; 0 = none (then what no instance
        observes keeps the start z̄, and the normal equations must be positive definite on the rest).
    iterations: at most this many conjugate-gradient steps per denoising step.
    tolerance: stop once ‖residual‖ ≤ tolerance · ‖right-hand side‖ of the normal equations.
    """

    name = "least_squares"

    def __init__(
        self,
        fuse: Literal["x_prev", "x0"] = "x_prev",
        mu: NonNegativeFloat = 0.01,
        iterations: PositiveInt = 50,
        tolerance: NonNegativeFloat = 1e-5,
    ):
        if fuse not in ("x_prev", "x0"):
            raise InputError(f"--model.strategy.fuse {fuse!r}: choose x_prev or x0")
        self.fuse, self.mu, self.iterations, self.tolerance = fuse, float(mu), int(iterations), float(tolerance)
        self.last_iterations = 0  # conjugate-gradient steps of the latest solve (for measurements)

    def needs(self):
        return frozenset({"canonical"})

    def sync(self, v: Tensor, problem) -> Tensor:
        """f_i(z*) for the least-squares z* fitted to the instances ``v`` (B, N, ...), each instance keeping its own
        values where f_i does not reach it."""
        canon = problem.canonical
        if canon is None:
            raise InputError("LeastSquares needs a problem with a canonical space (a task that provides it)")
        work = v if v.dtype in (torch.float32, torch.float64) else v.float()  # CG in float32 at least
        rho = canon.precision(work)
        z, self.last_iterations = least_squares(
            canon.forward, work, canon.aggregate(work), rho, self.mu, self.iterations, self.tolerance
        )
        return canon.forward_onto(z, work).to(v.dtype)

    def step(self, x, eps, step, problem, noise=None):
        x0 = step.x0(x, eps)
        n = noise() if step.stochastic else None
        if self.fuse == "x0":
            x0 = self.sync(x0, problem)
            return step.update(x, x0, eps_from_x0(x, x0, step.abar_t), n)
        return self.sync(step.update(x, x0, eps, n), problem)

    def describe(self):
        keys = ("fuse", "mu", "iterations", "tolerance")
        return {"method": self.name, **{k: getattr(self, k) for k in keys}}
