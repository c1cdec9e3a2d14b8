"""Mesh texturing: the render+bake work of one synchronized step against the denoiser, side by side in one run.

    python -m syncsde.evaluation.benchmarks.mesh [--repeats 15] [--rows 20] [--write]

At the paper geometry — the shipped ball mesh, 10 views of 96² latents, a 1536² latent texture — it times, in CPU
time of this process (run it with OMP_NUM_THREADS=1: a shared machine's load then does not count), as medians over
``--repeats`` interleaved rounds:

- SyncSDE's coupling of one step: the 9 residuals W_i ⊙ (x^i − render_i(bake(x^0..x^{i−1}))) as the task builds
  them, with the official inverse-projection bake (coverage mask, and the official value-test mask) and with the
  splat bake;
- the same couplings computed as before the incremental maps (a full-texture splat bake of all earlier views per
  coupling, 45 view bakes per step) with the library's ``bake`` and ``render``;
- SyncMVD's canonical step work: the bake of all views into the texture and the renders back;

and one call of a random-weight UNet of Stable Diffusion 1.5's real size (``UNet2DConditionModel`` with SD-1.5's
configuration) on the step's 20 rows (10 views × 2 CFG branches) of 96² latents, on the CPU. ``--rows`` times the
UNet on fewer rows and scales linearly to 20. ``--write`` puts the table into the README (``mesh_step``).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from types import SimpleNamespace

import torch

from syncsde.coupling import coupling_residuals
from syncsde.mesh.texture import bake, cosine_weight, render
from syncsde.strategies import SyncSDE

VIEWS, LATENT, TEXTURE, CHANNELS, ROWS = 10, 96, 1536, 4, 20


def sd15_unet():
    """A random-weight UNet with Stable Diffusion 1.5's configuration (860M parameters)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=64,
        cross_attention_dim=768,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        attention_head_dim=8,
    ).eval()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15, help="interleaved rounds of the coupling timings")
    ap.add_argument("--rows", type=int, default=ROWS, help="UNet rows actually run (time scaled to 20)")
    ap.add_argument("--write", action="store_true", help="write the table into the README (mesh_step)")
    args = ap.parse_args(argv)
    from syncsde.tasks.mesh import MeshTexturing

    stand_in = SimpleNamespace(channels=CHANNELS, scale_factor=8)  # the backbone's shape facts; no network needed
    record = {"mesh": "configs/assets/ball.obj", "prompt": "", "sample_id": 0, "seed": 0}
    tasks = {
        (bake_name, mask): MeshTexturing(stand_in, SyncSDE(5.0), bake=bake_name, coupling_mask=mask, progress=False)
        for bake_name, mask in (("projection", "coverage"), ("projection", "value_test"), ("splat", "coverage"))
    }
    start = time.process_time()
    batch = tasks["projection", "coverage"].prepare([record])
    geo = batch[0]["geometry"]
    problems = {key: task.problem(batch) for key, task in tasks.items()}
    problems["projection", "coverage"].canonical.aggregate(torch.zeros(1, VIEWS, CHANNELS, LATENT, LATENT))
    build = time.process_time() - start  # rasterization, visibility, Voronoi seeds and the maps, once per mesh
    problems["splat", "coverage"].canonical.aggregate(torch.zeros(1, VIEWS, CHANNELS, LATENT, LATENT))

    x = torch.randn(1, VIEWS, CHANNELS, LATENT, LATENT, generator=torch.Generator().manual_seed(0))
    weights = [cosine_weight(g, c.eye, 1.0) for g, c in zip(geo.latent, geo.cameras)]

    def previous():
        out = torch.zeros_like(x)
        for i in range(1, VIEWS):
            tex, _ = bake(list(x[0, :i]), geo.latent[:i], weights[:i], (TEXTURE, TEXTURE))
            out[0, i] = problems["splat", "coverage"].couplings[i - 1].weight[0] * (
                x[0, i] - render(tex, geo.latent[i])
            )
        return out

    canonical = problems["projection", "coverage"].canonical
    work = {
        "SyncSDE coupling, projection bake (default)": lambda: coupling_residuals(
            x, problems["projection", "coverage"].couplings
        ),
        "SyncSDE coupling, projection bake, value-test mask (paper)": lambda: coupling_residuals(
            x, problems["projection", "value_test"].couplings
        ),
        "SyncSDE coupling, splat bake": lambda: coupling_residuals(x, problems["splat", "coverage"].couplings),
        "SyncSDE coupling, splat bake as before (45 full-texture view bakes)": previous,
        "SyncMVD canonical (bake of all views + renders)": lambda: canonical.forward_onto(canonical.aggregate(x), x),
    }
    torch.testing.assert_close(work["SyncSDE coupling, splat bake"](), previous(), atol=1e-5, rtol=1e-5)
    times = {name: [] for name in work}
    with torch.no_grad():
        for f in work.values():  # warm-up
            f()
        for _ in range(args.repeats):
            for name, f in work.items():
                t0 = time.process_time()
                f()
                times[name].append(time.process_time() - t0)

        unet = sd15_unet()
        rows = min(args.rows, ROWS)
        latents = torch.randn(rows, CHANNELS, LATENT, LATENT)
        context = torch.randn(rows, 77, 768)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.process_time()
            unet(latents, torch.full((rows,), 958), encoder_hidden_states=context)
            denoiser = (time.process_time() - t0) * ROWS / rows

    threads = torch.get_num_threads()
    lines = [
        f"One synchronized step at the paper geometry (ball mesh, {VIEWS} views of {LATENT}² latents, {TEXTURE}² "
        f"latent texture), CPU time, {threads} thread(s), medians of {args.repeats} interleaved rounds; denoiser: "
        f"one call of a random-weight SD-1.5-size UNet on {ROWS} rows of {LATENT}² latents"
        + (f" (timed on {rows} rows, scaled)" if rows < ROWS else "")
        + f". Built once per mesh: {build:.1f} s.",
        "",
        "| per step | seconds | % of the denoiser |",
        "|---|---|---|",
    ]
    data = {"denoiser_s": denoiser, "build_s": build, "threads": threads, "rows_timed": rows, "steps": {}}
    for name, ts in times.items():
        median = statistics.median(ts)
        data["steps"][name] = median
        lines.append(f"| {name} | {median:.4f} | {100 * median / denoiser:.2g}% |")
    lines.append(f"| denoiser (UNet, {ROWS} rows) | {denoiser:.1f} | 100% |")
    table = "\n".join(lines)
    print(table)
    if args.write:
        from syncsde.evaluation.benchmarks.readme import write_result

        write_result("mesh_step", table, data)


if __name__ == "__main__":
    main()
