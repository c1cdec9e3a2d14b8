"""Progress of long work: the sampler's step loops report here.

Outside the CLI (Python API), each loop shows its own tqdm bar when asked to. Under ``syncsde predict`` the CLI
installs :class:`SampleProgress`, one bar over samples and steps with an ETA: a live bar on a terminal, and whole
lines (at most one every ``log_every`` seconds) when the output goes to a file.
"""

from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TypeVar

from lightning.pytorch.callbacks import ProgressBar
from tqdm.auto import tqdm

T = TypeVar("T")

_reporter: "Reporter | None" = None
last: "Reporter | None" = None  # the latest reporter installed (the start-up benchmark reads its first step)


def steps(iterable: Iterable[T], desc: str, enabled: bool) -> Iterator[T]:
    """Iterate over a step loop (sampling, inversion), reporting each step to the active reporter if any, else
    through a bar of its own when ``enabled``."""
    if _reporter is None:
        yield from tqdm(iterable, desc=desc, leave=False, disable=not enabled)
        return
    for item in iterable:
        _reporter.started()
        yield item
        _reporter.step()


def clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class Reporter:
    """Progress over ``total`` samples, refined by steps: a batch is expected to take as many steps as the first
    batch took (``steps_per_batch`` until the first one has finished).

    Args:
        total: samples to generate (in this process).
        steps_per_batch: expected steps of one batch before the first has finished.
        label: appended to the counts (e.g. "process 0 of 2").
        stream: where to draw (stderr).
        log_every: seconds between lines when ``stream`` is not a terminal.
    """

    def __init__(self, total: int, steps_per_batch: int, label: str = "", stream=None, log_every: float = 30.0):
        self.total, self.expected, self.label = total, max(steps_per_batch, 1), label
        self.stream = stream or sys.stderr
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self.log_every = log_every
        self.done = self.batch = self.batch_steps = 0
        self.first_step_at: float | None = None  # wall-clock time the first step began (start-up benchmark)
        self.t0 = self.last_line = time.perf_counter()
        self.bar = None
        if self.live:
            fmt = "{desc} {percentage:3.0f}%|{bar}| {postfix} [{elapsed}<{remaining}]"
            self.bar = tqdm(total=total, file=self.stream, desc="syncsde", bar_format=fmt, dynamic_ncols=True)

    def started(self) -> None:
        if self.first_step_at is None:
            self.first_step_at = time.time()

    def begin_batch(self, samples: int) -> None:
        self.batch, self.batch_steps = samples, 0

    def step(self) -> None:
        self.batch_steps += 1
        self.show()

    def end_batch(self) -> None:
        if self.done == 0 and self.batch_steps:
            self.expected = self.batch_steps
        self.done, self.batch, self.batch_steps = self.done + self.batch, 0, 0
        self.show(force=self.done >= self.total)

    def fraction(self) -> float:
        within = min(self.batch_steps / self.expected, 1.0) * self.batch
        return min((self.done + within) / max(self.total, 1), 1.0)

    def status(self) -> str:
        step = f", step {self.batch_steps}/{self.expected}" if self.batch_steps else ""
        return f"{self.done}/{self.total} samples{step}" + (f" ({self.label})" if self.label else "")

    def show(self, force: bool = False) -> None:
        frac = self.fraction()
        if self.bar is not None:
            self.bar.n = round(frac * self.total, 3)
            self.bar.set_postfix_str(self.status(), refresh=False)
            self.bar.refresh()
            return
        now = time.perf_counter()
        if force or now - self.last_line >= self.log_every:
            self.last_line = now
            elapsed = now - self.t0
            eta = clock(elapsed / frac * (1 - frac)) if frac > 0 else "?"
            line = f"syncsde: {self.status()}, {frac:.0%}, {clock(elapsed)} elapsed, ETA {eta}"
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class SampleProgress(ProgressBar):
    """Lightning's progress bar for ``predict``: one :class:`Reporter` per process, drawn by global rank 0 only
    (every process still reports, so the step loops behave the same everywhere)."""

    def __init__(self, log_every: float = 30.0):
        super().__init__()
        self.log_every = log_every
        self.reporter: Reporter | None = None
        self._enabled = True

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_predict_start(self, trainer, pl_module):
        # Lightning's predict sampler gives process r the samples r, r + world, ... of the pending list (with
        # parallel: windows, every process works on every sample)
        pending = len(trainer.datamodule.pending())
        shared = getattr(pl_module, "parallel", "samples") == "windows"
        total = pending if shared else len(range(trainer.global_rank, pending, trainer.world_size))
        label = f"process 0 of {trainer.world_size}" if trainer.world_size > 1 else ""
        stream = sys.stderr if self._enabled and trainer.is_global_zero else _Null()
        steps = getattr(pl_module, "steps_per_batch", None) or getattr(pl_module, "num_inference_steps", 1)
        self.reporter = Reporter(total, steps, label, stream, self.log_every)
        install(self.reporter)

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.reporter.begin_batch(len(batch))

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.reporter.end_batch()

    def on_predict_end(self, trainer, pl_module):
        self.reporter.close()
        install(None)

    def on_exception(self, trainer, pl_module, exception):
        if self.reporter is not None:
            self.reporter.close()
        install(None)


class _Null:
    def write(self, text):
        pass

    def flush(self):
        pass


def install(reporter: Reporter | None) -> None:
    """Make ``reporter`` receive the steps of every loop (None: back to per-loop bars)."""
    global _reporter, last
    _reporter = reporter
    last = reporter or last
