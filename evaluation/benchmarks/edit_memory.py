"""Peak memory of the editing mask pass (SYNCSDE.md §6.2) at 512 px: a random-weight UNet of SD-1.4's real size
(860 M parameters, float32) on the CPU, one network call per variant, side by side in one run.

    python -m syncsde.evaluation.benchmarks.edit_memory [--size 512] [--threads 1]

Each variant runs in a fresh process of its own, so that no allocator cache carries over (and with glibc returning
every large block when it is freed), and reports the peak resident memory above what the process held just before
the call (the UNet loaded):

- ``sampling``: a plain network call on one row, with the network's own attention processors (what a step of the
  mask pass costs without recording);
- ``recording``: the same call inside :class:`~syncsde.attention.AttentionRecorder` (mask_res 16): the statistics are
  formed from each watched layer's query and key, a block of rows at a time;
- ``materialised``: the same call with diffusers' ``AttnProcessor`` on the watched layers and the statistics read
  from the full probabilities it forms, then averaged over heads — how syncsde recorded before (and the official
  code records: it keeps every layer's probabilities);
- ``stage 2``: a plain call on six rows (three trajectories with both guidance branches), a step of the edit itself.

Writes the table into the README (``notebooks/results/edit_memory.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

from syncsde.attention import AttentionRecorder

# glibc: every block of 128 KiB or more its own mapping, returned when freed, so that the resident set follows the
# memory in use (without it, freed blocks stay resident by chance and the peaks move by ~100 MiB between runs)
MALLOC_ENV = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024), "MALLOC_TRIM_THRESHOLD_": str(128 * 1024)}
VARIANTS = {
    "sampling": "plain call, 1 row",
    "recording": "AttentionRecorder (query/key in row blocks), 1 row",
    "materialised": "full probabilities (diffusers AttnProcessor), 1 row",
    "stage2": "plain call, 6 rows (stage 2)",
}


def sd14_unet():
    """Stable Diffusion 1.4's UNet architecture with random weights."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=768,
        attention_head_dim=8,
    ).eval()


def materialise(unet, mask_res: int) -> None:
    """The watched layers form their probabilities (diffusers' AttnProcessor), and their head means are summed."""
    from diffusers.models.attention_processor import AttnProcessor

    watched = AttentionRecorder(unet, mask_res)
    sums = {}
    for layer in [watched.self_layer, *watched.cross_layers]:
        layer.set_processor(AttnProcessor())

        def scores(query, key, mask=None, original=layer.get_attention_scores, layer=layer):
            probs = original(query, key, mask)
            mean = probs.view(-1, layer.heads, *probs.shape[1:]).mean(1).float()
            sums[layer] = mean if layer not in sums else sums[layer] + mean
            return probs

        layer.get_attention_scores = scores


def _memory_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))


def child(variant: str, size: int) -> dict:
    """Build the UNet, then measure one call: peak RSS above the RSS before it (Linux: VmHWM reset via clear_refs)."""
    torch.manual_seed(0)
    unet = sd14_unet()
    rows = 6 if variant == "stage2" else 1
    x = torch.randn(rows, 4, size // 8, size // 8)
    t = torch.full((rows,), 500)
    emb = torch.randn(rows, 77, 768)
    if variant == "materialised":
        materialise(unet, 16)
    before = _memory_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak to the current RSS
    start = time.process_time()
    with torch.no_grad():
        if variant == "recording":
            with AttentionRecorder(unet, 16) as rec:
                rec.begin_step([[5]])
                unet(x, t, encoder_hidden_states=emb)
                rec.end_step()
        else:
            unet(x, t, encoder_hidden_states=emb)
    seconds = time.process_time() - start
    peak = _memory_kib("VmHWM")
    return {"variant": variant, "weights_mib": before / 1024, "peak_mib": (peak - before) / 1024, "cpu_s": seconds}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512, help="image side in pixels (latent side = size / 8)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--child", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child(args.child, args.size)))
        return
    results = {}
    for variant in VARIANTS:
        command = [sys.executable, "-m", "syncsde.evaluation.benchmarks.edit_memory", "--child", variant]
        out = subprocess.run(
            command + ["--size", str(args.size), "--threads", str(args.threads)],
            capture_output=True,
            text=True,
            check=True,
            env=MALLOC_ENV,
        )
        results[variant] = json.loads(out.stdout.strip().splitlines()[-1])
        r = results[variant]
        print(f"{variant:<13} peak above the loaded UNet {r['peak_mib']:6.0f} MiB, CPU {r['cpu_s']:.1f} s", flush=True)
    base = results["sampling"]["peak_mib"]
    rows = [
        f"| {VARIANTS[v]} | {r['peak_mib']:.0f} | {r['peak_mib'] / base:.2f} | {r['cpu_s']:.1f} |"
        for v, r in results.items()
    ]
    saved = results["materialised"]["peak_mib"] / results["recording"]["peak_mib"]
    markdown = "\n".join(
        [
            f"Editing mask pass at {args.size} px: one call of a random-weight UNet of SD-1.4's size (float32; the "
            f"process holds {results['sampling']['weights_mib']:.0f} MiB before the call), each variant in a fresh "
            f"process, {args.threads} CPU thread(s) on a shared machine "
            "(`python -m syncsde.evaluation.benchmarks.edit_memory`):",
            "",
            "| network call | peak memory above the process before the call (MiB) | × plain call | CPU s |",
            "|---|---|---|---|",
            *rows,
            "",
            f"Recording from query and key: a {saved:.1f}× lower peak than materialising the probabilities, "
            f"{results['recording']['peak_mib'] / base:.2f}× a plain call.",
        ]
    )
    print(markdown)
    from syncsde.evaluation.benchmarks.readme import write_result

    write_result("edit_memory", markdown, {"size": args.size, "threads": args.threads, "results": results})


if __name__ == "__main__":
    main()
