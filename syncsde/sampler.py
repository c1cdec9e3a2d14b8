"""The synchronized sampling loop (SYNCSDE.md §3.1): one batched denoiser call per step, then the strategy."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from syncsde.coupling import SyncProblem
from syncsde.parallel import WindowSplit
from syncsde.progress import steps as progress_steps
from syncsde.schedule import Schedule, Step, ddim_step, flow_sigma, tweedie_x0
from syncsde.strategies.base import Strategy

Denoiser = Callable[[Tensor, Step], Tensor]


def sample(
    denoise: Denoiser,
    x_T: Tensor,
    schedule: Schedule,
    strategy: Strategy,
    problem: SyncProblem,
    generators: Sequence[torch.Generator] | None = None,
    progress: bool = False,
    split: WindowSplit | None = None,
) -> Tensor | None:
    """Run all trajectories of all samples from x_T (B, N, ...) to x_0.

    ``denoise(x, step)`` returns the CFG-combined ε for the whole (B, N, ...) stack in one network call.
    ``generators`` (one per sample, on the CPU) supply the noise of stochastic steps, so that a sample's
    result depends only on its own generator, never on the batch it shares.

    The state keeps x_T's dtype: the network output is cast to it, and so is each step's result. float16 is the
    official code's sampler state (``--use_float_16``: latents and the correction in half precision, README
    "Differences from the official code"); the network itself runs in the backbone's dtype either way.

    With a :class:`~syncsde.parallel.WindowSplit` this process runs its share of the trajectories: ``denoise``
    receives only its own ones (B, len(own), ...), the halo it reads comes from the other processes once per step,
    the noise is drawn whole and sliced, and process 0 returns every trajectory's x_0 (the others None).
    """
    local = slice(None) if split is None else split.local

    def noise(shape: Sequence[int] | None = None) -> Tensor:
        """Per-sample noise shaped like one sample's trajectories, or like ``shape`` (e.g. a canonical variable)."""
        if shape is None:
            return per_sample_randn(x_T.shape[1:], generators)[:, local].to(x_T)
        return per_sample_randn(shape, generators).to(x_T)

    x = x_T[:, local]
    noise_fn = noise if generators is not None else None
    if split is not None:
        problem = split.restrict(problem)
    for step in progress_steps(schedule.steps, "steps", progress):
        x = strategy.before_denoise(x, step, problem, noise_fn)
        if split is None:
            eps = denoise(x, step).to(x_T.dtype)
        else:  # the own trajectories' ε; the halo's states (and ε, if the strategy reads them) from their owners
            own = denoise(x[:, split.own_slice], step).to(x_T.dtype)
            x, eps = split.complete(x, own, f"step {step.index + 1} of {len(schedule.steps)}")
        if problem.observe is not None:  # maps that read this step's clean estimate (SyncProblem)
            problem.observe(x, eps, step)
        x = strategy.step(x, eps, step, problem, noise_fn).to(x_T.dtype)
    return x if split is None else split.gather(x)


def invert(denoise: Denoiser, x0: Tensor, schedule: Schedule, progress: bool = False) -> Tensor:
    """Deterministic DDIM inversion along the exact reverse of the sampling schedule (SYNCSDE.md §6.2, clean form
    of BASELINES.md §5.1): for each sampling step t → t' taken backwards, ε = ε(x_{t'}, t) and
    x_t = √ᾱ_t x̂₀ + √(1−ᾱ_t) ε with x̂₀ = (x_{t'} − √(1−ᾱ_{t'}) ε)/√ᾱ_{t'}. ``x0`` is the clean latent (B, N, ...);
    the state keeps its dtype.

    On a flow schedule the network returns the velocity v = v(x_{t'}, t) and (x̂₀, ε̂) are read off it at the
    state's own level σ' (x_{σ'} = r'·x): x̂₀ = x_{σ'} − σ'·v, ε̂ = x_{σ'} + (1−σ')·v, so that the DDIM step to σ is
    the reverse Euler step x_σ = x_{σ'} + (σ−σ')·v of the flow ODE (SYNCSDE.md §6.2.1)."""
    return _invert(denoise, x0, [(step, step.abar_prev, step.abar_t) for step in schedule.steps[::-1]], progress)


def invert_official(
    denoise: Denoiser, x0: Tensor, schedule: Schedule, alphas_cumprod: Tensor, progress: bool = False
) -> Tensor:
    """The official code's DDIM inversion (CSG's, BASELINES.md §5.1): over the sampling timesteps flipped, without
    the first and the last (48 network calls for 50 steps: t = 21, 41, …, 961 for SD), with ᾱ read one index below
    the timestep: ε = ε(x, t), x̂₀ = (x − √(1−ᾱ[t−1]) ε)/√ᾱ[t−1], x ← √ᾱ[t+Δ−1] x̂₀ + √(1−ᾱ[t+Δ−1]) ε with
    Δ = N_train // S. ``alphas_cumprod`` is the model's full ᾱ table (N_train entries)."""
    stride = schedule.steps[0].t - schedule.steps[0].t_prev
    ac = alphas_cumprod
    plan = [(s, float(ac[s.t - 1]), float(ac[s.t + stride - 1])) for s in schedule.steps[::-1][1:-1]]
    return _invert(denoise, x0, plan, progress)


def _invert(denoise: Denoiser, x0: Tensor, plan: Sequence[tuple[Step, float, float]], progress: bool) -> Tensor:
    """DDIM steps toward noise: for each (network step, ᾱ of the state, ᾱ of the next state)."""
    x = x0
    for step, abar_in, abar_out in progress_steps(plan, "inversion", progress):
        eps = denoise(x, step).to(x.dtype)
        if step.kind == "flow":  # eps is v: x̂₀ and ε̂ at the state's level (σ' = 0 at the clean latent)
            sigma, r = (float(c) for c in flow_sigma(abar_in))
            x_sigma = r * x
            x = ddim_step(x_sigma - sigma * eps, x_sigma + (1 - sigma) * eps, abar_out).to(x0.dtype)
        else:
            x = ddim_step(tweedie_x0(x, eps, abar_in), eps, abar_out).to(x0.dtype)
    return x


def per_sample_randn(shape: Sequence[int], generators: Sequence[torch.Generator] | None) -> Tensor:
    """Standard normal noise (len(generators), *shape), each row from its own CPU generator (device-independent)."""
    if generators is None:
        raise ValueError("stochastic sampling needs one generator per sample")
    return torch.stack([torch.randn(tuple(shape), generator=g, dtype=torch.float32) for g in generators])


def sample_generator(seed: int, sample_id: int, stream: int = 0) -> torch.Generator:
    """A CPU generator seeded from (seed, sample id) alone: a sample's output does not depend on its batch,
    its process, or the device count. ``stream`` gives further independent generators of the same sample
    (e.g. for a second, unsynchronized stage)."""
    import numpy as np

    state = np.random.SeedSequence([int(seed), int(sample_id), int(stream)]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator("cpu").manual_seed(int(state) & ((1 << 63) - 1))
