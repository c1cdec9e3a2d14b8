"""Stable Diffusion 3 / 3.5: an MMDiT flow-matching model (:mod:`syncsde.backbones.flow`) with three text encoders,
true classifier-free guidance and a 16-channel VAE.

- Prompts go through CLIP-L, CLIP-G and T5 (``max_sequence_length`` tokens), encoded by diffusers' own
  ``StableDiffusion3Pipeline.encode_prompt`` on the loaded components; a checkpoint saved without T5 gets its zero
  embeddings, as in diffusers.
- CFG as the pipeline: v = v_u + w(v_c − v_u) over one batch of both branches (negative prompt "" encoded).
- Latents: 16 channels, (z − shift_factor)·scaling_factor; the transformer patchifies 2×2 itself. Native size
  ``transformer.config.sample_size`` latents (128: 1024 px).
- Schedule: FlowMatchEulerDiscreteScheduler with the config's static shift (3.0); a config with dynamic shifting
  gets the pipeline's μ for the window's token count.
- Editing (``attention_maps``): the joint attention is recorded by :class:`~syncsde.attention.JointAttentionRecorder`
  (SYNCSDE.md §6.2.1).
"""

from __future__ import annotations

from typing import Sequence

import torch
from jsonargparse.typing import PositiveInt
from torch import Tensor

from syncsde.backbones.flow import FlowMatchingBackbone, calculate_shift
from syncsde.registry import register


@register("backbone", "sd3")
class StableDiffusion3(FlowMatchingBackbone):
    """Args: model (default ``stabilityai/stable-diffusion-3-medium-diffusers``; SD3.5 works the same way),
    dtype ("auto": float16 on CUDA), max_sequence_length (T5 tokens; None: 256 as the pipeline, or fewer where the
    model's T5 tokenizer reads fewer — ``syncsde:tiny-flow``'s 32, which it was trained with), variant (``fp16``:
    the ``*.fp16.safetensors`` weights, as diffusers)."""

    family = "sd3"
    recorded = ("variant", "max_sequence_length")
    components = (
        "transformer",
        "vae",
        "text_encoder",
        "tokenizer",
        "text_encoder_2",
        "tokenizer_2",
        "text_encoder_3",
        "tokenizer_3",
    )
    pipeline = "StableDiffusion3Pipeline"
    abilities = FlowMatchingBackbone.abilities | {"attention_maps"}  # joint attention: syncsde.attention

    def __init__(
        self,
        model: str = "stabilityai/stable-diffusion-3-medium-diffusers",
        dtype: str = "auto",
        max_sequence_length: PositiveInt | None = None,
        variant: str | None = None,
    ):
        super().__init__(model, dtype, variant)
        cfg = self.transformer.config
        self.channels, self.sample_size, self.patch_size = cfg.in_channels, cfg.sample_size, cfg.patch_size
        self.scale_factor = self.vae_scale_factor
        if max_sequence_length is None:
            limit = getattr(self.tokenizer_3, "model_max_length", 256) if self.tokenizer_3 is not None else 256
            max_sequence_length = min(256, limit)
        self.max_sequence_length = max_sequence_length

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> dict[str, Tensor]:
        """{"prompt_embeds": (M, 77 + max_sequence_length, 4096), "pooled_prompt_embeds": (M, 2048)} for SD3."""
        embeds, _, pooled, _ = self.prompt_encoder().encode_prompt(
            prompt=list(prompts),
            prompt_2=None,
            prompt_3=None,
            device=self.transformer.device,
            do_classifier_free_guidance=False,
            max_sequence_length=self.max_sequence_length,
        )
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}

    def seq_len(self, shape: Sequence[int]) -> int:
        return (shape[-2] // self.patch_size) * (shape[-1] // self.patch_size)

    @staticmethod
    def timestep_options(config: dict, num_inference_steps: int, seq_len: int) -> dict:
        """The pipeline's ``set_timesteps`` options: μ only for configs with dynamic shifting."""
        return {"mu": calculate_shift(seq_len, config, max_shift=1.16)} if config.get("use_dynamic_shifting") else {}

    def velocity(self, x_sigma: Tensor, t: Tensor, context: dict[str, Tensor], **kw) -> Tensor:
        return self.transformer(
            hidden_states=x_sigma,
            timestep=t,
            encoder_hidden_states=context["prompt_embeds"].to(x_sigma.dtype),
            pooled_projections=context["pooled_prompt_embeds"].to(x_sigma.dtype),
            return_dict=False,
        )[0]
