"""Noise-schedule math as plain functions, and the inference schedule as data.

Every function here is a formula of SYNCSDE.md §2–§4 and BASELINES.md §0, written over tensors, with
ᾱ values given explicitly: no scheduler state, no framework. ``Schedule`` only gathers, for each inference
step k, the timestep t_k, ᾱ_t, ᾱ_prev and the step rule (DDIM with η, the DDPM posterior, or the flow-matching
Euler step), taken from a diffusers scheduler config so that the numbers are exactly the ones diffusers would use.

**Flow matching in variance-preserving coordinates.** Flow-matching models (SD3, Flux) are trained on
x_σ = (1−σ)·x₀ + σ·ε and predict the velocity v = ε − x₀; FlowMatchEulerDiscreteScheduler steps
x_{σ'} = x_σ + (σ'−σ)·v. With r(σ) = √((1−σ)² + σ²) the rescaled state x = x_σ/r is a variance-preserving
state x = α·x₀ + s·ε with α = (1−σ)/r, s = σ/r, α² + s² = 1, i.e. ᾱ = (1−σ)²/r². From v, x̂₀ = x_σ − σ·v and
ε̂ = x_σ + (1−σ)·v, and the Euler step is exactly DDIM with η = 0 in these coordinates:

    x_σ + (σ'−σ)·v = (1−σ')·x̂₀ + σ'·ε̂ = r'·(α'·x̂₀ + s'·ε̂).

So a flow schedule is a list of ordinary steps whose ᾱ_t, ᾱ_prev are these VP equivalents (t = the diffusers
timestep 1000·σ, T = the largest t), and the backbone converts coordinates at the network call (x_σ = r·x in,
v out). The sampler state stays x, and every strategy runs unchanged. The one difference: at σ = 1 (the first
step, ᾱ_t = 0) ε̂ = x_σ carries no information, so flow steps read the network's v directly (``Step.x0``:
x̂₀ = r·x − σ·v) and write their update from (x_t, x̂₀) alone.

**Stochastic steps on flow models.** Because the VP state has the marginals q(x_t | x₀) of a β-schedule model, any
DDIM step with η > 0 is as valid on these ᾱ as on SD's: ``sampler ddim`` with ``eta`` takes DDIM's σ_t(η), and
``sampler ddpm`` the DDPM posterior, which is DDIM with η = 1 (the same mean and the variance β̃_t =
(1−ᾱ_prev)/(1−ᾱ_t)·(1−ᾱ_t/ᾱ_prev)). At σ = 1 (ᾱ_t = 0) the step is x̂₀ re-noised to ᾱ_prev with fresh noise
(σ_t(1) = √(1−ᾱ_prev)); the last step (ᾱ_prev = 1) adds none. η = 0 is the Euler step, bit for bit.

**SyncSDE for flow matching** (SYNCSDE.md §3–§4 in these coordinates). The coupling likelihood
p(x^j | x^i) ∝ exp(−‖√W ⊙ (x^i − f(x^j))‖² / (2 λ_t s²)) is the same in either coordinate system (the residual
and the noise scale both carry the factor r), so 1/λ keeps its meaning, and the DDIM correction
x' = x̃' − c_t·W ⊙ (x^i − f(x^j)), c_t = γ_t (1/λ)(t/T), γ_t from the VP-equivalent ᾱ, reads in flow coordinates
(multiply by r', f linear):

    x_{σ'}^i = x_σ^i + (σ'−σ)·v^i − (r'/r)·c_t·W ⊙ (x_σ^i − f(x_σ^j)),
    (r'/r)·γ_t = (σ−σ')/(σ(1−σ)),  t/T = σ   ⇒   (r'/r)·c_t = (1/λ)·(σ−σ')/(1−σ).

The same follows from adding the coupling score Δs = −W ⊙ (x^i − f(x^j))/(λ_t σ²) to the flow model's score
−ε̂/σ: since v = (ε̂ − x_σ)/(1−σ), v moves by −σ·Δs/(1−σ), and the Euler step by (σ'−σ) times that. The
pull per step is the step length relative to the remaining signal 1−σ; at σ = 1 it is infinite (the score there
says nothing about x₀), so the correction starts at the first step with ᾱ_t > 0 (``Step.gamma`` is 0 where
ᾱ_t = 0). Flow schedules also spend several steps at SNRs below SD's ᾱ_T, where c_t is large: pick 1/λ so
that c_t stays below 1 (README, "Backbones").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from syncsde.errors import InputError

Prediction = Literal["epsilon", "sample", "v_prediction", "flow"]

# scheduler classes whose configs describe a discrete β schedule (ᾱ_t = alphas_cumprod[t]): syncsde samples them with
# DDIM or DDPM built from the same config, as the paper replaces SD's PNDM by DDIM
VP_SCHEDULERS = (
    "DDIMScheduler",
    "DDPMScheduler",
    "PNDMScheduler",
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "LMSDiscreteScheduler",
    "HeunDiscreteScheduler",
    "KDPM2DiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler",
    "DPMSolverMultistepScheduler",
    "DPMSolverSinglestepScheduler",
    "DEISMultistepScheduler",
    "UniPCMultistepScheduler",
)
FLOW_SCHEDULERS = ("FlowMatchEulerDiscreteScheduler",)

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


def _in(c: Tensor, like: Tensor) -> Tensor | float:
    """A float64 coefficient in ``like``'s dtype: one value as a Python number (a kernel argument, so nothing is copied
    to the device each step; the same arithmetic as a 0-dim tensor of that dtype), several as a tensor on ``like``'s
    device."""
    return float(c.to(like.dtype)) if c.ndim == 0 else c.to(like)


def tweedie_x0(x_t: Tensor, eps: Tensor, abar_t: float | Tensor) -> Tensor:
    """Tweedie's estimate x̂₀ = (x_t − σ_t ε)/α_t (SYNCSDE.md §2)."""
    return (x_t - _in(_sqrt(1 - abar_t), x_t) * eps) / _in(_sqrt(abar_t), x_t)


