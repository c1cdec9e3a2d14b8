"""Backbones: pretrained denoisers behind one small protocol (ARCHITECTURE.md). They know nothing of synchronization."""

from syncsde.backbones.analytic import GaussianBackbone
from syncsde.backbones.base import Backbone, guided_eps
from syncsde.backbones.diffusers import DeepFloydIF, DiffusersBackbone, StableDiffusion, StableDiffusionControlNet

__all__ = [
    "Backbone",
    "guided_eps",
    "GaussianBackbone",
    "DiffusersBackbone",
    "StableDiffusion",
    "DeepFloydIF",
    "StableDiffusionControlNet",
]
