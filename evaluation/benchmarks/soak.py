"""Soak: the embedded wide config, 200 samples over 2 processes, killed (SIGKILL, the whole process group) 3 times at
random moments and restarted each time; then every sample must exist exactly once and be byte-identical to an
uninterrupted run of the same command. Not part of the test suite (it takes a while):

    python -m syncsde.evaluation.benchmarks.soak [--samples 200] [--kills 3] [--steps 10] [--seed 0]

Both runs use 2 CPU processes (DDP) with 1 thread each: bitwise equality needs the same thread count per process.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from syncsde.evaluation.benchmarks.readme import ROOT, write_result

PROMPTS = (
    "[a sunset over the sea with mountains, a sunny day over grass with mountains, a night sky over snow, "
    "a sunny day over sand]"
)


def command(out: Path, samples: int, steps: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "syncsde.cli",
        "predict",
        "--config",
        "configs/tiny/wide.yaml",
        "--output_dir",
        str(out),
        "--data.init_args.prompts",
        PROMPTS,
        "--data.init_args.samples_per_prompt",
        str(samples // 4),
        "--model.init_args.num_inference_steps",
        str(steps),
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "2",
        "--trainer.strategy",
        "ddp",
    ]


def start(cmd: list[str], log) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True)


def finished(folder: Path) -> list[int]:
    return sorted(int(p.stem) for p in folder.glob("[0-9]*.json"))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        reference, soak = tmp / "reference", tmp / "soak"
        log = open(tmp / "log.txt", "w")
        t0 = time.time()
        if start(command(reference, args.samples, args.steps), log).wait():
            raise RuntimeError(f"the uninterrupted run failed: {(tmp / 'log.txt').read_text()[-3000:]}")
        uninterrupted = time.time() - t0

        t0, kills = time.time(), []
        for _ in range(args.kills):
            before = len(finished(soak))
            proc = start(command(soak, args.samples, args.steps), log)
            # let it make at least a few new samples, then kill it at a random moment
            target = before + rng.randint(3, max(4, (args.samples - before) // (args.kills + 1)))
            while len(finished(soak)) < target and proc.poll() is None:
                time.sleep(0.1)
            time.sleep(rng.uniform(0, 2))
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            kills.append({"finished_before": before, "finished_at_kill": len(finished(soak))})
        code = start(command(soak, args.samples, args.steps), log).wait()
        soaked = time.time() - t0

        ids = finished(soak)
        pngs = sorted(p.name for p in soak.glob("[0-9]*.png"))
        same = [(reference / n).exists() and (soak / n).read_bytes() == (reference / n).read_bytes() for n in pngs]
        identical = sum(same)
        manifest_file = soak / "manifest.json"
        manifest = json.loads(manifest_file.read_text())["num_samples"] if manifest_file.exists() else 0
        leftovers = [str(p.relative_to(soak)) for p in soak.rglob("*.tmp")]
        ok = (
            code == 0
            and ids == list(range(args.samples))
            and len(pngs) == args.samples
            and identical == args.samples
            and manifest == args.samples
            and not leftovers
        )
    at = ", ".join(str(k["finished_at_kill"]) for k in kills)
    table = (
        "| samples | processes | kills (SIGKILL; samples finished at each) | every sample exactly once | "
        "byte-identical to the uninterrupted run | temporary files left | time: soak / uninterrupted |\n"
        "|---|---|---|---|---|---|---|\n"
        f"| {args.samples} | 2 | {len(kills)} ({at}) | {'yes' if ids == list(range(args.samples)) else 'no'} "
        f"({len(ids)} sidecars, manifest {manifest}) | {identical}/{args.samples} | {len(leftovers)} | "
        f"{soaked:.0f} s / {uninterrupted:.0f} s |\n\n"
        f"(`python -m syncsde.evaluation.benchmarks.soak`: embedded wide config, {args.steps} steps, seed {args.seed}, "
        "2 CPU processes with 1 thread each on a shared 2-core machine)"
    )
    print(table)
    data = {
        "ok": ok,
        "kills": kills,
        "samples": args.samples,
        "identical": identical,
        "leftovers": leftovers,
        "soak_s": soaked,
        "uninterrupted_s": uninterrupted,
        "steps": args.steps,
        "seed": args.seed,
    }
    write_result("soak", table, data)
    if not ok:
        sys.exit(1)
    return data


if __name__ == "__main__":
    main()
