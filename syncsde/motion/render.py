"""Skeleton drawings of joint sequences (no GPU, no display): frames for a GIF, and a filmstrip PNG."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

from syncsde.motion.humanml import PARENTS


def skeleton_frames(joints: np.ndarray, size: int = 160, colors: np.ndarray | None = None, follow: bool = True):
    """(T, 22, 3) joints (y up) → list of (3, size, size) tensors in [0, 1], seen from the side (z to the right).

    ``follow`` keeps the root horizontally centred (long walks stay in view); a ground line and the root's path
    marks show the travel. ``colors`` (T, 3) in [0, 1] tints each frame's bones (e.g. by segment).
    """
    T = joints.shape[0]
    z, y = joints[..., 2], joints[..., 1]
    scale = 0.8 * size / max(2.0, float(y.max() - min(0.0, y.min())) + 0.2)
    frames = []
    for f in range(T):
        cz = z[f, 0] if follow else z.mean()
        img = Image.new("RGB", (size, size), "white")
        d = ImageDraw.Draw(img)
        ground = size - 12
        d.line([(0, ground), (size, ground)], fill=(180, 180, 180))
        for tick in np.arange(np.floor(cz - 3), np.ceil(cz + 3) + 0.5, 0.5):  # moving ground marks
            x = size / 2 + (tick - cz) * scale
            d.line([(x, ground), (x, ground + 4)], fill=(180, 180, 180))
        c = tuple(int(255 * v) for v in (colors[f] if colors is not None else (0.1, 0.2, 0.8)))
        for j, p in enumerate(PARENTS):
            if p < 0:
                continue
            pts = [(size / 2 + (z[f, k] - cz) * scale, ground - y[f, k] * scale) for k in (p, j)]
            d.line(pts, fill=c, width=3)
        head = (size / 2 + (z[f, 15] - cz) * scale, ground - y[f, 15] * scale)
        d.ellipse([head[0] - 5, head[1] - 5, head[0] + 5, head[1] + 5], outline=c, width=2)
        frames.append(torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1))
    return frames


def filmstrip(frames: list[torch.Tensor], every: int) -> torch.Tensor:
    """Every ``every``-th frame side by side: (3, H, W·k)."""
    return torch.cat(frames[::every], dim=-1)
