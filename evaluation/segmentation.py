"""The background of each source image of an editing protocol, for background LPIPS (``syncsde reproduce edit
--segmentation``): the same masks for every method, so that every method is judged on the same pixels.

- :func:`clipseg_masks`: a text-prompted segmentation, CLIPSeg (Lüddecke & Ecker, CVPR 2022; by default
  ``CIDAS/clipseg-rd64-refined``, a hub id or a saved folder) prompted with the edited object's word in the source
  image (cat, dog, horse, zebra): the sigmoid of its logits, resized (bilinear) to the image's size, above
  ``threshold`` (default 0.4) is the object, the rest the background.
- :func:`folder_masks`: the user's masks, one per source image (white: the object; black: the background), each of
  its source image's size.
- :func:`background_distances`: a distance (LPIPS) between each edited image and its source with the object's pixels
  set to 0 in both, the masks resized (nearest) to the edited image's size.

Masks are (1, H, W) tensors of 0 and 1 at the source image's size; 1 marks the object.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from syncsde.errors import InputError

CLIPSEG = "CIDAS/clipseg-rd64-refined"
THRESHOLD = 0.4  # on CLIPSeg's sigmoid; a usual choice for its maps (the paper's segmentation is not known)


def load_clipseg(model: str = CLIPSEG):
    """CLIPSeg's processor and network from a hub id or a saved folder; one line naming the fix where it fails."""
    try:
        from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

        processor = CLIPSegProcessor.from_pretrained(model)
        net = CLIPSegForImageSegmentation.from_pretrained(model).eval().requires_grad_(False)
    except Exception as e:  # noqa: BLE001 (any failure to load is the user's to fix: say how)
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise InputError(
            f"--segmentation clipseg: CLIPSeg '{model}' does not load ({reason}); give --segmentation_model FOLDER "
            "(a saved CLIPSeg), --segmentation FOLDER (one mask per source image) or --segmentation own"
        ) from None
    return processor, net


def clipseg_masks(
    images: Iterable[Image.Image], words: list[str], model: str = CLIPSEG, threshold: float = THRESHOLD, device="cpu"
) -> list[torch.Tensor]:
    """The object mask of each image, CLIPSeg prompted with its word: (1, H, W) at the image's size."""
    processor, net = load_clipseg(model)
    net = net.to(device)
    masks = []
    with torch.no_grad():
        for image, word in zip(images, words):
            inputs = processor(text=[word], images=[image.convert("RGB")], return_tensors="pt", padding=True)
            logits = net(**inputs.to(device)).logits  # (1, h, w), or (h, w): the network squeezes a batch of one
            prob = torch.sigmoid(logits.float().reshape(1, 1, *logits.shape[-2:]))
            prob = F.interpolate(prob, size=(image.height, image.width), mode="bilinear", align_corners=False)
            masks.append((prob[0] > threshold).float().cpu())
    return masks


def folder_masks(folder: str | Path, names: list[str], images: list[str]) -> list[torch.Tensor]:
    """The user's mask ``folder/name`` of each source image (white: the object), which must have its image's size."""
    folder = Path(folder)
    masks = []
    for name, image in zip(names, images):
        path = folder / name
        if not path.is_file():
            raise InputError(
                f"--segmentation {folder}: no mask {name} for the source image {image}; give one mask per source "
                "image (white: the edited object, black: the background), named as docs/reproduce.md says"
            )
        with Image.open(path) as m, Image.open(image) as src:
            if m.size != src.size:
                raise InputError(
                    f"--segmentation {folder}: the mask {name} is {m.size[0]}x{m.size[1]}, its source image {image} "
                    f"is {src.size[0]}x{src.size[1]}; give masks of the source images' sizes"
                )
            masks.append(torch.from_numpy(np.asarray(m.convert("L")) > 127).float()[None])
    return masks


def background_distances(samples, masks: dict[int, torch.Tensor], distance: Callable, device="cpu") -> list[float]:
    """``distance(edit·b, source·b)`` of each sample with a source image, b = 1 − its object mask (``masks`` by
    sample id, resized to the sample's size by nearest neighbour)."""
    out = []
    for s in samples:
        if "source" not in s.extras:
            continue
        image, src = s.image[None].to(device), s.extras["source"][None].to(device)
        mask = F.interpolate(masks[s.sample_id][None].to(device), size=image.shape[-2:], mode="nearest")
        keep = 1 - mask
        out.append(float(distance(image * keep, src * keep)))
    return out
