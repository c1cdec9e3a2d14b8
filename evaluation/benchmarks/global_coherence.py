"""Global coherence (issue 30): does a synchronized canvas many windows wide hold one scene, or a montage?

    python -m syncsde.evaluation.benchmarks.global_coherence [--samples 128] [--steps 50] [--embedded]
                                                             [--embedded_samples 4] [--write]
    # a part of it: no exact model, the wide image alone, one method paired with canonical, pictures in a folder
    python -m syncsde.evaluation.benchmarks.global_coherence --samples 0 --embedded --geometries wide \
        --methods "syncsde global, scaled (1/λ = 20)" --anchor "syncsde canonical (1/λ = 20)" --pictures /tmp/global

**Exact model** (cheap, decisive): :class:`~syncsde.backbones.GaussianMixtureBackbone`, a mixture of Gaussian fields
whose component — a global mode — is shared by the whole canvas; its denoiser is exact at any size, so sampling the
whole canvas in one call is the ideal. Two canvases of 8×8 windows: ``wide`` (8×48 at stride 2: 21 windows in a row;
two horizons, rows 3 and 5) and ``2-D`` (24×24 at stride 4: 5×5 windows; two levels, ±1). Per method, on the same
seeds:

- **single mode**: the share of canvases whose every window-sized crop (at every window's place) is classified to the
  same component (:meth:`GaussianMixtureBackbone.classify`), and that share over the ideal's (**of ideal**);
- **seams**: the mean squared jump between neighbouring elements across the windows' edges, over the ideal's at the
  same places (1 = as the ideal);
- **W2**: the Fréchet (Gaussian Wasserstein-2) distance between the canvases' block means (blocks of stride × window
  height, or stride × stride in 2-D) and the ideal's; the floor is the ideal against a second ideal run (other seeds);
- **std**: the canvases' element standard deviation around their block means, over the ideal's (averaging shrinks
  it).

**Embedded model** (``--embedded``, small): the tiny LDM's wide image (64×256 at stride 32 px: 7 windows) and 2-D
canvas (128×128, 3×3 windows), a few samples per method: Intra-LPIPS and Intra-Style-L on the tiny CLIP's features
(:mod:`syncsde.evaluation.coherence`; lower = more alike crops), paired with the global preset on the same seeds, and
the spread across the canvas of global statistics: the horizon row of each native-size column band (the row where
the mean colour changes most) and the sky colour above it. On the 2-D canvas Intra-LPIPS and Intra-Style-L are also
given over the pairs of crops at the same height (docs/evaluation.md), beside the standard ones. The global view's
fits (``global_fit``, SYNCSDE.md §4.2.1) are rows of both models; on the embedded one, those that lose there
(``ON_REQUEST``) run only when ``--methods`` names them.

``--write`` writes the table to ``notebooks/results/global_coherence.md`` (the docs' ``global_coherence`` block) and
pictures to ``notebooks/figures/``.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg

from syncsde.backbones import GaussianMixtureBackbone
from syncsde.coupling import SyncProblem
from syncsde.io import to_pil
from syncsde.sampler import sample, sample_generator
from syncsde.strategies import Independent, MultiDiffusion, Strategy, SyncSDE, SyncTweedies

# the exact model's canvases: (height, width), stride (rows, columns), the components' means
HORIZONS = [[0.5] * 3 + [-0.5] * 5, [0.5] * 5 + [-0.5] * 3]  # sky above the horizon (row 3 or row 5), ground below
CANVASES = {
    "wide": dict(size=(8, 48), stride=(8, 2), means=HORIZONS),
    "2-D": dict(size=(24, 24), stride=(4, 4), means=[-0.5, 0.5]),
}


def exact_methods() -> dict[str, Strategy]:
    """Every method on the exact model: the SyncSDE presets (and the global view's variants), the averaging
    baselines, independent windows."""
    return {
        "independent": Independent(),
        "syncsde paper (1/λ = 5)": SyncSDE(5.0),
        "syncsde chain (1/λ = 20)": SyncSDE(20.0, preset="chain"),
        "syncsde canonical (1/λ = 20)": SyncSDE(20.0, preset="canonical"),
        "multidiffusion": MultiDiffusion(),
        "synctweedies (case 2)": SyncTweedies(case=2),
        "global view ρ = 1, fade": SyncSDE(20.0, preset="global"),
        "global view ρ = 1, constant": SyncSDE(20.0, preset="global", global_schedule="constant"),
        "global view ρ = 0.5, constant": SyncSDE(20.0, preset="global", global_view=0.5, global_schedule="constant"),
        "global view only (1/λ = 0), fade": SyncSDE(0.0, preset="global"),
        "global view ρ = 1, fade, scaled": SyncSDE(20.0, preset="global", global_fit="scaled"),
        "global view ρ = 1, fade, profile": SyncSDE(20.0, preset="global", global_fit="profile"),
        "global view ρ = 1, fade, isotropic": SyncSDE(20.0, preset="global", global_fit="isotropic"),
        "global view ρ = 1, fade, letterbox": SyncSDE(20.0, preset="global", global_fit="letterbox"),
    }


def exact_task(backbone, strategy: Strategy, size, stride, steps: int):
    from syncsde.tasks import WideImage

    (H, W), (sy, sx) = size, stride
    return WideImage(
        backbone,
        strategy,
        height=H,
        width=W,
        stride=sx,
        vertical_stride=sy,
        num_inference_steps=steps,
        guidance_scale=1.0,
        progress=False,
    )


def run_task(task, samples: int, seed: int) -> torch.Tensor:
    """(samples, C, H, W) assembled latent canvases."""
    batch = [{"prompt": "", "sample_id": i, "seed": seed} for i in range(samples)]
    task.on_predict_start()
    return task.assemble_latent(task.trajectories(batch))


def whole_canvas(backbone, size, samples: int, seed: int, steps: int) -> torch.Tensor:
    """The ideal: the whole canvas sampled as one image by the exact denoiser (same generators as the tasks)."""
    C = backbone.channels
    gens = [sample_generator(seed, i) for i in range(samples)]
    x_T = torch.stack([torch.randn(1, C, *size, generator=g) for g in gens])
    schedule = backbone.schedule(steps)

    def denoise(x, step):
        t = torch.full((x.shape[0] * x.shape[1],), step.t, dtype=torch.long)
        return backbone(x.flatten(0, 1), t, None).view_as(x)

    return sample(denoise, x_T, schedule, Independent(), SyncProblem(1), gens)[:, 0]


def edges(length: int, window: int, stride: int) -> list[int]:
    """Positions p (0 < p < length) where a window begins or ends: the jump between p − 1 and p crosses an edge."""
    out = {p for j in range(0, length - window + 1, stride) for p in (j, j + window)}
    return sorted(p for p in out if 0 < p < length)


def seam_energy(z: torch.Tensor, window: int, stride: tuple[int, int]) -> float:
    """Mean squared jump across the windows' edges (columns and, for several rows of windows, rows)."""
    H, W = z.shape[-2:]
    parts = [(z[..., p] - z[..., p - 1]).pow(2).flatten() for p in edges(W, window, stride[1])]
    parts += [(z[..., p, :] - z[..., p - 1, :]).pow(2).flatten() for p in edges(H, window, stride[0])]
    return float(torch.cat(parts).mean())


def block_means(z: torch.Tensor, window: int, stride: tuple[int, int]) -> torch.Tensor:
    H = z.shape[-2]
    rows = window if H == window else stride[0]
    return F.avg_pool2d(z, (rows, stride[1])).flatten(1)


def frechet(a: torch.Tensor, b: torch.Tensor) -> float:
    """W2 between Gaussian fits of two sets of vectors (rows)."""
    a, b = a.double().numpy(), b.double().numpy()
    ma, mb = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(ca @ cb)
    return float(np.sqrt(max(((ma - mb) ** 2).sum() + np.trace(ca + cb - 2 * root.real), 0.0)))


def single_mode(backbone, z: torch.Tensor, window: int, stride: tuple[int, int]) -> torch.Tensor:
    """(B,) bool: every window-sized crop of the canvas (at every window's place) in the same component."""
    crops = z.unfold(-2, window, stride[0]).unfold(-2, window, stride[1])  # (B, C, ny, nx, h, w)
    B, C, ny, nx = crops.shape[:4]
    labels = backbone.classify(crops.permute(0, 2, 3, 1, 4, 5).reshape(-1, C, window, window)).view(B, -1)
    return (labels == labels[:, :1]).all(1)


def exact(samples: int, steps: int) -> tuple[dict, dict[str, torch.Tensor]]:
    """Every method on both canvases of the exact model: the figures and some canvases to look at."""
    results, pictures = {}, {}
    for name, c in CANVASES.items():
        backbone = GaussianMixtureBackbone(c["means"], channels=1, sample_size=8, std=0.5)
        w = backbone.sample_size
        ideal = whole_canvas(backbone, c["size"], samples, 0, steps)
        floor = whole_canvas(backbone, c["size"], samples, 1, steps)
        ideal_mode = float(single_mode(backbone, ideal, w, c["stride"]).float().mean())
        ideal_seam = seam_energy(ideal, w, c["stride"])
        ideal_blocks = block_means(ideal, w, c["stride"])
        ideal_std = float((ideal - F.interpolate(F.avg_pool2d(ideal, 2), scale_factor=2)).std())
        rows = {
            "whole canvas (ideal)": dict(
                single_mode=ideal_mode,
                of_ideal=1.0,
                seams=1.0,
                w2=frechet(block_means(floor, w, c["stride"]), ideal_blocks),
                std=1.0,
            )
        }
        pictures[f"{name}: ideal"] = ideal[:6]
        for method, strategy in exact_methods().items():
            start = time.perf_counter()
            z = run_task(exact_task(backbone, strategy, c["size"], c["stride"], steps), samples, 0)
            mode = float(single_mode(backbone, z, w, c["stride"]).float().mean())
            rows[method] = dict(
                single_mode=mode,
                of_ideal=mode / ideal_mode,
                seams=seam_energy(z, w, c["stride"]) / ideal_seam,
                w2=frechet(block_means(z, w, c["stride"]), ideal_blocks),
                std=float((z - F.interpolate(F.avg_pool2d(z, 2), scale_factor=2)).std()) / ideal_std,
                seconds=time.perf_counter() - start,
            )
            pictures[f"{name}: {method}"] = z[:6]
            print(f"{name:5s} {method:36s} " + " ".join(f"{k} {v:.3f}" for k, v in rows[method].items()), flush=True)
        results[name] = rows
    return results, pictures


def exact_markdown(results: dict, samples: int, steps: int) -> str:
    lines = [
        f"Exact global-mode model (`GaussianMixtureBackbone`, 8×8 windows, std 0.5), {samples} canvases per method, "
        f"{steps} DDIM steps, the same seeds for every method. **single mode**: canvases whose every window-sized "
        "crop is in one component; **of ideal**: over the whole-canvas sampling's; **seams**: squared jumps across "
        "the windows' edges over the ideal's; **W2**: Fréchet distance of block means to the ideal (its row: a "
        "second ideal run, the noise floor); **std**: fine-scale spread over the ideal's.",
        "",
    ]
    for canvas, rows in results.items():
        c = CANVASES[canvas]
        lines += [
            f"**{canvas}** canvas {c['size'][0]}×{c['size'][1]}, stride {c['stride'][1]}"
            + (f" (rows {c['stride'][0]})" if c["size"][0] > 8 else ""),
            "",
            "| method | single mode | of ideal | seams | W2 | std |",
            "|---|---|---|---|---|---|",
        ]
        for method, r in rows.items():
            lines.append(
                f"| {method} | {r['single_mode']:.3f} | {r['of_ideal']:.2f} | {r['seams']:.2f} | {r['w2']:.3f} "
                f"| {r['std']:.2f} |"
            )
        lines.append("")
    return "\n".join(lines)


# -- the embedded model ------------------------------------------------------------------------------------------------
EMBEDDED = {  # task options (pixels) and prompts: the embedded wide image and 2-D canvas (configs/tiny)
    "wide image 64×256": (
        dict(height=64, width=256, stride=32),
        [
            "a sunset over the sea with mountains",
            "a sunny day over grass with mountains",
            "a night sky over snow with mountains",
            "a sunny day over sand",
        ],
    ),
    "2-D canvas 128×128": (
        dict(height=128, width=128, stride=32, vertical_stride=32),
        ["a sunny day over grass with mountains", "a night sky over snow with mountains"],
    ),
}
ANCHOR = "syncsde global (1/λ = 20)"
SCALED = "syncsde global, scaled (1/λ = 20)"
PROFILE = "syncsde global, profile (1/λ = 20)"
ISOTROPIC = "syncsde global, isotropic (1/λ = 20)"
LETTERBOX = "syncsde global, letterbox (1/λ = 20)"
ON_REQUEST = (PROFILE, ISOTROPIC, LETTERBOX)  # fits that lose on the embedded model (§4.2.1): run when named


def embedded_methods() -> dict[str, tuple[Strategy, dict]]:
    """The methods on the embedded model, with the task options they set."""
    from syncsde.strategies import MixtureOfDiffusers

    return {
        "independent": (Independent(), {}),
        "syncsde paper (1/λ = 5)": (SyncSDE(5.0), {}),
        "syncsde chain (1/λ = 20)": (SyncSDE(20.0, preset="chain"), {}),
        "syncsde canonical (1/λ = 20)": (SyncSDE(20.0, preset="canonical"), {}),
        "multidiffusion": (MultiDiffusion(), {}),
        "synctweedies (case 2)": (SyncTweedies(case=2), {}),
        "mixture of diffusers": (MixtureOfDiffusers(), {}),
        ANCHOR: (SyncSDE(20.0, preset="global"), {}),
        SCALED: (SyncSDE(20.0, preset="global", global_fit="scaled"), {}),
        PROFILE: (SyncSDE(20.0, preset="global", global_fit="profile"), {}),
        ISOTROPIC: (SyncSDE(20.0, preset="global", global_fit="isotropic"), {}),
        LETTERBOX: (SyncSDE(20.0, preset="global", global_fit="letterbox"), {}),
    }


def horizon(band: torch.Tensor) -> tuple[int, torch.Tensor]:
    """The horizon row of an image band (3, H, w) — the row that best splits its mean row colours into two groups
    (Otsu's between-group criterion) — and the mean colour above it (the sky)."""
    rows = band.mean(-1).T  # (H, 3)
    H = rows.shape[0]
    best, at = -1.0, 1
    for r in range(2, H - 1):
        gap = float((rows[:r].mean(0) - rows[r:].mean(0)).norm()) * (r * (H - r)) ** 0.5 / H
        if gap > best:
            best, at = gap, r
    return at, rows[:at].mean(0)


def global_statistics(image: torch.Tensor, native: int) -> tuple[float, float]:
    """The spread across the canvas's native-width column bands of the horizon row (in units of the canvas height)
    and of the sky colour (the norm of the colour's standard deviation)."""
    bands = [image[..., x : x + native] for x in range(0, image.shape[-1] - native + 1, native)]
    found = [horizon(b) for b in bands]
    rows = torch.tensor([r for r, _ in found], dtype=torch.float64) / image.shape[-2]
    skies = torch.stack([c for _, c in found]).double()
    return float(rows.std()), float(skies.std(0).norm())


def embedded(samples: int, steps: int, geometries=None, methods=None) -> tuple[dict, dict]:
    """Every method but those ``ON_REQUEST`` (or those named ``methods``) on the embedded wide image and 2-D canvas (or
    those whose names begin with one of ``geometries``): per-sample Intra-LPIPS / Intra-Style-L (tiny CLIP; on a
    canvas with crops at several heights also over the pairs at the same height) and global statistics, and the
    images."""
    from syncsde.backbones import StableDiffusion
    from syncsde.evaluation import coherence
    from syncsde.tasks import WideImage

    backbone, net = StableDiffusion("syncsde:tiny-ldm"), coherence.clip_network()
    native = backbone.sample_size * backbone.scale_factor
    values, images = {}, {}
    for geometry, (options, prompts) in EMBEDDED.items():
        if geometries and not any(geometry.startswith(g) for g in geometries):
            continue
        records = [prompts[i % len(prompts)] for i in range(samples)]
        values[geometry] = {}
        for method, (strategy, extra) in embedded_methods().items():
            if method not in (methods or set(embedded_methods()) - set(ON_REQUEST)):
                continue
            task = WideImage(
                backbone, strategy, **options, **extra, num_inference_steps=steps, guidance_scale=3.0, progress=False
            )
            start = time.perf_counter()
            outs = task.generate(records)
            seconds = (time.perf_counter() - start) / len(outs)
            per = []
            for o in outs:
                img = o.image.float()
                spread = global_statistics(img, native)
                per.append(
                    [
                        coherence.intra_lpips(img, net, native)["value"],
                        coherence.intra_style(img, net, native)["value"],
                        *spread,
                        *same_height(img, net, native),
                    ]
                )
            values[geometry][method] = np.array(per)
            images[(geometry, method)] = [o.image for o in outs]
            mean = values[geometry][method].mean(0).round(4)
            print(f"{geometry} {method}: {mean} ({seconds:.1f} s/sample)", flush=True)
    return values, images


def same_height(image: torch.Tensor, net, native: int) -> list[float]:
    """Intra-LPIPS and Intra-Style-L over the pairs of crops at the same height (docs/evaluation.md), on a canvas
    with crops at several heights; NaN on one row of crops, where they are the standard measures."""
    from syncsde.evaluation import coherence

    if image.shape[-2] < 2 * native:
        return [float("nan")] * 2
    return [
        coherence.intra_lpips(image, net, native, same_row=True)["value"],
        coherence.intra_style(image, net, native, same_row=True)["value"],
    ]


EMBEDDED_COLUMNS = (
    "Intra-LPIPS",
    "Intra-Style-L",
    "horizon spread",
    "sky colour spread",
    "Intra-LPIPS same height",
    "Intra-Style-L same height",
)


def embedded_markdown(values: dict, samples: int, steps: int, anchor_name: str = ANCHOR) -> str:
    lines = [
        f"Embedded model (tiny LDM; wide image at stride 32 px: 7 windows; {steps} DDIM steps, guidance 3, {samples} "
        "samples per method on the same prompts and seeds). Intra-LPIPS / Intra-Style-L on the tiny CLIP's features "
        "(`syncsde.evaluation.coherence`, non-overlapping native-size crops; lower = the crops are more alike); "
        "horizon / sky colour spread: the standard deviation across the canvas's native-width column bands of the "
        "horizon row (fraction of the height) and of the sky's mean colour. Each figure ± its standard error; Δ: minus "
        f"`{anchor_name}` on the same samples, ± the paired standard error.",
        "",
    ]
    for geometry, rows in values.items():
        anchor = rows[anchor_name]
        shown = [k for k in range(len(EMBEDDED_COLUMNS)) if not np.isnan(anchor[:, k]).all()]
        lines += [
            f"**{geometry}**",
            "",
            "| method | " + " | ".join(f"{EMBEDDED_COLUMNS[k]} | Δ" for k in shown) + " |",
            "|---" * (2 * len(shown) + 1) + "|",
        ]
        for method, v in rows.items():
            cells = []
            for k in shown:
                cells.append(f"{v[:, k].mean():.3g} ± {se(v[:, k]):.2g}")
                d = v[:, k] - anchor[:, k]
                cells.append("—" if method == anchor_name else f"{d.mean():+.3g} ± {se(d):.2g}")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def se(v: np.ndarray) -> float:
    return float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0


def save_pictures(pictures: dict, images: dict, folder: str | None = None, stem: str = "global") -> list[str]:
    """Exact-model canvases (rows: methods; six canvases each) and the embedded images (rows: methods), in the docs'
    figures (or in ``folder``), named ``global_exact_<canvas>``, ``global_embedded_<canvas>`` or, for another
    ``stem``, ``<stem>_<canvas>``."""
    from syncsde.evaluation.benchmarks import canvas_figures
    from syncsde.evaluation.benchmarks.canvas_figures import side_by_side

    def save(name, grid, scale):
        if folder is None:
            return canvas_figures.save(name, grid, scale)
        path = f"{folder}/{name}.png"
        to_pil(F.interpolate(grid[None].clamp(0, 1), scale_factor=scale, mode="nearest")[0]).save(path)
        return path

    saved = []
    for canvas in CANVASES if pictures else ():
        rows = []
        for key, z in pictures.items():
            if key.startswith(f"{canvas}: "):
                grey = (z / 2 + 0.5).clamp(0, 1).expand(-1, 3, -1, -1)  # levels ±0.5 → 0.25, 0.75
                rows.append(side_by_side(list(grey)))
        grid = torch.cat([t for r in rows for t in (r, torch.ones(3, 1, r.shape[-1]))][:-1], -2)
        kind = "wide" if canvas == "wide" else "2d"
        saved.append(save(f"global_exact_{kind}" if stem == "global" else f"{stem}_exact_{kind}", grid, 4))
    for geometry in EMBEDDED:
        rows = [side_by_side(imgs) for (g, _), imgs in images.items() if g == geometry]
        if not rows:
            continue
        grid = torch.cat([t for r in rows for t in (r, torch.ones(3, 2, r.shape[-1]))][:-1], -2)
        kind = "wide" if geometry.startswith("wide") else "2d"
        saved.append(save(f"global_embedded_{kind}" if stem == "global" else f"{stem}_{kind}", grid, 1))
    return saved


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=128, help="exact-model canvases per method (0: none)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--embedded", action="store_true", help="also the embedded wide image and 2-D canvas")
    ap.add_argument("--embedded_samples", type=int, default=4)
    ap.add_argument("--embedded_steps", type=int, default=30)
    ap.add_argument("--geometries", nargs="+", choices=("wide", "2-D"), help="embedded canvases (default: both)")
    ap.add_argument(
        "--methods",
        nargs="+",
        help="embedded methods by row name (default: all but the fits that lose; the anchor too)",
    )
    ap.add_argument("--anchor", default=ANCHOR, help="the embedded row the others are paired with (Δ)")
    ap.add_argument("--write", action="store_true", help="write the docs' block and the pictures")
    ap.add_argument(
        "--name", default="global_coherence", help="the results block --write writes (a partial run: another name)"
    )
    ap.add_argument("--pictures", help="save the pictures in this folder (without --write)")
    args = ap.parse_args(argv)
    partial = args.geometries or args.methods or args.anchor != ANCHOR or not args.samples
    if args.write and partial and args.name == "global_coherence":
        raise SystemExit(
            "--write of the global_coherence block takes the whole benchmark: leave out --geometries, --methods, "
            "--anchor, --samples 0, or give the partial run its own --name"
        )
    warnings.filterwarnings("ignore", message="SyncSDE coefficient")
    torch.set_num_threads(1)
    results, pictures = exact(args.samples, args.steps) if args.samples else ({}, {})
    markdown = exact_markdown(results, args.samples, args.steps) if results else ""
    values, images = {}, {}
    if args.embedded:
        methods = [*args.methods, args.anchor] if args.methods else None
        unknown = sorted(set(methods or [args.anchor]) - set(embedded_methods()))
        if unknown:
            raise SystemExit(f"no embedded method {unknown}; choose among: {', '.join(embedded_methods())}")
        values, images = embedded(args.embedded_samples, args.embedded_steps, args.geometries, methods)
        markdown += "\n" + embedded_markdown(values, args.embedded_samples, args.embedded_steps, args.anchor)
    print(markdown)
    if args.pictures:
        Path(args.pictures).mkdir(parents=True, exist_ok=True)
        print("\n".join(save_pictures(pictures, images, args.pictures)))
    if args.write:
        from syncsde.evaluation.benchmarks.readme import write_result

        stem = "global" if args.name == "global_coherence" else args.name
        figures = save_pictures(pictures, images, stem=stem) if args.embedded else []
        markdown += "".join(f"\n![{f.split('/')[-1][:-4]}]({f})\n" for f in figures)
        data = {"exact": results, "embedded": {g: {m: v.tolist() for m, v in r.items()} for g, r in values.items()}}
        write_result(args.name, markdown, data)
    return results


if __name__ == "__main__":
    main()
