"""Synchronization overhead: the wide-image task with SyncSDE vs. the same trajectories uncoupled, side by side.

    python -m syncsde.benchmarks.overhead [--steps 5] [--repeats 3] [--width 2048]

Both runs use the same tiny random-weight Stable Diffusion pipeline at the paper's geometry (64-latent windows,
stride 16, 13 patches for 2048 px), the same seeds and one batched network call per step; only the strategy
differs. Runs alternate to share machine conditions; the best time of each is compared.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import torch

from syncsde.backbones import StableDiffusion
from syncsde.strategies import Independent, SyncSDE
from syncsde.testing import save_tiny_sd
from tasks import WideImage


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--width", type=int, default=2048)
    args = ap.parse_args(argv)
    # few steps make SyncSDE's first coefficients exceed 2 (it warns); this script measures time, not images
    warnings.filterwarnings("ignore", message="SyncSDE coefficient")
    with tempfile.TemporaryDirectory() as tmp:
        backbone = StableDiffusion(str(save_tiny_sd(Path(tmp) / "sd", sample_size=64)))
    batch = [{"prompt": "a wide landscape", "sample_id": 0, "seed": 0}]
    tasks = {
        name: WideImage(backbone, strategy, width=args.width, num_inference_steps=args.steps, progress=False)
        for name, strategy in (("syncsde", SyncSDE(5.0)), ("independent", Independent()))
    }
    best = {name: float("inf") for name in tasks}
    for task in tasks.values():  # warm-up
        task.trajectories(batch)
    for _ in range(args.repeats):
        for name, task in tasks.items():
            start = time.perf_counter()
            task.trajectories(batch)
            best[name] = min(best[name], time.perf_counter() - start)
    n = tasks["syncsde"].n
    print(f"wide image, {n} patches, {args.steps} steps, tiny SD UNet on {torch.get_num_threads()} CPU threads")
    print(f"{'method':<12} {'best s':>8}")
    for name, t in best.items():
        print(f"{name:<12} {t:8.3f}")
    overhead = best["syncsde"] / best["independent"] - 1
    print(f"synchronization overhead: {100 * overhead:+.2f}%  (target < 5%)")


if __name__ == "__main__":
    main()
