"""Projection of a UV texture into views and the inverse projection (bake), in torch on the tensors' device
(BASELINES.md §4.2–4.3), and the Voronoi fill of unseen texels.

Texel convention: UV (u, v) with v up (OpenGL, trimesh) lies in texel row ⌊(1 − v)·H⌋, column ⌊u·W⌋ (nearest).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from syncsde.mesh.raster import GBuffer


def texel_index(uv: Tensor, height: int, width: int) -> Tensor:
    """Flat texel index of each UV (…, 2) under the nearest-texel convention."""
    row = ((1 - uv[..., 1]) * height).floor().long().clamp(0, height - 1)
    col = (uv[..., 0] * width).floor().long().clamp(0, width - 1)
    return row * width + col


def render(texture: Tensor, g: GBuffer, background: Tensor | float = 0.0) -> Tensor:
    """(C, H_t, W_t) texture → (C, H, W) view: the nearest texel at each covered pixel, ``background`` elsewhere."""
    C, Ht, Wt = texture.shape
    idx = texel_index(g.uv.to(texture.device), Ht, Wt)
    view = texture.flatten(1)[:, idx.flatten()].view(C, *idx.shape)
    mask = g.mask.to(texture.device)
    bg = background if isinstance(background, Tensor) else torch.full_like(view, float(background))
    return torch.where(mask, view, bg)


def cosine_weight(g: GBuffer, eye: Tensor, exponent: float) -> Tensor:
    """Per pixel max(0, cos(normal, direction to the camera))^exponent (0 off the mesh). ``exponent`` is used
    literally (BASELINES.md §4.3's clean form)."""
    to_camera = torch.nn.functional.normalize(eye.to(g.world) - g.world, dim=-1)
    cos = (g.normal * to_camera).sum(-1).clamp_min(0)
    return torch.where(g.mask, cos**exponent, torch.zeros_like(cos))


def bake(
    views: list[Tensor], gbuffers: list[GBuffer], weights: list[Tensor], size: tuple[int, int]
) -> tuple[Tensor, Tensor]:
    """Inverse projection: texture T(u) = Σ_i Σ_{p→u} w_i(p) x_i(p) / Σ_i Σ_{p→u} w_i(p) (0 where no weight), and the
    total weight per texel. ``views`` (C, H, W), ``weights`` (H, W) per view; texture (C, H_t, W_t)."""
    Ht, Wt = size
    C = views[0].shape[0]
    device = views[0].device
    total = torch.zeros(C, Ht * Wt, device=device)
    wsum = torch.zeros(Ht * Wt, device=device)
    for x, g, w in zip(views, gbuffers, weights):
        m = g.mask.to(device).flatten() & (w.flatten() > 0)
        idx = texel_index(g.uv.to(device), Ht, Wt).flatten()[m]
        wm = w.flatten()[m].to(x)
        total.index_add_(1, idx, x.flatten(1)[:, m] * wm)
        wsum.index_add_(0, idx, wm)
    tex = torch.where(wsum > 0, total / wsum.clamp_min(1e-12), torch.zeros_like(total))
    return tex.view(C, Ht, Wt), wsum.view(Ht, Wt)


def voronoi_index(seen: Tensor) -> Tensor:
    """For every texel, the flat index of its nearest seen texel (Euclidean, in texels; scipy's exact distance
    transform; a seen texel is its own). ``seen`` (H, W) bool, at least one seen texel; returns (H·W,) on the CPU."""
    from scipy.ndimage import distance_transform_edt

    _, (rows, cols) = distance_transform_edt(~seen.cpu().numpy(), return_indices=True)
    return torch.from_numpy((rows * seen.shape[1] + cols).astype(np.int64)).flatten()


def voronoi_fill(texture: Tensor, seen: Tensor) -> Tensor:
    """Every unseen texel takes the value of its nearest seen texel (:func:`voronoi_index`). ``seen`` (H, W) bool."""
    if not bool(seen.any()):
        return texture
    return texture.flatten(1)[:, voronoi_index(seen).to(texture.device)].view_as(texture)
