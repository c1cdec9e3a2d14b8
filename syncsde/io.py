"""Atomic file output: write to a temporary name in the same folder, then rename (nothing half-written)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def to_pil(image: torch.Tensor) -> Image.Image:
    """(3, H, W) or (1, H, W) or (H, W) in [0, 1] → PIL image."""
    a = image.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
    if a.ndim == 3:
        a = a.permute(1, 2, 0)
        if a.shape[-1] == 1:
            a = a[..., 0]
    return Image.fromarray(np.ascontiguousarray(a.numpy()))


def save_png(path: str | Path, image: torch.Tensor | Image.Image) -> Path:
    img = image if isinstance(image, Image.Image) else to_pil(image)
    return atomic_write(path, lambda p: img.save(p, format="PNG"))


def save_json(path: str | Path, obj) -> Path:
    return atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=2, default=str) + "\n"))


def save_gif(path: str | Path, frames, duration_ms: int = 80) -> Path:
    """An animated GIF (looping) from frames (3, H, W) in [0, 1]."""
    images = [to_pil(f) for f in frames]
    return atomic_write(
        path,
        lambda p: images[0].save(
            p, format="GIF", save_all=True, append_images=images[1:], duration=duration_ms, loop=0
        ),
    )


def save_npy(path: str | Path, array) -> Path:
    a = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)

    def write(p):
        with open(p, "wb") as f:
            np.save(f, a)

    return atomic_write(path, write)
