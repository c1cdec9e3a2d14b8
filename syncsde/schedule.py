"""Noise-schedule math as plain functions, and the inference schedule as data.

Every function here is a formula of SYNCSDE.md §2–§4 and BASELINES.md §0, written over tensors, with
ᾱ values given explicitly: no scheduler state, no framework. ``Schedule`` only gathers, for each inference
step k, the timestep t_k, ᾱ_t, ᾱ_prev and the step rule (DDIM with η, or the DDPM posterior), taken from a
diffusers scheduler config so that the numbers are exactly the ones diffusers would use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from syncsde.errors import InputError

Prediction = Literal["epsilon", "sample", "v_prediction"]

# Stable Diffusion's noise schedule with its DDIM settings (leading spacing, offset 1, ᾱ_final = ᾱ_0)
SD_SCHEDULER = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    num_train_timesteps=1000,
    steps_offset=1,
    clip_sample=False,
    set_alpha_to_one=False,
    prediction_type="epsilon",
)


def _sqrt(a: Tensor | float) -> Tensor:
    return torch.as_tensor(a, dtype=torch.float64).sqrt()


def tweedie_x0(x_t: Tensor, eps: Tensor, abar_t: float | Tensor) -> Tensor:
    """Tweedie's estimate x̂₀ = (x_t − σ_t ε)/α_t (SYNCSDE.md §2)."""
    return (x_t - _sqrt(1 - abar_t).to(x_t) * eps) / _sqrt(abar_t).to(x_t)


def eps_from_x0(x_t: Tensor, x0: Tensor, abar_t: float | Tensor) -> Tensor:
    """ε = (x_t − α_t x̂₀)/σ_t, the inverse of :func:`tweedie_x0` (for x₀-predicting models such as MDM)."""
    return (x_t - _sqrt(abar_t).to(x_t) * x0) / _sqrt(1 - abar_t).to(x_t)


def eps_from_v(x_t: Tensor, v: Tensor, abar_t: float | Tensor) -> Tensor:
    """ε = α_t v + σ_t x_t for v-prediction models."""
    return _sqrt(abar_t).to(x_t) * v + _sqrt(1 - abar_t).to(x_t) * x_t


def to_epsilon(output: Tensor, x_t: Tensor, abar_t: float | Tensor, prediction: Prediction) -> Tensor:
    """Convert a network output of the given prediction type to ε."""
    if prediction == "epsilon":
        return output
    if prediction == "sample":
        return eps_from_x0(x_t, output, abar_t)
    if prediction == "v_prediction":
        return eps_from_v(x_t, output, abar_t)
    raise ValueError(f"unknown prediction type {prediction!r}: use 'epsilon', 'sample' or 'v_prediction'")


def ddim_sigma(abar_t: float | Tensor, abar_prev: float | Tensor, eta: float) -> Tensor:
    """σ_t(η) = η √((1−ᾱ_prev)/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev) (DDIM paper Eq. 16)."""
    abar_t, abar_prev = torch.as_tensor(abar_t, dtype=torch.float64), torch.as_tensor(abar_prev, dtype=torch.float64)
    return eta * ((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)).sqrt()


