"""Transition quality at segment seams: SyncSDE vs. averaging on the overlaps vs. independent segments.

    python -m syncsde.motion.transitions [--config configs/tiny/motion.yaml] [--samples 8] [--steps 50]

For every generated sequence, the joint acceleration (|Δ velocity|) and jerk (|Δ acceleration|), averaged over
joints, are compared at the seams — the frames where the assembled output switches from one segment to the next —
with their median inside segments. A ratio near 1 is a seamless transition; large ratios are visible jumps.
"""

from __future__ import annotations

import argparse

import numpy as np
import yaml

from syncsde.backbones import Backbone
from syncsde.strategies import Independent, MultiDiffusion, SyncSDE

TEXTS = [
    ["a person walks forward", "a person jumps", "a person kicks"],
    ["a person runs", "a person waves", "a person walks forward"],
    ["a person stands still", "a person kicks", "a person runs"],
    ["a person jumps", "a person walks forward", "a person waves"],
]


def seam_ratios(joints: np.ndarray, seams: list[int]) -> tuple[float, float]:
    vel = np.diff(joints, axis=0)
    acc = np.linalg.norm(np.diff(vel, axis=0), axis=-1).mean(-1)  # acc[f] between frames f, f+1, f+2
    jerk = np.linalg.norm(np.diff(vel, n=2, axis=0), axis=-1).mean(-1)
    at = [s - 1 for s in seams]  # acceleration centred on the first frame of the new segment
    inside_acc = np.median(np.delete(acc, [a + d for a in at for d in (-1, 0, 1)]))
    inside_jerk = np.median(np.delete(jerk, [a + d for a in at for d in (-2, -1, 0, 1)]))
    return float(acc[at].mean() / inside_acc), float(np.max([jerk[a - 1 : a + 1].mean() for a in at]) / inside_jerk)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/tiny/motion.yaml", help="a LongMotion config (its backbone is used)")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--inv_lambda", type=float, default=20.0, help="SyncSDE's 1/λ")
    args = ap.parse_args(argv)
    from jsonargparse import ArgumentParser

    from tasks import LongMotion

    cfg = yaml.safe_load(open(args.config))["model"]["init_args"]
    parser = ArgumentParser()
    parser.add_argument("--backbone", type=Backbone)
    backbone = parser.instantiate_classes(parser.parse_object({"backbone": cfg["backbone"]})).backbone
    methods = {"syncsde": SyncSDE(args.inv_lambda), "averaging": MultiDiffusion(), "independent": Independent()}
    results = {}
    for name, strategy in methods.items():
        task = LongMotion(
            backbone,
            strategy,
            num_inference_steps=args.steps,
            progress=False,
            guidance_scale=cfg.get("guidance_scale", 1.0),
        )
        ratios = []
        for i in range(args.samples):
            texts = TEXTS[i % len(TEXTS)]
            out = task.run([{"texts": texts, "prompt": " | ".join(texts), "sample_id": i, "seed": 0}])[0]
            stride = task.segment_frames - task.overlap
            ratios.append(seam_ratios(out.arrays["joints"], [stride * k for k in range(1, len(texts))]))
        results[name] = tuple(float(np.mean(r)) for r in zip(*ratios))
    print(f"{'method':<12} {'seam/inside acceleration':>26} {'seam/inside jerk':>18}")
    for name, (acc, jerk) in results.items():
        print(f"{name:<12} {acc:26.2f} {jerk:18.2f}")
    return results


if __name__ == "__main__":
    main()
