"""DeepFloyd IF stage II (super-resolution), run without synchronization through diffusers' own pipeline."""

from __future__ import annotations

import torch
from jsonargparse.typing import NonNegativeInt, PositiveInt
from torch import nn

from syncsde.backbones.diffusers import DTYPES, resolve_model, short_reason, variant_error
from syncsde.errors import ModelNotFoundError


class IFUpscaler(nn.Module):
    """``IFSuperResolutionPipeline`` with its scheduler replaced by DDIM (SYNCSDE.md §6.4): 64² → 256², conditioned
    on the stage-I text embeddings (both stages share IF's T5), noise level 250. The DDIM is built from IF-II's own
    scheduler config, or from another one given to :meth:`set_scheduler` (the official code reuses stage I's).

    Args: model (hub id or folder, default ``DeepFloyd/IF-II-M-v1.0``), num_inference_steps, guidance_scale,
    noise_level, dtype ("auto": float16 on CUDA — as the official code loads both IF stages — float32 on CPU; or
    "float32" / "float16" / "bfloat16"), variant (``fp16``: the ``*.fp16.safetensors`` weights, as diffusers). Stage II's state has the network's dtype (it is diffusers' loop).
    """

    cuda_dtype = torch.float16  # "auto" on CUDA

    def __init__(
        self,
        model: str = "DeepFloyd/IF-II-M-v1.0",
        num_inference_steps: PositiveInt = 30,
        guidance_scale: float = 10.0,
        noise_level: NonNegativeInt = 250,
        dtype: str = "auto",
        variant: str | None = None,
    ):
        super().__init__()
        from diffusers import IFSuperResolutionPipeline

        if dtype != "auto" and dtype not in DTYPES:
            raise ValueError(f"dtype must be 'auto' or one of {sorted(DTYPES)}, got {dtype!r}")
        folder = resolve_model(model, "--model.upscaler.model", variant)
        try:
            self.pipe = IFSuperResolutionPipeline.from_pretrained(
                folder,
                text_encoder=None,
                safety_checker=None,
                feature_extractor=None,
                watermarker=None,
                requires_safety_checker=False,
                local_files_only=True,
                variant=variant,
            )
        except Exception as e:  # noqa: BLE001 (missing or corrupt files raise many types)
            refusal = variant_error(folder, "unet", "--model.upscaler.model") if variant is None else None
            raise refusal or ModelNotFoundError(
                f"cannot load upscaler '{model}' ({short_reason(e)}); the folder is incomplete or corrupt: download "
                "it again and pass it with --model.upscaler.model"
            ) from None
        self.set_scheduler(self.pipe.scheduler.config)
        self.pipe.set_progress_bar_config(disable=True)
        self.unet = self.pipe.unet  # registered, so Lightning moves it with the task
        self.name, self.steps, self.guidance_scale, self.noise_level = (
            model,
            num_inference_steps,
            guidance_scale,
            noise_level,
        )
        self.requested_dtype = dtype

    def set_scheduler(self, config: dict) -> None:
        """Sample stage II with DDIM built from ``config`` (a diffusers scheduler config)."""
        from diffusers import DDIMScheduler

        # DDIM has no learned variance: mark it so that the pipeline drops the variance channels before stepping
        self.pipe.scheduler = DDIMScheduler.from_config({**config, "variance_type": "fixed_small"})

    def adapt_dtype(self, device: torch.device) -> None:
        """Apply the requested dtype once the device is known ("auto": float16 on CUDA only)."""
        auto = self.cuda_dtype if device.type == "cuda" else torch.float32
        self.unet.to(auto if self.requested_dtype == "auto" else DTYPES[self.requested_dtype])

    @torch.no_grad()
    def forward(
        self,
        images: torch.Tensor,
        prompt_embeds: torch.Tensor,
        negative_embeds: torch.Tensor,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """(B, 3, 64, 64) stage-I images in [−1, 1] → (B, 3, 256, 256) in [−1, 1]."""
        dtype = self.unet.dtype
        return self.pipe(
            image=images.to(dtype),
            prompt_embeds=prompt_embeds.to(dtype),
            negative_prompt_embeds=negative_embeds.to(dtype),
            num_inference_steps=self.steps,
            guidance_scale=self.guidance_scale,
            noise_level=self.noise_level,
            generator=generator,
            output_type="pt",
        ).images.float()
