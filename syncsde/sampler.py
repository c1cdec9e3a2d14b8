"""The synchronized sampling loop (SYNCSDE.md §3.1): one batched denoiser call per step, then the strategy."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from syncsde.coupling import SyncProblem
from syncsde.progress import steps as progress_steps
from syncsde.schedule import Schedule, Step, ddim_step, tweedie_x0
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
) -> Tensor:
    """Run all trajectories of all samples from x_T (B, N, ...) to x_0.

    ``denoise(x, step)`` returns the CFG-combined ε for the whole (B, N, ...) stack in one network call.
    ``generators`` (one per sample, on the CPU) supply the noise of stochastic steps, so that a sample's
    result depends only on its own generator, never on the batch it shares.
    """

    def noise(shape: Sequence[int] | None = None) -> Tensor:
        """Per-sample noise shaped like one sample's trajectories, or like ``shape`` (e.g. a canonical variable)."""
        return per_sample_randn(x_T.shape[1:] if shape is None else shape, generators).to(x_T)

    x = x_T
    noise_fn = noise if generators is not None else None
    for step in progress_steps(schedule.steps, "steps", progress):
        x = strategy.before_denoise(x, step, problem, noise_fn)
        eps = denoise(x, step)
        x = strategy.step(x, eps, step, problem, noise_fn)
    return x


def invert(denoise: Denoiser, x0: Tensor, schedule: Schedule, progress: bool = False) -> Tensor:
    """Deterministic DDIM inversion along the exact reverse of the sampling schedule (SYNCSDE.md §6.2, clean form
    of BASELINES.md §5.1): for each sampling step t → t' taken backwards, ε = ε(x_{t'}, t) and
    x_t = √ᾱ_t x̂₀ + √(1−ᾱ_t) ε with x̂₀ = (x_{t'} − √(1−ᾱ_{t'}) ε)/√ᾱ_{t'}. ``x0`` is the clean latent (B, N, ...)."""
    x = x0
    for step in progress_steps(schedule.steps[::-1], "inversion", progress):
        eps = denoise(x, step)
        x = ddim_step(tweedie_x0(x, eps, step.abar_prev), eps, step.abar_t)
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