def eps_from_x0(x_t: Tensor, x0: Tensor, abar_t: float | Tensor) -> Tensor:
    """ε = (x_t − α_t x̂₀)/σ_t, the inverse of :func:`tweedie_x0` (for x₀-predicting models such as MDM)."""
    return (x_t - _in(_sqrt(abar_t), x_t) * x0) / _in(_sqrt(1 - abar_t), x_t)


def eps_from_v(x_t: Tensor, v: Tensor, abar_t: float | Tensor) -> Tensor:
    """ε = α_t v + σ_t x_t for v-prediction models."""
    return _in(_sqrt(abar_t), x_t) * v + _in(_sqrt(1 - abar_t), x_t) * x_t


def to_epsilon(output: Tensor, x_t: Tensor, abar_t: float | Tensor, prediction: Prediction) -> Tensor:
    """Convert a network output of the given prediction type to ε."""
    if prediction == "epsilon":
        return output
    if prediction == "sample":
        return eps_from_x0(x_t, output, abar_t)
    if prediction == "v_prediction":
        return eps_from_v(x_t, output, abar_t)
    raise ValueError(f"unknown prediction type {prediction!r}: use 'epsilon', 'sample' or 'v_prediction'")


def flow_abar(sigma: float | Tensor) -> Tensor:
    """The VP-equivalent ᾱ of flow-matching noise level σ: (1−σ)²/((1−σ)² + σ²) (module docstring)."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    return (1 - sigma) ** 2 / ((1 - sigma) ** 2 + sigma**2)


def flow_sigma(abar: float | Tensor) -> tuple[Tensor, Tensor]:
    """(σ, r) of the flow state x_σ = r·x for a VP-equivalent ᾱ: σ = s/(α+s), r = 1/(α+s) (inverse of
    :func:`flow_abar`)."""
    a, s = _sqrt(abar), _sqrt(1 - torch.as_tensor(abar, dtype=torch.float64))
    return s / (a + s), 1 / (a + s)


def flow_state(x: Tensor, t: Tensor, num_train_timesteps: int) -> tuple[Tensor, Tensor]:
    """The flow-matching network's input x_σ = r(σ)·x for VP states x (M, ...) at timesteps t = N_train·σ (M,),
    r = √((1−σ)² + σ²), computed in float32 and returned in x's dtype, with σ (M, 1, ...) in float32."""
    sigma = (t.float() / num_train_timesteps).view(-1, *[1] * (x.ndim - 1))
    return (x.float() * ((1 - sigma) ** 2 + sigma**2).sqrt()).to(x.dtype), sigma


