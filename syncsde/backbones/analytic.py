"""An exact denoiser for Gaussian data: a reference backbone with no weights (tests, benchmarks, examples)."""

from __future__ import annotations

import torch
from torch import Tensor

from syncsde.backbones.base import Backbone
from syncsde.errors import InputError
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


@register("backbone", "gaussian_mixture")
class GaussianMixtureBackbone(GaussianBackbone):
    """An exact model with a global mode: x₀ = μ_k + std·n element-wise, with one component k ~ π shared by the whole
    image (or canvas), n ~ N(0, I). The component's mean μ_k is a level (a number: the same value everywhere) or a
    profile (one value per row: a horizon, the same in every column), so the model is the same at any width, and at
    any height for levels. Its denoiser is exact at every size, so one call on a whole canvas samples the canvas as
    one image (the ideal a synchronized canvas is measured against):

        x_t | k ~ N(α_t μ_k, v_t I), v_t = α_t² std² + σ_t²;  w_k(x_t) ∝ π_k N(x_t; α_t μ_k, v_t I);
        E[ε | x_t] = Σ_k w_k(x_t) · σ_t (x_t − α_t μ_k)/v_t

    (each component's Gaussian denoiser of :class:`GaussianBackbone`, weighted by its posterior over the whole input).
    """

    def __init__(
        self,
        means: list[float | list[float]] = (-1.0, 1.0),
        weights: list[float] | None = None,
        channels: int = 1,
        sample_size: int = 8,
        scale_factor: int = 1,
        std: float = 0.5,
        num_train_timesteps: int = 1000,
    ):
        super().__init__(channels, sample_size, scale_factor, 0.0, std, num_train_timesteps)
        profiles = [torch.as_tensor(m, dtype=torch.float32).reshape(-1) for m in means]
        rows = {len(p) for p in profiles}
        if len(profiles) < 2 or len(rows) != 1 or not rows <= {1, sample_size}:
            raise InputError(
                "means: give two or more components, each a level (a number) or a profile of sample_size values per "
                "row, all of the same kind"
            )
        weights = [1.0] * len(profiles) if weights is None else list(weights)
        if len(weights) != len(profiles) or min(weights) <= 0:
            raise InputError("weights: one positive weight per component of means")
        self.register_buffer("means", torch.stack(profiles), persistent=False)  # (K, rows)
        self.register_buffer("log_weights", torch.tensor(weights).div(sum(weights)).log(), persistent=False)
        self.name = f"gaussian_mixture(K={len(profiles)}, std={std})"

    def component_means(self, like: Tensor) -> Tensor:
        """(K, 1, 1, H or 1, 1): the components' means, to broadcast against a stack of images (B, C, H, W)."""
        rows = self.means.shape[1]
        if rows > 1 and like.shape[-2] != rows:
            raise InputError(
                f"the mixture's profiles have {rows} rows; an input of height {like.shape[-2]} needs levels"
            )
        return self.means.to(like).view(len(self.means), 1, 1, rows, 1)

    def log_posterior(self, x: Tensor, a: Tensor | float, v: Tensor | float) -> Tensor:
        """(B, K) log w_k of images x (B, C, H, W) under x | k ~ N(a μ_k, v I) (a, v: scalars or (B, 1, 1, 1))."""
        d = x[None] - a * self.component_means(x)  # (K, B, C, H, W)
        logp = -(d.pow(2) / (2 * v)).flatten(2).sum(-1) + self.log_weights.to(x)[:, None]  # (K, B)
        return torch.log_softmax(logp, 0).T

    def classify(self, x0: Tensor) -> Tensor:
        """(B,) the most likely component of clean images x0 (B, C, H, W)."""
        return self.log_posterior(x0, 1.0, self.std**2).argmax(-1)

    def forward(self, x: Tensor, t: Tensor, context: Tensor) -> Tensor:
        ab = self.alphas_cumprod[t].to(x).view(-1, *([1] * (x.ndim - 1)))
        a, s = ab.sqrt(), (1 - ab).sqrt()
        v = a**2 * self.std**2 + s**2
        w = self.log_posterior(x, a, v).exp().T.reshape(len(self.means), -1, 1, 1, 1)  # (K, B, 1, 1, 1)
        return s * (w * (x[None] - a * self.component_means(x))).sum(0) / v
