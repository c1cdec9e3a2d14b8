"""Window-parallel sampling (``parallel: windows``, :mod:`syncsde.parallel`): bytes exchanged and time per step on
2 processes against the unsplit run, for wide images of 13, 49 and 193 windows, a 7 × 7 canvas and the mesh's 10 views.

    python -m syncsde.evaluation.benchmarks.parallel [--steps 3] [--windows 13 49 193 7x7 mesh] [--no-readme]

The embedded latent model (64-px windows = 16 latents, stride 16 px), one sample, DDIM, on the CPU with one torch thread
per process; the two processes talk through ``torch.distributed`` (gloo), as under ``--trainer.strategy ddp``. Per
configuration, in one run: the unsplit run (``parallel: samples``, all windows in one network call per step), the
same on one process in calls of one window (``window_batch: 1``, the grouping ``parallel: windows`` uses), and 2
processes. Time per step = sampling time / steps after a one-step warm-up (wall on process 0; CPU of the busiest
process). Bytes per step = what all processes sent in one step's exchange (states, and ε where the strategy reads
them; for the mesh also the keys/values of every self-attention layer, with multi-view attention on as in the tiny
config); "exchange alone" = the median time of those messages with both processes waiting for them (a barrier first),
i.e. the cost of the exchange without the waiting for a slower peer. The split result is checked to be bitwise that
of one process with the same grouping.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

STRATEGIES = {
    "SyncSDE (paper: chain couplings)": ("SyncSDE", dict(inv_lambda=5.0)),
    "SyncSDE canonical (tiny config)": ("SyncSDE", dict(inv_lambda=20.0, preset="canonical")),
    "SyncTweedies (x̂₀ averaging)": ("SyncTweedies", dict(case=2)),
}


MESH = "SyncSDE (paper: joint bake of earlier views) + multi-view attention"
BATCH = [
    {
        "prompt": "a sunny day over grass with mountains",
        "sample_id": 0,
        "seed": 0,
        "mesh": str(Path(__file__).resolve().parents[2] / "configs/assets/ball.obj"),  # read by the mesh task only
    }
]


def geometry(windows: int | str) -> dict:
    """Task sizes: a wide image of ``windows`` windows (64 px, stride 16 px), or "7x7" (a 2-D canvas)."""
    if windows == "7x7":
        return dict(height=160, width=160, stride=16, vertical_stride=16)
    return dict(height=64, width=64 + 16 * (int(windows) - 1), stride=16)


def make_task(strategy: str, windows: int | str, **options):
    from syncsde import strategies
    from syncsde.backbones import StableDiffusion
    from syncsde.tasks import MeshTexturing, WideImage

    backbone = StableDiffusion(model="syncsde:tiny-ldm")
    if windows == "mesh":  # configs/tiny/mesh.yaml, DDIM
        return MeshTexturing(
            backbone, strategies.SyncSDE(5.0, sync_t_min=200), view_size=64, latent_texture_size=64,
            rgb_texture_size=128, prompt_prefix="", view_suffix=False, negative_prompt="", sampler="ddim",
            num_inference_steps=1, guidance_scale=3.0, progress=False, **options,
        )  # fmt: skip
    cls, kwargs = STRATEGIES[strategy]
    size = geometry(windows)
    return WideImage(
        backbone, getattr(strategies, cls)(**kwargs), num_inference_steps=1, guidance_scale=3.0, progress=False,
        **size, **options,
    )  # fmt: skip


def measure(task, steps: int) -> tuple[float, float, torch.Tensor]:
    """Wall and CPU seconds per step of one sample (after a one-step warm-up), and its trajectories."""
    task.num_inference_steps = 1
    task.trajectories(BATCH)
    task.num_inference_steps = steps
    wall, cpu = time.perf_counter(), time.process_time()
    x0 = task.trajectories(BATCH)
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps, x0


def exchange_alone(task, repeats: int = 20) -> float:
    """Median seconds of one step's exchange with both processes at it (a barrier first): the messages alone."""
    import torch.distributed as dist

    split = task.split
    side = task.view_size // task.backbone.scale_factor if hasattr(task, "view_size") else task.w
    shape = (1, len(split.local), task.backbone.channels, side, side)
    x, own = torch.zeros(shape), torch.zeros(1, len(split.own), *shape[2:])
    times = []
    for _ in range(repeats):
        dist.barrier()
        start = time.perf_counter()
        split.complete(x, own, "the benchmark")
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def worker(rank: int, world: int, port: int, plan: list, steps: int, out: str) -> None:
    import torch.distributed as dist

    from syncsde.cli import quiet

    quiet()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    results = {}
    for key in plan:
        windows, strategy = key
        task = make_task(strategy, windows, parallel="windows")
        wall, cpu, x0 = measure(task, steps)
        sent = torch.tensor([sent_per_step(task, steps)])
        dist.all_reduce(sent)  # bytes per step, all processes together
        busiest = torch.tensor([cpu])
        dist.all_reduce(busiest, dist.ReduceOp.MAX)
        alone = exchange_alone(task)
        results[key] = dict(wall=wall, cpu=float(busiest), bytes=float(sent), exchange=alone, x0=x0)
    if rank == 0:
        torch.save(results, out)
    dist.destroy_process_group()


