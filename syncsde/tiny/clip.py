"""Using the embedded tiny CLIP: image normalisation and embeddings."""

from __future__ import annotations

from pathlib import Path

import torch

from syncsde.errors import ModelNotFoundError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's image statistics (CLIPImageProcessor defaults)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] → CLIP pixel values."""
    mean = torch.tensor(CLIP_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


def resolve_transformers_model(name: str) -> str:
    """``syncsde:<name>`` → the folder shipped in the package; anything else is passed to ``from_pretrained``."""
    if name.startswith("syncsde:"):
        path = Path(__file__).resolve().parents[1] / "embedded" / name.split(":", 1)[1]
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"embedded model '{name}' is not in this installation ({path}); reinstall syncsde")
        return str(path)
    return name
