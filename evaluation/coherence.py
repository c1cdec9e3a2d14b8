"""The field's measures of an output folder, written to ``coherence.json`` beside ``metrics.json``:

    python -m syncsde.evaluation.coherence DIR [--network auto|lpips|clip] [--clip MODEL] [--crop N]
                                               [--transition_length 60] [--reference_jerk 0.0330]

- wide images (task ``wide_image``): Intra-LPIPS and Intra-Style-L (SyncDiffusion, Lee et al., NeurIPS 2023), the
  mean distance between every pair of the non-overlapping native-size crops of one panorama (this module);
- ambiguous images: Visual Anagrams' alignment A and concealment C, mean and 0.9/0.95 quantiles
  (:mod:`syncsde.evaluation.anagrams`);
- motion: FlowMDM's Peak Jerk and Area Under the Jerk of the transitions (:mod:`syncsde.evaluation.motion_metrics`).

Each sample is read from its sidecar. Intra-LPIPS/Style use SyncDiffusion's networks (LPIPS-VGG; VGG-19's first five
convolutions) when torchvision is installed, else the intermediate hidden states of a CLIP vision tower (the embedded
tiny CLIP by default); every value records the network it used. Protocol and equations: ``docs/evaluation.md``.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from syncsde import perceptual
from syncsde.errors import InputError
from syncsde.evaluation import motion_metrics as mm
from syncsde.io import save_json
from syncsde.perceptual import (  # noqa: F401 (clip_network, perceptual_distance: the measures' networks, kept here too)
    Network,
    clip_name,
    clip_network,
    perceptual_distance,
    torchvision_installed,
)
from syncsde.writer import read_image, sidecars

PANORAMA_TASKS = ("wide_image",)


# -- crops and pairs ---------------------------------------------------------------------------------------------------
def crop_grid(image: Tensor, size: int, stride: int | None = None) -> Tensor:
    """SyncDiffusion's crops of (3, H, W): ``size``-square crops every ``stride`` (default ``size``: non-overlapping)
    pixels from the top-left corner, row by row; a remainder narrower than a crop is left out. (n, 3, size, size)."""
    stride = stride or size
    H, W = image.shape[-2:]
    if H < size or W < size:
        raise InputError(f"a {H}x{W} image holds no {size}x{size} crop; give a smaller --crop")
    return torch.stack(
        [
            image[:, y : y + size, x : x + size]
            for y in range(0, H - size + 1, stride)
            for x in range(0, W - size + 1, stride)
        ]
    )


def pairs(n: int, row: int | None = None) -> tuple[list[int], list[int]]:
    """Every unordered pair (i < j) of n crops, as two index lists; with ``row`` (crops per row of
    :func:`crop_grid`), only the pairs in the same row: crops at the same height."""
    both = [(i, j) for i, j in itertools.combinations(range(n), 2) if row is None or i // row == j // row]
    first, second = zip(*both) if both else ((), ())
    return list(first), list(second)


def crop_pairs(image: Tensor, size: int, stride: int | None, same_row: bool, measure: str):
    """The crops of ``image`` and the pairs ``measure`` compares (every pair, or those at the same height)."""
    crops = crop_grid(image, size, stride)
    row = (image.shape[-1] - size) // (stride or size) + 1 if same_row else None
    i, j = pairs(len(crops), row)
    if not i:
        where = " per row" if same_row and len(crops) > 1 else ""
        raise InputError(f"a {tuple(image.shape[-2:])} image holds one {size}-pixel crop{where}: {measure} needs two")
    return crops, i, j


# -- the distances -----------------------------------------------------------------------------------------------------
def gram(f: Tensor) -> Tensor:
    """Gram matrices of features (N, C, P): F Fᵀ / (C·P), as in SyncDiffusion's style loss. (N, C, C)"""
    return f @ f.transpose(1, 2) / (f.shape[1] * f.shape[2])


def style_loss(fa: list[Tensor], fb: list[Tensor]) -> Tensor:
    """Σ_layers mean over the C² entries of (G(a) − G(b))², per item. (N,)"""
    return sum((gram(a) - gram(b)).pow(2).mean(dim=(1, 2)) for a, b in zip(fa, fb))


