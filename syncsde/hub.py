"""The Hugging Face hub ids syncsde names: the defaults of its backbones, captioner and CLIP models and the ids in
``configs/``, in one place (``tests/test_hub.py`` checks that code and configs name no other, and no withdrawn one).

Every id here existed on the hub when it was last checked (2025); gated ones (DeepFloyd IF, SD3, SD3.5, Flux) need their
licence accepted on the hub before ``hf download``. syncsde downloads nothing itself when offline: pass a local
folder with ``--model.backbone.model DIR``.
"""

from __future__ import annotations

from syncsde.errors import ModelNotFoundError

IDS: dict[str, str] = {
    "stabilityai/stable-diffusion-2-base": "SD-2 base, 512²: default backbone (wide, mask_t2i, regions, sphere, canvas)",
    "stable-diffusion-v1-5/stable-diffusion-v1-5": "SD-1.5: the mesh backbone under the depth ControlNet",
    "CompVis/stable-diffusion-v1-4": "SD-1.4: the editing backbone of the paper",
    "lllyasviel/control_v11f1p_sd15_depth": "depth ControlNet for SD-1.5 (mesh texturing)",
    "stabilityai/stable-diffusion-xl-base-1.0": "SDXL base 1.0 (wide, mask_t2i, edit, mesh on SDXL)",
    "diffusers/controlnet-depth-sdxl-1.0": "depth ControlNet for SDXL (mesh texturing on SDXL)",
    "stabilityai/stable-diffusion-3-medium-diffusers": "SD3 medium, diffusers layout (gated)",
    "stabilityai/stable-diffusion-3.5-large": "SD3.5 Large, diffusers layout: mesh texturing on SD3 (gated)",
    "stabilityai/stable-diffusion-3.5-large-controlnet-depth": "depth ControlNet for SD3.5 Large (mesh on SD3; gated)",
    "black-forest-labs/FLUX.1-dev": "Flux.1 dev (gated)",
    "DeepFloyd/IF-I-M-v1.0": "DeepFloyd IF stage I, 64² pixels (ambiguous images; gated)",
    "DeepFloyd/IF-II-M-v1.0": "DeepFloyd IF stage II upscaler to 256² (ambiguous images; gated)",
    "Salesforce/blip-image-captioning-base": "BLIP captioner: prompts for edit records without one",
    "openai/clip-vit-base-patch32": "CLIP ViT-B/32: CLIP score, edit's missing-word search, MDM's text encoder",
}

# ids that were removed from the hub, and what replaces each
WITHDRAWN: dict[str, str] = {
    "runwayml/stable-diffusion-v1-5": "stable-diffusion-v1-5/stable-diffusion-v1-5",  # removed by RunwayML, 2024-08
    "runwayml/stable-diffusion-inpainting": "stable-diffusion-v1-5/stable-diffusion-inpainting",
}


def check_withdrawn(model: str, option: str) -> None:
    """One line instead of a hub 404 for an id that no longer exists, naming its successor."""
    if model in WITHDRAWN:
        raise ModelNotFoundError(
            f"'{model}' was withdrawn from the hub; use {option} {WITHDRAWN[model]} (the same weights)"
        )
