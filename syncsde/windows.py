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

:class:`Grid` is the 2-D sibling (canvases taller than a window): the product of a row axis and a column axis, each a
:class:`Windows`; its couplings, canonical variable and assembly are stated on the class. Both give a task the same
three things (:class:`syncsde.geometry.Geometry`): ``couplings()``, ``canonical(leading)`` and ``assemble(x, mode)``.
"""

from __future__ import annotations

import copy
from typing import Literal, Sequence

import torch
from torch import Tensor

from syncsde.coupling import Canonical, Coupling
from syncsde.errors import InputError
from syncsde.registry import register


class ShiftMap:
    """f(x)[..., c] = x[..., src[c]] where ``valid[c]``, else 0, along the last axis (``axis`` −2: along the rows,
    f(x)[..., c, :] = x[..., src[c], :]): a shift between overlapping windows."""

    def __init__(self, src: Tensor, valid: Tensor, axis: int = -1):
        self.src, self.valid, self.axis = src, valid, axis

    def __call__(self, x: Tensor) -> Tensor:
        return x.index_select(self.axis, self.src) * self.valid.view(-1, *[1] * (-1 - self.axis))

    def to(self, device, dtype) -> ShiftMap:
        """On ``device`` (indices and mask as they are: a boolean mask multiplies in x's dtype)."""
        return ShiftMap(self.src.to(device), self.valid.to(device), self.axis)


def at_like(t: Tensor, like: Tensor, dtype: bool = False) -> Tensor:
    """``t`` on ``like``'s device (and in its dtype): itself when it is there already (placed once per batch, so
    nothing is copied per step), else a copy."""
    if t.device == like.device and (not dtype or t.dtype == like.dtype):
        return t
    return t.to(like) if dtype else t.to(like.device)


def scatter_sum(x: Tensor, columns: Tensor, length: int) -> Tensor:
    """(B, n, *D, w) window values → (B, *D, L): the sum over windows at each axis position (``columns`` (n, w))."""
    flat = x.movedim(1, -2).flatten(-2)
    return x.new_zeros(*flat.shape[:-1], length).index_add_(-1, at_like(columns, x).flatten(), flat)


class CropCanonical(Canonical):
    """The whole axis as SyncTweedies' canonical variable (BASELINES.md §1.4, §2.1): f_i = crop of window i,
    g = per-position mean over the windows covering it. Instances (B, n, *D, w) ↔ canonical (B, *D, L).

    ``weights`` (n, w), optional: each window position's precision as an observation of the canvas; g is then the
    precision-weighted mean, and :attr:`precision` (the weights over their maximum, shaped to broadcast against the
    instances) tells SyncSDE's canonical model how strongly each position is pulled (SYNCSDE.md §4.1)."""

    def __init__(self, columns: Tensor, length: int, shape: tuple[int, ...], weights: Tensor | None = None):
        self.columns, self.length, self.shape = columns, length, shape  # columns: (n, w) axis position of each
        self.weights = None if weights is None else (weights / weights.max()).float()
        ones = torch.ones(columns.shape) if weights is None else self.weights
        self.count = torch.zeros(length).index_add_(0, columns.flatten(), ones.flatten())
        if not (self.count > 0).all():
            raise InputError("the windows leave positions uncovered; choose a length the windows tile")

    def precision(self, x: Tensor) -> Tensor | None:
        """The relative precision of each position of the instances ``x`` (B, n, *D, w), broadcastable against them
        (1 at the most precise), or None for the plain mean."""
        return self._precision(x)

    def _precision(self, x: Tensor) -> Tensor | None:
        return (
            None
            if self.weights is None
            else at_like(self.weights, x, dtype=True).view(len(self.columns), *[1] * (x.ndim - 3), -1)
        )

    def forward(self, z: Tensor) -> Tensor:
        return z[..., at_like(self.columns, z)].movedim(-2, 1)

    def aggregate(self, x: Tensor) -> Tensor:
        rho = self._precision(x)
        total = scatter_sum(x if rho is None else x * rho, self.columns, self.length)
        return total / at_like(self.count, x, dtype=True)

    def to(self, device, dtype) -> CropCanonical:
        """On ``device``, the coverage counts (and precision weights) in ``dtype``."""
        moved = copy.copy(self)
        moved.columns, moved.count = self.columns.to(device), self.count.to(device, dtype)
        if self.weights is not None:
            moved.weights = self.weights.to(device, dtype)
        return moved

    def subset(self, index: Sequence[int]) -> CropCanonical:
        """The same canonical variable seen by the windows ``index`` only (window-parallel sampling,
        :mod:`syncsde.parallel`): ``aggregate`` is exact wherever all the windows covering a position are among them
        (the same sum, in the same order, divided by the whole count), ``forward`` crops only those windows."""
        sub = copy.copy(self)
        sub.columns = self.columns[list(index)]
        if self.weights is not None:
            sub.weights = self.weights[list(index)]
        return sub


@register("geometry", "windows")
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

    def canonical(self, leading: tuple[int, ...], blend: Literal["mean", "feather"] = "mean") -> CropCanonical:
        """The canonical geometry for instances of shape (*leading, w): g the plain mean (``mean``) or the mean
        weighted by the ``feather`` assembly weights."""
        weights = None if blend == "mean" else self.assembly_weights(blend)
        return CropCanonical(self.columns, self.L, (*leading, self.L), weights)

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

    def assembly_weights(self, mode: Literal["overwrite", "nearest", "feather"]) -> Tensor:
        """(n, w) weights of each window's positions in the assembly. ``feather``: min(c + 1, w − c), linear from the
        edges to the centre. ``nearest``: 1 where the window's centre is the nearest among the windows covering the
        position (ties go to the later window, as overwrite does), else 0. ``overwrite``: 1 where the window is the last
        to write the position in :meth:`assemble` (circular: its first s positions), else 0."""
        c = torch.arange(self.w, dtype=torch.float64)
        if mode == "feather":
            return torch.minimum(c + 1, self.w - c).expand(self.n, -1).float()
        if mode == "overwrite":
            if self.circular:
                return (c < self.s).float().expand(self.n, -1).clone()
            last = torch.full((self.L,), -1).scatter_reduce(
                0, self.columns.flatten(), torch.arange(self.n).repeat_interleave(self.w), "amax"
            )
            return (last[self.columns] == torch.arange(self.n)[:, None]).float()
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


class GridCanonical(CropCanonical):
    """The whole 2-D canvas as the canonical variable: :class:`CropCanonical` over the flattened (H·W) positions
    (``columns`` (n, h·w): each window's flat positions). Instances (B, n, *D, h, w) ↔ canonical (B, *D, H, W)."""

    def __init__(
        self,
        index: Tensor,
        size: tuple[int, int],
        window: tuple[int, int],
        shape: tuple[int, ...],
        weights: Tensor | None = None,
    ):
        super().__init__(index, size[0] * size[1], shape, weights)
        self.size, self.window = size, window

    def precision(self, x: Tensor) -> Tensor | None:
        rho = self._precision(x.flatten(-2))
        return None if rho is None else rho.unflatten(-1, self.window)

    def forward(self, z: Tensor) -> Tensor:
        return super().forward(z.flatten(-2)).unflatten(-1, self.window)

    def aggregate(self, x: Tensor) -> Tensor:
        return super().aggregate(x.flatten(-2)).unflatten(-1, self.size)


@register("geometry", "grid")
class Grid:
    """Windows of h × w on an H × W canvas at strides (s_y, s_x): the product of ``rows`` = Windows(H, h, s_y) and
    ``cols`` = Windows(W, w, s_x, circular); window k = r·n_x + c (row-major, MultiDiffusion's order) covers rows
    [s_y·r, s_y·r + h) and columns [s_x·c, s_x·c + w) (mod W when circular). A grid of one row is the 1-D
    :class:`Windows` exactly (same couplings, canonical values and assembly).

    **Couplings** (SYNCSDE.md §2, §6.3 in 2-D). The factorisation is autoregressive in window order. In 1-D the chain
    follows from the geometry: the positions of window j that earlier windows cover are all covered by window j − 1,
    so p(x^j | x^0..x^{j−1}) = p(x^j | x^{j−1}) under the crop model. In 2-D the positions of window (r, c) that
    earlier windows cover are the left band (columns [0, w − s_x), covered by (r, c − 1)) and the top band (rows
    [0, h − s_y), covered by (r − 1, c), the window above, which spans the same columns). So window (r, c) is coupled
    to two windows: to its left neighbour as in the 1-D chain of its row (across the seam to the row's window 0 when
    circular), and to the window above on the rest of the top band. The top-left corner, which both cover, goes to
    the left neighbour: a row is then exactly the 1-D chain, and the weights of a window sum to 1 on every position
    an earlier window covers and 0 elsewhere (one unit of precision per position, as in the chain). Every coupling
    reads only a neighbour's state, so windows can be split over processes with neighbour exchanges only.

    **Canonical variable**: the canvas (:class:`GridCanonical`; f_i = crop, g = per-position mean).

    **Assembly**: the product of the rows' and the columns' 1-D assembly weights (``overwrite``: the last window in
    raster order wins, as writing the windows in order does; ``nearest``; ``feather``); an axis with one window
    weighs 1.
    """

    def __init__(self, size: tuple[int, int], window: tuple[int, int], stride: tuple[int, int], circular: bool = False):
        (H, W), (h, w), (sy, sx) = size, window, stride
        self.rows, self.cols = Windows(H, h, sy), Windows(W, w, sx, circular)
        self.size, self.window, self.circular = (H, W), (h, w), circular
        self.shape = (self.rows.n, self.cols.n)
        self.n = self.rows.n * self.cols.n
        flat = self.rows.columns[:, None, :, None] * W + self.cols.columns[None, :, None, :]  # (n_y, n_x, h, w)
        self.index = flat.reshape(self.n, h * w)

    def couplings(self) -> list[Coupling]:
        h, w = self.window
        n_x = self.cols.n
        in_row: dict[int, list[Coupling]] = {}
        for link in self.cols.couplings():
            in_row.setdefault(link.target, []).append(link)
        above = {link.target: link for link in self.rows.couplings()}  # row r <- row r − 1
        out = []
        for r in range(self.rows.n):
            for c in range(n_x):
                k, tied = r * n_x + c, torch.zeros(w)
                for link in in_row.get(c, []):
                    out.append(Coupling(k, r * n_x + link.source, link.map, link.weight))
                    tied += link.weight
                if r > 0:
                    up = above[r]
                    weight = up.weight[:, None] * (1 - tied)[None, :]
                    if weight.any():
                        out.append(Coupling(k, k - n_x, ShiftMap(up.map.src, up.map.valid, axis=-2), weight))
        return out

    def canonical(self, leading: tuple[int, ...], blend: Literal["mean", "feather"] = "mean") -> GridCanonical:
        """The canonical geometry for instances of shape (*leading, h, w) (``blend`` as :meth:`Windows.canonical`)."""
        weights = None if blend == "mean" else self.assembly_weights(blend).flatten(1)
        return GridCanonical(self.index, self.size, self.window, (*leading, *self.size), weights)

    def assembly_weights(self, mode: Literal["overwrite", "nearest", "feather"]) -> Tensor:
        """(n, h, w) weights of each window's positions in the assembly (see the class docstring)."""
        wy, wx = (a.assembly_weights(mode) if a.n > 1 else torch.ones(1, a.w) for a in (self.rows, self.cols))
        return (wy[:, None, :, None] * wx[None, :, None, :]).flatten(0, 1)

    def assemble(self, x: Tensor, mode: Literal["overwrite", "nearest", "feather"] = "overwrite") -> Tensor:
        """(B, n, *D, h, w) → (B, *D, H, W), the blend of the windows with :meth:`assembly_weights`."""
        weights = self.assembly_weights(mode).to(x)
        length = self.size[0] * self.size[1]
        total = scatter_sum(
            (x * weights.view(self.n, *[1] * (x.ndim - 4), *self.window)).flatten(-2), self.index, length
        )
        return (total / scatter_sum(weights.flatten(-2)[None], self.index, length)).unflatten(-1, self.size)
