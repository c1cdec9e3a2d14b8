"""The backbone protocol and classifier-free guidance over one batched call."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from syncsde.schedule import Step, to_epsilon


class Backbone(nn.Module):
    """A denoiser in its own working space (SD latents, IF pixels, motion features, or your own).

    To plug in your own model, subclass and implement:

    - ``channels``, ``sample_size`` (native spatial size of the working space, e.g. 64 for SD-2-base latents),
      ``scale_factor`` (output pixels per working-space unit: 8 for SD's VAE, 1 in pixel space),
      ``prediction_type`` ("epsilon", "sample" or "v_prediction") and ``name`` (written into sidecars);
    - ``scheduler_config()``: a diffusers scheduler config dict (``num_train_timesteps``, betas, ...);
    - ``encode_prompts(prompts)``: conditioning for a list of prompts, a tensor with one row per prompt;
    - ``forward(x, t, context)``: the raw network output for M rows (no guidance), ``t`` of shape (M,);
    - ``decode(z)`` to images in [0, 1] and ``encode(images)`` back (identity-like in pixel space).

    Classifier-free guidance, prediction-type conversion and batching are done by :func:`guided_eps`. A backbone
    with learned variance may return 2C channels (ε-part, variance part) when ``return_variance`` is set; strategies
    that use them (Visual Anagrams) declare ``needs_variance``.
    """

    channels: int = 4
    sample_size: int = 64
    scale_factor: int = 1
    prediction_type: str = "epsilon"
    name: str = "backbone"
    return_variance: bool = False

    def scheduler_config(self) -> dict:
        raise NotImplementedError

    def encode_prompts(self, prompts: Sequence[str]) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor, t: Tensor, context: Tensor) -> Tensor:
        raise NotImplementedError

    def decode(self, z: Tensor) -> Tensor:
        return (z / 2 + 0.5).clamp(0, 1)

    def encode(self, images: Tensor) -> Tensor:
        return images * 2 - 1

    @property
    def dtype(self) -> torch.dtype:
        p = next(self.parameters(), None)
        return p.dtype if p is not None else torch.float32


def guided_eps(
    backbone: Backbone,
    x: Tensor,
    step: Step,
    cond: Tensor,
    uncond: Tensor | None,
    guidance_scale: float,
    max_batch: int | None = None,
) -> Tensor:
    """ε = ε_u + w(ε_c − ε_u) for M rows, both branches in ONE network call of 2M rows (SYNCSDE.md §2, §3.1);
    learned-variance channels, if the backbone returns them, follow ε (from the conditional branch).

    ``x`` is (M, C, H, W) in float32; the network runs in the backbone's dtype; the result is float32 ε.
    With w = 1 or no unconditional context only the conditional branch is run. ``max_batch`` optionally splits
    the call into chunks of at most that many rows (to fit memory); by default everything is one call.
    """
    guided = uncond is not None and guidance_scale != 1.0
    xin = torch.cat([x, x]) if guided else x
    ctx = torch.cat([uncond, cond]) if guided else cond
    t = torch.full((xin.shape[0],), step.t, device=x.device, dtype=torch.long)
    xin = xin.to(backbone.dtype)
    if max_batch is None or xin.shape[0] <= max_batch:
        out = backbone(xin, t, ctx)
    else:
        out = torch.cat(
            [backbone(a, b, c) for a, b, c in zip(xin.split(max_batch), t.split(max_batch), ctx.split(max_batch))]
        )
    out = out.float()
    C = x.shape[1]
    var = out[:, C:]  # learned-variance channels, when the backbone returns them (DeepFloyd IF)
    out = out[:, :C]
    if guided:
        out_u, out_c = out.chunk(2)
        out = out_u + guidance_scale * (out_c - out_u)
        var = var.chunk(2)[1]  # the conditional branch's variance, as DeepFloyd IF does
    eps = to_epsilon(out, x, step.abar_t, backbone.prediction_type)
    return torch.cat([eps, var], 1) if var.shape[1] else eps
