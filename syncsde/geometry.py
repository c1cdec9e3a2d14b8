"""What every geometry gives a task (ARCHITECTURE.md, Geometries): 1-D windows, 2-D grids and sphere views alike.

A task picks a geometry rather than re-deriving one: its SyncSDE couplings (autoregressive: every source precedes its
target, SYNCSDE.md §2), the canonical variable of the averaging baselines (BASELINES.md §1.1), and the assembly of
the trajectories into the output. Implemented by :class:`syncsde.windows.Windows` (1-D), :class:`syncsde.windows.Grid`
(2-D) and :class:`syncsde.sphere.Sphere`. Every coupling reads only the states of its own sources (neighbouring or
overlapping trajectories), so the trajectories of one sample can be split over processes that exchange only those.
"""

from __future__ import annotations

from typing import Protocol

from torch import Tensor

from syncsde.coupling import Canonical, Coupling


class Geometry(Protocol):
    n: int  # number of trajectories (windows, views)

    def couplings(self) -> list[Coupling]:
        """SyncSDE's couplings between the trajectories."""
        ...

    def canonical(self, leading: tuple[int, ...]) -> Canonical:
        """The canonical variable for trajectories of shape (*leading, *spatial)."""
        ...

    def assemble(self, x: Tensor, mode: str) -> Tensor:
        """The trajectories (B, n, *leading, *spatial) assembled into the canvas (B, *leading, *canvas)."""
        ...
