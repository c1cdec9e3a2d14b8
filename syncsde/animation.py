"""Animations of a view transformation (ambiguous images): frames from an image to its view."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from syncsde.views import Rotate, View


def view_animation(image: Tensor, view: View, frames: int = 24, hold: int = 8) -> list[Tensor]:
    """Frames (3, H, W) from ``image`` to ``view.view(image)``, held, and back. Rotations turn continuously;
    every other view (a permutation) moves each pixel along a straight line from its source to its target."""
    steps = [i / (frames - 1) for i in range(frames)]
    if isinstance(view, Rotate):
        path = [_rotate(image, view.k * math.pi / 2 * a) for a in steps]
    else:
        path = _pixel_paths(image, view, steps)
    path[-1] = view.view(image)
    return path + [path[-1]] * hold + path[::-1] + [path[0]] * hold


def _rotate(image: Tensor, angle: float) -> Tensor:
    """Rotate counter-clockwise (as numpy's rot90 for positive k) by ``angle`` radians, nearest sampling."""
    c, s = math.cos(angle), math.sin(angle)
    theta = torch.tensor([[c, s, 0.0], [-s, c, 0.0]], dtype=image.dtype, device=image.device)[None]
    grid = F.affine_grid(theta, [1, *image.shape], align_corners=False)
    return F.grid_sample(image[None], grid, mode="nearest", align_corners=False)[0]


def _pixel_paths(image: Tensor, view: View, steps: list[float]) -> list[Tensor]:
    C, H, W = image.shape
    src = view.view(torch.arange(H * W, dtype=torch.float64, device=image.device).view(1, H, W))[0].long().flatten()
    dst = torch.arange(H * W, device=image.device)
    sy, sx, dy, dx = src // W, src % W, dst // W, dst % W
    colours = image.flatten(1)[:, src]
    out = []
    for a in steps:
        y = ((1 - a) * sy + a * dy).round().long().clamp(0, H - 1)
        x = ((1 - a) * sx + a * dx).round().long().clamp(0, W - 1)
        frame = torch.zeros_like(image).flatten(1)
        frame[:, y * W + x] = colours
        out.append(frame.view(C, H, W))
    return out
