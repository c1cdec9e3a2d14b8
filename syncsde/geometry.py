"""What every geometry gives a task (ARCHITECTURE.md, Geometries): 1-D windows, 2-D grids and sphere views alike.

A task picks a geometry rather than re-deriving one: its SyncSDE couplings (autoregressive: every source precedes its
target, SYNCSDE.md §2), the canonical variable of the averaging baselines (BASELINES.md §1.1), and the assembly of
the trajectories into the output.
"""

from __future__ import annotations

from typing import Protocol

from torch import Tensor

from syncsde.coupling import Canonical, Coupling


class Geometry(Protocol):
    n: int  # number of trajectories (windows, views)

    def couplings(self) -> list[Coupling]: ...

    def canonical(self, leading: tuple[int, ...]) -> Canonical: ...

    def assemble(self, x: Tensor, mode: str) -> Tensor: ...
