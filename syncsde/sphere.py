"""Perspective views on the sphere, synchronized through an equirectangular canonical image (BASELINES.md §1.4,
"360° panorama"; SyncSDE couplings derived as for the mesh, SYNCSDE.md §6.5).

Views are square perspective images of ``fov`` degrees looking at (elevation, azimuth) in degrees; the canvas is an
H × 2H equirectangular grid (row 0 at +90° latitude, column 0 at −180° longitude, longitude growing with the
column). The projection comes from ``pyequilib`` (``equi2pers``, nearest): view i's pixel p reads canvas cell
``forward_index[i][p]``, and that is f_i. No perspective projection is written here.

The way back (the bake) is SyncTweedies' inverse mapping with its Voronoi fill (BASELINES.md §1.4): every canvas cell
inside view i's footprint takes the value of the view pixel whose cell is nearest to it on the sphere (a k-d tree
over the cells' directions), so g(x)[c] is the mean of x^i[inverse(i)[c]] over the views whose footprint holds
c. The footprint of a view is the set of cells within one pixel's and one cell's angle of a cell the view reads. On a
canvas finer than the views, the cell a pixel reads is read by that pixel alone, so the bake of one view gives back
that view: f_i ∘ g is the identity on view i where no other view overlaps.

**Couplings** (as the mesh's): view i ≥ 1 is pulled toward the render of the joint bake of the earlier views that
overlap it, r_i = f_i(g(x^{<i})) — one term whose sources are those views only — with W = M_i, the pixels of view i
whose cell lies in an earlier view's footprint (the coverage mask). View 0 is free.

**Canonical variable**: the canvas (f_i, g above; :class:`SphereCanonical`).

**Assembly** (:meth:`Sphere.assemble`): the same bake, weighted: ``mean`` (SyncTweedies' count average) or
``feather`` (each view pixel weighted by its distance to the view's edge). The task assembles the decoded RGB views
on a sphere at the output resolution.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import torch
from torch import Tensor

from syncsde.coupling import Canonical, Coupling
from syncsde.errors import InputError
from syncsde.registry import register

# SyncTweedies' 360° panorama views (θ = 0..315° every 45°, φ = 0, FoV 72°)
SYNCTWEEDIES_VIEWS = [(0.0, float(a)) for a in range(0, 360, 45)]
# the same ring, then rings at ±45° and the poles, so the whole 360×180 sphere is covered
SPHERE_VIEWS = (
    SYNCTWEEDIES_VIEWS
    + [(45.0, float(a)) for a in range(0, 360, 72)]
    + [(-45.0, float(a)) for a in range(36, 360, 72)]
    + [(90.0, 0.0), (-90.0, 0.0)]
)
# two cube maps (FoV 90°), the second turned 45° in azimuth: two groups of views that tile the sphere without
# overlapping, for StochSync's alternating views (its public code turns one cube map at random every step)
CUBE = [(0.0, 0.0), (0.0, 90.0), (0.0, 180.0), (0.0, 270.0), (90.0, 0.0), (-90.0, 0.0)]
CUBES = CUBE + [(e, a + 45.0) for e, a in CUBE]
VIEW_SETS = {"synctweedies": SYNCTWEEDIES_VIEWS, "sphere": SPHERE_VIEWS, "cubes": CUBES}


def cell_directions(height: int, width: int) -> Tensor:
    """(H·W, 3) unit vectors of the equirectangular cell centres (x east at longitude 90°, y up, z at longitude 0)."""
    lat = math.pi / 2 - (torch.arange(height, dtype=torch.float64) + 0.5) * math.pi / height
    lon = (torch.arange(width, dtype=torch.float64) + 0.5) * 2 * math.pi / width - math.pi
    lat, lon = torch.meshgrid(lat, lon, indexing="ij")
    return torch.stack([lat.cos() * lon.sin(), lat.sin(), lat.cos() * lon.cos()], -1).reshape(-1, 3)


def perspective(equi: Tensor, views: Sequence[tuple[float, float]], fov: float, size: int, mode: str) -> Tensor:
    """Square perspective views (N, C, size, size) of an equirectangular image (C, H, 2H) by pyequilib's
    ``equi2pers``; a view at (elevation, azimuth) degrees is pyequilib's (pitch, yaw) = (−elevation, −azimuth)."""
    try:
        from equilib import equi2pers
    except ImportError:
        raise InputError("360° panoramas need pyequilib, a dependency of syncsde: pip install pyequilib") from None
    rots = [{"roll": 0.0, "pitch": -math.radians(e), "yaw": -math.radians(a)} for e, a in views]
    batch = equi[None].expand(len(views), *equi.shape).contiguous()
    return equi2pers(batch, rots=rots, height=size, width=size, fov_x=float(fov), mode=mode)


