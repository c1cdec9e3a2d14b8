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
- With a ControlNet (:class:`StableDiffusion3ControlNet`, ``sd3_controlnet``): diffusers' ``SD3ControlNetModel``, its
  control image encoded through the VAE and its block residuals added to the transformer's blocks, as
  ``StableDiffusion3ControlNetPipeline`` does (the mesh's depth control, SYNCSDE.md §6.7.1).
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from jsonargparse.typing import PositiveInt
from torch import Tensor

from syncsde.backbones.diffusers import ControlNet
from syncsde.backbones.flow import FlowMatchingBackbone, calculate_shift
from syncsde.registry import register
from syncsde.schedule import flow_state


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

    def velocity(self, x_sigma: Tensor, t: Tensor, context: dict[str, Tensor], **inputs) -> Tensor:
        """The transformer's velocity; ``inputs``: more of its inputs (a ControlNet's block residuals)."""
        return self.transformer(
            hidden_states=x_sigma,
            timestep=t,
            encoder_hidden_states=context["prompt_embeds"].to(x_sigma.dtype),
            pooled_projections=context["pooled_prompt_embeds"].to(x_sigma.dtype),
            return_dict=False,
            **inputs,
        )[0]


@register("backbone", "sd3_controlnet")
class StableDiffusion3ControlNet(ControlNet, StableDiffusion3):
    """SD3 / SD3.5 with a ControlNet (:class:`~syncsde.backbones.diffusers.ControlNet`: the same conditioning-scale
    schedules, on the flow timesteps t = 1000σ): diffusers' ``SD3ControlNetModel``, default the depth ControlNet of
    SD3.5 Large, ``stabilityai/stable-diffusion-3.5-large-controlnet-depth`` (gated on the hub, as its base). The
    arithmetic is ``StableDiffusion3ControlNetPipeline``'s:

    - the control image in [0, 1] goes through the VAE as an image in [−1, 1] and enters as latents
      (z − shift_factor)·scaling_factor — without the shift for ControlNets with ``force_zeros_for_pooled_projection``
      (InstantX's SD3 ControlNets), which also get zero pooled projections instead of the prompt's; the pipeline
      samples the VAE posterior, syncsde takes its mean (a sample must depend on its seed only);
    - the ControlNet reads the prompt embeddings only if it has a context embedder (``joint_attention_dim``; SD3.5's
      8B ControlNets have none), and borrows the transformer's patch embedding if it has none (``use_pos_embed``
      false, SD3.5's);
    - its block samples, times the conditioning scale, are added to the transformer's joint blocks (block k gets
      sample ⌊k·n/N⌋ of n, N the transformer's blocks).
    """

    abilities = StableDiffusion3.abilities | {"controlnet"}
    recorded = StableDiffusion3.recorded + ("controlnet_name", "scale_start", "scale_end", "guidance_end",
                                            "scale_schedule")  # fmt: skip
    controlnet_class = "SD3ControlNetModel"

    def __init__(
        self,
        model: str = "stabilityai/stable-diffusion-3.5-large",
        controlnet: str = "stabilityai/stable-diffusion-3.5-large-controlnet-depth",
        dtype: str = "auto",
        scale_start: float = 0.7,
        scale_end: float = 0.9,
        guidance_end: float = 0.99,
        scale_schedule: Literal["linear", "official", "syncmvd"] = "linear",
        variant: str | None = None,
        max_sequence_length: PositiveInt | None = None,
    ):
        super().__init__(model, controlnet, dtype, scale_start, scale_end, guidance_end, scale_schedule, variant)
        if max_sequence_length is not None:
            self.max_sequence_length = max_sequence_length
        if self.controlnet.pos_embed is None:  # SD3.5's ControlNets embed patches with the transformer's embedding
            self.controlnet.pos_embed = self.controlnet._get_pos_embed_from_transformer(self.transformer)
            self.controlnet.pos_embed.requires_grad_(False)

    def fit(self, config) -> list[tuple[str, object, object]]:
        ours = self.transformer.config
        pairs = [
            ("width", config.num_attention_heads * config.attention_head_dim, self.transformer.inner_dim),
            *((k, config.get(k), ours.get(k)) for k in ("in_channels", "patch_size", "pooled_projection_dim")),
            ("extra_conditioning_channels", config.get("extra_conditioning_channels", 0), 0),  # the control: latents
        ]
        if config.get("joint_attention_dim") is not None:
            pairs.append(("joint_attention_dim", config.joint_attention_dim, ours.joint_attention_dim))
        return pairs

    @property
    def zero_pooled(self) -> bool:
        return bool(self.controlnet.config.get("force_zeros_for_pooled_projection", False))

    @torch.no_grad()
    def set_control(self, images: Tensor | None, timesteps: Sequence[float]) -> None:
        """The control images in [0, 1] (one per row), kept as the ControlNet's latents (class docstring), encoded
        one at a time (a view of 1024 px through SD3's VAE is memory enough)."""
        if images is None:
            return super().set_control(None, timesteps)
        cfg = self.vae.config
        shift = 0.0 if self.zero_pooled else (cfg.get("shift_factor") or 0.0)
        latents = [
            (self.vae.encode((image[None] * 2 - 1).to(self.vae.dtype)).latent_dist.mean - shift) * cfg.scaling_factor
            for image in images
        ]
        super().set_control(torch.cat(latents), timesteps)

    def controlled(self, x: Tensor, t: Tensor, context: dict[str, Tensor], cond: Tensor, scale: float) -> Tensor:
        x_sigma, _ = flow_state(x, t, self._scheduler_config.get("num_train_timesteps", 1000))
        pooled = context["pooled_prompt_embeds"].to(x_sigma.dtype)
        blocks = self.controlnet(
            hidden_states=x_sigma,
            timestep=t,
            encoder_hidden_states=(
                context["prompt_embeds"].to(x_sigma.dtype) if self.controlnet.context_embedder is not None else None
            ),
            pooled_projections=torch.zeros_like(pooled) if self.zero_pooled else pooled,
            controlnet_cond=cond.to(x_sigma.dtype),
            conditioning_scale=scale,
            return_dict=False,
        )[0]
        return self.velocity(x_sigma, t, context, block_controlnet_hidden_states=blocks)
