"""Backbones: pretrained denoisers behind one small protocol (ARCHITECTURE.md). They know nothing of synchronization.

Families (README, "Backbones"): ε/v-prediction UNets — Stable Diffusion 1/2, DeepFloyd IF, SDXL (+ ControlNets) —
and flow-matching transformers — SD3 (+ ControlNet), Flux — each one file, sampled through :mod:`syncsde.schedule`.
"""

from syncsde.backbones.analytic import GaussianBackbone, GaussianMixtureBackbone
from syncsde.backbones.base import Backbone, guided_eps
from syncsde.backbones.diffusers import (
    ControlNet,
    DeepFloydIF,
    DiffusersBackbone,
    StableDiffusion,
    StableDiffusionControlNet,
)
from syncsde.backbones.flux import Flux
from syncsde.backbones.sd3 import StableDiffusion3, StableDiffusion3ControlNet
from syncsde.backbones.sdxl import StableDiffusionXL, StableDiffusionXLControlNet

__all__ = [
    "Backbone",
    "guided_eps",
    "GaussianBackbone",
    "GaussianMixtureBackbone",
    "DiffusersBackbone",
    "StableDiffusion",
    "DeepFloydIF",
    "ControlNet",
    "StableDiffusionControlNet",
    "StableDiffusionXL",
    "StableDiffusionXLControlNet",
    "StableDiffusion3",
    "StableDiffusion3ControlNet",
    "Flux",
]