def network(choice: str = "auto", clip: str = "syncsde:tiny-clip") -> Network:
    """``lpips`` (SyncDiffusion's networks: needs torchvision), ``clip`` (the CLIP ``clip``'s features), or ``auto``:
    lpips when torchvision is installed and its weights load, else clip, noting why (:mod:`syncsde.perceptual`)."""
    return perceptual.network(choice, clip, installed=torchvision_installed())


# -- the measures ------------------------------------------------------------------------------------------------------
@torch.no_grad()
def intra_lpips(image: Tensor, net: Network, size: int, stride: int | None = None, same_row: bool = False) -> dict:
    """Intra-LPIPS of one panorama (3, H, W) in [0, 1]: the mean distance over every pair of its crops (``same_row``:
    over the pairs at the same height only, the variant for canvases taller than a crop, docs/evaluation.md)."""
    crops, i, j = crop_pairs(image, size, stride, same_row, "Intra-LPIPS")
    value = float(net.distance(crops[i], crops[j]).mean())
    return {"value": value, "crops": len(crops), "pairs": len(i), "network": net.name}


@torch.no_grad()
def intra_style(image: Tensor, net: Network, size: int, stride: int | None = None, same_row: bool = False) -> dict:
    """Intra-Style-L of one panorama: the mean style loss over every pair of its crops (``same_row``: as
    :func:`intra_lpips`); ``sum_over_pairs`` is the number SyncDiffusion's script accumulates per panorama (it does not
    divide by the number of pairs)."""
    crops, i, j = crop_pairs(image, size, stride, same_row, "Intra-Style-L")
    feats = net.layers(crops)
    losses = style_loss([f[i] for f in feats], [f[j] for f in feats])
    return {
        "value": float(losses.mean()),
        "sum_over_pairs": float(losses.sum()),
        "crops": len(crops),
        "pairs": len(i),
        "network": net.name,
    }


def native_crop(meta: dict, image: Tensor) -> int:
    """The native (window) side of a wide image, from its sidecar: height − vertical_stride·(rows − 1), which is the
    image height for one row of windows; else the image's shorter side."""
    if "grid" in meta and meta.get("height"):
        rows = meta["grid"][0]
        return int(meta["height"] - (meta.get("vertical_stride") or 0) * (rows - 1))
    return int(min(image.shape[-2:]))


# -- folders -----------------------------------------------------------------------------------------------------------
def aggregate(values: list[float]) -> dict:
    v = np.asarray(values, dtype=np.float64)
    return {"value": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0, "num_samples": int(v.size)}


def panorama_measures(folder: Path, samples: list[dict], net: Network, crop: int | None) -> tuple[dict, dict]:
    per_sample = {}
    for meta in samples:
        image = read_image(folder / meta["files"]["image"])
        size = crop or native_crop(meta, image)
        style = intra_style(image, net, size)
        per_sample[meta["sample_id"]] = {
            "intra_lpips": intra_lpips(image, net, size)["value"],
            "intra_style": style["value"],
            "intra_style_sum_over_pairs": style["sum_over_pairs"],
            "crop": size,
            "crops": style["crops"],
            "pairs": style["pairs"],
        }
        if image.shape[-2] >= 2 * size and image.shape[-1] >= 2 * size:  # crops at several heights: also the variant
            per_sample[meta["sample_id"]].update(
                intra_lpips_same_row=intra_lpips(image, net, size, same_row=True)["value"],
                intra_style_same_row=intra_style(image, net, size, same_row=True)["value"],
            )
    extra = {"network": net.name, **({"network_note": net.note} if net.note else {})}
    first = next(iter(per_sample.values()))
    names = ("intra_lpips", "intra_style", "intra_lpips_same_row", "intra_style_same_row")
    measures = {
        name: {**aggregate([s[name] for s in per_sample.values()]), **extra, "crop": first["crop"]}
        for name in names
        if all(name in s for s in per_sample.values())
    }
    return measures, per_sample


def anagram_measures(folder: Path, samples: list[dict], clip_model: str) -> tuple[dict, dict]:
    from syncsde.evaluation import anagrams
    from syncsde.evaluation.features import CLIPEmbedder

    clip = CLIPEmbedder(clip_model)
    tau = anagrams.temperature(clip)
    per_sample = {}
    for meta in samples:
        scored = meta.get("scored") or []
        if len(scored) < 2:
            raise InputError(
                f"sample {meta['sample_id']} records no readings with their prompts (its sidecar's "
                "'scored'); give an ambiguous-image output folder"
            )
        views = torch.stack([read_image(folder / meta["files"][key]) for key, _ in scored])
        S = anagrams.score_matrix(clip, views, [text for _, text in scored])
        per_sample[meta["sample_id"]] = {
            "alignment": anagrams.alignment(S),
            "concealment": anagrams.concealment(S, tau),
            "scores": S.tolist(),
        }
    measures = {
        name: {
            **anagrams.summary([s[name] for s in per_sample.values()]),
            "network": clip_name(clip_model),
            "temperature": tau,
        }
        for name in ("alignment", "concealment")
    }
    return measures, per_sample


