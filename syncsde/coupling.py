"""Couplings: "trajectory i is pulled toward f_ij(x^j) with element-wise weight W_ij" (SYNCSDE.md §2, §5).

A task declares its couplings; a strategy applies them. Trajectory states are stacked as ``x`` of shape
(B, N, ...) — B samples, N trajectories each — and a coupling acts on every sample of the batch at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor


@dataclass(frozen=True)
class Coupling:
    """Trajectory ``target`` (i) is coupled to trajectory ``source`` (j < i).

    ``map`` is f_ij, applied to x^j of shape (B, ...) and returning a tensor shaped like x^i (``None`` =
    identity). ``weight`` is W_ij, broadcastable to x^i (``None`` = all ones). SyncSDE's factorisation is
    autoregressive, so ``source < target`` is enforced (SYNCSDE.md §2).
    """

    target: int
    source: int
    map: Callable[[Tensor], Tensor] | None = None
    weight: Tensor | None = None

    def __post_init__(self):
        if not 0 <= self.source < self.target:
            raise ValueError(
                f"coupling {self.target} <- {self.source}: a trajectory may only couple to an earlier one (0 <= j < i)"
            )

    def pulled_toward(self, x: Tensor) -> Tensor:
        """f_ij(x^j) for every sample: the value trajectory i is pulled toward."""
        src = x[:, self.source]
        return src if self.map is None else self.map(src)

    def residual(self, x: Tensor) -> Tensor:
        """W_ij ⊙ (x^i − f_ij(x^j)), the term of SYNCSDE.md §3 (zero at the fixed point x^i = f_ij(x^j))."""
        r = x[:, self.target] - self.pulled_toward(x)
        return r if self.weight is None else self.weight.to(r) * r


class Canonical:
    """The canonical variable z of SyncTweedies (BASELINES.md §1.1): forward maps f_i (canonical → instance i) and
    the aggregation g (per canonical element, the mean of the back-projected instance values covering it).

    ``forward(z)`` maps (B, *canonical_shape) to instances (B, N, ...); ``aggregate(x)`` maps back. For the 1-to-1
    maps used here (crops, views) g∘f = id.
    """

    shape: tuple[int, ...]

    def forward(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def aggregate(self, x: Tensor) -> Tensor:
        raise NotImplementedError


@dataclass
class SyncProblem:
    """What a task tells a strategy about one batch: the number of trajectories, their couplings (SyncSDE), and
    optionally the canonical geometry (SyncTweedies, MultiDiffusion, Visual Anagrams)."""

    num_trajectories: int
    couplings: Sequence[Coupling] = ()
    extra: dict = field(default_factory=dict)
    canonical: Canonical | None = None

    def __post_init__(self):
        for c in self.couplings:
            if c.target >= self.num_trajectories:
                raise ValueError(
                    f"coupling {c.target} <- {c.source} names a trajectory beyond N = {self.num_trajectories}"
                )


def coupling_residuals(x: Tensor, couplings: Sequence[Coupling]) -> Tensor:
    """Σ_{j<i} W_ij ⊙ (x_t^i − f_ij(x_t^j)) for every trajectory i, stacked like ``x`` (zero for free trajectories).

    Reads only ``x`` (the pre-step snapshot): Jacobi batching, independent of trajectory order (SYNCSDE.md §3.1).
    """
    out = torch.zeros_like(x)
    for c in couplings:
        out[:, c.target] += c.residual(x)
    return out
