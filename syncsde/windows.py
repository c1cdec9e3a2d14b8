"""Overlapping windows along the last axis: the shared geometry of wide images (columns) and long motions (frames).

n windows of length w at stride s over an axis of length L: window j covers [s·j, s·j + w) (mod L when circular).
SyncSDE couples window j to window j−1 only (a chain, SYNCSDE.md §6.3, §6.6): f shifts window j−1 by s with zero
fill and W = 1 on the w − s positions they share. In a circular axis, where a window runs past the end onto window
0's positions it is coupled to window 0 there instead.

The canonical variable of the baselines is the whole axis (f_i = crop, g = per-position mean). Assembly
(``assembly``): ``overwrite`` (paper) writes the windows in order so the last window keeps its whole extent, or,
circularly, takes each window's first s positions; ``nearest`` takes each position from the window whose centre is
nearest; ``feather`` blends the windows covering a position with weights that fall linearly from the window centre
to its edges.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from syncsde.coupling import Canonical, Coupling
from syncsde.errors import InputError


class ShiftMap:
    """f(x)[..., c] = x[..., src[c]] where ``valid[c]``, else 0: a shift between overlapping windows."""

    def __init__(self, src: Tensor, valid: Tensor):
        self.src, self.valid = src, valid

    def __call__(self, x: Tensor) -> Tensor:
        return x[..., self.src.to(x.device)] * self.valid.to(x)


def scatter_sum(x: Tensor, columns: Tensor, length: int) -> Tensor:
    """(B, n, *D, w) window values → (B, *D, L): the sum over windows at each axis position (``columns`` (n, w))."""
    flat = x.movedim(1, -2).flatten(-2)
    return x.new_zeros(*flat.shape[:-1], length).index_add_(-1, columns.flatten().to(x.device), flat)


class CropCanonical(Canonical):
    """The whole axis as SyncTweedies' canonical variable (BASELINES.md §1.4, §2.1): f_i = crop of window i,
    g = per-position mean over the windows covering it. Instances (B, n, *D, w) ↔ canonical (B, *D, L)."""

    def __init__(self, columns: Tensor, length: int, shape: tuple[int, ...]):
        self.columns, self.length, self.shape = columns, length, shape  # columns: (n, w) axis position of each
        self.count = torch.bincount(columns.flatten(), minlength=length).float()
        if not (self.count > 0).all():
            raise InputError("the windows leave positions uncovered; choose a length the windows tile")

    def forward(self, z: Tensor) -> Tensor:
        return z[..., self.columns.to(z.device)].movedim(-2, 1)

    def aggregate(self, x: Tensor) -> Tensor:
        return scatter_sum(x, self.columns, self.length) / self.count.to(x)


class Windows:
    """Args: length L, window w, stride s (0 < s ≤ w ≤ L), circular. Non-circular needs (L − w) % s == 0."""

    def __init__(self, length: int, window: int, stride: int, circular: bool = False):
        self.L, self.w, self.s, self.circular = length, window, stride, circular
        if not 0 < stride <= window:
            raise InputError(f"stride {stride} must be between 1 and the window {window}")
        if circular:
            if length % stride or length < window:
                raise InputError(f"circular length {length} must be a multiple of the stride {stride} and >= {window}")
            self.n = length // stride
        else:
            if length < window or (length - window) % stride:
                raise InputError(f"length {length} does not fit windows of {window} at stride {stride}")
            self.n = (length - window) // stride + 1
        self.columns = torch.stack([(stride * j + torch.arange(window)) % length for j in range(self.n)])

    def couplings(self) -> list[Coupling]:
        w, s, L = self.w, self.s, self.L
        c = torch.arange(w)
        out = []
        for j in range(1, self.n):
            chain = c < w - s  # positions shared with window j−1 (its position c + s)
            if self.circular:
                wrap = (s * j + c >= L) & ((s * j + c) - L < w)  # positions on window 0 across the seam
                chain = chain & ~wrap
                if wrap.any():
                    out.append(Coupling(j, 0, ShiftMap((s * j + c - L).clamp(0, w - 1), wrap), wrap.float()))
            out.append(Coupling(j, j - 1, ShiftMap((c + s).clamp(max=w - 1), chain), chain.float()))
        return out

    def canonical(self, leading: tuple[int, ...]) -> CropCanonical:
        """The canonical geometry for instances of shape (*leading, w)."""
        return CropCanonical(self.columns, self.L, (*leading, self.L))

    def assemble(self, x: Tensor, mode: Literal["overwrite", "nearest", "feather"] = "overwrite") -> Tensor:
        """(B, n, *D, w) → (B, *D, L): ``overwrite`` in window order, or (circular) window k's first s positions;
        ``nearest`` or ``feather``: the blend of the windows with :meth:`assembly_weights`."""
        if mode == "overwrite":
            out = x.new_zeros(x.shape[0], *x.shape[2:-1], self.L)
            for j in range(self.n):
                cols = self.columns[j][: self.s] if self.circular else self.columns[j]
                out[..., cols] = x[:, j, ..., : len(cols)]
            return out
        weights = self.assembly_weights(mode).to(x)  # (n, w)
        total = scatter_sum(x * weights.view(self.n, *[1] * (x.ndim - 3), self.w), self.columns, self.L)
        return total / scatter_sum(weights[None], self.columns, self.L)

    def assembly_weights(self, mode: Literal["nearest", "feather"]) -> Tensor:
        """(n, w) weights of each window's positions in the assembly. ``feather``: min(c + 1, w − c), linear from the
        edges to the centre. ``nearest``: 1 where the window's centre is the nearest among the windows covering the
        position (ties go to the later window, as overwrite does), else 0."""
        c = torch.arange(self.w, dtype=torch.float64)
        if mode == "feather":
            return torch.minimum(c + 1, self.w - c).expand(self.n, -1).float()
        if mode != "nearest":
            raise InputError(f"assembly must be 'overwrite', 'nearest' or 'feather', got {mode!r}")
        distance = (c - (self.w - 1) / 2).abs().expand(self.n, -1)  # of each window position to its window's centre
        best = torch.full((self.L,), float("inf"), dtype=torch.float64).scatter_reduce(
            0, self.columns.flatten(), distance.flatten(), "amin"
        )
        winner = torch.full((self.L,), -1).scatter_reduce(
            0,
            self.columns.flatten(),
            torch.where(distance == best[self.columns], torch.arange(self.n)[:, None], -1).flatten(),
            "amax",
        )
        return (winner[self.columns] == torch.arange(self.n)[:, None]).float()
