"""Wide images (panoramas) by synchronizing overlapping patches (SYNCSDE.md §6.3).

Geometry, in working-space (latent) columns, with window w = the backbone's native size and stride s:
patch j covers columns [s·j, s·j + w). Patch j is coupled to patch j−1 only (a chain, although it also
overlaps j−2, j−3, ...): f shifts patch j−1 left by s columns with zero fill, and W = 1 on the w − s columns
the two patches share. Patch 0 is free. Assembly overwrites in patch order, so latent block k comes from patch
min(k, n−1); the canvas is decoded once. At the paper's settings (512 px, stride 128 px, width 2048 px on SD)
w = 64, s = 16, n = 13 and the canvas is 64×256.

Canvases taller than the native size (our extension) use a 2-D grid of windows (:class:`syncsde.windows.Grid`):
rows at ``vertical_stride``, window (r, c) coupled to its left neighbour as in the chain and to the window above on
the rest of the band that earlier windows cover. A canvas of native height is the 1-D chain above exactly.
Canvases larger than ``vae_tiling`` allows are decoded in tiles (:class:`syncsde.backbones.diffusers.VaeTiling`).

``circular=True`` (360° panorama, our extension): the canvas wraps, there are W/s patches and each contributes
its leftmost s columns. Where a patch's window runs past the right edge onto patch 0's columns, it is coupled to
patch 0 there instead of to its left neighbour, so the wrap seam is synchronized like any other; decoding pads
the latent circularly (8 columns each side, as diffusers' circular MultiDiffusion) and crops; a tiled decode then
cross-fades the first 8 columns with their decode past the right edge, so the wrap is an interior seam of the
tiling (:meth:`WideImage.decode_canvas`).
"""

from __future__ import annotations

from typing import Literal

import torch
from jsonargparse.typing import PositiveInt
from torch import Tensor

from syncsde.backbones.base import Backbone
from syncsde.backbones.diffusers import VaeTiling
from syncsde.coupling import GlobalView, SyncProblem
from syncsde.errors import InputError
from syncsde.strategies import Strategy
from syncsde.task import DEFAULT_STRATEGY, SampleOutput, SyncTask
from syncsde.windows import Grid


def size_problem(sizes: dict, f: int, native: int, circular: bool) -> tuple[str, str] | None:
    """The first of the sizes in pixels (height, width, stride, vertical_stride: None = stride) that does not fit a
    backbone of scale factor ``f`` and window ``native`` px, and why; None when they all fit."""
    vertical = sizes["vertical_stride"] or sizes["stride"]
    for name, v in sizes.items():
        if v is not None and v % f:
            return name, f"{name} {v} px is not a multiple of the backbone's scale factor {f}"
    for name, v in (("stride", sizes["stride"]), ("vertical_stride", vertical)):
        if not f <= v <= native:
            return name, f"{name} {v} px must be between {f} and the window size {native} px"
    height, width, stride = sizes["height"], sizes["width"], sizes["stride"]
    if height < native:
        return "height", f"height {height} px is below the backbone's native size {native} px (the window size)"
    if (height - native) % vertical:
        return "height", f"height {height} px does not fit patches of {native} px at vertical stride {vertical} px"
    if circular and (width % stride or width < native):
        return "width", f"circular width {width} px must be a multiple of the stride {stride} px and at least {native} px"
    if not circular and (width < native or (width - native) % stride):
        return "width", f"width {width} px does not fit patches of {native} px at stride {stride} px"
    return None


def nearest_fit(sizes: dict, name: str, f: int, native: int, circular: bool) -> int | None:
    """The value of ``name`` nearest to the given one with which all the sizes fit (the others unchanged), if any
    within a few windows of it: the hint of a size that does not fit is one that works."""
    given = sizes[name] or sizes["stride"]
    for d in range(0, 8 * native + 1):
        for v in (given - d, given + d):
            if v > 0 and size_problem({**sizes, name: v}, f, native, circular) is None:
                return v
    return None


