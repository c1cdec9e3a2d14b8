"""The strategy interface and the uncoupled reference strategy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import Tensor

from syncsde.coupling import SyncProblem
from syncsde.schedule import Step

NoiseFn = Callable[..., Tensor]  # noise() like x, or noise(shape) per sample


@dataclass(frozen=True)
class Reads:
    """What a trajectory's step reads of the other trajectories (for splitting one sample's trajectories over
    processes, :mod:`syncsde.parallel`): the pre-step states of its ``couplings``' sources, of the trajectories that
    share its ``canonical`` positions, and also their ε (``eps``); ``everything``: every trajectory's state and ε
    (e.g. an update in trajectory order, where each one reads the corrected state of the one before)."""

    couplings: bool = False
    canonical: bool = False
    eps: bool = False
    everything: bool = False


class Strategy:
    """Turns the network's ε for all trajectories into the next states.

    A strategy declares ``needs``, what the task must provide (a canonical variable, regions, views: checked when
    the task is built, :func:`syncsde.registry.check`), and keeps any state of its own between steps.

    ``step(x, eps, step, problem, noise)`` receives the pre-step snapshot ``x`` (B, N, ...), the CFG-combined
    ε of the one batched network call, the :class:`~syncsde.schedule.Step`, the task's
    :class:`~syncsde.coupling.SyncProblem`, and ``noise`` — a callable returning fresh per-sample noise shaped
    like ``x``, or ``noise(shape)`` of another per-sample shape (only for stochastic steps; drawn from each sample's
    own generator).
    """

    name = "strategy"
    uses: frozenset[str] = frozenset()  # backbone abilities used where present (learned_variance)

    def needs(self) -> frozenset[str]:
        """What the task must provide (:data:`syncsde.registry.PROVISIONS`), for these settings."""
        return frozenset()

    def before_denoise(self, x: Tensor, step: Step, problem: SyncProblem, noise: NoiseFn | None = None) -> Tensor:
        """Optionally change the states before the network sees them (MultiDiffusion's bootstrapping); default none."""
        return x

    def step(self, x: Tensor, eps: Tensor, step: Step, problem: SyncProblem, noise: NoiseFn | None = None) -> Tensor:
        raise NotImplementedError

    def reads(self) -> Reads:
        """What a step reads of other trajectories (default: everything, which is right for any strategy)."""
        return Reads(everything=True)

    def describe(self) -> dict:
        """Parameters written into every sample's sidecar."""
        return {"method": self.name}

    @staticmethod
    def plain_update(x: Tensor, eps: Tensor, step: Step, noise: NoiseFn | None) -> Tensor:
        """The scheduler's own update for every trajectory (DDIM with η, or DDPM)."""
        return step.update(x, step.x0(x, eps), eps, noise() if step.stochastic else None)


class Independent(Strategy):
    """No coupling: every trajectory is an ordinary sampling run (the 1/λ → 0 limit of SyncSDE)."""

    name = "independent"

    def step(self, x, eps, step, problem, noise=None):
        return self.plain_update(x, eps, step, noise)

    def reads(self):
        return Reads()
