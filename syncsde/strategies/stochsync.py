"""StochSync (Yeo et al., ICLR 2025; BASELINES.md §12): SyncTweedies' x̂₀ averaging in canonical space with three
changes — maximum stochasticity, a multi-step x̂₀, and views that do not overlap within a step.

Per step t → t', with A the views of this step (one group of mutually non-overlapping views, the groups taken in
turn) and z the canonical clean estimate the strategy keeps between steps:

    x̂₀^i = ODE_{t→0}(x_t^i)                          i ∈ A: DDIM (η = 0) from t through the grid below t down to
                                                       t = 0 (``ode_steps`` = 0: Tweedie's one-step x̂₀)
    z     ← Σ_{i∈A} f_i^T x̂₀^i / Σ_{i∈A} f_i^T 1    where the views of A reach; z elsewhere (kept from earlier steps)
    x̂₀^i ← f_i(z)                                    every view (the inactive ones read the canvas too)
    ε^i   = √(1−r) (x_t^i − √ᾱ_t x̂₀^i)/√(1−ᾱ_t) + √r n^i,   n^i fresh noise
    x_{t'}^i = √ᾱ_{t'} x̂₀^i + √(1−ᾱ_{t'}) ε^i         (t' ≤ 0: ᾱ_{t'} = 1, the clean fused estimate)

r = ``stochasticity``: 1 (StochSync) re-noises the fused estimate with fresh noise as score distillation does; 0 is
DDIM's own direction, so r = 0, ``ode_steps`` = 0 and ``groups`` = all is SyncTweedies case 2 (x̂₀ averaged through
the canonical variable) under the DDIM η = 0 sampler, step for step.

The multi-step x̂₀ is the public code's ``ddim_loop(x_t, t, 0, num_steps=ode_steps)``: the timesteps t, then those of
``linspace(999, 0, ode_steps)`` strictly between t and 0, then 0; each interval one DDIM step √ᾱ_next x̂₀ +
√(1−ᾱ_next) ε̂, the first reading the sampler's ε, the others one more network call each (``problem.denoise``); the
result is the state reached at t = 0.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import torch
from jsonargparse.typing import NonNegativeInt
from torch import Tensor

from syncsde.coupling import Canonical, Denoise
from syncsde.errors import InputError
from syncsde.schedule import Step, ddim_step, eps_from_x0
from syncsde.strategies.base import Strategy

TOP = 999  # the public grid's first timestep (torch.linspace(999, 0, ode_steps))


class StochSync(Strategy):
    """Args:
    stochasticity: r in [0, 1], the share of fresh noise in the re-noising direction (1: StochSync's maximum
        stochasticity; 0: DDIM's direction, SyncTweedies).
    ode_steps: the x̂₀ grid, as the public ``ode_steps`` (25): every step solves the ODE from t to 0 through the
        points of ``linspace(999, 0, ode_steps)`` below t (one network call per point); 0 = Tweedie's x̂₀.
    groups: ``disjoint``: each step fuses one group of views whose canonical footprints do not overlap (groups built
        greedily in view order, taken in turn); ``all``: every view every step.
    max_overlap: two views go together while the canonical cells they share are at most this share of the smaller
        footprint (a footprint includes the bake's margin of about a view pixel, which touching views share).
    """

    name = "stochsync"

    def __init__(
        self,
        stochasticity: float = 1.0,
        ode_steps: NonNegativeInt = 25,
        groups: Literal["disjoint", "all"] = "disjoint",
        max_overlap: float = 0.1,
    ):
        if not 0 <= stochasticity <= 1:
            raise InputError(f"--model.strategy.stochasticity {stochasticity}: give a value from 0 to 1")
        if groups not in ("disjoint", "all"):
            raise InputError(f"--model.strategy.groups {groups!r}: choose disjoint or all")
        if not 0 <= max_overlap < 1:
            raise InputError(f"--model.strategy.max_overlap {max_overlap}: give a share from 0 to below 1")
        self.stochasticity, self.ode_steps, self.groups, self.max_overlap = (
            float(stochasticity), int(ode_steps), groups, float(max_overlap)
        )  # fmt: skip
        self._groups: list[list[int]] | None = None  # the view groups of the batch being sampled
        self._z: Tensor | None = None  # its canonical estimate

    def needs(self):
        return frozenset({"canonical", "denoise"} if self.ode_steps else {"canonical"})

    def view_groups(self, canon: Canonical, x: Tensor) -> list[list[int]]:
        """The trajectories' groups (greedy colouring in trajectory order: a view joins the first group none of whose
        views it overlaps by more than ``max_overlap``)."""
        N = x.shape[1]
        if self.groups == "all":
            return [list(range(N))]
        feet = []
        for i in range(N):  # view i's footprint: where the aggregate of a one on view i alone is non-zero
            one = torch.zeros_like(x[:1])
            one[:, i] = 1
            feet.append(canon.aggregate(one)[0].flatten() != 0)
        F = torch.stack(feet).double()
        size = F.sum(1)
        conflict = F @ F.T > self.max_overlap * torch.minimum(size[:, None], size[None, :])
        groups: list[list[int]] = []
        for i in range(N):
            free = [g for g in groups if not conflict[i, g].any()]
            if free:
                free[0].append(i)
            else:
                groups.append([i])
        return groups

    def ode_x0(self, x: Tensor, eps: Tensor, step: Step, denoise: Denoise | None, trajectories: list[int]) -> Tensor:
        """x̂₀ of the states ``x`` (B, k, ...) of ``trajectories`` at ``step``, whose ε is ``eps``: the public
        ``ddim_loop`` from t to 0 (module docstring); ``ode_steps`` = 0: Tweedie's x̂₀."""
        if not self.ode_steps:
            return step.x0(x, eps)
        if denoise is None:
            raise InputError(
                "StochSync's multi-step x̂₀ needs the task's network call (problem.denoise, a task that provides "
                "denoise); or set --model.strategy.ode_steps 0"
            )
        grid = [int(g) for g in torch.linspace(TOP, 0, self.ode_steps, dtype=torch.long) if 0 < g < step.t] + [0]
        here = replace(step, kind="flow" if step.kind == "flow" else "ddim", eta=0.0)
        for k, t_next in enumerate(grid):
            move = replace(here, t_prev=t_next, abar_prev=denoise.abar(t_next))
            x = move.update(x, here.x0(x, eps), eps)
            if k + 1 == len(grid):
                return x
            here = replace(move, t=t_next, abar_t=move.abar_prev)
            eps = denoise(x, here, trajectories).to(x.dtype)
        raise AssertionError("unreachable: the grid ends at 0")

    def step(self, x, eps, step, problem, noise=None):
        canon = problem.canonical
        if canon is None:
            raise InputError("StochSync needs a problem with a canonical space (a task that provides it)")
        if step.index == 0 or self._groups is None:  # a new batch
            self._groups, self._z = self.view_groups(canon, x), None
        N = x.shape[1]
        active = self._groups[step.index % len(self._groups)]
        x0 = step.x0(x, eps)
        if self.ode_steps:
            x0[:, active] = self.ode_x0(x[:, active], eps[:, active], step, problem.denoise, active)
        if len(active) == N:
            z = canon.aggregate(x0)
        else:  # the mean over the active views alone (aggregate is a mean over the views covering a cell)
            mask = torch.zeros_like(x0)
            mask[:, active] = 1
            weight = canon.aggregate(mask)
            kept = self._z if self._z is not None else torch.zeros_like(weight)
            z = torch.where(weight > 0, canon.aggregate(mask * x0) / weight, kept)
        self._z = z
        x0 = canon.forward_onto(z, x0)
        direction = eps_from_x0(x, x0, step.abar_t)
        r = self.stochasticity
        if r > 0:
            if noise is None:
                raise ValueError("StochSync's fresh noise needs one generator per sample")
            fresh = noise()
            direction = fresh if r == 1 else (1 - r) ** 0.5 * direction + r**0.5 * fresh
        return ddim_step(x0, direction, 1.0 if step.t_prev <= 0 else step.abar_prev)

    def describe(self):
        return {
            "method": self.name,
            "stochasticity": self.stochasticity,
            "ode_steps": self.ode_steps,
            "groups": self.groups,  # not "views": the sphere and mesh tasks describe their views
            "max_overlap": self.max_overlap,
        }
