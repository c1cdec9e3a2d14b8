"""Tiled VAE decoding: peak memory with and without tiling, and how far the tiled image is from the untiled one.

    python -m syncsde.evaluation.benchmarks.vae_tiling [--sizes 2048x2048 512x2048] [--tile 512] [--no-readme]

A random-weight ``AutoencoderKL`` of Stable Diffusion's real size (block channels 128/256/512/512, two resnets per
block, 83.7 M parameters, scale factor 8) decodes one random latent per canvas size, untiled and through
:class:`syncsde.backbones.diffusers.VaeTiling` (diffusers' tiling, 512-px tiles, overlap 0.25), on the CPU in float32.
Each decode runs in its own child process, and its peak memory is the child's peak resident set size minus its size
once the model and the latent are in memory: the working memory of the decode alone. The two decodes of one size
use the same weights and latent (seeded), so the max abs difference of the images in [0, 1] is the tiling's error.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from syncsde.backbones.diffusers import DiffusersModel, VaeTiling

SD_VAE = dict(
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    sample_size=512,
    scaling_factor=0.18215,
)


class _VaeOnly(torch.nn.Module):
    """The part of a Stable Diffusion backbone that VaeTiling uses: the VAE, its scale factor and its decode."""

    sample_size, scale_factor, vae_scale_factor = 64, 8, 8
    decode = DiffusersModel.decode

    def __init__(self, vae):
        super().__init__()
        self.vae = vae


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def child(height: int, width: int, tiled: bool, tile: int, out: str) -> None:
    """Decode one latent and report (peak MiB above setup, seconds) as JSON on stdout; the image goes to ``out``."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    backbone = _VaeOnly(AutoencoderKL(**SD_VAE).eval())
    z = torch.randn(1, 4, height // 8, width // 8, generator=torch.Generator().manual_seed(1))
    tiling = VaeTiling(mode="on" if tiled else "off", tile_size=tile)
    base = rss_mib()
    start = time.perf_counter()
    with torch.no_grad():
        image = tiling.decode(backbone, z)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    torch.save(image, out)
    print(json.dumps({"peak_mib": peak - base, "seconds": seconds}))


def measure(height: int, width: int, tiled: bool, tile: int, out: Path) -> dict:
    cmd = [sys.executable, "-m", "syncsde.evaluation.benchmarks.vae_tiling", "--child", f"{height}x{width}", str(int(tiled))]
    result = subprocess.run([*cmd, str(tile), str(out)], capture_output=True, text=True, check=False)
    if result.returncode:
        raise SystemExit(f"the decode at {height}x{width} (tiled={tiled}) failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["2048x2048", "512x2048"], help="canvas sizes HxW in pixels")
    ap.add_argument("--tile", type=int, default=512, help="tile side in pixels")
    ap.add_argument("--no-readme", action="store_true", help="print only; do not write the README block")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        size, tiled, tile, out = args.child
        child(*map(int, size.split("x")), tiled == "1", int(tile), out)
        return
    rows, data = [], []
    threads = torch.get_num_threads()
    print(f"SD-size random-weight VAE decode on {threads} CPU thread(s); peak = RSS above model + latent")
    heads = ("size", "untiled MiB", "tiled MiB", "ratio", "untiled s", "tiled s", "max |diff|")
    print(" ".join(f"{h:>12}" for h in heads))
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            h, w = map(int, size.split("x"))
            plain = measure(h, w, False, args.tile, Path(tmp) / "plain.pt")
            tiled = measure(h, w, True, args.tile, Path(tmp) / "tiled.pt")
            diff = float((torch.load(Path(tmp) / "plain.pt") - torch.load(Path(tmp) / "tiled.pt")).abs().max())
            ratio = plain["peak_mib"] / tiled["peak_mib"]
            print(
                f"{size:>12} {plain['peak_mib']:12.0f} {tiled['peak_mib']:12.0f} {ratio:12.1f} "
                f"{plain['seconds']:12.1f} {tiled['seconds']:12.1f} {diff:12.3f}",
                flush=True,
            )
            rows.append(
                f"| {h}×{w} | {plain['peak_mib']:.0f} | {tiled['peak_mib']:.0f} | {ratio:.1f}× | "
                f"{plain['seconds']:.0f} | {tiled['seconds']:.0f} | {diff:.3f} |"
            )
            data.append({"height": h, "width": w, "untiled": plain, "tiled": tiled, "max_abs_diff": diff})
            if not args.no_readme:  # after every size, so a long run keeps what it measured
                write(rows, data, args.tile, threads)


def write(rows: list[str], data: list[dict], tile: int, threads: int) -> None:
    from syncsde.evaluation.benchmarks.readme import write_result

    table = "\n".join(
        [
            f"Measured by `python -m syncsde.evaluation.benchmarks.vae_tiling` ({tile}-px tiles, overlap 0.25; random-weight "
            f"VAE of SD's size, float32, {threads} CPU thread(s) on a shared machine: times are indicative only).",
            "",
            "| canvas (px) | peak MiB, untiled | peak MiB, tiled | memory saved | untiled s | tiled s | max abs diff |",
            "|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    write_result("vae_tiling", table, {"tile": tile, "threads": threads, "sizes": data})


if __name__ == "__main__":
    main()
