"""Atomic file output: write to a temporary name in the same folder, then rename (nothing half-written); the lock
that keeps a second run out of an output folder."""

from __future__ import annotations

import errno
import fcntl
import importlib.util
import json
import math
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

TMP_SUFFIX = ".tmp"


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Write ``path`` through ``write(tmp)`` and a rename: the final name only ever holds a complete file. A process
    killed meanwhile leaves at most ``.<name>.<pid>.tmp`` (see :func:`remove_temporaries`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:  # name the file (a failed write, e.g. a full disk, often carries no name)
        if e.filename is None:
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise
    finally:
        tmp.unlink(missing_ok=True)
    return path


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """An image in [0, 1] as the 8-bit values a PNG stores."""
    return image.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)


def quantized(image: torch.Tensor) -> torch.Tensor:
    """An image in [0, 1] rounded to its 8-bit values (what reading its PNG back gives)."""
    return to_uint8(image).float() / 255


def to_pil(image: torch.Tensor) -> Image.Image:
    """(3, H, W) or (1, H, W) or (H, W) in [0, 1] → PIL image."""
    a = to_uint8(image).cpu()
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


def video_available() -> bool:
    """Whether MP4 writing works: the ``video`` extra (imageio-ffmpeg, which ships its own ffmpeg) is installed."""
    return importlib.util.find_spec("imageio_ffmpeg") is not None


def save_mp4(path: str | Path, frames, fps: float = 12.5, min_side: int = 256) -> Path:
    """An H.264 MP4 (yuv420p, plays in browsers and editors) from frames (3, H, W) in [0, 1].

    Small frames are enlarged by an integer nearest-neighbour factor until their longer side reaches ``min_side``, and
    edge-padded to multiples of 16 (the codec's macro block), so pixels stay sharp and no player rescales them.
    Needs imageio-ffmpeg (a dependency)."""
    import imageio_ffmpeg

    images = [np.asarray(to_pil(f)) for f in frames]
    H, W = images[0].shape[:2]
    k = max(1, math.ceil(min_side / max(H, W)))
    pad = ((0, -(H * k) % 16), (0, -(W * k) % 16), (0, 0))
    images = [np.pad(a.repeat(k, 0).repeat(k, 1), pad, mode="edge") for a in images]

    def write(p):
        writer = imageio_ffmpeg.write_frames(
            str(p),
            (images[0].shape[1], images[0].shape[0]),
            fps=fps,
            codec="libx264",
            pix_fmt_out="yuv420p",
            macro_block_size=16,
            output_params=["-f", "mp4"],  # the temporary name has no .mp4 extension
            ffmpeg_log_level="error",
        )
        writer.send(None)
        for a in images:
            writer.send(np.ascontiguousarray(a))
        writer.close()

    return atomic_write(path, write)


def save_npy(path: str | Path, array) -> Path:
    a = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)

    def write(p):
        with open(p, "wb") as f:
            np.save(f, a)

    return atomic_write(path, write)


def remove_temporaries(folder: str | Path) -> int:
    """Delete the temporary files that killed writers left in ``folder`` and its sample subfolders; only safe while
    holding the folder's lock. Returns how many were removed."""
    stale = [p for pattern in (f".*{TMP_SUFFIX}", f"*/.*{TMP_SUFFIX}") for p in Path(folder).glob(pattern)]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


class FolderBusy(Exception):
    """Another process holds the folder's lock."""


def lock_folder(folder: str | Path):
    """Take the exclusive lock of an output folder (``.syncsde.lock``), held until the returned file is closed or
    the process ends (killed included: the operating system releases it). Raises :class:`FolderBusy` naming the
    holder when another process has it."""
    path = Path(folder) / ".syncsde.lock"
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        if e.errno in (errno.EAGAIN, errno.EACCES):
            raise FolderBusy(holder) from None
        raise
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()}")
    f.flush()
    return f
