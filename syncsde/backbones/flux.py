"""Flux.1: a guidance-distilled flow-matching transformer (:mod:`syncsde.backbones.flow`) on 2×2-packed latents.

- **Working space = the packed latents.** Flux's transformer reads each 2×2 block of its 16-channel latents as one
  token of 64 features. syncsde keeps that as an image of 64 channels at half the latent resolution, so the scale
  factor is 16 pixels per working-space element: windows and strides in pixels must be multiples of 16 (two
  latents), which the tasks check like any scale factor, and every crop, shift and mask moves whole tokens — the
  same token in two overlapping windows is the same element. ``decode``/``encode`` unpack/pack around the VAE.
- **Guidance distillation.** Flux-dev takes the guidance scale as an input (its guidance embedding); there is no
  unconditional branch and no CFG batch: the task's ``guidance_scale`` (3.5 as the pipeline) goes to the network.
  Flux-schnell has no guidance embedding and ignores it. True CFG with a negative prompt is not supported.
- **Prompts:** CLIP-L's pooled output and T5's embeddings (``max_sequence_length`` tokens), encoded by diffusers'
  own ``FluxPipeline.encode_prompt`` on the loaded components; text position ids are zeros, image position ids the
  (row, column) of each token of the window.
- **Schedule:** FlowMatchEulerDiscreteScheduler with the pipeline's σ = linspace(1, 1/S, S) and its
  resolution-dependent shift μ, linear in the token count. The token count is the **window's** (one trajectory's),
  not the canvas's: μ moves the noise levels to where an image of the size the network sees keeps the same
  signal-to-noise behaviour, and the network only ever sees windows, each a native-size image as in training. A
  one-window wide image then gets the pipeline's schedule exactly, and widening the canvas does not change how
  each window is denoised.
- Native size: the VAE's ``sample_size`` (1024 px for Flux.1; the transformer config states none).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from einops import rearrange
from jsonargparse.typing import PositiveInt
from torch import Tensor

from syncsde.backbones.flow import FlowMatchingBackbone, calculate_shift
from syncsde.errors import InputError
from syncsde.registry import register


def pack(latents: Tensor) -> Tensor:
    """(..., C, h, w) latents → (..., 4C, h/2, w/2): each 2×2 block one element of 4C features, in the order of
    diffusers' Flux token features (c, row in block, column in block)."""
    return rearrange(latents, "... c (h ph) (w pw) -> ... (c ph pw) h w", ph=2, pw=2)


def unpack(z: Tensor) -> Tensor:
    """The inverse of :func:`pack`."""
    return rearrange(z, "... (c ph pw) h w -> ... c (h ph) (w pw)", ph=2, pw=2)


@register("backbone", "flux")
class Flux(FlowMatchingBackbone):
    """Args: model (default ``black-forest-labs/FLUX.1-dev``, gated: accept the licence, download, pass the folder;
    ``FLUX.1-schnell`` works too, with 4 steps), dtype ("auto": bfloat16 on CUDA), max_sequence_length (T5 tokens:
    512 for dev, 256 for schnell, as the pipeline), variant (``bf16``, ``fp16``: those weight files, as diffusers)."""

    family = "flux"
    recorded = ("variant", "max_sequence_length")
    components = ("transformer", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")
    pipeline = "FluxPipeline"
    cuda_dtype = torch.bfloat16
    abilities = FlowMatchingBackbone.abilities | {"packed_tokens", "guidance_distilled"}

    def __init__(
        self,
        model: str = "black-forest-labs/FLUX.1-dev",
        dtype: str = "auto",
        max_sequence_length: PositiveInt = 512,
        variant: str | None = None,
    ):
        super().__init__(model, dtype, variant)
        latent_channels = self.vae.config.latent_channels
        if self.transformer.config.in_channels != 4 * latent_channels:
            raise InputError(
                f"'{model}' takes {self.transformer.config.in_channels} input channels, not 4 × {latent_channels} "
                "packed latents: Flux Fill/Depth/Canny checkpoints are not supported"
            )
        self.channels = 4 * latent_channels
        self.scale_factor = 2 * self.vae_scale_factor
        size = self.vae.config.sample_size
        self.sample_size = (size if isinstance(size, int) else size[0]) // self.scale_factor
        self.max_sequence_length = max_sequence_length

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> dict[str, Tensor]:
        """{"prompt_embeds": (M, max_sequence_length, 4096), "pooled_prompt_embeds": (M, 768)} for Flux.1."""
        embeds, pooled, _ = self.prompt_encoder().encode_prompt(
            prompt=list(prompts),
            prompt_2=None,
            device=self.transformer.device,
            max_sequence_length=self.max_sequence_length,
        )
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}

    def seq_len(self, shape: Sequence[int]) -> int:
        return shape[-2] * shape[-1]

    @staticmethod
    def timestep_options(config: dict, num_inference_steps: int, seq_len: int) -> dict:
        """The pipeline's ``set_timesteps`` options: σ = linspace(1, 1/S, S) and μ for ``seq_len`` tokens."""
        return {
            "sigmas": np.linspace(1.0, 1 / num_inference_steps, num_inference_steps),
            "mu": calculate_shift(seq_len, config, max_shift=1.15),
        }

    def velocity(self, x_sigma: Tensor, t: Tensor, context: dict[str, Tensor], guidance: float = 1.0) -> Tensor:
        M, _, h, w = x_sigma.shape
        dtype, device = x_sigma.dtype, x_sigma.device
        embeds = context["prompt_embeds"].to(dtype)
        rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        img_ids = torch.stack([torch.zeros_like(rows), rows, cols], -1).reshape(h * w, 3).to(device, dtype)
        txt_ids = torch.zeros(embeds.shape[1], 3, device=device, dtype=dtype)
        embedded = self.transformer.config.guidance_embeds
        out = self.transformer(
            hidden_states=rearrange(x_sigma, "m d h w -> m (h w) d"),
            timestep=t.to(dtype) / 1000,
            guidance=torch.full((M,), guidance, device=device, dtype=torch.float32) if embedded else None,
            pooled_projections=context["pooled_prompt_embeds"].to(dtype),
            encoder_hidden_states=embeds,
            txt_ids=txt_ids,
            img_ids=img_ids,
            return_dict=False,
        )[0]
        return rearrange(out, "m (h w) d -> m d h w", h=h)

    def decode(self, z: Tensor) -> Tensor:
        return super().decode(unpack(z))

    def encode(self, images: Tensor) -> Tensor:
        return pack(super().encode(images))
