"""Synchronization overhead: the strategy's work per step against the denoiser call, timed separately.

    python -m syncsde.evaluation.benchmarks.overhead [--steps 10] [--repeats 3] [--width 2048] [--no-readme]

The wide-image task on a tiny random-weight Stable Diffusion pipeline at the paper's geometry (64-latent windows,
stride 16: 13 windows for 2048 px, one batched network call of 26 rows per step with CFG), sampled once with SyncSDE
and once with independent windows (same seeds), the two runs alternating ``--repeats`` times. Inside each step the
script times the denoiser call (the guided network call, as the sampler makes it) and the strategy's work (its
``before_denoise`` and ``step``) separately; each step gives one interleaved pair (strategy, denoiser). The figures are
medians over all pairs: the strategy step in ms, the denoiser call in ms, and the median of the per-pair ratios
strategy/denoiser. Whole-run timings cannot resolve a ratio this small (machine noise is larger); a pair shares the
machine's state of the moment. The denoiser is tiny here, so the ratio is an upper bound for real networks (an SD-size
UNet call is 100–1000× longer on the same machine). Work done once per batch (the couplings, maps and masks of
``task.problem``) is outside the step and not counted.

The table goes to ``notebooks/results/overhead.md`` and the README block ``overhead``
(:func:`syncsde.evaluation.benchmarks.readme.write_result`).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from unittest import mock

import torch

import syncsde.task
from syncsde.backbones import StableDiffusion
from syncsde.evaluation.benchmarks.readme import write_result
from syncsde.strategies import Independent, SyncSDE
from syncsde.tasks import WideImage
from syncsde.testing import save_tiny_sd


class StepTimer:
    """Times, for each sampling step of a task, its strategy's work and its denoiser call."""

    def __init__(self, task):
        self.task, self.pairs, self._strategy = task, [], 0.0

    def _timed(self, fn, kind):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            elapsed = time.perf_counter() - start
            if kind == "denoiser":
                self.pairs.append([None, elapsed])  # the strategy's step follows the call
            elif kind == "before":
                self._strategy = elapsed
            else:
                self.pairs[-1][0] = self._strategy + elapsed
            return out

        return wrapper

    def run(self, batch) -> None:
        strategy = self.task.strategy
        with (
            mock.patch.object(syncsde.task, "guided_eps", self._timed(syncsde.task.guided_eps, "denoiser")),
            mock.patch.object(strategy, "before_denoise", self._timed(strategy.before_denoise, "before")),
            mock.patch.object(strategy, "step", self._timed(strategy.step, "step")),
        ):
            self.task.trajectories(batch)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--no-readme", action="store_true", help="print only; write no results file")
    args = ap.parse_args(argv)
    # few steps make SyncSDE's first coefficients exceed 2 (it warns); this script measures time, not images
    warnings.filterwarnings("ignore", message="SyncSDE coefficient")
    with tempfile.TemporaryDirectory() as tmp:
        backbone = StableDiffusion(str(save_tiny_sd(Path(tmp) / "sd", sample_size=64)))
    batch = [{"prompt": "a wide landscape", "sample_id": 0, "seed": 0}]
    timers = {
        name: StepTimer(WideImage(backbone, strategy, width=args.width, num_inference_steps=args.steps, progress=False))
        for name, strategy in (("SyncSDE", SyncSDE(5.0)), ("independent", Independent()))
    }
    for timer in timers.values():  # warm-up, not counted
        timer.run(batch)
        timer.pairs.clear()
    for _ in range(args.repeats):
        for timer in timers.values():
            timer.run(batch)
    n, threads = timers["SyncSDE"].task.n, torch.get_num_threads()
    rows = {}
    for name, timer in timers.items():
        strategy, denoiser = zip(*timer.pairs)
        rows[name] = {
            "pairs": len(timer.pairs),
            "strategy_ms": 1e3 * statistics.median(strategy),
            "denoiser_ms": 1e3 * statistics.median(denoiser),
            "ratio": statistics.median(s / d for s, d in timer.pairs),
        }
    head = (
        f"Wide image {args.width} px: {n} windows of 64 latents, one denoiser call of {2 * n} rows per step (tiny "
        f"random-weight SD UNet), {args.steps} steps × {args.repeats} runs per method, alternating; {threads} CPU "
        f"thread(s) on a shared machine (`python -m syncsde.evaluation.benchmarks.overhead`). Medians over the steps; the "
        f"ratio is the median of each step's strategy/denoiser pair:"
    )
    table = [
        "| strategy | pairs | strategy step (ms) | denoiser call (ms) | strategy / denoiser |",
        "|---|---|---|---|---|",
        *(
            f"| {name} | {r['pairs']} | {r['strategy_ms']:.2f} | {r['denoiser_ms']:.1f} | {100 * r['ratio']:.3f}% |"
            for name, r in rows.items()
        ),
    ]
    extra = rows["SyncSDE"]["strategy_ms"] - rows["independent"]["strategy_ms"]
    tail = (
        f"SyncSDE's step costs {extra:+.2f} ms over an independent step, {100 * rows['SyncSDE']['ratio']:.3f}% of a "
        f"denoiser call of this tiny network (target < 5%)."
    )
    markdown = "\n\n".join([head, "\n".join(table), tail])
    print(markdown)
    data = {"width": args.width, "windows": n, "steps": args.steps, "repeats": args.repeats, "threads": threads,
            "rows": rows}  # fmt: skip
    if not args.no_readme:
        print(f"wrote {write_result('overhead', markdown, data)}")
    return data


if __name__ == "__main__":
    main()
