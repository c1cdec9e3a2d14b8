"""The model card of an embedded generator (``syncsde:tiny-ldm``, ``syncsde:tiny-flow``), measured with the embedded
tiny CLIP:

    python -m syncsde.evaluation.quality [--model syncsde:tiny-ldm] [--num 400] [--steps 50] [--samplers ddim ddpm]
                                         [--guidance 2 3] [--dry-run]

1. ``--num`` images are generated with each sampler at each guidance scale (plain sampling, no synchronization)
   from captions of the held-out split, which training never saw. The embedded configs sample with DDIM (η = 0) at
   CFG 3 (a flow-matching model: its Euler steps, which are DDIM in VP coordinates; it has no DDPM sampler);
   guidance trades sample diversity for prompt fidelity, and a stochastic sampler (DDPM) corrects some of a
   small model's errors on the way, so the card lists each setting rather than one.
2. Retrieval: for each image the tiny CLIP picks one caption among 10 (its own + 9 other held-out captions); top-1
   accuracy is reported for the generated images and, as a reference, for procedural renders of the same captions.
3. FID with tiny-CLIP features: generated images vs. procedural renders of held-out captions, beside the floor at
   this sample size (a second render set of the same captions, with other random details, against the first) and
   the autoencoder's share (that second set passed through the VAE and back); and, as the earlier model card
   did, generated images and renders each against renders of *other* held-out captions (a looser floor: caption
   sampling dominates it at this size).

The table goes to the docs (``syncsde.evaluation.benchmarks.readme.write_result``, block ``<name>_quality``, name
``tiny_ldm`` or ``tiny_flow``) and a sample grid — procedural renders of held-out captions above the images generated
from them in each setting — to ``notebooks/figures/<name>_samples.png``; ``--dry-run`` only prints.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image

from syncsde.backbones.diffusers import load_backbone
from syncsde.cli import quiet
from syncsde.evaluation.features import CLIPEmbedder
from syncsde.tasks import TextToImage
from syncsde.tiny import scenes

FIGURES = Path(__file__).resolve().parents[1] / "notebooks" / "figures"


def card_name(model: str) -> str:
    """``syncsde:tiny-flow`` → ``tiny_flow``: the name of the card's docs block and figure."""
    return model.removeprefix("syncsde:").replace("-", "_").replace("/", "_")


def sampler_label(sampler: str, backbone) -> str:
    return "Euler" if sampler == "ddim" and backbone.prediction_type == "flow" else sampler.upper()


def retrieval_accuracy(
    clip: CLIPEmbedder,
    images: torch.Tensor,
    captions: list[str],
    pool: list[str],
    rng: np.random.Generator,
    k: int = 10,
) -> float:
    """Share of images whose own caption has the highest CLIP similarity among k (itself + k−1 from the pool)."""
    img = clip.encode_images(images)
    hits = 0
    for i, caption in enumerate(captions):
        others = [c for c in pool if c != caption]
        candidates = [caption] + [others[j] for j in rng.choice(len(others), k - 1, replace=False)]
        scores = img[i] @ clip.encode_texts(candidates).T
        hits += int(scores.argmax()) == 0
    return hits / len(captions)


def fid(a: torch.Tensor, b: torch.Tensor, clip: CLIPEmbedder) -> float:
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=clip, normalize=True)
    metric.update(a, real=True)
    metric.update(b, real=False)
    return float(metric.compute())


def renders(picked: list[scenes.Scene], seed: int) -> torch.Tensor:
    """Procedural renders of these scenes (N, 3, 64, 64), with randomness from (seed, index)."""
    images = [scenes.render(s, np.random.default_rng([seed, i])) for i, s in enumerate(picked)]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)


def sample_grid(rows: list[torch.Tensor], scale: int = 3) -> Image.Image:
    """Rows of images (each (N, 3, H, W) in [0, 1]) stacked top to bottom, upscaled (nearest)."""
    grid = rearrange(torch.stack(rows), "r n c h w -> (r h) (n w) c")
    img = Image.fromarray((grid.clamp(0, 1) * 255).round().to(torch.uint8).numpy())
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST)


