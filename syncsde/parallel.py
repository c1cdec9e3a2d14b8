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

Where the network itself mixes trajectories (SyncMVD's multi-view attention on the mesh's views, BASELINES.md §4.4),
a process's calls of one step run together (:class:`Lockstep`, one thread each, still on their fixed groups) and meet
at every mixing layer: there the keys/values of all its calls join one table, and those of the trajectories other
processes compute arrive from their owners (:class:`Exchange`, the same messages), so each trajectory's attention
reads the same values as in a run of the same groups on one process.

Messages go through ``torch.distributed`` point-to-point operations on the process group that Lightning's strategy
set up (gloo on CPU, NCCL on GPU). A process that stops mid-sample makes the others fail at the next exchange with
:class:`ProcessLost` (a one-line message); the sample is not written, and a rerun makes it whole.
"""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch
from torch import Tensor

from syncsde.coupling import SyncProblem
from syncsde.errors import InputError, SyncSDEError
from syncsde.strategies.base import Reads


class ProcessLost(SyncSDEError):
    """A process of a window-parallel run stopped answering."""


class Exchange:
    """Values laid out by trajectory — tensors (B, len(local), ...) — shared between the processes of a run: process
    r of ``len(owned)`` computes the trajectories ``owned[r]`` (its *own*) and also holds ``needs[r]`` (its *halo*:
    trajectory → the positions it reads, None for all), which their owners send it."""

    def __init__(self, owned: list[range], needs: list[dict[int, Positions | None]], rank: int):
        self.owned, self.needs, self.rank, self.world = owned, needs, rank, len(owned)
        self.own = owned[rank]
        self.local = sorted({*self.own, *needs[rank]})
        self.where = {j: k for k, j in enumerate(self.local)}
        start = self.where[self.own.start]
        self.own_slice = slice(start, start + len(self.own))
        self.step_bytes: list[int] = []  # what this process sent in each exchange

    def exchange(self, *values: Tensor, what: str = "step") -> tuple[Tensor, ...]:
        """Copies of local tensors (B, len(local), ...) with the halo entries filled by their owners' values, sending
        ours; the halo positions nobody sends are zero."""
        return self.fill(*(v.clone() for v in values), what=what)

    def fill(self, *values: Tensor, what: str = "step") -> tuple[Tensor, ...]:
        """:meth:`exchange` in place."""
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


class WindowSplit(Exchange):
    """Which trajectories process ``rank`` of ``world`` denoises (``own``) and reads (``local`` = own + halo).

    Trajectories are grouped by ``window_batch`` (the network's call groups); process r owns the groups
    [r·G/world, (r+1)·G/world) of the G groups, so shares differ by at most one group.
    """

    def __init__(self, problem: SyncProblem, reads: Reads, rank: int, world: int, window_batch: int):
        n = problem.num_trajectories
        groups = self.check(n, window_batch, world)
        bounds = [min(n, (r * groups // world) * window_batch) for r in range(world + 1)]
        owned = [range(bounds[r], bounds[r + 1]) for r in range(world)]
        super().__init__(owned, [halo(problem, reads, own) for own in owned], rank)
        self.n, self.reads = n, reads

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
        """The problem of the local trajectories (renumbered): the couplings among them (of the task's own coupling
        classes), the canonical variable seen by them — whole where they are all trajectories, none where the
        strategy does not read it."""
        couplings = []
        for c in problem.couplings:
            sources = c.source if isinstance(c.source, tuple) else (c.source,)
            if all(j in self.where for j in (c.target, *sources)):
                source = tuple(self.where[j] for j in sources) if isinstance(c.source, tuple) else self.where[c.source]
                couplings.append(replace(c, target=self.where[c.target], source=source))
        canonical = problem.canonical
        if canonical is not None and len(self.local) < self.n:
            canonical = canonical.subset(self.local) if self.reads.canonical else None
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


class Lockstep:
    """One step's network calls on fixed groups of this process's trajectories, when the network mixes trajectories
    inside (SyncMVD's multi-view attention, BASELINES.md §4.4): the calls run together, each in its own thread, and
    meet at every mixing layer (:meth:`share`), where their rows are joined into one table of the process's local
    trajectories whose halo the owners fill (:class:`Exchange`). Every call keeps its rows, so the network computes
    exactly what the same groups compute on any number of processes; only values are copied between them.
    """

    def __init__(self):
        self._thread = threading.local()  # the call this thread runs: its index and trajectories
        self._barrier = threading.Barrier(1)
        self._parts: dict[int, tuple[Tensor, ...]] = {}

    def run(self, calls: Sequence[tuple[range, Callable[[], Tensor]]], what: str) -> list[Tensor]:
        """The results of ``calls`` — (the trajectories of a call, the call), in trajectory order, together this
        process's own trajectories — run together; ``what`` names the step in messages."""
        self._barrier = threading.Barrier(len(calls), action=self._meet)
        self._parts, self._what, self._meetings = {}, what, 0
        device = torch.cuda.current_device() if torch.cuda.is_initialized() else None

        def one(k: int) -> Tensor:
            self._thread.index, self._thread.trajectories = k, calls[k][0]
            if device is not None:  # the current GPU is per thread (and NCCL's messages use it)
                torch.cuda.set_device(device)
            try:
                with torch.no_grad():  # grad mode is per thread
                    return calls[k][1]()
            except BaseException:
                self._barrier.abort()  # the other calls stop at their next meeting instead of waiting for this one
                raise
            finally:
                self._thread.trajectories = None

        try:
            if len(calls) == 1:
                return [one(0)]
            with ThreadPoolExecutor(len(calls)) as pool:
                futures = [pool.submit(one, k) for k in range(len(calls))]
            errors = [f.exception() for f in futures if f.exception() is not None]
            if errors:  # the cause, not the broken meetings it left behind
                raise next((e for e in errors if not isinstance(e, threading.BrokenBarrierError)), errors[0])
            return [f.result() for f in futures]
        finally:
            self._barrier = threading.Barrier(1)

    def trajectories(self) -> range | None:
        """The trajectories of the call this thread runs (None outside :meth:`run`)."""
        return getattr(self._thread, "trajectories", None)

    def share(self, exchange: Exchange, *values: Tensor, name: str = "mixing layer") -> tuple[Tensor, ...]:
        """At a mixing layer: this call's ``values`` (G, len(call), ...) → tables (G, len(exchange.local), ...) of every
        trajectory this process holds, once all calls are there (the values themselves where this call holds every
        trajectory)."""
        if self._barrier.parties == 1 and exchange.world == 1:
            return values
        self._parts[self._thread.index] = values
        self._exchange, self._name = exchange, name
        self._barrier.wait()
        return self._tables

    def _meet(self) -> None:  # run by one of the calls once all are at the meeting; the others wait for it
        ex, self._meetings = self._exchange, self._meetings + 1
        tables = []
        for parts in zip(*(self._parts[k] for k in range(len(self._parts)))):
            own = torch.cat(parts, 1)
            table = own.new_zeros(own.shape[0], len(ex.local), *own.shape[2:])
            table[:, ex.own_slice] = own
            tables.append(table)
        self._parts = {}
        self._tables = ex.fill(*tables, what=f"{self._name} {self._meetings} of {self._what}")


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


def end_process_group() -> None:
    """Destroy the run's process group (if any) while the interpreter still runs. Lightning destroys only NCCL's
    (at exit); a gloo group left to the interpreter's finalization is torn down with its threads still running, and
    about 1 process in 20 then aborts after its work is done (``terminate called without an active exception``,
    SIGABRT): reproduced with two processes that init a gloo group, all-reduce and exit under CPU load."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