def forward_index(views: Sequence[tuple[float, float]], fov: float, size: int, height: int) -> Tensor:
    """(N, size·size) canvas cell read by each view pixel: the nearest-neighbour :func:`perspective` of an image of
    cell indices."""
    cells = torch.arange(height * 2 * height, dtype=torch.float64).view(1, height, 2 * height)
    return perspective(cells, views, fov, size, "nearest").round().long().view(len(views), size * size)


@register("geometry", "sphere")
class Sphere:
    """N square views of ``size`` pixels and ``fov`` degrees on an ``height`` × 2·``height`` equirectangular canvas.

    Attributes: ``forward_index`` (N, size²) the cell each view pixel reads; ``footprint`` (N, H·2H) bool, the cells
    each view covers; ``cells[i]``, ``pixels[i]``: the cells of view i's footprint and the view pixel each reads.
    """

    def __init__(self, views: Sequence[tuple[float, float]], fov: float, size: int, height: int):
        from scipy.spatial import cKDTree

        if not 0 < fov < 180:
            raise InputError(f"fov must be between 0 and 180 degrees, got {fov}")
        self.views, self.fov, self.size, self.height = [tuple(map(float, v)) for v in views], fov, size, height
        self.canvas = (height, 2 * height)
        self.n = len(self.views)
        self.forward_index = forward_index(self.views, fov, size, height)
        directions = cell_directions(*self.canvas)
        pixel = 2 * math.tan(math.radians(fov) / 2) / size  # a pixel's angle at the view centre (the largest)
        gap = pixel + math.sqrt(2) * math.pi / height  # the farthest a footprint cell can be from a cell a pixel reads
        reach = math.atan(math.sqrt(2) * math.tan(math.radians(fov) / 2)) + 2 * gap  # half-diagonal + margin
        cells = directions.shape[0]
        self.footprint = torch.zeros(self.n, cells, dtype=torch.bool)
        self.cells, self.pixels = [], []
        for i in range(self.n):
            seen = directions[self.forward_index[i]]  # (size², 3): each pixel's direction, to half a cell
            axis = seen[(size // 2) * size + size // 2]
            near = (directions @ axis > math.cos(reach)).nonzero()[:, 0]  # the cells that can be in this view
            distance, pixel_of = cKDTree(seen.numpy()).query(directions[near].numpy())
            inside = torch.from_numpy(distance) <= 2 * math.sin(gap / 2)
            self.cells.append(near[inside])
            self.pixels.append(torch.from_numpy(pixel_of).long()[inside])
            self.footprint[i, self.cells[i]] = True
        self.uncovered = 1 - float(self.footprint.any(0).float().mean())  # share of the sphere no view sees

    def bake(
        self, x: Tensor, views: Sequence[int] | None = None, weights: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Views (B, k, *D, s, s) (the ``views`` listed, default all) → canvas (B, *D, H, 2H) and the summed weight
        (H·2H,): the weighted mean over the views covering each cell (0 where none does). ``weights`` (k, s, s)
        weighs each view pixel (None: 1, the count average)."""
        views = list(range(self.n)) if views is None else list(views)
        flat = x.flatten(-2)
        total = flat.new_zeros(*x.shape[:1], *x.shape[2:-2], self.footprint.shape[1])
        count = flat.new_zeros(self.footprint.shape[1])
        for k, i in enumerate(views):
            cells, read = self.cells[i].to(x.device), self.pixels[i].to(x.device)
            w = torch.ones(len(read)).to(x) if weights is None else weights[k].flatten().to(x)[read]
            total.index_add_(-1, cells, flat[:, k][..., read] * w)
            count.index_add_(0, cells, w)
        canvas = total / count.clamp_min(1e-12)
        return canvas.unflatten(-1, self.canvas), count

    def inverse(self, i: int) -> Tensor:
        """(H·2H,) the pixel of view i each cell reads (−1 outside its footprint)."""
        out = torch.full((self.footprint.shape[1],), -1, dtype=torch.long)
        out[self.cells[i]] = self.pixels[i]
        return out

    def coverage(self, i: int, earlier: Sequence[int]) -> Tensor:
        """(s·s,) bool: view i's pixels whose cell lies in the footprint of one of the ``earlier`` views."""
        if not earlier:
            return torch.zeros(self.size * self.size, dtype=torch.bool)
        return self.footprint[list(earlier)].any(0)[self.forward_index[i]]

    def overlapping(self, i: int) -> list[int]:
        """The earlier views j < i whose footprint holds a cell view i reads."""
        return [j for j in range(i) if self.footprint[j, self.forward_index[i]].any()]

    def couplings(self) -> list[Coupling]:
        out = []
        for i in range(1, self.n):
            sources = self.overlapping(i)
            if sources:
                weight = self.coverage(i, sources).float().view(self.size, self.size)
                out.append(Coupling(i, tuple(sources), JointBakeRender(self, i, sources), weight))
        return out

    def canonical(self, leading: tuple[int, ...]) -> SphereCanonical:
        return SphereCanonical(self, (*leading, *self.canvas))

    def assemble(self, x: Tensor, mode: Literal["feather", "mean"] = "feather") -> Tensor:
        """Views (B, N, *D, s, s) → canvas (B, *D, H, 2H): the bake with ``feather`` or ``mean`` weights."""
        if mode not in ("feather", "mean"):
            raise InputError(f"assembly must be 'feather' or 'mean', got {mode!r}")
        weights = feather(self.size).expand(self.n, -1, -1) if mode == "feather" else None
        return self.bake(x, weights=weights)[0]


class JointBakeRender:
    """f for view i: the render into view i of the joint bake of the earlier views ``sources`` (B, k, C, s, s), read
    only at the cells view i sees (SYNCSDE.md §6.5's form)."""

    def __init__(self, sphere: Sphere, i: int, sources: Sequence[int]):
        cells = sphere.forward_index[i]
        read = torch.stack([sphere.inverse(j)[cells] for j in sources])  # (k, s²), −1 where j does not cover
        self.cover, self.read = read >= 0, read.clamp_min(0)
        self.count = self.cover.sum(0).clamp_min(1)
        self.size = sphere.size

    def __call__(self, x: Tensor) -> Tensor:
        flat = x.flatten(-2)  # (B, k, C, s²)
        total = torch.zeros_like(flat[:, 0])
        for k in range(flat.shape[1]):
            total += flat[:, k][..., self.read[k].to(x.device)] * self.cover[k].to(x)
        return (total / self.count.to(x)).unflatten(-1, (self.size, self.size))


class SphereCanonical(Canonical):
    """The equirectangular canvas as SyncTweedies' canonical variable: f_i = the view read from it (nearest),
    g = the bake of all views (count average). Instances (B, N, *D, s, s) ↔ canonical (B, *D, H, 2H)."""

    def __init__(self, sphere: Sphere, shape: tuple[int, ...]):
        self.sphere, self.shape = sphere, shape

    def forward(self, z: Tensor) -> Tensor:
        s = self.sphere
        return z.flatten(-2)[..., s.forward_index.to(z.device)].movedim(-2, 1).unflatten(-1, (s.size, s.size))

    def aggregate(self, x: Tensor) -> Tensor:
        return self.sphere.bake(x)[0]


def feather(size: int) -> Tensor:
    """(s, s) weights falling linearly from the view centre to its edges: min(y + 1, s − y) · min(x + 1, s − x)."""
    c = torch.arange(size, dtype=torch.float32)
    edge = torch.minimum(c + 1, size - c)
    return edge[:, None] * edge[None, :]
