"""An exact denoiser for Gaussian data: a reference backbone with no weights (tests, benchmarks, examples)."""

from __future__ import annotations

import torch
from torch import Tensor

from syncsde.backbones.base import Backbone
from syncsde.registry import register
from syncsde.schedule import SD_SCHEDULER, flow_state


@register("backbone", "gaussian")
class GaussianBackbone(Backbone):
    """Data x₀ ~ N(mean, std² I) element-wise, so E[ε | x_t] = σ_t (x_t − α_t·mean)/(α_t² std² + σ_t²) exactly.

    ``flow_shift``: instead, the exact flow-matching model of the same data (FlowMatchEulerDiscreteScheduler with
    that shift): for x_σ = (1−σ)x₀ + σε, with D = (1−σ)² std² + σ² and d = x_σ − (1−σ)·mean,
    E[ε | x_σ] = σ d/D, E[x₀ | x_σ] = mean + (1−σ) std² d/D and v = E[ε | x_σ] − E[x₀ | x_σ]; it takes VP states as
    every flow backbone (:mod:`syncsde.schedule`).

    The prompt does not condition it (``encode_prompts`` returns zeros), so guidance has no effect.
    """

    def __init__(
        self,
        channels: int = 4,
        sample_size: int = 64,
        scale_factor: int = 8,
        mean: float = 0.0,
        std: float = 0.5,
        num_train_timesteps: int = 1000,
        flow_shift: float | None = None,
    ):
        super().__init__()
        self.channels, self.sample_size, self.scale_factor = channels, sample_size, scale_factor
        self.mean, self.std, self.name = mean, std, f"gaussian(mean={mean}, std={std})"
        self.num_train_timesteps = num_train_timesteps
        from diffusers import DDIMScheduler

        if flow_shift is None:
            cfg = {**SD_SCHEDULER, "num_train_timesteps": num_train_timesteps}
            abar = DDIMScheduler(**cfg).alphas_cumprod
        else:
            cfg = {
                "_class_name": "FlowMatchEulerDiscreteScheduler",
                "num_train_timesteps": num_train_timesteps,
                "shift": flow_shift,
            }
            abar = torch.zeros(0)
        self.prediction_type = "epsilon" if flow_shift is None else "flow"
        self.abilities = frozenset({"images", "vp_schedule" if flow_shift is None else "flow_matching"})
        self.register_buffer("alphas_cumprod", abar, persistent=False)
        self._config = cfg

    def scheduler_config(self) -> dict:
        return dict(self._config)

    def encode_prompts(self, prompts) -> Tensor:
        return torch.zeros(len(prompts), 1, device=self.alphas_cumprod.device)

    def forward(self, x: Tensor, t: Tensor, context: Tensor) -> Tensor:
        if self.prediction_type == "flow":
            x_sigma, sigma = flow_state(x, t, self.num_train_timesteps)
            d = x_sigma - (1 - sigma) * self.mean
            D = (1 - sigma) ** 2 * self.std**2 + sigma**2
            return sigma * d / D - (self.mean + (1 - sigma) * self.std**2 * d / D)
        ab = self.alphas_cumprod[t].to(x).view(-1, *([1] * (x.ndim - 1)))
        a, s = ab.sqrt(), (1 - ab).sqrt()
        return s * (x - a * self.mean) / (a**2 * self.std**2 + s**2)

    def decode(self, z: Tensor) -> Tensor:
        """Upsample by ``scale_factor`` and show the first three channels (grey for fewer)."""
        img = z[:, :3] if z.shape[1] >= 3 else z[:, :1].expand(-1, 3, -1, -1)
        img = torch.nn.functional.interpolate(img, scale_factor=self.scale_factor, mode="nearest")
        return (img / (4 * max(self.std, 1e-3)) + 0.5).clamp(0, 1)
