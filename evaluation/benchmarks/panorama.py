"""SyncSDE against diffusers' ``StableDiffusionPanoramaPipeline`` (MultiDiffusion): whole runs at equal output size.

    python -m syncsde.evaluation.benchmarks.panorama [--repeats 3] [--steps 2] [--write]

Both make one 512×2048 panorama, each at its own paper's geometry:

- SyncSDE: syncsde's wide-image task as ``configs/wide.yaml`` runs it (SYNCSDE.md §6.3): 13 windows of 64 latents at
  a stride of 16 latents (128 px);
- MultiDiffusion: diffusers' pipeline (BASELINES.md §2), whose window of 64 latents at a stride of 8 latents is fixed:
  25 windows.

One random-weight Stable Diffusion 2 at its real network size (``syncsde.testing.save_random_sd2``: SD-2-base's UNet,
SD's VAE; a small text encoder of SD-2's width, since each run encodes its prompts once) is saved, loaded by syncsde's
backbone, and the diffusers pipeline is built on the very modules the backbone loaded. Both sample with DDIM for
``--steps`` steps at CFG 7.5, call the UNet on 2 rows at a time (one window's CFG pair: the task's ``max_batch`` 2, the
pipeline's ``view_batch_size`` 1) and decode the whole 64×256 latent once with the VAE. A hook on the UNet counts its
rows and CPU time. Each run is timed in CPU time of this process (run it with OMP_NUM_THREADS=1 so that a shared
machine's load does not count), the two methods alternating, ``--repeats`` times each; medians. ``--write`` puts the
table into the README (``panorama``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

PROMPT = "Natural landscape in anime style illustration."
HEIGHT, WIDTH, GUIDANCE = 512, 2048, 7.5


class UNetMeter:
    """Counts the rows a module is called on and the CPU time spent inside it."""

    def __init__(self, module: torch.nn.Module):
        self.rows, self.seconds, self._start = 0, 0.0, 0.0
        module.register_forward_pre_hook(self._enter, with_kwargs=True)
        module.register_forward_hook(self._leave)

    def _enter(self, module, args, kwargs):
        self.rows += (args[0] if args else kwargs["sample"]).shape[0]
        self._start = time.process_time()

    def _leave(self, module, args, output):
        self.seconds += time.process_time() - self._start

    def reset(self) -> None:
        self.rows, self.seconds = 0, 0.0


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="runs of each method (alternating)")
    ap.add_argument("--steps", type=int, default=2, help="sampling steps of every run")
    ap.add_argument("--write", action="store_true", help="write the table into the README (panorama)")
    args = ap.parse_args(argv)
    from diffusers import DDIMScheduler, StableDiffusionPanoramaPipeline

    from syncsde.backbones import StableDiffusion
    from syncsde.strategies import SyncSDE
    from syncsde.tasks import WideImage
    from syncsde.testing import save_random_sd2

    with tempfile.TemporaryDirectory() as tmp:
        backbone = StableDiffusion(str(save_random_sd2(Path(tmp) / "sd2")))
    backbone.adapt_dtype(torch.device("cpu"))
    task = WideImage(
        backbone, SyncSDE(5.0), HEIGHT, WIDTH, stride=128, num_inference_steps=args.steps, guidance_scale=GUIDANCE,
        max_batch=2, progress=False,
    )  # fmt: skip
    pipe = StableDiffusionPanoramaPipeline(
        vae=backbone.vae,
        text_encoder=backbone.text_encoder,
        tokenizer=backbone.tokenizer,
        unet=backbone.unet,
        scheduler=DDIMScheduler.from_config(backbone.scheduler_config()),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    names = ("SyncSDE (syncsde)", "MultiDiffusion (diffusers StableDiffusionPanoramaPipeline)")
    windows = dict(zip(names, (task.n, len(pipe.get_views(HEIGHT, WIDTH)))))
    strides = dict(zip(names, (task.s, 8)))  # the pipeline's get_views default

    def syncsde_run() -> torch.Tensor:
        return task.generate([PROMPT], seed=0)[0].image

    def diffusers_run() -> torch.Tensor:
        generator = torch.Generator().manual_seed(0)
        return pipe(
            PROMPT, height=HEIGHT, width=WIDTH, num_inference_steps=args.steps, guidance_scale=GUIDANCE,
            view_batch_size=1, generator=generator, output_type="pt",
        ).images[0]  # fmt: skip

    runs = dict(zip(names, (syncsde_run, diffusers_run)))
    meter = UNetMeter(backbone.unet)
    results = {name: {"cpu_s": [], "unet_cpu_s": [], "unet_rows": []} for name in runs}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the pipeline's deprecation; SyncSDE's c_t > 2 at 2 steps (time, not images)
        for r in range(args.repeats):
            order = list(runs) if r % 2 == 0 else list(runs)[::-1]  # alternate which method runs first
            for name in order:
                meter.reset()
                start = time.process_time()
                image = runs[name]()
                results[name]["cpu_s"].append(time.process_time() - start)
                results[name]["unet_cpu_s"].append(meter.seconds)
                results[name]["unet_rows"].append(meter.rows)
                assert tuple(image.shape) == (3, HEIGHT, WIDTH), image.shape
                print(f"round {r + 1}: {name}: {results[name]['cpu_s'][-1]:.1f} CPU s", flush=True)

    med = {name: {k: statistics.median(v) for k, v in res.items()} for name, res in results.items()}
    sync, multi = (med[name] for name in runs)
    threads = torch.get_num_threads()
    lines = [
        f"One {HEIGHT}×{WIDTH} panorama, {args.steps} DDIM steps, CFG {GUIDANCE}, on a random-weight Stable Diffusion "
        "2 at its real size (SD-2-base's UNet, SD's VAE), the UNet called on 2 rows at a time, one VAE decode of the "
        f"whole latent; CPU time, {threads} thread(s), medians of {args.repeats} alternating runs each, on a shared "
        "machine (`python -m syncsde.evaluation.benchmarks.panorama`):",
        "",
        "| method | windows (stride, latents) | UNet rows per run | CPU s per run | of which UNet | rest (VAE, text, "
        "sampling) |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in med.items():
        lines.append(
            f"| {name} | {windows[name]} ({strides[name]}) | {m['unet_rows']:.0f} | {m['cpu_s']:.1f} | "
            f"{m['unet_cpu_s']:.1f} | {m['cpu_s'] - m['unet_cpu_s']:.1f} |"
        )
    lines += [
        "",
        f"SyncSDE / MultiDiffusion: network work {sync['unet_rows'] / multi['unet_rows']:.2f}× (UNet rows), UNet time "
        f"{sync['unet_cpu_s'] / multi['unet_cpu_s']:.2f}×, whole run {sync['cpu_s'] / multi['cpu_s']:.2f}×.",
    ]
    table = "\n".join(lines)
    print(table)
    data = {"steps": args.steps, "repeats": args.repeats, "threads": threads, "runs": results, "medians": med}
    if args.write:
        from syncsde.evaluation.benchmarks.readme import write_result

        write_result("panorama", table, data)
    return data


if __name__ == "__main__":
    main()
