"""Quality of the embedded tiny text-to-image model, measured with the embedded tiny CLIP.

    python -m syncsde.tiny.quality [--num 200] [--steps 50] [--guidance 3.0] [--json out.json]

1. ``--num`` images are generated (plain sampling, no synchronization) from captions drawn from the held-out
   split, which training never saw.
2. Retrieval: for each image the tiny CLIP picks one caption among 10 (its own + 9 other held-out captions);
   accuracy is reported for the generated images and, as a reference, for real held-out procedural images.
3. FID with tiny-CLIP features: generated vs. held-out procedural images, beside two independent held-out
   procedural sets against each other (the floor for this sample size).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from evaluation.features import CLIPEmbedder
from syncsde.backbones import DiffusersBackbone
from syncsde.tiny import scenes
from tasks import TextToImage


def retrieval_accuracy(
    clip: CLIPEmbedder,
    images: torch.Tensor,
    captions: list[str],
    pool: list[str],
    rng: np.random.Generator,
    k: int = 10,
) -> float:
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


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num", type=int, default=200)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--model", default="syncsde:tiny-t2i")
    ap.add_argument("--clip", default="syncsde:tiny-clip")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    pool = sorted(s.caption for s in scenes.split(held_out=True))
    captions = [pool[i] for i in rng.integers(0, len(pool), args.num)]
    task = TextToImage(
        DiffusersBackbone(args.model), num_inference_steps=args.steps, guidance_scale=args.guidance, progress=False
    )
    task.on_predict_start()
    generated = []
    for start in range(0, args.num, args.batch):
        batch = [
            {"prompt": c, "sample_id": start + i, "seed": 0} for i, c in enumerate(captions[start : start + args.batch])
        ]
        generated += [o.image for o in task.run(batch)]
        print(f"generated {len(generated)}/{args.num}", flush=True)
    generated = torch.stack(generated)
    real_a, caps_a = scenes.batch(1001, 0, args.num, held_out=True)
    real_b, _ = scenes.batch(1002, 0, args.num, held_out=True)
    real_a, real_b = torch.from_numpy(real_a), torch.from_numpy(real_b)
    clip = CLIPEmbedder(args.clip)
    results = {
        "num_images": args.num,
        "steps": args.steps,
        "guidance_scale": args.guidance,
        "retrieval_top1_of_10_generated": retrieval_accuracy(clip, generated, captions, pool, rng),
        "retrieval_top1_of_10_real": retrieval_accuracy(clip, real_a, caps_a, pool, rng),
        "fid_generated_vs_heldout": fid(real_a, generated, clip),
        "fid_heldout_vs_heldout": fid(real_a, real_b, clip),
        "feature_network": args.clip,
    }
    for k, v in results.items():
        print(f"{k:<34} {v:.4f}" if isinstance(v, float) else f"{k:<34} {v}")
    if args.json:
        from syncsde.io import save_json

        save_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
