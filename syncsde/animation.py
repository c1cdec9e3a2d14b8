"""Animations of ambiguous images: frames that turn each reading into the next under the views."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from syncsde.views import Identity, Rotate, View


def readings_animation(readings: list[Tensor], views: list[View], frames: int = 24, hold: int = 8) -> list[Tensor]:
    """Frames (3, H, W): reading i turns into reading i+1 under V_{i+1} ∘ V_i⁻¹ in ``frames`` frames and is held
    ``hold`` frames, the last reading turning back into the first. Rotations turn continuously; any other view
    moves each pixel along a straight line from its source to its target, and a negating view fades its colour
    to the negative (1 − x) on the way."""
    out = []
    for i, (image, view) in enumerate(zip(readings, views)):
        j = (i + 1) % len(views)
        steps = [a / (frames - 1) for a in range(frames)] if frames > 1 else [1.0]
        if all(isinstance(v, (Identity, Rotate)) for v in (view, views[j])):
            turns = getattr(views[j], "k", 0) - getattr(view, "k", 0)
            path = [_rotate(image, turns * math.pi / 2 * a) for a in steps]
        else:
            path = _pixel_paths(image, lambda t, a=view, b=views[j]: b.view(a.inverse_view(t)), steps)
        path[0], path[-1] = image, readings[j]
        out += path + [readings[j]] * hold
    return out


def _rotate(image: Tensor, angle: float) -> Tensor:
    """Rotate counter-clockwise (as numpy's rot90 for positive k) by ``angle`` radians, nearest sampling."""
    c, s = math.cos(angle), math.sin(angle)
    theta = torch.tensor([[c, s, 0.0], [-s, c, 0.0]], dtype=image.dtype, device=image.device)[None]
    grid = F.affine_grid(theta, [1, *image.shape], align_corners=False)
    return F.grid_sample(image[None], grid, mode="nearest", align_corners=False)[0]


def _pixel_paths(image: Tensor, transform, steps: list[float]) -> list[Tensor]:
    """``transform`` maps one reading to the next; applied to 1-based pixel indices it gives each target pixel's
    source (and, by the sign, whether the colour is negated)."""
    C, H, W = image.shape
    index = torch.arange(1, H * W + 1, dtype=torch.float64, device=image.device).view(1, H, W)
    moved = transform(index)[0].flatten()
    src, negated = moved.abs().long() - 1, moved < 0
    dst = torch.arange(H * W, device=image.device)
    sy, sx, dy, dx = src // W, src % W, dst // W, dst % W
    colours = image.flatten(1)[:, src]
    target = torch.where(negated, 1 - colours, colours)
    out = []
    for a in steps:
        y = ((1 - a) * sy + a * dy).round().long().clamp(0, H - 1)
        x = ((1 - a) * sx + a * dx).round().long().clamp(0, W - 1)
        frame = torch.zeros_like(image).flatten(1)
        frame[:, y * W + x] = (1 - a) * colours + a * target
        out.append(frame.view(C, H, W))
    return out
