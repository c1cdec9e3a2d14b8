"""Window-parallel sampling (``parallel: windows``, :mod:`syncsde.parallel`): bytes exchanged and time per step on
2 processes against the unsplit run, for wide images of 13, 49 and 193 windows and a 7 × 7 canvas.

    python -m syncsde.benchmarks.parallel [--steps 3] [--windows 13 49 193] [--no-readme]

The embedded tiny model (32-px pixel-space windows, stride 8 px), one sample, DDIM, on the CPU with one torch thread
per process; the two processes talk through ``torch.distributed`` (gloo), as under ``--trainer.strategy ddp``. Per
configuration, in one run: the unsplit run (``parallel: samples``, all windows in one network call per step), the
same on one process in calls of one window (``window_batch: 1``, the grouping ``parallel: windows`` uses), and 2
processes. Time per step = sampling time / steps (after a warm-up), on process 0. Bytes per step = what all processes
sent in one step's exchange (states, and ε where the strategy reads them). The split result is checked to be
bitwise that of one process with the same grouping.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import time
from pathlib import Path

import torch

STRATEGIES = {
    "SyncSDE (paper: chain couplings)": ("SyncSDE", dict(inv_lambda=5.0)),
    "SyncSDE canonical (tiny config)": ("SyncSDE", dict(inv_lambda=20.0, preset="canonical")),
    "SyncTweedies (x̂₀ averaging)": ("SyncTweedies", dict(case=2)),
}


def geometry(windows: int | str) -> dict:
    """Task sizes: a wide image of ``windows`` windows (32 px, stride 8 px), or "7x7" (a 2-D canvas)."""
    if windows == "7x7":
        return dict(height=80, width=80, stride=8, vertical_stride=8)
    return dict(height=32, width=32 + 8 * (int(windows) - 1), stride=8)


def make_task(strategy: str, size: dict, **options):
    from syncsde import strategies
    from syncsde.backbones import DiffusersBackbone
    from tasks import WideImage

    cls, kwargs = STRATEGIES[strategy]
    backbone = DiffusersBackbone(model="syncsde:tiny-t2i")
    return WideImage(
        backbone, getattr(strategies, cls)(**kwargs), num_inference_steps=1, guidance_scale=3.0, progress=False,
        **size, **options,
    )  # fmt: skip


def measure(task, steps: int) -> tuple[float, torch.Tensor]:
    """Seconds per step of one sample (after a one-step warm-up), and its trajectories."""
    batch = [{"prompt": "a sunny day over grass with mountains", "sample_id": 0, "seed": 0}]
    task.num_inference_steps = 1
    task.trajectories(batch)
    task.num_inference_steps = steps
    start = time.perf_counter()
    x0 = task.trajectories(batch)
    return (time.perf_counter() - start) / steps, x0


def worker(rank: int, world: int, port: int, plan: list, steps: int, out: str) -> None:
    import warnings

    import torch.distributed as dist

    from syncsde.cli import quiet

    quiet()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    results = {}
    for key in plan:
        windows, strategy = key
        task = make_task(strategy, geometry(windows), parallel="windows")
        seconds, x0 = measure(task, steps)
        t = task.traffic
        sent = torch.tensor([statistics.mean(t.step_bytes) if t.step_bytes else 0.0, t.seconds / steps])
        dist.all_reduce(sent[:1])  # bytes per step, all processes together
        results[key] = dict(seconds=seconds, bytes=float(sent[0]), exchange=float(sent[1]), x0=x0)
    if rank == 0:
        torch.save(results, out)
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None) -> None:
    import torch.multiprocessing as mp

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3, help="timed sampling steps per configuration")
    p.add_argument("--windows", nargs="+", default=["13", "49", "193", "7x7"], help="window counts (or 7x7)")
    p.add_argument("--no-readme", action="store_true", help="print only; do not write the results file and README")
    args = p.parse_args(argv)
    from syncsde.cli import quiet

    quiet()
    torch.set_num_threads(1)
    plan = [(w, s) for w in args.windows for s in STRATEGIES]
    single = {}
    for key in plan:
        windows, strategy = key
        unsplit = measure(make_task(strategy, geometry(windows)), args.steps)[0]
        grouped, x0 = measure(make_task(strategy, geometry(windows), window_batch=1), args.steps)
        single[key] = dict(unsplit=unsplit, grouped=grouped, x0=x0)
        print(f"1 process: {windows} windows, {strategy}: {unsplit:.3f} s/step (one call), {grouped:.3f} (by window)")
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "split.pt")
        mp.spawn(worker, (2, free_port(), plan, args.steps, out), nprocs=2)
        split = torch.load(out)
    rows, data = [], {}
    for key in plan:
        windows, strategy = key
        one, two = single[key], split[key]
        same = torch.equal(one["x0"], two["x0"])
        per_window = one["unsplit"] / (49 if windows == "7x7" else int(windows))
        label = "7 × 7 canvas" if windows == "7x7" else f"{windows} wide"
        rows.append(
            f"| {label} | {strategy} | {two['bytes'] / 1024:.1f} KiB | {one['unsplit']:.3f} | {one['grouped']:.3f} "
            f"| {two['seconds']:.3f} | {one['unsplit'] / two['seconds']:.2f}× | {two['exchange'] * 1000:.1f} ms "
            f"| {per_window * 1000:.1f} ms | {'yes' if same else 'NO'} |"
        )
        data[f"{windows} {strategy}"] = {
            "bytes_per_step": two["bytes"],
            "unsplit_s_per_step": one["unsplit"],
            "one_process_by_window_s_per_step": one["grouped"],
            "two_processes_s_per_step": two["seconds"],
            "exchange_s_per_step": two["exchange"],
            "bitwise_identical": same,
        }
    table = "\n".join(
        [
            "| windows | strategy | exchanged per step | unsplit s/step (one call) | 1 process s/step (window_batch 1) "
            "| 2 processes s/step | speed-up vs unsplit | exchange per step (process 0) | denoiser per window "
            "| bitwise = 1 process |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"Embedded tiny model (32-px windows, stride 8 px), one sample, {args.steps} DDIM steps, one torch thread "
            "per process, gloo. Measured on a machine with 2 CPU cores shared with other jobs: time ratios are "
            "indicative. `python -m syncsde.benchmarks.parallel`",
        ]
    )
    print(table)
    if not args.no_readme:
        from syncsde.benchmarks.readme import write_result

        write_result("parallel", table, data)


if __name__ == "__main__":
    main()
