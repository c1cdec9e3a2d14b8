"""Perceptual feature networks: LPIPS-VGG (SyncDiffusion's, Lee et al., NeurIPS 2023) where torchvision is installed,
else the hidden states of a CLIP vision tower (the embedded tiny CLIP by default).

Used by the SyncDiffusion strategy (its perceptual loss, BASELINES.md §9) and by the Intra-LPIPS/Intra-Style-L
measures (``syncsde.evaluation.coherence``). The distances and features are differentiable in the images; callers
that need no gradient run them under ``torch.no_grad()``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from syncsde.errors import InputError, ModelNotFoundError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
VGG_STYLE_LAYERS = (0, 2, 5, 7, 10)  # conv_1 .. conv_5 of torchvision's vgg19().features (SyncDiffusion's style layers)
CHOICES = ("auto", "lpips", "clip")


def unit(f: Tensor, eps: float = 1e-10) -> Tensor:
    """Each position's feature vector (channel axis 1 of (N, C, P)) scaled to unit length (LPIPS's normalisation)."""
    return f / (f.pow(2).sum(1, keepdim=True).sqrt() + eps)


def perceptual_distance(fa: list[Tensor], fb: list[Tensor]) -> Tensor:
    """LPIPS with equal channel weights: Σ_layers mean_positions ‖unit(a) − unit(b)‖², per item. (N,)"""
    return sum((unit(a) - unit(b)).pow(2).sum(1).mean(-1) for a, b in zip(fa, fb))


@dataclass
class Network:
    """A feature network: ``distance(a, b)`` (N,) between images in [0, 1] and ``layers(x)``, a list of (N, C, P)
    feature maps; ``name`` is recorded with every value; ``modules`` are moved by :meth:`to`."""

    name: str
    distance: Callable[[Tensor, Tensor], Tensor]
    layers: Callable[[Tensor], list[Tensor]]
    note: str | None = None
    modules: tuple[torch.nn.Module, ...] = ()

    def to(self, device: torch.device | str) -> Network:
        for m in self.modules:
            m.to(device)
        return self


def clip_name(model: str) -> str:
    """How a CLIP is recorded: ``tiny-clip`` for the embedded one, else ``clip:<hub id or folder>``."""
    return "tiny-clip" if model == "syncsde:tiny-clip" else f"clip:{model}"


def clip_network(model: str = "syncsde:tiny-clip", note: str | None = None) -> Network:
    """A CLIP vision tower's hidden states (the patch embedding and each transformer layer; the class token left
    out) as features: images are resized to the model's input size."""
    from transformers import CLIPModel

    from syncsde.tiny.clip import normalize, resolve_transformers_model

    try:
        clip = CLIPModel.from_pretrained(resolve_transformers_model(model)).eval().requires_grad_(False)
    except OSError as e:
        raise ModelNotFoundError(
            f"cannot load CLIP model '{model}' ({str(e).splitlines()[0][:120]}); "
            "give a local folder in transformers CLIPModel layout"
        ) from None
    vision, size = clip.vision_model, clip.config.vision_config.image_size

    def layers(x: Tensor) -> list[Tensor]:
        x = x.float()
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out = vision(pixel_values=normalize(x), output_hidden_states=True)
        return [h[:, 1:].transpose(1, 2).double() for h in out.hidden_states]  # (N, D, patches)

    return Network(clip_name(model), lambda a, b: perceptual_distance(layers(a), layers(b)), layers, note, (vision,))


def lpips_network() -> Network:
    """SyncDiffusion's networks: LPIPS with VGG (torchmetrics' copy of the ``lpips`` package, inputs in [−1, 1]) for
    the distance, and the outputs of VGG-19's first five convolutions (ImageNet normalisation) as layers (its style
    loss). Needs torchvision and its VGG weights."""
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity
    from torchvision.models import VGG19_Weights, vgg19

    lpips = LearnedPerceptualImagePatchSimilarity(net_type="vgg", normalize=True).eval()
    vgg = vgg19(weights=VGG19_Weights.IMAGENET1K_V1).features[: VGG_STYLE_LAYERS[-1] + 1].eval().requires_grad_(False)

    def distance(a: Tensor, b: Tensor) -> Tensor:  # the per-pair LPIPS (lpips.LPIPS(net="vgg") on 2x − 1)
        return lpips.net(a.float(), b.float(), normalize=True).flatten().double()

    def layers(x: Tensor) -> list[Tensor]:
        mean, std = torch.tensor(IMAGENET_MEAN).to(x)[:, None, None], torch.tensor(IMAGENET_STD).to(x)[:, None, None]
        x, out = (x.float() - mean) / std, []
        for i, layer in enumerate(vgg):
            x = F.relu(x) if isinstance(layer, torch.nn.ReLU) else layer(x)  # not in place: kept outputs stay intact
            if i in VGG_STYLE_LAYERS:
                out.append(x.flatten(2).double())
        return out

    return Network("lpips-vgg", distance, layers, modules=(lpips, vgg))


def torchvision_installed() -> bool:
    return importlib.util.find_spec("torchvision") is not None


def resolve(choice: str, option: str = "--network", installed: bool | None = None) -> str:
    """``lpips`` or ``clip`` for a choice of ``auto``, ``lpips`` or ``clip``, by whether torchvision is ``installed``
    (default: look): ``auto`` is lpips exactly when it is. ``option`` names the setting in the one-line refusals."""
    if choice not in CHOICES:
        raise InputError(f"{option} {choice!r}: choose auto, lpips or clip")
    installed = torchvision_installed() if installed is None else installed
    if choice == "lpips" and not installed:
        raise InputError(f"{option} lpips: LPIPS/VGG need torchvision, which is not installed; pip install "
                         f"torchvision, or use {option} clip")  # fmt: skip
    return "clip" if choice == "clip" or not installed else "lpips"


def network(
    choice: str = "auto", clip: str = "syncsde:tiny-clip", option: str = "--network", installed: bool | None = None
) -> Network:
    """``lpips`` (SyncDiffusion's networks: needs torchvision), ``clip`` (the CLIP ``clip``'s features), or ``auto``:
    lpips when torchvision is installed and its weights load, else clip, noting why."""
    if resolve(choice, option, installed) == "clip":
        note = None if choice == "clip" else "LPIPS/VGG need torchvision, which is not installed"
        return clip_network(clip, note=note)
    try:
        return lpips_network()
    except Exception as e:  # noqa: BLE001 (e.g. the VGG weights cannot be downloaded offline)
        reason = f"LPIPS/VGG could not be loaded ({str(e).splitlines()[0][:160]})"
        if choice == "lpips":
            raise InputError(f"{option} lpips: {reason}; use {option} clip") from None
        return clip_network(clip, note=reason)
