"""Masks from image files (SYNCSDE.md §6.1): grayscale in [0, 1], binarised at 0.5, nearest-resized."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from syncsde.console import warn_once
from syncsde.errors import InputError


def load_image(path: str, mode: str = "RGB") -> Image.Image:
    try:
        with Image.open(path) as im:
            return im.convert(mode)
    except (FileNotFoundError, UnidentifiedImageError, OSError) as e:
        raise InputError(f"cannot read image '{path}' ({type(e).__name__}); give a PNG or JPEG file") from None


def load_mask(path: str, height: int, width: int, scale: int = 1) -> Tensor:
    """(1, height, width) float mask, 1 = object: grayscale/255 > 0.5, then nearest resize. Errors if empty. A mask
    smaller than the image (``scale`` × the working size) or of another aspect ratio is stretched: one warning per
    run says so."""
    out, (mh, mw) = _load_mask(path, height, width)
    H, W = height * scale, width * scale
    if mh < H or mw < W or abs(mh * W - mw * H) > 0.02 * mh * W:
        warn_once(
            ("mask", path),
            f"mask '{path}' is {mw}x{mh} px and is stretched to the image's {W}x{H} px (nearest); give a {W}x{H} mask "
            "to say exactly which pixels it covers",
        )
    return out


@lru_cache(maxsize=64)
def _load_mask(path: str, height: int, width: int) -> tuple[Tensor, tuple[int, int]]:
    """The mask at the working size, and the file's size (height, width)."""
    m = torch.from_numpy(np.asarray(load_image(path, "L"), dtype=np.float32) / 255.0)
    binary = (m > 0.5).float()[None, None]
    out = F.interpolate(binary, size=(height, width), mode="nearest")[0]
    if out.sum() == 0:
        raise InputError(
            f"mask '{path}' is empty at {height}x{width} (no pixel above 0.5); paint the object region white"
        )
    return out, tuple(m.shape)
