"""Memory is flat in the number of samples: ``syncsde predict`` on the embedded wide config for 500 samples, with the
process's peak resident memory read after 50 and after 500 samples.

    python -m syncsde.evaluation.benchmarks.memory [--samples 500] [--steps 2]

The CLI hands every result to the writer and releases it (predictions are not returned), so the peak after 500
samples should exceed the peak after 50 by little: the target is under 50 MiB. The number of steps does not change
what is held between samples, so a short schedule keeps the run short.
"""

from __future__ import annotations

import argparse
import importlib
import resource
import sys
import tempfile

from lightning.pytorch.callbacks import Callback

from syncsde.evaluation.benchmarks.readme import write_result

PEAKS: dict[int, float] = {}  # samples -> peak MiB, filled by the callback (in the module the CLI imports)


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class PeakMemory(Callback):
    """Records the peak RSS after the 50th sample and after the last."""

    def __init__(self):
        self.samples = 0

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.samples += len(batch)
        if self.samples == 50 or self.samples % 100 == 0:
            PEAKS[self.samples] = peak_mib()

    def on_predict_end(self, trainer, pl_module):
        PEAKS[self.samples] = peak_mib()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--steps", type=int, default=1)
    args = ap.parse_args(argv)
    from syncsde.cli import main as cli

    prompts = "[a sunset over the sea with mountains, a sunny day over grass with mountains]"
    with tempfile.TemporaryDirectory() as out:
        try:
            cli(
                [
                    "predict",
                    "--config",
                    "configs/tiny/wide.yaml",
                    "--output_dir",
                    out,
                    "--data.init_args.prompts",
                    prompts,
                    "--data.init_args.samples_per_prompt",
                    str(args.samples // 2),
                    "--model.init_args.num_inference_steps",
                    str(args.steps),
                    "--trainer.callbacks+=syncsde.evaluation.benchmarks.memory.PeakMemory",
                ]
            )
        except SystemExit as e:
            if e.code:
                raise
    # run as a script this file is __main__; the CLI instantiated the callback from syncsde.evaluation.benchmarks.memory
    peaks = importlib.import_module("syncsde.evaluation.benchmarks.memory").PEAKS
    early, late = peaks[50], peaks[max(peaks)]
    growth = late - early
    table = (
        f"| peak RSS after 50 samples | after {max(peaks)} | growth |\n|---|---|---|\n"
        f"| {early:.0f} MiB | {late:.0f} MiB | {growth:+.1f} MiB |\n\n"
        f"(`python -m syncsde.evaluation.benchmarks.memory`: embedded wide config, {args.steps} steps, target growth < 50 MiB)"
    )
    print(table)
    data = {"peaks_mib": peaks, "growth_mib": growth, "samples": max(peaks), "steps": args.steps}
    write_result("memory", table, data)
    if growth >= 50:
        print(f"memory grew by {growth:.1f} MiB (target < 50)", file=sys.stderr)
    return data


if __name__ == "__main__":
    main()
