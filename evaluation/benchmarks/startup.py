"""Start-up cost, measured side by side in one run (medians of interleaved repetitions, wall-clock):

- ``syncsde --help`` against ``python -c "import torch"`` (target: at most 2×);
- a one-sample run of the embedded wide config: the share of its wall time spent before the first sampling step
  (target: under a third);
- the README's first command (the embedded wide config as shipped, with the CLI's default thread count), once.

    python -m syncsde.evaluation.benchmarks.startup [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from syncsde.evaluation.benchmarks.readme import ROOT, write_result

ONE_SAMPLE = """
import json, sys, time
from syncsde import progress
from syncsde.cli import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    if e.code:
        raise
print(json.dumps({"first_step_at": progress.last.first_step_at}))
"""


def timed(cmd: list[str], env: dict) -> tuple[float, str]:
    start = time.time()
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"{cmd} failed: {r.stderr[-2000:]}")
    return time.time() - start, r.stdout


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}
    torch_s, help_s, fractions, totals = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):  # interleaved, so that the machine's load hits every measure alike
            torch_s.append(timed([sys.executable, "-c", "import torch"], env)[0])
            help_s.append(timed([sys.executable, "-m", "syncsde.cli", "--help"], env)[0])
            cmd = [
                sys.executable,
                "-c",
                ONE_SAMPLE,
                "predict",
                "--config",
                "configs/tiny/wide.yaml",
                "--output_dir",
                str(Path(tmp) / f"run{i}"),
                "--data.init_args.prompts",
                "[a sunny day over sand]",
            ]
            start = time.time()
            total, out = timed(cmd, env)
            first = json.loads(out.strip().splitlines()[-1])["first_step_at"]
            fractions.append((first - start) / total)
            totals.append(total)
        readme_env = {k: v for k, v in env.items() if k != "OMP_NUM_THREADS"}  # the CLI's default: all cores
        readme_cmd = [sys.executable, "-m", "syncsde.cli", "predict", "--config", "configs/tiny/wide.yaml"]
        load = os.getloadavg()[0]
        readme_s = timed([*readme_cmd, "--output_dir", str(Path(tmp) / "readme")], readme_env)[0]
        load = max(load, os.getloadavg()[0])
    ratio = statistics.median(h / t for h, t in zip(help_s, torch_s))
    fraction = statistics.median(fractions)
    table = (
        "| measure | median | target |\n|---|---|---|\n"
        f'| `syncsde --help` / `python -c "import torch"` | {ratio:.2f}× '
        f"({statistics.median(help_s):.2f} s / {statistics.median(torch_s):.2f} s) | ≤ 2× |\n"
        f"| one-sample embedded wide run: time before the first step | {fraction:.0%} of "
        f"{statistics.median(totals):.1f} s | < 33% |\n\n"
        f"(`python -m syncsde.evaluation.benchmarks.startup`: {args.repeats} interleaved repetitions, "
        f"{args.threads} thread(s), "
        "wall-clock on a shared 2-core CPU machine)"
    )
    print(table)
    cores = len(os.sched_getaffinity(0))
    cfg = yaml.safe_load((ROOT / "configs/tiny/wide.yaml").read_text())
    data_args, model_args = cfg["data"]["init_args"], cfg["model"]["init_args"]
    samples = len(data_args["prompts"]) * data_args.get("samples_per_prompt", 1)
    quick = (
        f"The first command takes {readme_s:.0f} s ({samples} samples of {model_args['num_inference_steps']} steps, "
        f"start-up and model loading included; measured by `python -m syncsde.evaluation.benchmarks.startup` on {cores} CPU "
        f"cores shared with other work: load average up to {load:.1f} during the measure, so expect less on an idle "
        "machine)."
    )
    print(quick)
    write_result("quickstart", quick, {"seconds": readme_s, "cores": cores, "load_average": load})
    data = {
        "readme_command_s": readme_s,
        "help_over_torch": ratio,
        "before_first_step": fraction,
        "help_s": help_s,
        "torch_s": torch_s,
        "run_s": totals,
        "fractions": fractions,
        "threads": args.threads,
    }
    write_result("startup", table, data)
    return data


if __name__ == "__main__":
    main()
