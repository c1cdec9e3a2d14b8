"""The bake of views into a UV texture as sparse linear maps built once per mesh (BASELINES.md §4.3, SYNCSDE.md §6.5).

Both bakes are linear in the views with weights that depend on the geometry only, so everything the sampler does with
a texture at every step — render view i from the bake of views 0..i−1 (SyncSDE's coupling), the bake of all views
(SyncMVD's canonical texture) — is a fixed sparse matrix, computed once per mesh and applied as one gather and one
``index_add``. A texel u of the texture takes, from every view j that contributes to it, a numerator Σ_q a_j(u, q)
x_j(q) over some of view j's pixels q and a weight d_j(u); the bake is T(u) = Σ_j Σ_q a x / (Σ_j d_j(u) + ε).

``bake="projection"`` — the inverse projection of BASELINES.md §4.3 (steps 1–3), as the official code bakes:
  B_j(s) = 2Σ_{q→s} x_j(q) / (2·n_j(s) + 1e−8), the mean of the n_j(s) pixels of view j whose nearest texel is s
  (the official gradient form); Voronoi-filled over the atlas: B_j(u) = B_j(v_j(u)) with v_j(u) the nearest texel
  view j saw; c_j(u) the mean cosine of those pixels, filled the same way; V_j(u) = 1 on the texels of the faces
  visible in view j when rasterized at 512², dilated by one texel (3×3); d_j(u) = V_j(u) c_j(u)^e, a_j(u, q) =
  d_j(u)·2/(2n_j + 1e−8) for the pixels q of the seed v_j(u); ε = 1e−8. Every texel of a face view j sees gets a
  value from view j, however many texels each view pixel spans.
``bake="splat"`` — each pixel adds cos(q)^e x_j(q) to its own nearest texel only: a_j(u, q) = cos(q)^e for the
  pixels with u as nearest texel, d_j(u) = Σ_q a, ε = 0 (texels no pixel lands on stay 0). When texels far outnumber
  the view's pixels (1536² from 96² views) the texels that earlier views wrote and view i reads rarely coincide:
  only a few percent of a view is coupled.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from syncsde.mesh.cameras import Camera
from syncsde.mesh.io import TexturedMesh
from syncsde.mesh.raster import GBuffer, rasterize, rasterize_uv
from syncsde.mesh.texture import cosine_weight, texel_index, voronoi_index

Bake = Literal["projection", "splat"]
EPS = {"projection": 1e-8, "splat": 0.0}


@dataclass
class ViewSamples:
    """The pixels of one view that see the mesh (flat, row-major), the texel each lands on, and its cosine weight
    max(0, cos(normal, direction to the camera)) (exponent 1)."""

    pixel: Tensor
    texel: Tensor
    cos: Tensor

    @classmethod
    def of(cls, g: GBuffer, eye: Tensor, texture_size: int) -> ViewSamples:
        pixel = torch.nonzero(g.mask.flatten()).flatten()
        texel = texel_index(g.uv, texture_size, texture_size).flatten()[pixel]
        return cls(pixel, texel, cosine_weight(g, eye, 1.0).flatten()[pixel])


def visible_texels(mesh: TexturedMesh, cameras: list[Camera], texture_size: int, raster_size: int = 512) -> Tensor:
    """V_j for every view (N, T²) bool: the texels of the faces that win the depth test somewhere in view j rasterized
    at ``raster_size``² (512 in the official code, whatever the view size), dilated by one texel in x and y."""
    face = rasterize_uv(mesh, texture_size).view(1, 1, texture_size, texture_size)
    out = []
    for g in rasterize(mesh, cameras, raster_size):
        seen = torch.isin(face, torch.unique(g.face[g.mask])).float()
        out.append(F.max_pool2d(seen, 3, stride=1, padding=1).flatten() > 0)
    return torch.stack(out)


@dataclass
class LinearMap:
    """out[:, r] = Σ_e vals[e] · x[view[e], :, pixel[e]] over the entries e with rows[e] = r: a sparse linear map from
    stacked views x (n, C, h·w) to ``size`` values per channel (the pixels of one view, or the texels)."""

    rows: Tensor
    view: Tensor
    pixel: Tensor
    vals: Tensor
    size: int

    def __call__(self, x: Tensor) -> Tensor:
        src = x[self.view, :, self.pixel] * self.vals[:, None]
        return x.new_zeros(x.shape[1], self.size).index_add_(1, self.rows, src.T.to(x.dtype))

    def to(self, device) -> LinearMap:
        return replace(self, **{k: getattr(self, k).to(device) for k in ("rows", "view", "pixel", "vals")})


@dataclass
class RenderIndex:
    """render_i(z) for every view at once: pixel ``pixel`` of view ``view`` shows texel ``texel`` (nearest texel)."""

    view: Tensor
    pixel: Tensor
    texel: Tensor

    @classmethod
    def of(cls, samples: list[ViewSamples]) -> RenderIndex:
        view = torch.cat([torch.full_like(s.pixel, i) for i, s in enumerate(samples)])
        return cls(view, torch.cat([s.pixel for s in samples]), torch.cat([s.texel for s in samples]))

    def onto(self, texture: Tensor, views: Tensor) -> Tensor:
        """``views`` (N, C, h·w) with every pixel that sees the mesh replaced by its texel of ``texture`` (C, T²)."""
        out = views.clone()
        out[self.view, :, self.pixel] = texture[:, self.texel].T
        return out

    def to(self, device) -> RenderIndex:
        return RenderIndex(self.view.to(device), self.pixel.to(device), self.texel.to(device))


@dataclass
class _Terms:
    """One view's contribution to the texels ``at`` (sorted): CSR rows ``ptr`` of (pixel, weight) numerator entries,
    and the weights d_j (module docstring)."""

    ptr: Tensor
    pixel: Tensor
    weight: Tensor
    denom: Tensor

    def expand(self, rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The entries of the given row positions: (index into ``rows``, pixel, weight)."""
        owner, e = _gather(self.ptr, rows)
        return owner, self.pixel[e], self.weight[e]


