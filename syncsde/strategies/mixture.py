"""Mixture of Diffusers (BASELINES.md §8): the windows' ε fused with Gaussian weights centred on each window, then one
scheduler step on the canvas.

Per step, with ε̂^i the CFG output of window i and w the same Gaussian weight map for every window,

    δ = Σ_i f_i^T(w ⊙ ε̂^i) / Σ_i f_i^T(w),    z_{t'} = U(z_t, x̂₀(z_t, δ)),    x^i ← f_i(z_{t'}),

i.e. SyncTweedies' canonical ε averaging (case 4) with the plain mean replaced by the w-weighted mean: a window's
prediction counts most at its centre, where the denoiser saw the most context. With uniform weights it is case 4
exactly. ``canonical.aggregate`` is a mean over the windows covering a position, so the ratio of the aggregates of
w ⊙ ε and of w is the weighted mean (the counts cancel) — exactly the public code's stitching for the wide-image
task's default ``canonical_blend: mean``.

**Regions** (tasks ``regions`` and ``mask_t2i``, which provide them): the public code's canvas pipeline
(``mixdiff/canvas.py``), where every prompt has a rectangle of the canvas and a Gaussian over that rectangle (rows and
columns centred at (n − 1)/2), and ε = Σ_k w_k ε̂^k / Σ_k w_k with w_k zero outside region k's rectangle. Here region k's
weight is its mask times the Gaussian of the mask's bounding box (the rectangle, for a rectangular mask), the
background prompt is the public code's full-canvas region (the Gaussian of the whole image, so the regions fade into
it toward their borders), and the whole-image trajectory, which the task's canvas J does not weigh, does not count.
Every trajectory then takes the stepped canvas. Unlike the public code, each region's ε is predicted on the whole
image, not on its crop.
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
    centre: the rows' midpoint: ``official`` = h/2 as the public code's tiling (half a position below the centre; its
        columns use (w − 1)/2), or ``exact`` = (h − 1)/2 for both axes. Regions are centred exactly either way, as the
        public code's canvas pipeline centres them.
    """

    name = "mixture_of_diffusers"

    def __init__(self, variance: PositiveFloat = 0.01, centre: Literal["official", "exact"] = "official"):
        if centre not in ("official", "exact"):
            raise InputError(f"--model.strategy.centre {centre!r}: choose official or exact")
        self.variance, self.centre = float(variance), centre

    def needs(self):
        return frozenset({"canonical"})

    def weights(self, height: int, width: int, exact: bool = False) -> Tensor:
        """The (height, width) Gaussian weight map of one window (float64); ``exact``: centred at (n − 1)/2 on both
        axes whatever ``centre`` says."""

        def axis(n: int, mid: float) -> Tensor:
            p = torch.arange(n, dtype=torch.float64)
            return torch.exp(-((p - mid) ** 2) / n**2 / (2 * self.variance)) / math.sqrt(2 * math.pi * self.variance)

        row_mid = height / 2 if self.centre == "official" and not exact else (height - 1) / 2
        return torch.outer(axis(height, row_mid), axis(width, (width - 1) / 2))

    def region_weights(self, x: Tensor, problem) -> Tensor:
        """(B, N, 1, h, w) weight of each trajectory's ε on a region problem: a region's mask times the Gaussian of its
        bounding box; the whole image's Gaussian for a trajectory without a mask that the canvas weighs (the
        background); 0 for one that it does not (the whole-image trajectory)."""
        B, N, (h, w) = x.shape[0], x.shape[1], x.shape[-2:]
        canon, masks = problem.canonical, problem.regions.masks
        out = x.new_zeros(B, N, 1, h, w)
        for k in range(N):
            if k in masks:
                m = masks[k].to(x).expand(B, 1, h, w)
                for b in range(B):
                    rows, cols = m[b, 0].any(1).nonzero().flatten(), m[b, 0].any(0).nonzero().flatten()
                    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
                    out[b, k, 0, r0:r1, c0:c1] = self.weights(r1 - r0, c1 - c0, exact=True).to(x)
                out[:, k] *= m
            elif canon.aggregate(torch.zeros_like(x).index_fill_(1, torch.tensor([k], device=x.device), 1)).any():
                out[:, k] = self.weights(h, w, exact=True).to(x)
        return out

    def step(self, x, eps, step, problem, noise=None):
        canon = problem.canonical
        if canon is None:
            raise InputError("MixtureOfDiffusers needs a problem with a canonical space (a task that provides it)")
        z = canon.aggregate(x)
        if problem.regions is not None:
            w = self.region_weights(x, problem).to(eps)
            delta = (w * eps).sum(1) / w.sum(1)
        else:
            w = self.weights(*x.shape[-2:]).to(eps).expand_as(eps)
            delta = canon.aggregate(w * eps) / canon.aggregate(w)
        z_next = step.update(z, step.x0(z, delta), delta, noise(canon.shape) if step.stochastic else None)
        return canon.forward_onto(z_next, x)

    def reads(self):
        return Reads(canonical=True, eps=True)

    def describe(self):
        return {"method": self.name, "variance": self.variance, "centre": self.centre}
