"""Alignment A and concealment C of ambiguous images (Visual Anagrams, Geng, Park and Owens, CVPR 2024, §5).

For an image seen under N views v_1..v_N meant to read as prompts p_1..p_N, the CLIP score matrix is
S_ij = cos(φ_img(v_i(x)), φ_text(p_j)). Alignment A = min_i S_ii (the worst view against its own prompt); concealment
C = (1/N) tr softmax(S/τ), τ the CLIP model's temperature (1/exp(logit_scale); 0.01 for OpenAI's CLIP), averaged
over the two directions of the softmax (over prompts for each view, over views for each prompt): C = 1 when each view
is told apart as its own prompt, 1/N when CLIP cannot tell. Over a set of images, the paper reports each score's mean
and its 0.9 and 0.95 quantiles (the best images of many samples). See ``docs/evaluation.md``.
"""

from __future__ import annotations

import numpy as np
import torch

QUANTILES = (0.9, 0.95)


def score_matrix(clip, views: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    """S (N, N): cosine similarity of each view image (N, 3, H, W) in [0, 1] with each prompt, by a
    :class:`~syncsde.evaluation.features.CLIPEmbedder`."""
    return (clip.encode_images(views) @ clip.encode_texts(prompts).T).double().cpu()


def temperature(clip) -> float:
    """τ = 1 / exp(logit_scale) of a CLIPEmbedder's model."""
    return float(1 / clip.model.logit_scale.exp())


def alignment(S: torch.Tensor) -> float:
    """A = min_i S_ii."""
    return float(torch.as_tensor(S).diagonal().min())


def concealment(S: torch.Tensor, tau: float) -> float:
    """C = (1/N) tr softmax(S/τ), the mean of the softmax over prompts (rows) and over views (columns)."""
    S = torch.as_tensor(S, dtype=torch.float64) / tau
    n = S.shape[0]
    return float((S.softmax(dim=1).trace() + S.softmax(dim=0).trace()) / (2 * n))


def summary(values) -> dict:
    """Mean and the 0.9/0.95 quantiles (linear interpolation) of per-image scores."""
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), **{f"q{q:g}": float(np.quantile(v, q)) for q in QUANTILES}, "num": int(v.size)}
