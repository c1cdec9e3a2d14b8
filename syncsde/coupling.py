"""Couplings: "trajectory i is pulled toward f_ij(x^j) with element-wise weight W_ij" (SYNCSDE.md §2, §5).

A task declares its couplings; a strategy applies them. Trajectory states are stacked as ``x`` of shape
(B, N, ...) — B samples, N trajectories each — and a coupling acts on every sample of the batch at once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import torch
from torch import Tensor

if TYPE_CHECKING:
    from syncsde.schedule import Step


@dataclass(frozen=True)
class Coupling:
    """Trajectory ``target`` (i) is coupled to trajectory ``source`` (j < i), or jointly to several earlier ones.

    ``map`` is f_ij, applied to x^j of shape (B, ...) — or, when ``source`` is a tuple, to the stack (B, k, ...) of
    those trajectories (the mesh: the render of the joint bake of all earlier views) — and returning a tensor shaped
    like x^i (``None`` = identity). ``weight`` is W_ij, broadcastable to x^i (``None`` = all ones). SyncSDE's
    factorisation is autoregressive, so every source precedes the target (SYNCSDE.md §2).
    """

    target: int
    source: int | tuple[int, ...]
    map: Callable[[Tensor], Tensor] | None = None
    weight: Tensor | None = None

    def __post_init__(self):
        sources = self.source if isinstance(self.source, tuple) else (self.source,)
        if not sources or not all(0 <= j < self.target for j in sources):
            raise ValueError(
                f"coupling {self.target} <- {self.source}: a trajectory may only couple to earlier ones (0 <= j < i)"
            )
        if isinstance(self.source, tuple) and self.map is None:
            raise ValueError("a coupling to several trajectories needs a map that combines them")

    def pulled_toward(self, x: Tensor) -> Tensor:
        """f_ij(x^j) for every sample: the value trajectory i is pulled toward."""
        src = x[:, list(self.source)] if isinstance(self.source, tuple) else x[:, self.source]
        return src if self.map is None else self.map(src)

    def residual(self, x: Tensor) -> Tensor:
        """W_ij ⊙ (x^i − f_ij(x^j)), the term of SYNCSDE.md §3 (zero at the fixed point x^i = f_ij(x^j))."""
        r = x[:, self.target] - self.pulled_toward(x)
        return r if self.weight is None else self.weight * r

    def to(self, device: torch.device | str, dtype: torch.dtype) -> Coupling:
        """This coupling with W_ij in ``dtype`` on ``device``, and f_ij too where it has a ``to(device, dtype)``."""
        return replace(
            self,
            map=placed(self.map, device, dtype),
            weight=None if self.weight is None else self.weight.to(device, dtype),
        )


def placed(obj, device: torch.device | str, dtype: torch.dtype):
    """``obj.to(device, dtype)`` for maps and canonical variables that hold tensors (they say so by having ``to``);
    others as they are."""
    return obj.to(device, dtype) if hasattr(obj, "to") else obj


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

    def aggregate_variance(self, v: Tensor) -> Tensor:
        """g of a learned-variance output (Visual Anagrams' variance rule): as ``aggregate``, unless a map changes
        values as well as positions (the negate view, BASELINES.md §3.1)."""
        return self.aggregate(v)

    def precision(self, x: Tensor) -> Tensor | None:
        """The relative precision of each element of the instances ``x`` as an observation of z (broadcastable against
        ``x``), if g weighs them unequally; None: every element counts once (the plain mean)."""
        return None

    def forward_onto(self, z: Tensor, x: Tensor) -> Tensor:
        """f_i(z) where it covers instance i, x^i's own values elsewhere ("bg" compositing); = forward for maps that
        cover every instance element (crops, views)."""
        return self.forward(z)


@dataclass(frozen=True)
class Regions:
    """Region-based generation's foreground (MultiDiffusion's bootstrapping, BASELINES.md §2.2): the mask of each
    foreground trajectory by its index (broadcastable to its state), and ``encode``, which maps (K, 3) RGB colours in
    [0, 1] to (K, C, h, w) uniform-colour images in the backbone's working space."""

    masks: Mapping[int, Tensor]
    encode: Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class GlobalView:
    """Trajectory ``index`` (after the windows or views 0..index−1) sees the whole canonical canvas (B, C, *canvas) at
    the backbone's native ``size`` (SyncSDE's global view, SYNCSDE.md §4.2): ``down`` takes the canvas to it by area
    averaging, ``up`` brings a native-size image back to the canvas (bilinear), so ``up(down(z))`` is the canvas's
    low band. How the canvas fits the frame (``global_fit``, SYNCSDE.md §4.2.1): squashed into the whole frame
    (:meth:`isotropy` measures how much the aspect changes; :meth:`squashed_axis` is the axis squashed more), or
    scaled by one factor to its :meth:`fitted` size, which :meth:`band` places in the frame (``letterbox``)."""

    index: int
    size: tuple[int, int]
    canvas: tuple[int, int]

    def fitted(self) -> tuple[int, int]:
        """The canvas scaled by the one factor along both axes that fits it into the frame (at least 1 element)."""
        (h, w), (H, W) = self.size, self.canvas
        s = max(H / h, W / w)
        return min(h, max(1, round(H / s))), min(w, max(1, round(W / s)))

    def isotropy(self) -> float:
        """s_min/s_max of the squash factors s = canvas/frame along the two axes: 1 when the view keeps the aspect."""
        (h, w), (H, W) = self.size, self.canvas
        return min(H / h, W / w) / max(H / h, W / w)

    def squashed_axis(self) -> int:
        """The dimension (−1: columns, −2: rows) along which the frame squashes the canvas more."""
        (h, w), (H, W) = self.size, self.canvas
        return -1 if W / w >= H / h else -2

    def band(self, fit: str = "squash") -> tuple[int, int, int, int]:
        """(top, left, height, width) of the part of the native frame that shows the canvas."""
        (h, w) = self.size
        if fit != "letterbox":
            return 0, 0, h, w
        bh, bw = self.fitted()
        return (h - bh) // 2, (w - bw) // 2, bh, bw

    def down(self, z: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        return torch.nn.functional.interpolate(z, size=size or self.size, mode="area")

    def up(self, g: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        return torch.nn.functional.interpolate(g, size=size or self.canvas, mode="bilinear", align_corners=False)


@dataclass(frozen=True)
class Denoise:
    """The task's own guided network call, for a strategy that calls the denoiser more than once per step
    (StochSync's multi-step x̂₀, BASELINES.md §12; DoubleTake's second take, §13): ``denoise(x, step, trajectories)``
    is the CFG ε of the states ``x`` (B, k, ...) of those k trajectories of every sample (default: all, k = N) at
    ``step.t``, by the same network calls as the sampler's (conditioning, call groups, control images); ``abar(t)``
    is the backbone's ᾱ at any timestep t (the VP equivalent on a flow model), so that the strategy can write steps
    between timesteps of its own (:class:`~syncsde.schedule.Step`)."""

    eps: Callable[..., Tensor]
    abar: Callable[[float], float]

    def __call__(self, x: Tensor, step, trajectories: Sequence[int] | None = None) -> Tensor:
        return self.eps(x, step, range(x.shape[1]) if trajectories is None else trajectories)


@dataclass(frozen=True)
class Differentiable:
    """The task's denoiser and decoder with gradients (SyncDiffusion's perceptual gradient, BASELINES.md §9), filled by
    the base task from its backbone: ``eps(x, step, trajectories)`` is the CFG-combined ε — as the sampler's call
    computes it — of the states ``x`` (B, k, ...) of the trajectories ``trajectories`` (k indices among each sample's
    N), and ``decode(z)`` maps (M, C, h, w) in the working space to (M, 3, H, W) images in [0, 1] as the backbone
    decodes. Both are differentiable in their input; run them under ``torch.enable_grad()``."""

    eps: Callable[[Tensor, "Step", Sequence[int]], Tensor]
    decode: Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class SelfAttention:
    """Mutual self-attention between trajectories (MasaCtrl, BASELINES.md §14): in the UNet's rewired self-attention
    layers, the queries of trajectory ``i`` read the keys and values of trajectory ``sources[i]`` of the same sample
    and guidance branch. ``masks`` (B, 1, h, w) at the working size, or None: 1 marks the edited object, for the
    mask-guided variant (object queries read the source's object, the others its background)."""

    sources: Mapping[int, int]
    masks: Tensor | None = None

    def to(self, device: torch.device | str, dtype: torch.dtype) -> SelfAttention:
        return self if self.masks is None else replace(self, masks=self.masks.to(device, dtype))


@dataclass
class SyncProblem:
    """What a task tells a strategy about one batch: the number of trajectories, their couplings (SyncSDE), and
    optionally the canonical geometry (SyncTweedies, MultiDiffusion, Visual Anagrams), the foreground regions
    (region-based MultiDiffusion), the global view (one more trajectory seeing the whole canvas, the last one), the
    task's network call (``denoise``, :class:`Denoise`, filled by the base task for strategies that call the network
    more than once per step), the differentiable denoiser and decoder (``differentiable``, SyncDiffusion) and the
    mutual self-attention between trajectories (``attention``, :class:`SelfAttention`, MasaCtrl). What a task can give
    is declared by its ``provides`` (:data:`syncsde.registry.PROVISIONS`).

    ``observe(x, eps, step)``, if set, is called by the sampler every step with the pre-step states and the network's
    output, before the strategy: for maps that depend on the step's clean estimate x̂₀ (the ambiguous task's views
    through the autoencoder, SYNCSDE.md §6.4.1)."""

    num_trajectories: int
    couplings: Sequence[Coupling] = ()
    canonical: Canonical | None = None
    regions: Regions | None = None
    denoise: Denoise | None = None
    global_view: GlobalView | None = None
    differentiable: Differentiable | None = None
    observe: Callable[[Tensor, Tensor, "Step"], None] | None = None
    attention: SelfAttention | None = None

    def __post_init__(self):
        for c in self.couplings:
            if c.target >= self.num_trajectories:
                raise ValueError(
                    f"coupling {c.target} <- {c.source} names a trajectory beyond N = {self.num_trajectories}"
                )

    def to(self, device: torch.device | str, dtype: torch.dtype) -> SyncProblem:
        """The problem with its couplings' weights and maps and its canonical variable on ``device``, floating-point
        data in ``dtype`` (the sampler state's): a task places it once per batch, so that nothing is moved per step."""
        couplings = [c.to(device, dtype) for c in self.couplings]
        return replace(
            self,
            couplings=couplings,
            canonical=placed(self.canonical, device, dtype),
            attention=placed(self.attention, device, dtype),
        )


def coupling_residuals(x: Tensor, couplings: Sequence[Coupling]) -> Tensor:
    """Σ_{j<i} W_ij ⊙ (x_t^i − f_ij(x_t^j)) for every trajectory i, stacked like ``x`` (zero for free trajectories).

    Reads only ``x`` (the pre-step snapshot): Jacobi batching, independent of trajectory order (SYNCSDE.md §3.1).
    """
    out = torch.zeros_like(x)
    for c in couplings:
        out[:, c.target] += c.residual(x)
    return out


def by_target(couplings: Sequence[Coupling]) -> dict[int, list[Coupling]]:
    """The couplings grouped by the trajectory they pull, in increasing trajectory order (the autoregressive order of
    SYNCSDE.md §2: every source of trajectory i precedes i)."""
    groups: dict[int, list[Coupling]] = {}
    for c in sorted(couplings, key=lambda c: c.target):
        groups.setdefault(c.target, []).append(c)
    return groups


def pull(state: Tensor, sources: Tensor, couplings: Sequence[Coupling]) -> tuple[Tensor, Tensor]:
    """For one trajectory i: the summed residual R = Σ_j W_ij ⊙ (state − f_ij(x^j)) and the summed weight
    P = Σ_j W_ij, with the x^j read from ``sources`` (B, N, ...). R = P ⊙ (state − m) where m is the W-weighted mean of
    the targets: the precision-weighted mean of the Gaussian likelihoods of SYNCSDE.md §4."""
    residual, weight = torch.zeros_like(state), torch.zeros_like(state)
    for c in couplings:
        w = torch.ones_like(state) if c.weight is None else c.weight.expand_as(state)
        residual += w * (state - c.pulled_toward(sources))
        weight += w
    return residual, weight