def ddim_step(
    x0: Tensor, eps: Tensor, abar_prev: float | Tensor, sigma: float | Tensor = 0.0, noise: Tensor | None = None
) -> Tensor:
    """DDIM update written from (x̂₀, ε): √ᾱ_prev x̂₀ + √(1−ᾱ_prev−σ²) ε + σ n (η = 0: σ = 0, SYNCSDE.md §3 step 1)."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    out = (
        _sqrt(abar_prev).to(x0) * x0
        + (1 - torch.as_tensor(abar_prev, dtype=torch.float64) - sigma**2).sqrt().to(x0) * eps
    )
    if float(sigma) > 0:
        if noise is None:
            raise ValueError("a DDIM step with eta > 0 needs noise")
        out = out + sigma.to(x0) * noise
    return out


def ddpm_posterior(x_t: Tensor, x0: Tensor, abar_t: float | Tensor, abar_prev: float | Tensor) -> tuple[Tensor, Tensor]:
    """Mean and variance of q(x_{t'} | x_t, x̂₀) (BASELINES.md §0):
    μ = (α_{t'}β_t/(1−ᾱ_t)) x̂₀ + (√a_t(1−ᾱ_{t'})/(1−ᾱ_t)) x_t,
    β̃_t = β_t (1−ᾱ_{t'})/(1−ᾱ_t), with a_t = ᾱ_t/ᾱ_{t'} and β_t = 1 − a_t."""
    abar_t = torch.as_tensor(abar_t, dtype=torch.float64)
    abar_prev = torch.as_tensor(abar_prev, dtype=torch.float64)
    a_t = abar_t / abar_prev
    beta_t = 1 - a_t
    mean = (abar_prev.sqrt() * beta_t / (1 - abar_t)).to(x0) * x0 + (a_t.sqrt() * (1 - abar_prev) / (1 - abar_t)).to(
        x0
    ) * x_t
    return mean, beta_t * (1 - abar_prev) / (1 - abar_t)


def learned_range_log_variance(v: Tensor, abar_t: float | Tensor, abar_prev: float | Tensor) -> Tensor:
    """DeepFloyd IF's learned variance (diffusers ``learned_range``): log σ² = f log β_t + (1−f) log β̃_t with
    f = (v + 1)/2, v the network's variance channels, β̃_t the posterior variance (clamped at 1e−20)."""
    abar_t = torch.as_tensor(abar_t, dtype=torch.float64)
    abar_prev = torch.as_tensor(abar_prev, dtype=torch.float64)
    beta = 1 - abar_t / abar_prev
    posterior = (beta * (1 - abar_prev) / (1 - abar_t)).clamp_min(1e-20)
    frac = (v + 1) / 2
    return frac * beta.log().to(v) + (1 - frac) * posterior.log().to(v)


def dynamic_threshold(x0: Tensor, ratio: float, max_value: float) -> Tensor:
    """Imagen's dynamic thresholding (as diffusers' ``_threshold_sample``), per image over its last three dims."""
    flat = x0.flatten(-3)
    s = torch.quantile(flat.abs().float(), ratio, dim=-1).clamp(1, max_value).to(x0)[..., None, None, None]
    return torch.maximum(torch.minimum(x0, s), -s) / s


def gamma(abar_t: float | Tensor, abar_prev: float | Tensor) -> Tensor:
    """γ_t = √(ᾱ_prev/ᾱ_t) − √((1−ᾱ_prev)/(1−ᾱ_t)) > 0 (SYNCSDE.md §3)."""
    abar_t = torch.as_tensor(abar_t, dtype=torch.float64)
    abar_prev = torch.as_tensor(abar_prev, dtype=torch.float64)
    return (abar_prev / abar_t).sqrt() - ((1 - abar_prev) / (1 - abar_t)).sqrt()


def inv_lambda_schedule(inv_lambda: float, t: int | float, T: int | float) -> float:
    """The coupling inverse variance 1/λ_t = (1/λ)(t/T): 1/λ at t = T, linear to ≈0 (SYNCSDE.md §3, §4)."""
    return float(inv_lambda) * float(t) / float(T)


@dataclass(frozen=True)
class Step:
    """One inference step: timestep ``t`` → ``t_prev`` with ᾱ values and the sampler rule."""

    index: int
    t: int
    t_prev: int
    abar_t: float
    abar_prev: float
    T: int
    kind: Literal["ddim", "ddpm"] = "ddim"
    eta: float = 0.0

    clip_sample: float | None = None
    threshold: tuple[float, float] | None = None  # (dynamic_thresholding_ratio, sample_max_value)

    @property
    def sigma(self) -> float:
        """σ_t = √(1−ᾱ_t)."""
        return (1 - self.abar_t) ** 0.5

    @property
    def gamma(self) -> float:
        return float(gamma(self.abar_t, self.abar_prev))

    @property
    def stochastic(self) -> bool:
        return (self.kind == "ddpm" and self.t > 0) or (self.kind == "ddim" and self.eta > 0)

    def x0(self, x_t: Tensor, eps: Tensor) -> Tensor:
        """Tweedie x̂₀, then — as diffusers does when the scheduler config asks — dynamic thresholding per image
        (the last three dims), or else clipping to ±``clip_sample`` (DeepFloyd IF uses these; SD neither)."""
        x0 = tweedie_x0(x_t, eps, self.abar_t)
        if self.threshold is not None:
            return dynamic_threshold(x0, *self.threshold)
        return x0 if self.clip_sample is None else x0.clamp(-self.clip_sample, self.clip_sample)

    def update(
        self, x_t: Tensor, x0: Tensor, eps: Tensor, noise: Tensor | None = None, variance: Tensor | None = None
    ) -> Tensor:
        """The plain (uncoupled) update U(x_t, x̂₀, ε) of this step. ``variance``: the network's learned-range
        variance channels (DDPM only; otherwise the fixed posterior variance β̃_t is used)."""
        if self.kind == "ddim":
            return ddim_step(x0, eps, self.abar_prev, ddim_sigma(self.abar_t, self.abar_prev, self.eta), noise)
        mean, var = ddpm_posterior(x_t, x0, self.abar_t, self.abar_prev)
        if self.t > 0:
            if noise is None:
                raise ValueError("a DDPM step with t > 0 needs noise")
            std = (
                var.sqrt().to(mean)
                if variance is None
                else (0.5 * learned_range_log_variance(variance, self.abar_t, self.abar_prev)).exp()
            )
            mean = mean + std * noise
        return mean


@dataclass(frozen=True)
class Schedule:
    """The inference schedule: ``steps[k]`` for k = 0..S−1, from a diffusers scheduler config (SYNCSDE.md §2).

    ``T`` is the largest inference timestep (981 for SD with 50 leading steps) unless ``T`` is given (the mesh
    task's official quirk T = 1000, SYNCSDE.md §8). t' = t − N_train//S as in diffusers; past t' < 0, ᾱ_prev is
    ``final_alpha_cumprod`` (DDIM, ᾱ_0 for SD) or 1 (DDPM).
    """

    steps: tuple[Step, ...]
    prediction: Prediction = "epsilon"

    @classmethod
    def from_config(
        cls,
        config: dict,
        num_inference_steps: int,
        kind: Literal["ddim", "ddpm"] = "ddim",
        eta: float = 0.0,
        T: int | None = None,
    ) -> "Schedule":
        from diffusers import DDIMScheduler, DDPMScheduler

        if num_inference_steps < 1:
            raise InputError(f"num_inference_steps must be at least 1, got {num_inference_steps}")
        sched_cls = DDIMScheduler if kind == "ddim" else DDPMScheduler
        config = {k: v for k, v in dict(config).items() if not k.startswith("_")}
        sched = sched_cls.from_config(config)
        sched.set_timesteps(num_inference_steps)
        ac = sched.alphas_cumprod.to(torch.float64)
        final = float(getattr(sched, "final_alpha_cumprod", torch.tensor(1.0))) if kind == "ddim" else 1.0
        n_train = sched.config.num_train_timesteps
        ts = [int(t) for t in sched.timesteps]
        T_ = int(T) if T is not None else max(ts)
        clip = float(sched.config.clip_sample_range) if sched.config.get("clip_sample", False) else None
        thr = None
        if sched.config.get("thresholding", False):
            thr = (float(sched.config.dynamic_thresholding_ratio), float(sched.config.sample_max_value))
        steps = []
        for k, t in enumerate(ts):
            tp = t - n_train // num_inference_steps
            abar_prev = float(ac[tp]) if tp >= 0 else final
            steps.append(Step(k, t, tp, float(ac[t]), abar_prev, T_, kind, eta, clip, thr))
        return cls(tuple(steps), sched.config.prediction_type)

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self):
        return iter(self.steps)