def generate(
    backbone, captions: list[str], steps: int, guidance: float, batch: int, sampler: str = "ddim"
) -> tuple[torch.Tensor, float]:
    """Plain samples of these captions (sample i seeded by (0, i)) and the seconds per image."""
    from tqdm import tqdm

    task = TextToImage(backbone, num_inference_steps=steps, guidance_scale=guidance, sampler=sampler, progress=False)
    task.on_predict_start()
    images, start = [], time.perf_counter()
    for first in tqdm(range(0, len(captions), batch), desc=f"generating ({sampler}, CFG {guidance:g})", unit="batch"):
        chunk = captions[first : first + batch]
        images += [
            o.image for o in task.run([{"prompt": c, "sample_id": first + i, "seed": 0} for i, c in enumerate(chunk)])
        ]
    return torch.stack(images), (time.perf_counter() - start) / len(captions)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num", type=int, default=400, help="generated images per setting (and per render set)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument(
        "--samplers", nargs="+", choices=["ddim", "ddpm"], default=None, help="default: ddim ddpm (flow models: ddim)"
    )
    ap.add_argument("--guidance", type=float, nargs="+", default=[2.0, 3.0], help="CFG scales")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--figure_samples", type=int, default=8, help="columns of the sample grid")
    ap.add_argument("--model", default="syncsde:tiny-ldm")
    ap.add_argument("--clip", default="syncsde:tiny-clip")
    ap.add_argument("--dry-run", action="store_true", help="print only: no README table, no figure")
    args = ap.parse_args(argv)
    quiet()  # the card's own progress bars only: no library loading bars

    pool = scenes.held_out_scenes(1000)
    rng = np.random.default_rng(0)
    picked = [pool[i] for i in rng.integers(0, len(pool), args.num)]
    captions, pool = [s.caption for s in picked], [s.caption for s in pool]
    backbone = load_backbone(args.model)
    flow = backbone.prediction_type == "flow"
    samplers = args.samplers or (["ddim"] if flow else ["ddim", "ddpm"])
    real_a = renders(picked, 1001)  # the same captions as the generated images
    real_b = renders(picked, 1002)  # the same captions again, other random details: the floor
    other = torch.from_numpy(scenes.batch(1003, 0, args.num, held_out=True)[0])  # other held-out captions
    with torch.no_grad():
        through_vae = torch.cat([backbone.decode(backbone.encode(x)) for x in real_b.split(args.batch)])
    clip = CLIPEmbedder(args.clip)
    results = {
        "num_images": args.num,
        "steps": args.steps,
        "model": args.model,
        "feature_network": args.clip,
        "torch_threads": torch.get_num_threads(),
        "retrieval_top1_of_10_real": retrieval_accuracy(clip, real_a, captions, pool, rng),
        "fid_real_vs_real": fid(real_a, real_b, clip),
        "fid_vae_reconstructions_vs_real": fid(real_a, through_vae, clip),
        "fid_real_vs_other_captions": fid(other, real_a, clip),
        "settings": {},
    }
    rows = [real_a[: args.figure_samples]]
    for sampler, guidance in itertools.product(samplers, args.guidance):
        generated, seconds = generate(backbone, captions, args.steps, guidance, args.batch, sampler)
        rows.append(generated[: args.figure_samples])
        r = {
            "seconds_per_image": round(seconds, 3),
            "retrieval_top1_of_10_generated": retrieval_accuracy(clip, generated, captions, pool, rng),
            "fid_generated_vs_real": fid(real_a, generated, clip),
            "fid_generated_vs_other_captions": fid(other, generated, clip),
        }
        r["fid_ratio_to_floor"] = r["fid_generated_vs_real"] / results["fid_real_vs_real"]
        results["settings"][f"{sampler_label(sampler, backbone)}, CFG {guidance:g}"] = r
    for k, v in results.items():
        if k != "settings":
            print(f"{k:<34} {v:.4f}" if isinstance(v, float) else f"{k:<34} {v}")
    for setting, r in results["settings"].items():
        print(f"{setting}: " + ", ".join(f"{k} {v:.4f}" for k, v in r.items()))
    if not args.dry_run:
        from syncsde.evaluation.benchmarks.readme import write_result
        from syncsde.io import save_png

        name = card_name(args.model)
        figure = FIGURES / f"{name}_samples.png"
        save_png(figure, sample_grid(rows))
        write_result(f"{name}_quality", markdown(results, captions[: args.figure_samples], figure.name), results)
        print(f"wrote {figure} and the docs block {name}_quality")
    return results


def markdown(r: dict, captions: list[str], figure: str) -> str:
    pct = lambda v: f"{100 * v:.1f}%"  # noqa: E731
    by = r["settings"]
    row = lambda name, cells, target="": f"| {name} | " + " | ".join(cells) + f" | {target} |"  # noqa: E731
    each = lambda key, fmt: [fmt(g[key]) for g in by.values()]  # noqa: E731
    shared = lambda value: [value] + [""] * (len(by) - 1)  # noqa: E731
    floor = r["fid_real_vs_real"]
    return "\n".join(
        [
            f"Measured by `python -m syncsde.evaluation.quality`: {r['num_images']} images from held-out captions in each "
            f"setting (sampler, classifier-free guidance scale), {r['steps']} steps, features and retrieval by "
            f"`{r['feature_network']}`. The embedded configs sample with {next(iter(by)).split(',')[0]} at CFG 3.",
            "",
            "| measure | " + " | ".join(by) + " | target |",
            "|---|" + "---|" * (len(by) + 1),
            row(
                "tiny CLIP picks the right caption among 10 (generated images; chance 10%)",
                each("retrieval_top1_of_10_generated", pct),
                "≥ 80%",
            ),
            row("the same on procedural renders of those captions", shared(pct(r["retrieval_top1_of_10_real"]))),
            row(
                "FID, generated vs. procedural renders",
                each("fid_generated_vs_real", "{:.4f}".format),
                f"≤ 5× floor = {5 * floor:.4f}",
            ),
            row(
                "FID, a second render set of the same captions vs. the first (floor at this sample size)",
                shared(f"{floor:.4f}"),
            ),
            row(
                "FID, renders through the autoencoder vs. renders (its share)",
                shared(f"{r['fid_vae_reconstructions_vs_real']:.4f}"),
            ),
            row("generated / floor", each("fid_ratio_to_floor", "{:.2f}×".format), "≤ 5×"),
            row(
                "FID against renders of other held-out captions: generated (renders: "
                f"{r['fid_real_vs_other_captions']:.4f})",
                each("fid_generated_vs_other_captions", "{:.4f}".format),
            ),
            row(
                f"seconds per image (CPU, torch threads: {r['torch_threads']})",
                each("seconds_per_image", "{:.3f}".format),
            ),
            "",
            "![procedural renders (top) and generated images in each setting (rows below) of held-out captions]"
            f"(notebooks/figures/{figure})",
            "",
            "Top row rendered, then one row per setting (" + "; ".join(by) + "), left to right:",
            "",
            *[f"{i + 1}. {c}" for i, c in enumerate(captions)],
        ]
    )


if __name__ == "__main__":
    main()