def sent_per_step(task, steps: int) -> float:
    """Bytes this process sent per step of the last sampling: the states (and ε) between steps, and the mesh's
    self-attention keys/values."""
    states = statistics.mean(task.split.step_bytes) if task.split.step_bytes else 0.0
    attention = getattr(task, "attention", None)  # the mesh's multi-view attention of the last sampling
    return states + (sum(sum(e.step_bytes) for e in attention.exchanges.values()) / steps if attention else 0.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None) -> None:
    import torch.multiprocessing as mp

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3, help="timed sampling steps per configuration")
    p.add_argument(
        "--windows", nargs="+", default=["13", "49", "193", "7x7", "mesh"], help="window counts (or 7x7, mesh)"
    )
    p.add_argument("--no-readme", action="store_true", help="print only; do not write the results file and README")
    args = p.parse_args(argv)
    from syncsde.cli import quiet

    quiet()
    torch.set_num_threads(1)
    plan = [(w, s) for w in args.windows for s in ([MESH] if w == "mesh" else STRATEGIES)]
    warnings.filterwarnings("ignore", message="SyncSDE coefficient")  # few steps: c_t > 2 (timing only)
    single = {}
    for key in plan:
        windows, strategy = key
        wall, cpu, _ = measure(make_task(strategy, windows), args.steps)
        grouped, grouped_cpu, x0 = measure(make_task(strategy, windows, window_batch=1), args.steps)
        single[key] = dict(wall=wall, cpu=cpu, grouped=grouped, grouped_cpu=grouped_cpu, x0=x0)
        print(f"1 process: {windows} windows, {strategy}: {wall:.3f} s/step (one call), {grouped:.3f} (by window)")
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "split.pt")
        mp.spawn(worker, (2, free_port(), plan, args.steps, out), nprocs=2)
        split = torch.load(out)
    rows, data = [], {}
    for key in plan:
        windows, strategy = key
        one, two = single[key], split[key]
        same = torch.equal(one["x0"], two["x0"])
        n = {"7x7": 49, "mesh": 10}.get(windows) or int(windows)
        label = {"7x7": "7 × 7 canvas", "mesh": "10 mesh views"}.get(windows, f"{windows} wide")
        rows.append(
            f"| {label} | {strategy} | {two['bytes'] / 1024:.1f} KiB | {two['exchange'] * 1000:.2f} ms "
            f"| {one['wall'] / n * 1000:.1f} ms | {one['wall']:.2f} / {one['grouped']:.2f} / {two['wall']:.2f} "
            f"| {one['cpu']:.2f} / {one['grouped_cpu']:.2f} / {two['cpu']:.2f} "
            f"({two['cpu'] / one['grouped_cpu']:.2f}×) | {'yes' if same else 'NO'} |"
        )
        data[f"{windows} {strategy}"] = {
            "windows": n,
            "bytes_per_step": two["bytes"],
            "exchange_alone_s": two["exchange"],
            "unsplit_s_per_step": one["wall"],
            "one_process_window_batch_1_s_per_step": one["grouped"],
            "one_process_window_batch_1_cpu_s_per_step": one["grouped_cpu"],
            "two_processes_s_per_step": two["wall"],
            "unsplit_cpu_s_per_step": one["cpu"],
            "two_processes_busiest_cpu_s_per_step": two["cpu"],
            "bitwise_identical": same,
        }
    table = "\n".join(
        [
            "| windows | strategy | exchanged per step (all processes) | exchange alone | unsplit time per window "
            "| s/step: unsplit (one call) / 1 process, window_batch 1 / 2 processes "
            "| CPU s/step: the same three (busiest process; × the window_batch 1 run) | bitwise = 1 process |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"Embedded latent model (64-px windows = 16 × 16 latents of 4 channels, stride 16 px), one sample, "
            f"{args.steps} DDIM steps, one "
            "torch thread per process, gloo on one machine; the mesh: configs/tiny/mesh.yaml (10 views of 64 px) with "
            "DDIM, its bytes including the keys/values of every self-attention layer. Exchange alone: the median of "
            "one step's messages between steps with both processes at it (for the mesh, without those inside the "
            "network). Wall times were measured on a machine with 2 CPU cores shared with other jobs, so "
            "the wall-time ratios are indicative only; CPU seconds show how the work divides. "
            "`python -m syncsde.evaluation.benchmarks.parallel`",
        ]
    )
    print(table)
    if not args.no_readme:
        from syncsde.evaluation.benchmarks.readme import write_result

        write_result("parallel", table, data)


if __name__ == "__main__":
    main()
