"""SyncTweedies and its special cases (BASELINES.md §1): averaging in instance or canonical space.

Per step, with ε̂^i the CFG output at x_t^i, x̂₀^i its Tweedie estimate and U the scheduler's update:

| case | averaged | update |
|---|---|---|
| 0 | nothing | x^i ← U(x_t^i, x̂₀^i) |
| 1 | ε | ε̂^i ← f_i(g{ε̂^j}); x̂₀^i from own x_t^i; U |
| 2 | x̂₀ (SyncTweedies, default) | x̂₀^i ← f_i(g{x̂₀^j}); U(x_t^i, x̂₀^i) |
| 3 | x_{t'} (MultiDiffusion) | x^i ← f_i(g{U(x_t^j, x̂₀^j)}) |
| 4 | canonical ε | δ = g{ε̂^i}; ẑ₀ = (z_t − σ_t δ)/α_t; z_{t'} = U(z_t, ẑ₀) |
| 5 | canonical x̂₀ (SyncMVD) | ẑ₀ = g{x̂₀^i}; z_{t'} = U(z_t, ẑ₀) |
| 6 | canonical x_{t'} | z_{t'} = g{U(f_i(z_t), x̂₀^i)} |

Canonical cases keep the instances equal to f_i(z) and read z_t = g(x_t) (exact for 1-to-1 maps); their DDPM noise
is drawn in canonical space. U(x_t, x̂₀) uses ε = (x_t − α_t x̂₀)/σ_t, so DDIM and DDPM are both affine in (x_t, x̂₀).
While t ≤ ``sync_t_min`` (the "last 20%" rule, ``mvd_end``), every instance takes a plain step.
"""

from __future__ import annotations

import torch
from jsonargparse.typing import NonNegativeInt, PositiveInt
from torch import Tensor

from syncsde.errors import InputError
from syncsde.schedule import eps_from_x0
from syncsde.strategies.base import Reads, Strategy


class SyncTweedies(Strategy):
    """Args:
    case: 0–6 as in the table above (2 = SyncTweedies, the recommended method).
    sync_t_min: synchronize only while t > sync_t_min (200 = the official ``mvd_end`` 0.8; 0 = always).
    """

    name = "synctweedies"

    def __init__(self, case: NonNegativeInt = 2, sync_t_min: NonNegativeInt = 0):
        if case not in range(7):
            raise InputError(f"SyncTweedies case must be 0..6, got {case}")
        self.case, self.sync_t_min = case, int(sync_t_min)

    def needs(self):
        return frozenset() if self.case == 0 else frozenset({"canonical"})

    @staticmethod
    def _update(x_t, x0, step, noise):
        return step.update(x_t, x0, eps_from_x0(x_t, x0, step.abar_t), noise)

    def step(self, x, eps, step, problem, noise=None):
        canon = problem.canonical
        if self.case == 0 or step.t <= self.sync_t_min:
            return self.plain_update(x, eps, step, noise)
        if canon is None:
            raise InputError(f"{type(self).__name__} needs a problem with a canonical space (a task that provides it)")
        draw = (lambda shape=None: noise(shape)) if step.stochastic else (lambda shape=None: None)
        g = canon.aggregate

        def sync(v):  # f_i(g{v}), instance i keeping its own values where the canonical variable does not reach
            return canon.forward_onto(g(v), v)

        if self.case == 1:
            return self._update(x, step.x0(x, sync(eps)), step, draw())
        if self.case == 2:
            return self._update(x, sync(step.x0(x, eps)), step, draw())
        if self.case == 3:
            return sync(self._update(x, step.x0(x, eps), step, draw()))
        z = g(x)
        if self.case == 4:
            return canon.forward_onto(self._update(z, step.x0(z, g(eps)), step, draw(canon.shape)), x)
        if self.case == 5:
            return canon.forward_onto(self._update(z, g(step.x0(x, eps)), step, draw(canon.shape)), x)
        return sync(self._update(canon.forward_onto(z, x), step.x0(x, eps), step, draw()))  # case 6

    def reads(self):  # every case averages a function of (x_t, ε) over the trajectories covering a position
        return Reads() if self.case == 0 else Reads(canonical=True, eps=True)

    def describe(self):
        return {"method": self.name, "case": self.case, "sync_t_min": self.sync_t_min}