def _gather(ptr: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
    """The entries of CSR rows ``rows`` (repeats allowed): for each, the index into ``rows`` and the entry index."""
    count = ptr[rows + 1] - ptr[rows]
    owner = torch.repeat_interleave(torch.arange(len(rows)), count)
    first = torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
    return owner, ptr[rows][owner] + torch.arange(len(owner)) - first


def _csr(rows: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Row pointers of ``n`` rows for entries in rows ``rows``, and the order that sorts the entries by row."""
    ptr = torch.zeros(n + 1, dtype=torch.long)
    ptr[1:] = torch.cumsum(torch.bincount(rows, minlength=n), 0)
    return ptr, torch.argsort(rows, stable=True)


class _ViewBake:
    """Per-view data of one bake, computed once: :meth:`terms` at any sorted set of texels, :meth:`weight` d_j over
    the whole texture."""

    def __init__(self, s: ViewSamples, size: int, bake: Bake, visible: Tensor | None, exponent: float):
        self.s, self.size, self.exponent = s, size, exponent
        # a view that does not see the mesh adds nothing: the splat rules give it no weight and no terms
        self.bake = bake if len(s.texel) else "splat"
        self.keep = s.cos > 0  # the splat bake's pixels
        if self.bake == "projection":
            self.seeds, inverse, count = torch.unique(s.texel, return_inverse=True, return_counts=True)
            self.mean = 2 / (2 * count.float() + 1e-8)  # B_j = 2Σx / (2n + 1e−8), the official gradient form
            self.cos = torch.zeros(len(self.seeds)).index_add_(0, inverse, 2 * s.cos) / (2 * count.float() + 1e-8)
            self.ptr, order = _csr(inverse, len(self.seeds))
            self.members = s.pixel[order]
            seen = torch.zeros(size * size, dtype=torch.bool)
            seen[self.seeds] = True
            self.nearest = torch.searchsorted(self.seeds, voronoi_index(seen.view(size, size)))  # slot of v_j(u)
            self.visible = visible

    def weight(self, at: Tensor | None = None) -> Tensor:
        """d_j at the texels ``at`` (all texels if None)."""
        if self.bake == "splat":
            texel, cos = self.s.texel[self.keep], self.s.cos[self.keep]
            d = torch.zeros(self.size * self.size).index_add_(0, texel, cos**self.exponent)
            return d if at is None else d[at]
        slot = self.nearest if at is None else self.nearest[at]
        visible = self.visible if at is None else self.visible[at]
        return visible.float() * self.cos[slot] ** self.exponent

    def terms(self, at: Tensor) -> _Terms:
        if self.bake == "splat":
            s = self.s
            row = torch.searchsorted(at, s.texel).clamp(max=len(at) - 1)
            keep = self.keep & (at[row] == s.texel)
            row, pixel, w = row[keep], s.pixel[keep], s.cos[keep] ** self.exponent
            ptr, order = _csr(row, len(at))
            return _Terms(ptr, pixel[order], w[order], torch.zeros(len(at)).index_add_(0, row, w))
        d = self.weight(at)
        rows = torch.nonzero(d > 0).flatten()
        slot = self.nearest[at[rows]]
        k, e = _gather(self.ptr, slot)
        ptr, order = _csr(rows[k], len(at))
        weight = d[rows[k]] * self.mean[slot[k]]
        return _Terms(ptr, self.members[e][order], weight[order], d)


def _views(samples, size, bake, visible, exponent):
    if bake not in EPS:
        raise ValueError(f"bake must be one of {', '.join(EPS)}, got {bake!r}")
    if bake == "projection" and visible is None:
        raise ValueError("the projection bake needs the visible texels of every view")
    return [_ViewBake(s, size, bake, None if visible is None else visible[j], exponent) for j, s in enumerate(samples)]


def coupling_maps(
    samples: list[ViewSamples],
    texture_size: int,
    pixels: int,
    bake: Bake,
    visible: Tensor | None = None,
    exponent: float = 1.0,
) -> list[tuple[LinearMap, Tensor]]:
    """For each view i ≥ 1: the map from views 0..i−1 (i, C, ``pixels``) to render_i(bake(views 0..i−1)) (C,
    ``pixels``; 0 where view i does not see the mesh or reads a texel without weight), and the coverage M_i
    (``pixels``,): the pixels of view i whose texel carries weight from the earlier views (SYNCSDE.md §6.5, §8).

    The weights of texel u after views 0..i−1 are a running sum over the views; view i reads only its own texels."""
    views = _views(samples, texture_size, bake, visible, exponent)
    at = torch.unique(torch.cat([s.texel for s in samples]))
    terms = [v.terms(at) for v in views]
    out, total = [], torch.zeros(len(at))
    for i in range(1, len(samples)):
        total = total + terms[i - 1].denom
        target = samples[i]
        row = torch.searchsorted(at, target.texel)
        rows, view, pixel, vals = [], [], [], []
        for j in range(i):
            owner, p, w = terms[j].expand(row)
            rows.append(target.pixel[owner])
            view.append(torch.full_like(p, j))
            pixel.append(p)
            vals.append(w / (total[row[owner]] + EPS[bake]))
        covered = torch.zeros(pixels)
        covered[target.pixel] = (total[row] > 0).float()
        out.append((LinearMap(torch.cat(rows), torch.cat(view), torch.cat(pixel), torch.cat(vals), pixels), covered))
    return out


def canonical_map(
    samples: list[ViewSamples], texture_size: int, bake: Bake, visible: Tensor | None = None, exponent: float = 1.0
) -> LinearMap:
    """The bake of all views (N, C, h·w) into the texture (C, T²) with Voronoi fill (BASELINES.md §4.3 step 4: a texel
    without weight takes its nearest weighted texel's value) — at the texels some view reads; the rest of the texture,
    which no render reads, stays 0."""
    views = _views(samples, texture_size, bake, visible, exponent)
    read = torch.unique(torch.cat([s.texel for s in samples]))
    weighted = sum(v.weight() for v in views) > 0
    source = voronoi_index(weighted.view(texture_size, texture_size))[read] if weighted.any() else read
    at = torch.unique(torch.cat([read, source]))
    terms = [v.terms(at) for v in views]
    total = sum(t.denom for t in terms)
    row = torch.searchsorted(at, source)
    rows, view, pixel, vals = [], [], [], []
    for j, t in enumerate(terms):
        owner, p, w = t.expand(row)
        rows.append(read[owner])
        view.append(torch.full_like(p, j))
        pixel.append(p)
        vals.append(w / (total[row[owner]] + EPS[bake]))
    return LinearMap(torch.cat(rows), torch.cat(view), torch.cat(pixel), torch.cat(vals), texture_size**2)


def project_bake(
    views: Tensor, samples: list[ViewSamples], visible: Tensor, exponent: float, size: int
) -> tuple[Tensor, Tensor]:
    """The official final bake (BASELINES.md §4.3 with unfilled cosines, as the official RGB texture is made): T(u) =
    Σ_j V_j(u) c_j(u)^e B_j(u) / (Σ_j V_j(u) c_j(u)^e + 1e−8) over the texels each view's pixels land on, c_j and B_j
    the means of the cosines and colours of those pixels. ``views`` (N, C, H·W); returns the texture (C, size²) and
    the total weight (size²,) (fill the rest with :func:`~syncsde.mesh.texture.voronoi_fill`)."""
    num = views.new_zeros(views.shape[1], size * size)
    den = views.new_zeros(size * size)
    for j, s in enumerate(samples):
        seeds, inverse, count = torch.unique(s.texel, return_inverse=True, return_counts=True)
        visible_j = visible[j, seeds]
        seeds, inverse, pixel = (t.to(views.device) for t in (seeds, inverse, s.pixel))
        norm = 2 * count.to(views) + 1e-8
        mean = views.new_zeros(views.shape[1], len(seeds)).index_add_(1, inverse, 2 * views[j][:, pixel]) / norm
        cos = views.new_zeros(len(seeds)).index_add_(0, inverse, 2 * s.cos.to(views)) / norm
        w = visible_j.to(views) * cos**exponent
        num[:, seeds] += w * mean
        den[seeds] += w
    return num / (den + 1e-8), den