def ddim_sigma(abar_t: float | Tensor, abar_prev: float | Tensor, eta: float) -> Tensor:
    """σ_t(η) = η √((1−ᾱ_prev)/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev) (DDIM paper Eq. 16)."""
    abar_t, abar_prev = torch.as_tensor(abar_t, dtype=torch.float64), torch.as_tensor(abar_prev, dtype=torch.float64)
    return eta * ((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)).sqrt()


def ddim_step(
    x0: Tensor, eps: Tensor, abar_prev: float | Tensor, sigma: float | Tensor = 0.0, noise: Tensor | None = None
) -> Tensor:
    """DDIM update written from (x̂₀, ε): √ᾱ_prev x̂₀ + √(1−ᾱ_prev−σ²) ε + σ n (η = 0: σ = 0, SYNCSDE.md §3 step 1).
    1−ᾱ_prev−σ² is 0 at η = 1 from ᾱ_t = 0 and may round below it: clamped at 0."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    out = (
        _in(_sqrt(abar_prev), x0) * x0
        + _in((1 - torch.as_tensor(abar_prev, dtype=torch.float64) - sigma**2).clamp(min=0).sqrt(), x0) * eps
    )
    if float(sigma) > 0:
        if noise is None:
            raise ValueError("a DDIM step with eta > 0 needs noise")
        out = out + _in(sigma, x0) * noise
    return out


def ddpm_posterior(x_t: Tensor, x0: Tensor, abar_t: float | Tensor, abar_prev: float | Tensor) -> tuple[Tensor, Tensor]:
    """Mean and variance of q(x_{t'} | x_t, x̂₀) (BASELINES.md §0):
    μ = (α_{t'}β_t/(1−ᾱ_t)) x̂₀ + (√a_t(1−ᾱ_{t'})/(1−ᾱ_t)) x_t,
    β̃_t = β_t (1−ᾱ_{t'})/(1−ᾱ_t), with a_t = ᾱ_t/ᾱ_{t'} and β_t = 1 − a_t."""
    abar_t = torch.as_tensor(abar_t, dtype=torch.float64)
    abar_prev = torch.as_tensor(abar_prev, dtype=torch.float64)
    a_t = abar_t / abar_prev
    beta_t = 1 - a_t
    mean = (
        _in(abar_prev.sqrt() * beta_t / (1 - abar_t), x0) * x0
        + _in(a_t.sqrt() * (1 - abar_prev) / (1 - abar_t), x0) * x_t
    )
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


def abar_function(config: dict):
    """ᾱ at any timestep t of the model whose scheduler config is given: ``alphas_cumprod[t]`` of a β schedule, the
    VP equivalent :func:`flow_abar` of σ = t/N_train on a flow-matching model (float64 values as Python floats)."""
    n_train = int(config.get("num_train_timesteps", 1000))
    if config.get("_class_name") in FLOW_SCHEDULERS:
        return lambda t: float(flow_abar(float(t) / n_train))
    from diffusers import DDIMScheduler

    table = DDIMScheduler.from_config({k: v for k, v in config.items() if not k.startswith("_")}).alphas_cumprod
    table = table.to(torch.float64)
    return lambda t: float(table[int(t)])


@dataclass(frozen=True)
class Step:
    """One inference step: timestep ``t`` → ``t_prev`` with ᾱ values and the sampler rule.

    ``kind`` "flow" is the flow-matching Euler step in VP coordinates (module docstring): ``t`` is the diffusers
    timestep 1000·σ (a float), ᾱ values are the VP equivalents, and the network output the strategies pass as
    ``eps`` is the velocity v; with ``eta`` > 0 it is DDIM's stochastic step on those ᾱ (η = 1: the DDPM posterior).
    """

    index: int
    t: int | float
    t_prev: int | float
    abar_t: float
    abar_prev: float
    T: int | float
    kind: Literal["ddim", "ddpm", "flow"] = "ddim"
    eta: float = 0.0

    clip_sample: float | None = None
    threshold: tuple[float, float] | None = None  # (dynamic_thresholding_ratio, sample_max_value)

    @property
    def sigma(self) -> float:
        """σ_t = √(1−ᾱ_t)."""
        return (1 - self.abar_t) ** 0.5

    @property
    def gamma(self) -> float:
        """γ_t of SYNCSDE.md §3; 0 where ᾱ_t = 0 (a flow schedule's σ = 1), where it is infinite and the
        coupling has no finite form (module docstring)."""
        return float(gamma(self.abar_t, self.abar_prev)) if self.abar_t > 0 else 0.0

    @property
    def stochastic(self) -> bool:
        return (self.kind == "ddpm" and self.t > 0) or (self.kind in ("ddim", "flow") and self.eta > 0)

    def x0(self, x_t: Tensor, eps: Tensor) -> Tensor:
        """Tweedie x̂₀, then — as diffusers does when the scheduler config asks — dynamic thresholding per image
        (the last three dims), or else clipping to ±``clip_sample`` (DeepFloyd IF uses these; SD neither).
        Flow steps: x̂₀ = x_σ − σ·v with x_σ = r·x_t, ``eps`` being the velocity v."""
        if self.kind == "flow":
            sigma, r = flow_sigma(self.abar_t)
            return _in(r, x_t) * x_t - _in(sigma, x_t) * eps
        x0 = tweedie_x0(x_t, eps, self.abar_t)
        if self.threshold is not None:
            return dynamic_threshold(x0, *self.threshold)
        return x0 if self.clip_sample is None else x0.clamp(-self.clip_sample, self.clip_sample)

    def update(
        self, x_t: Tensor, x0: Tensor, eps: Tensor, noise: Tensor | None = None, variance: Tensor | None = None
    ) -> Tensor:
        """The plain (uncoupled) update U(x_t, x̂₀, ε) of this step. ``variance``: the network's learned-range
        variance channels (DDPM only; otherwise the fixed posterior variance β̃_t is used). Flow steps: the Euler
        step = DDIM (η = 0) written from (x_t, x̂₀) alone, ε = (x_t − α_t x̂₀)/σ_t (``eps`` is not read: it is the
        velocity when it comes from the network); with η > 0, DDIM's σ_t(η) and ``noise``."""
        if self.kind == "flow":
            sigma = ddim_sigma(self.abar_t, self.abar_prev, self.eta) if self.eta else 0.0
            return ddim_step(x0, eps_from_x0(x_t, x0, self.abar_t), self.abar_prev, sigma, noise)
        if self.kind == "ddim":
            return ddim_step(x0, eps, self.abar_prev, ddim_sigma(self.abar_t, self.abar_prev, self.eta), noise)
        mean, var = ddpm_posterior(x_t, x0, self.abar_t, self.abar_prev)
        if self.t > 0:
            if noise is None:
                raise ValueError("a DDPM step with t > 0 needs noise")
            std = (
                _in(var.sqrt(), mean)
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

    A ``FlowMatchEulerDiscreteScheduler`` config gives flow steps (module docstring): σ_k are diffusers' own
    (``set_timesteps`` with the ``sigmas``/``mu`` the backbone passes as ``timestep_options``, shift included),
    t_k = 1000·σ_k, T = t_0, and the last step ends at σ = 0.
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
        T: int | float | None = None,
        model: str = "the model",
        **timestep_options,
    ) -> "Schedule":
        """``model`` names the checkpoint in error messages; ``timestep_options`` (``sigmas``, ``mu``) go to a
        flow scheduler's ``set_timesteps``. Scheduler classes and prediction types syncsde cannot sample exactly are
        refused with an :class:`~syncsde.errors.InputError`."""
        if num_inference_steps < 1:
            raise InputError(f"num_inference_steps must be at least 1, got {num_inference_steps}")
        name = config.get("_class_name")
        config = {k: v for k, v in dict(config).items() if not k.startswith("_")}
        if name in FLOW_SCHEDULERS:
            return cls._flow(config, num_inference_steps, kind, eta, T, model, timestep_options)
        if name is not None and name not in VP_SCHEDULERS:
            raise InputError(
                f"{model}: scheduler {name} is not supported; syncsde samples β-schedule models "
                f"({', '.join(VP_SCHEDULERS[:3])}, ...) with DDIM/DDPM and FlowMatchEulerDiscreteScheduler models "
                "with the Euler step"
            )
        prediction = config.get("prediction_type", "epsilon")
        if prediction not in ("epsilon", "v_prediction", "sample"):
            raise InputError(
                f"{model}: prediction type '{prediction}' is not supported; use a model predicting "
                "epsilon, v_prediction or sample"
            )
        if timestep_options:
            raise ValueError(f"timestep options {sorted(timestep_options)} apply to flow-matching schedules only")
        from diffusers import DDIMScheduler, DDPMScheduler

        sched = (DDIMScheduler if kind == "ddim" else DDPMScheduler).from_config(config)
        sched.set_timesteps(num_inference_steps)
        ac = sched.alphas_cumprod.to(torch.float64)
        final = float(getattr(sched, "final_alpha_cumprod", torch.tensor(1.0))) if kind == "ddim" else 1.0
        n_train = sched.config.num_train_timesteps
        ts = [int(t) for t in sched.timesteps]
        if float(ac[max(ts)]) <= 0:
            raise InputError(
                f"{model}: ᾱ = 0 at t = {max(ts)} (zero terminal SNR): x̂₀ is undefined there; "
                "use timestep_spacing 'leading' or a model without rescale_betas_zero_snr"
            )
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
        return cls(tuple(steps), prediction)

    @classmethod
    def _flow(cls, config, num_inference_steps, kind, eta, T, model, options) -> "Schedule":
        from diffusers import FlowMatchEulerDiscreteScheduler

        if kind == "ddpm":  # the DDPM posterior on the VP-equivalent ᾱ is DDIM with η = 1 (module docstring)
            eta = 1.0
        for option in ("stochastic_sampling", "invert_sigmas"):
            if config.get(option):
                raise InputError(f"{model}: FlowMatchEulerDiscreteScheduler with {option} is not supported")
        sched = FlowMatchEulerDiscreteScheduler.from_config(config)
        sched.set_timesteps(num_inference_steps, **options)
        sigmas = [float(x) for x in sched.sigmas]
        ts = [float(t) for t in sched.timesteps] + [0.0]
        T_ = float(T) if T is not None else max(ts)
        steps = tuple(
            Step(k, ts[k], ts[k + 1], float(flow_abar(sigmas[k])), float(flow_abar(sigmas[k + 1])), T_, "flow", eta)
            for k in range(len(sigmas) - 1)
        )
        return cls(steps, "flow")

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self):
        return iter(self.steps)
