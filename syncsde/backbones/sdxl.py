"""Stable Diffusion XL: both text encoders, pooled embeddings and micro-conditioning time ids, and a ControlNet.

SDXL is an ε-prediction UNet on SD's noise schedule, so sampling, inversion and every strategy work as for SD
(DDIM built from its scheduler config, SYNCSDE.md §2). What differs is the conditioning:

- the prompt goes through both CLIP encoders (penultimate hidden states, concatenated) and the second encoder's
  pooled projection, encoded by diffusers' own ``StableDiffusionXLPipeline.encode_prompt`` on a pipeline object
  built from the loaded components (no second copy of the weights);
- the empty prompt is the zero embedding when the checkpoint asks for it (``force_zeros_for_empty_prompt``, SDXL
  base): the unconditional branch of diffusers' pipeline with its default ``negative_prompt=None``;
- the time ids (original size, crop top-left, target size) are (h, w, 0, 0, h, w) in pixels of the rows the
  network sees. For a wide image every window is asked to be a complete, uncropped native image — the paper's
  setting, where each window is an ordinary sample — and a one-window image gets exactly the pipeline's defaults.
  (Telling each window that it is a crop of the canvas would condition the model toward cut-off content.)

The VAE stays in float32 when the UNet runs in float16 (SDXL's VAE overflows in half precision: its
``force_upcast``). Native size 1024 px: windows of 128 latents.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import Tensor

from syncsde.backbones.diffusers import ControlNet, DiffusersBackbone
from syncsde.errors import InputError
from syncsde.registry import register


@register("backbone", "sdxl")
class StableDiffusionXL(DiffusersBackbone):
    """SDXL base through diffusers; default ``stabilityai/stable-diffusion-xl-base-1.0``. The refiner
    (aesthetic-score conditioning, one text encoder) is not supported."""

    family = "sdxl"
    components = ("unet", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")
    pipeline = "StableDiffusionXLPipeline"
    upcast_vae = True

    def __init__(
        self, model: str = "stabilityai/stable-diffusion-xl-base-1.0", dtype: str = "auto", variant: str | None = None
    ):
        super().__init__(model, dtype, variant)
        cfg = self.unet.config
        if self.text_encoder is None or self.text_encoder_2 is None or cfg.addition_embed_type != "text_time":
            raise InputError(f"'{model}' is not an SDXL base checkpoint (the refiner is not supported)")
        expected = self.unet.add_embedding.linear_1.in_features
        if expected != 6 * cfg.addition_time_embed_dim + self.text_encoder_2.config.projection_dim:
            raise InputError(f"'{model}': its UNet expects {expected} added-embedding inputs, not SDXL base's six ids")
        self.force_zeros_for_empty_prompt = self.pipeline_config.get("force_zeros_for_empty_prompt", True)

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> dict[str, Tensor]:
        """{"prompt_embeds": (M, 77, 2048), "pooled_prompt_embeds": (M, 1280)} for SDXL base."""
        encoder = self.prompt_encoder(
            force_zeros_for_empty_prompt=self.force_zeros_for_empty_prompt, add_watermarker=False
        )
        embeds, _, pooled, _ = encoder.encode_prompt(
            list(prompts), device=self.unet.device, do_classifier_free_guidance=False
        )
        if self.force_zeros_for_empty_prompt:
            keep = torch.tensor([p != "" for p in prompts], device=embeds.device)
            embeds, pooled = embeds * keep[:, None, None].to(embeds), pooled * keep[:, None].to(pooled)
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}

    def unet_inputs(self, x: Tensor, context: dict[str, Tensor]) -> dict:
        h, w = (n * self.scale_factor for n in x.shape[-2:])
        time_ids = torch.tensor([h, w, 0, 0, h, w], dtype=x.dtype, device=x.device).expand(x.shape[0], -1)
        return {
            "encoder_hidden_states": context["prompt_embeds"].to(x.dtype),
            "added_cond_kwargs": {"text_embeds": context["pooled_prompt_embeds"].to(x.dtype), "time_ids": time_ids},
        }


@register("backbone", "sdxl_controlnet")
class StableDiffusionXLControlNet(ControlNet, StableDiffusionXL):
    """SDXL with a ControlNet (:class:`~syncsde.backbones.diffusers.ControlNet`): default the depth ControlNet
    ``diffusers/controlnet-depth-sdxl-1.0``. Its model card recommends a conditioning scale of 0.5 for free
    generation; the mesh task keeps SyncMVD's 0.7 → 0.9 schedule, since the bake needs views aligned to the depth."""

    def __init__(
        self,
        model: str = "stabilityai/stable-diffusion-xl-base-1.0",
        controlnet: str = "diffusers/controlnet-depth-sdxl-1.0",
        dtype: str = "auto",
        scale_start: float = 0.7,
        scale_end: float = 0.9,
        guidance_end: float = 0.99,
        scale_schedule: Literal["linear", "official", "syncmvd"] = "linear",
        variant: str | None = None,
    ):
        super().__init__(model, controlnet, dtype, scale_start, scale_end, guidance_end, scale_schedule, variant)