def global_view(task: SyncTask, size: tuple[int, int], canvas: tuple[int, int]) -> GlobalView | None:
    """The global view of the task's canvas (one more trajectory, after the windows) when its strategy asks for one
    (SyncSDE's ``global_view``, SYNCSDE.md §4.2); None otherwise. Its trajectory reads every window, so the windows
    of a sample are not split over processes."""
    if "global_view" not in task.strategy.needs():
        return None
    if task.parallel == "windows":
        raise InputError(
            "--model.strategy.global_view: the global view reads every window each step; use parallel: samples"
        )
    return GlobalView(task.n, size, canvas)


def with_global_noise(x: Tensor, view: GlobalView | None, generators) -> Tensor:
    """x_T of the windows (B, n, C, h, w) and, with a global view, its own noise after theirs (from each sample's
    generator, so that the windows' noise is that of a run without it)."""
    if view is None:
        return x
    extra = torch.stack([torch.randn(x.shape[2], *view.size, generator=g) for g in generators])
    return torch.cat([x, extra[:, None]], 1)


class WideImage(SyncTask):
    """Args (besides :class:`~syncsde.task.SyncTask`'s):
    height, width: output size in pixels (the native size, e.g. 512 for SD-2-base, or taller: a 2-D grid).
    stride: patch stride in pixels (a multiple of the backbone's scale factor); ``window``: the window size (patches
        that tile the canvas without overlap, as SpotDiffusion's).
    vertical_stride: row stride in pixels of a canvas taller than the native size (None: ``stride``; ``window``: the
        window size).
    circular: 360° seamless panorama.
    init_from_canonical: draw one noise on the whole canvas and crop it (official ``init_xt_from_zt``);
        otherwise independent noise per patch.
    assembly: ``overwrite`` (paper), ``nearest`` (each column from the patch whose centre is nearest) or ``feather``
        (linear blend of the patches covering a column); on a 2-D grid, the product of both axes' weights.
    canonical_blend: how the patches combine into the canvas z = g(x) that the canonical methods use (SyncSDE's
        ``canonical`` correlation, SyncTweedies, MultiDiffusion): ``mean`` (the plain mean, BASELINES.md §2.1) or
        ``feather`` (each patch a less precise view of the canvas toward its edges, SYNCSDE.md §4.1: the mean
        weighted by the feather weights, and SyncSDE's pull scaled by the same precision).
    vae_tiling: when and how the canvas is decoded in tiles (default: automatically above 4 native-size images).
    """

    task_name = "wide_image"
    needs = frozenset({"images"})  # the sampler alone: VP and flow-matching models
    window_parallel = True
    # the base fills "differentiable" from the backbone (SyncDiffusion); the task builds the global view
    provides = SyncTask.provides | {"global_view", "differentiable"}

    def __init__(
        self,
        backbone: Backbone,
        strategy: Strategy = DEFAULT_STRATEGY,
        height: PositiveInt = 512,
        width: PositiveInt = 2048,
        stride: Literal["window"] | PositiveInt = 128,
        vertical_stride: Literal["window"] | PositiveInt | None = None,
        circular: bool = False,
        init_from_canonical: bool = True,
        assembly: Literal["overwrite", "nearest", "feather"] = "overwrite",
        canonical_blend: Literal["mean", "feather"] = "mean",
        vae_tiling: VaeTiling = VaeTiling(),
        **kwargs,
    ):
        super().__init__(backbone, strategy, **kwargs)
        stride, vertical_stride = (self.native_size if v == "window" else v for v in (stride, vertical_stride))
        self.height, self.width, self.stride = height, width, stride
        self.vertical_stride = vertical_stride or stride
        self.circular, self.init_from_canonical = circular, init_from_canonical
        self.assembly, self.canonical_blend, self.vae_tiling = assembly, canonical_blend, vae_tiling
        f, w = backbone.scale_factor, backbone.sample_size
        sizes = {"height": height, "width": width, "stride": stride, "vertical_stride": vertical_stride}
        problem = size_problem(sizes, f, w * f, circular)
        if problem is not None:
            name, why = problem
            hint = nearest_fit(sizes, name, f, w * f, circular)
            raise InputError(why + (f"; use e.g. {hint} px" if hint is not None else ""))
        self.w, self.s, self.W, self.H = w, stride // f, width // f, height // f
        self.grid = Grid((self.H, self.W), (w, w), (self.vertical_stride // f, self.s), circular)
        self.n = self.grid.n
        self._couplings = self.grid.couplings()
        self._canonical = self.grid.canonical((backbone.channels,), canonical_blend)
        self.global_view = global_view(self, (w, w), (self.H, self.W))

    def problem(self, batch):
        view = self.global_view
        return SyncProblem(self.n + (view is not None), self._couplings, canonical=self._canonical, global_view=view)

    # -- trajectories ---------------------------------------------------------------------------------------
    def trajectory_prompts(self, batch):
        return [[s["prompt"]] * (self.n + (self.global_view is not None)) for s in batch]

    def crops(self, canvas: Tensor) -> Tensor:
        """(B, C, H, W) canvas → (B, n, C, h, w) patches."""
        return self._canonical.forward(canvas)

    def initial_noise(self, batch, generators):
        C, w = self.backbone.channels, self.w
        if self.init_from_canonical:
            x = self.crops(torch.stack([torch.randn(C, self.H, self.W, generator=g) for g in generators]))
        else:
            x = torch.stack([torch.randn(self.n, C, w, w, generator=g) for g in generators])
        return with_global_noise(x, self.global_view, generators)

    def assemble_latent(self, x: Tensor) -> Tensor:
        """(B, n, C, h, w) → (B, C, H, W), by the task's ``assembly`` (:meth:`syncsde.windows.Grid.assemble`)."""
        return self.grid.assemble(x[:, : self.n], self.assembly)

    def decode_canvas(self, canvas: Tensor) -> Tensor:
        """The canvas latent → image; circular: decoded with 8 wrapped columns on each side, then cropped. When the
        decode is tiled, the first 8 columns are cross-faded (linearly, from the copy past the right edge to their
        own) with their second decode, so the image's last and first columns are neighbours of one tiled decode."""
        tiling, f = self.vae_tiling, self.backbone.scale_factor
        if not self.circular:
            return tiling.decode(self.backbone, canvas)
        p, size = min(8, self.W), (self.height, self.width)
        img = tiling.decode(self.backbone, torch.cat([canvas[..., -p:], canvas, canvas[..., :p]], dim=-1), size)
        out = img[..., p * f : img.shape[-1] - p * f]
        if tiling.tiles(self.backbone, *size):
            fade = (torch.arange(p * f, device=img.device) + 0.5) / (p * f)  # 0 at the seam -> 1
            out = out.clone()
            out[..., : p * f] = fade * out[..., : p * f] + (1 - fade) * img[..., img.shape[-1] - p * f :]
        return out

    def assemble(self, x0, batch):
        images = self.decode_canvas(self.assemble_latent(x0))
        return [SampleOutput(s["sample_id"], img, {}) for s, img in zip(batch, images)]

    def describe(self):
        return {
            "height": self.height,
            "width": self.width,
            "stride": self.stride,
            "vertical_stride": self.vertical_stride,
            "num_patches": self.n,
            "grid": list(self.grid.shape),
            "circular": self.circular,
            "init_from_canonical": self.init_from_canonical,
            "assembly": self.assembly,
            "canonical_blend": self.canonical_blend,
            "vae_tiling": self.tiling(),
            **({"global_trajectory": True} if self.global_view is not None else {}),
        }

    def tiling(self) -> dict | str:
        """How the canvas goes through the VAE, as it changes the pixels: "off" (one pass) or the tiles' settings."""
        t, size = self.vae_tiling, (self.height, self.width)
        return {"tile_size": t.tile_size, "overlap": t.overlap} if t.tiles(self.backbone, *size) else "off"