def motion_measures(folder: Path, samples: list[dict], length: int, reference: float) -> tuple[dict, dict]:
    per_sample, curves = {}, []
    for meta in samples:
        joints = np.load(folder / meta["files"]["joints"])
        c = mm.transition_curves(joints, mm.transitions_of(meta), length)
        curves.append(c)
        pj, auj = mm.peak_jerk_auj(c, reference)
        per_sample[meta["sample_id"]] = {"peak_jerk": pj, "auj": auj, "transitions": mm.transitions_of(meta)}
    pj, auj = mm.peak_jerk_auj(np.concatenate(curves), reference)
    common = {
        "transition_length": length,
        "reference_jerk": reference,
        "fps": samples[0].get("fps"),
        "transitions": int(sum(len(c) for c in curves)),
    }
    return {"peak_jerk": {"value": pj, **common}, "auj": {"value": auj, **common}}, per_sample


def measure_folder(
    folder: str | Path,
    network_choice: str = "auto",
    clip: str = "syncsde:tiny-clip",
    crop: int | None = None,
    transition_length: int = mm.TRANSITION_LENGTH,
    reference_jerk: float = mm.HUMANML3D_JERK,
) -> dict:
    """Compute the measures that apply to the folder's task and write ``coherence.json``; returns its record."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder; give a `syncsde predict` output folder")
    samples = [json.loads(p.read_text()) for p in sidecars(folder)]
    if not samples:
        raise InputError(f"{folder} holds no samples (no NNNNN.json sidecars); give a `syncsde predict` output folder")
    task = samples[0].get("task")
    if task in PANORAMA_TASKS:
        measures, per_sample = panorama_measures(folder, samples, network(network_choice, clip), crop)
    elif task == "ambiguous":
        measures, per_sample = anagram_measures(folder, samples, clip)
    elif task == "motion":
        measures, per_sample = motion_measures(folder, samples, transition_length, reference_jerk)
    else:
        raise InputError(
            f"{folder} holds {task!r} samples; the field's measures apply to "
            f"{', '.join(PANORAMA_TASKS)}, ambiguous and motion folders"
        )
    record = {
        "task": task,
        "num_samples": len(samples),
        "measures": measures,
        "per_sample": {str(k): v for k, v in per_sample.items()},
    }
    save_json(folder / "coherence.json", record)
    return record


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m syncsde.evaluation.coherence", description=__doc__.splitlines()[0])
    p.add_argument("folder", help="a `syncsde predict` output folder (wide_image, ambiguous or motion)")
    p.add_argument(
        "--network",
        default="auto",
        choices=["auto", "lpips", "clip"],
        help="Intra-LPIPS/Style features: LPIPS/VGG (needs torchvision), a CLIP's, or lpips when it loads",
    )
    p.add_argument("--clip", default="syncsde:tiny-clip", help="CLIP hub id or folder (features; anagram scores)")
    p.add_argument("--crop", type=int, default=None, help="crop side in pixels (default: the native window size)")
    p.add_argument(
        "--transition_length", type=int, default=mm.TRANSITION_LENGTH, help="frames of each transition window (FlowMDM)"
    )
    p.add_argument(
        "--reference_jerk",
        type=float,
        default=mm.HUMANML3D_JERK,
        help="jerk of real motion for AUJ (default: FlowMDM's HumanML3D value)",
    )
    args = p.parse_args(argv)
    record = measure_folder(
        args.folder, args.network, args.clip, args.crop, args.transition_length, args.reference_jerk
    )
    print(json.dumps(record["measures"], indent=2))
    return record


if __name__ == "__main__":
    from syncsde.cli import fail, one_line

    try:
        main()
    except Exception as e:  # noqa: BLE001 (a mistake the user can fix becomes one line; a bug keeps its traceback)
        if one_line(e) is None:
            raise
        fail(one_line(e))