class MultiDiffusion(SyncTweedies):
    """MultiDiffusion (BASELINES.md §2): average the instances' x_{t'} in canonical space = SyncTweedies case 3.

    Panoramas: the wide-image task at a 64-latent window and a stride of 8 latent columns (``stride: 64`` px on SD).
    Region-based generation (mask-based T2I): the canonical image is the mask-weighted mean of the region prompts'
    trajectories, J = Σ_k m_k x^k / Σ_k m_k, with **bootstrapping** during the first ``bootstrap_steps`` steps: each
    foreground trajectory sees x^k ← m_k x^k + (1−m_k)(α_t b + σ_t n), b the encoded image of a uniform random colour
    (one of ``num_colours`` drawn from the sample's generator per trajectory and step), n the matching part of the
    initial noise.
    """

    name = "multidiffusion"

    def __init__(self, bootstrap_steps: NonNegativeInt = 0, num_colours: PositiveInt = 20):
        super().__init__(case=3)
        self.bootstrap_steps, self.num_colours = bootstrap_steps, num_colours
        self._noise: Tensor | None = None  # x_T of the batch being sampled, and its encoded colours
        self._palette: Tensor | None = None

    def needs(self):
        return frozenset({"canonical", "regions"} if self.bootstrap_steps else {"canonical"})

    def before_denoise(self, x, step, problem, noise=None):
        regions = problem.regions
        if step.index >= self.bootstrap_steps or regions is None or not regions.masks:
            return x
        if step.index == 0:  # a new batch: its initial noise, and the palette in the working space
            self._noise = x.clone()
            colours = torch.rand(self.num_colours, 3, generator=torch.Generator().manual_seed(0))
            self._palette = regions.encode(colours).to(x)
        fixed, pool = self._noise, self._palette
        x = x.clone()
        for k, m in regions.masks.items():
            pick = (torch.special.ndtr(noise((1,))[:, 0]) * self.num_colours).long().clamp(max=self.num_colours - 1)
            b = pool[pick.to(pool.device)]
            x[:, k] = m * x[:, k] + (1 - m) * (step.abar_t**0.5 * b + step.sigma * fixed[:, k])
        return x

    def describe(self):
        return {"method": self.name, "bootstrap_steps": self.bootstrap_steps}


class VisualAnagrams(SyncTweedies):
    """Visual Anagrams (BASELINES.md §3.2): one pixel state z seen through every view; each view's CFG ε — and its
    learned-variance channels — mapped back by the inverse view and averaged, then the scheduler's step on z.
    That is canonical ε averaging (case 4) plus the variance rule: under DDPM (DeepFloyd IF's own sampler) the
    averaged variance channels set the learned-range variance; under DDIM they are unused.
    Use ``init_from_canonical: true`` on the ambiguous task (one initial noise)."""

    name = "visual_anagrams"
    uses = frozenset({"learned_variance"})

    def needs(self):
        return frozenset({"canonical"})

    def __init__(self):
        super().__init__(case=4)

    def step(self, x, eps, step, problem, noise=None):
        canon = problem.canonical
        if canon is None:
            raise InputError("VisualAnagrams needs a problem with a canonical space (a task that provides it)")
        C = x.shape[2]
        variance = canon.aggregate_variance(eps[:, :, C:]) if eps.shape[2] > C and step.kind == "ddpm" else None
        z, e = canon.aggregate(x), canon.aggregate(eps[:, :, :C])
        z_next = step.update(z, step.x0(z, e), e, noise(canon.shape) if step.stochastic else None, variance)
        return canon.forward(z_next)

    def describe(self):
        return {"method": self.name}
