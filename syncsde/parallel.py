"""Window-parallel synchronized sampling: the trajectories of one sample split over the processes of a run.

Per step every trajectory needs its own network call and, besides, only what its strategy reads of the others
(:class:`syncsde.strategies.base.Reads`): the pre-step states of its couplings' sources, or of the trajectories that
share its canonical positions, and perhaps their ε (Jacobi: SYNCSDE.md §3.1; the averages of BASELINES.md §1). So
each process holds a contiguous share of the trajectories (its *own*) plus the *halo* it reads, denoises only its
own, receives the halo's values from their owners once per step, and runs the unchanged strategy on own + halo with
the problem restricted to them (:meth:`WindowSplit.restrict`). Where the canonical variable tells which positions a
trajectory covers (crops: wide images, 2-D canvases), only the positions inside the receiver's own windows are sent
(for the wide-image chain: the neighbour's overlap columns). The halo's own results are wrong and never used: every
own trajectory's step reads exactly the values it reads in an unsplit run, in the same order, so results are
bitwise the same.

The noise stays that of the unsplit run: every process draws a sample's whole noise from the sample's generator and
keeps its slice. The network is called on fixed groups of ``window_batch`` trajectories (the same groups in every
run): its float results depend on the number of rows of a call (CPU 1×1 convolutions, GPU kernel choice), so
processes own whole groups.

Messages go through ``torch.distributed`` point-to-point operations on the process group that Lightning's strategy
set up (gloo on CPU, NCCL on GPU). A process that stops mid-sample makes the others fail at the next exchange with
:class:`ProcessLost` (a one-line message); the sample is not written, and a rerun makes it whole.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from syncsde.coupling import Coupling, SyncProblem
from syncsde.errors import InputError, SyncSDEError
from syncsde.strategies.base import Reads


class ProcessLost(SyncSDEError):
    """A process of a window-parallel run stopped answering."""


class WindowSplit:
    """Which trajectories process ``rank`` of ``world`` denoises (``own``) and reads (``local`` = own + halo).

    Trajectories are grouped by ``window_batch`` (the network's call groups); process r owns the groups
    [r·G/world, (r+1)·G/world) of the G groups, so shares differ by at most one group.
    """

    def __init__(self, problem: SyncProblem, reads: Reads, rank: int, world: int, window_batch: int):
        n = problem.num_trajectories
        groups = self.check(n, window_batch, world)
        bounds = [min(n, (r * groups // world) * window_batch) for r in range(world + 1)]
        self.owned = [range(bounds[r], bounds[r + 1]) for r in range(world)]
        self.rank, self.world, self.n, self.reads = rank, world, n, reads
        self.needs = [halo(problem, reads, own) for own in self.owned]  # per process: {trajectory: positions}
        self.own = self.owned[rank]
        self.local = sorted({*self.own, *self.needs[rank]})
        self.where = {j: k for k, j in enumerate(self.local)}
        start = self.where[self.own.start]
        self.own_slice = slice(start, start + len(self.own))
        self.step_bytes: list[int] = []  # what this process sent in each step's exchange

    @staticmethod
    def check(n: int, window_batch: int, world: int) -> int:
        """The number of network-call groups of ``n`` trajectories, or one line if ``world`` processes cannot each
        own one."""
        groups = -(-n // window_batch)
        if groups < world:
            raise InputError(
                f"parallel: windows splits {n} windows in groups of window_batch {window_batch} ({groups} groups) "
                f"over {world} processes; use --trainer.devices {groups} or fewer, or a smaller window_batch"
            )
        return groups

    def restrict(self, problem: SyncProblem) -> SyncProblem:
        """The problem of the local trajectories (renumbered): the couplings among them, the canonical variable seen
        by them."""
        couplings = []
        for c in problem.couplings:
            sources = c.source if isinstance(c.source, tuple) else (c.source,)
            if all(j in self.where for j in (c.target, *sources)):
                source = tuple(self.where[j] for j in sources) if isinstance(c.source, tuple) else self.where[c.source]
                couplings.append(Coupling(self.where[c.target], source, c.map, c.weight))
        canonical = problem.canonical.subset(self.local) if problem.canonical is not None else None
        return replace(problem, num_trajectories=len(self.local), couplings=couplings, canonical=canonical)

    # -- messages ----------------------------------------------------------------------------------------------
    def complete(self, x: Tensor, own_eps: Tensor, what: str) -> tuple[Tensor, Tensor]:
        """One step's exchange: the local states ``x`` and the local ε (the own ones ``own_eps``), with the halo's
        states — and ε, where the strategy reads them — from their owners (the halo's ε are 0 otherwise)."""
        eps = own_eps.new_zeros(x.shape[0], x.shape[1], *own_eps.shape[2:])
        eps[:, self.own_slice] = own_eps
        if self.reads.eps or self.reads.everything:
            return self.exchange(x, eps, what=what)
        return self.exchange(x, what=what)[0], eps

    def exchange(self, *values: Tensor, what: str = "step") -> tuple[Tensor, ...]:
        """Fill the halo entries of local tensors (B, len(local), ...) with their owners' values, sending ours; the
        halo positions nobody sends are zero."""
        values = tuple(v.clone() for v in values)
        if self.world == 1:
            return values
        sends, recvs = {}, {}
        for q in range(self.world):
            if q == self.rank:
                continue
            out = [(j, pos) for j, pos in sorted(self.needs[q].items()) if j in self.own]
            into = [(j, pos) for j, pos in sorted(self.needs[self.rank].items()) if j in self.owned[q]]
            if out:
                sends[q] = torch.cat([pick(v[:, self.where[j]], pos).flatten() for v in values for j, pos in out])
            if into:
                size = sum(pick(v[:, self.where[j]], pos).numel() for v in values for j, pos in into)
                recvs[q] = (into, values[0].new_empty(size))
        self._talk(sends, {q: buf for q, (_, buf) in recvs.items()}, what)
        self.step_bytes.append(sum(t.numel() * t.element_size() for t in sends.values()))
        for into, buf in recvs.values():
            offset = 0
            for v in values:
                for j, pos in into:
                    window = v[:, self.where[j]]
                    size = pick(window, pos).numel()
                    put(window, pos, buf[offset : offset + size])
                    offset += size
        return values

    def gather(self, x: Tensor) -> Tensor | None:
        """The own trajectories of every process (x local: (B, len(local), ...)) as (B, N, ...) on process 0; None
        elsewhere."""
        own = x[:, self.own_slice]
        if self.world == 1:
            return own
        if self.rank != 0:
            self._talk({0: own.contiguous().flatten()}, {}, "the final gather")
            return None
        bufs = {q: x.new_empty(x.shape[0], len(self.owned[q]), *x.shape[2:]) for q in range(1, self.world)}
        self._talk({}, {q: b.view(-1) for q, b in bufs.items()}, "the final gather")
        return torch.cat([own, *bufs.values()], 1)

    def _talk(self, sends: dict[int, Tensor], recvs: dict[int, Tensor], what: str) -> None:
        import torch.distributed as dist

        ops = [dist.P2POp(dist.irecv, buf, q) for q, buf in recvs.items()]
        ops += [dist.P2POp(dist.isend, t.contiguous(), q) for q, t in sends.items()]
        if not ops:
            return
        try:
            for work in dist.batch_isend_irecv(ops):
                work.wait()
        except (RuntimeError, dist.DistError) as e:
            peers = ", ".join(map(str, sorted({*sends, *recvs})))
            reason = re.sub(r"\[[^\]]*\]", "", str(e).splitlines()[0]).split(". ")[0].strip()
            raise ProcessLost(
                f"parallel: windows: process {self.rank} lost contact with process {peers} during {what} ({reason}); "
                "the run stops without writing this sample, and rerunning the same command regenerates it whole"
            ) from None


def pick(window: Tensor, positions: Positions | None) -> Tensor:
    """A window's values (B, *D, *spatial) at ``positions``, or the whole window (None)."""
    if positions is None:
        return window
    return window.reshape(window.shape[0], -1, positions.size)[..., positions.index]


def put(window: Tensor, positions: Positions | None, values: Tensor) -> None:
    """Write ``values`` (flat, as :func:`pick` read them) into ``window`` in place; its other positions become 0."""
    if positions is None:
        window.copy_(values.view_as(window))
        return
    view = window.view(window.shape[0], -1, positions.size)
    view.zero_()
    view[..., positions.index] = values.view(view.shape[0], view.shape[1], -1)


@dataclass(frozen=True)
class Positions:
    """Some spatial positions of a window: ``index`` into its ``size`` flattened spatial elements."""

    index: Tensor
    size: int


def halo(problem: SyncProblem, reads: Reads, own: range) -> dict[int, Positions | None]:
    """The trajectories outside ``own`` that a step of the own ones reads, each with the spatial positions read
    (indices into the window's flattened spatial elements), or None for the whole trajectory."""
    n = problem.num_trajectories
    if reads.everything:
        return {j: None for j in range(n) if j not in own}
    canon = problem.canonical
    columns = getattr(canon, "columns", None)  # (N, S) canonical position of each element of each window (crops)
    needed: set[int] = set()
    if reads.couplings:
        for c in problem.couplings:
            if c.target in own:
                needed |= {j for j in (c.source if isinstance(c.source, tuple) else (c.source,)) if j not in own}
    covered = None
    if columns is not None:
        covered = torch.zeros(int(columns.max()) + 1, dtype=torch.bool)
        covered[columns[list(own)].flatten()] = True
        if reads.canonical:
            needed |= {j for j in range(n) if j not in own and bool(covered[columns[j]].any())}
    elif reads.canonical:
        needed |= {j for j in range(n) if j not in own}
    return {
        j: None if covered is None else Positions(covered[columns[j]].nonzero().flatten(), columns.shape[1])
        for j in sorted(needed)
    }
