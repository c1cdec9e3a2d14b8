"""Mixture of Diffusers (BASELINES.md §8): the windows' ε fused with Gaussian weights centred on each window, then one
scheduler step on the canvas.

Per step, with ε̂^i the CFG output of window i and w the same Gaussian weight map for every window,

    δ = Σ_i f_i^T(w ⊙ ε̂^i) / Σ_i f_i^T(w),    z_{t'} = U(z_t, x̂₀(z_t, δ)),    x^i ← f_i(z_{t'}),

i.e. SyncTweedies' canonical ε averaging (case 4) with the plain mean replaced by the w-weighted mean: a window's
prediction counts most at its centre, where the denoiser saw the most context. With uniform weights it is case 4
exactly. ``canonical.aggregate`` is a mean over the windows covering a position, so the ratio of the aggregates of
w ⊙ ε and of w is the weighted mean (the counts cancel) — exactly the public code's stitching for the wide-image
task's default ``canonical_blend: mean``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from jsonargparse.typing import PositiveFloat
from torch import Tensor

from syncsde.errors import InputError
from syncsde.strategies.base import Reads, Strategy


class MixtureOfDiffusers(Strategy):
    """Args:
    variance: of the Gaussian, in units of the window size squared (0.01 in the public code).
    centre: the rows' midpoint: ``official`` = h/2 as the public code (half a position below the centre; its columns
        use (w − 1)/2), or ``exact`` = (h − 1)/2 for both axes.
    """

    name = "mixture_of_diffusers"

    def __init__(self, variance: PositiveFloat = 0.01, centre: Literal["official", "exact"] = "official"):
        if centre not in ("official", "exact"):
            raise InputError(f"--model.strategy.centre {centre!r}: choose official or exact")
        self.variance, self.centre = float(variance), centre

    def needs(self):
        return frozenset({"canonical"})

    def weights(self, height: int, width: int) -> Tensor:
        """The (height, width) Gaussian weight map of one window (float64)."""

        def axis(n: int, mid: float) -> Tensor:
            p = torch.arange(n, dtype=torch.float64)
            return torch.exp(-((p - mid) ** 2) / n**2 / (2 * self.variance)) / math.sqrt(2 * math.pi * self.variance)

        row_mid = height / 2 if self.centre == "official" else (height - 1) / 2
        return torch.outer(axis(height, row_mid), axis(width, (width - 1) / 2))

    def step(self, x, eps, step, problem, noise=None):
        canon = problem.canonical
        if canon is None:
            raise InputError("MixtureOfDiffusers needs a problem with a canonical space (a task that provides it)")
        w = self.weights(*x.shape[-2:]).to(eps).expand_as(eps)
        z = canon.aggregate(x)
        delta = canon.aggregate(w * eps) / canon.aggregate(w)
        z_next = step.update(z, step.x0(z, delta), delta, noise(canon.shape) if step.stochastic else None)
        return canon.forward_onto(z_next, x)

    def reads(self):
        return Reads(canonical=True, eps=True)

    def describe(self):
        return {"method": self.name, "variance": self.variance, "centre": self.centre}
