"""Synchronization benchmark: every method on the same prompts and seeds on the embedded models, one table.

    python -m syncsde.evaluation.benchmarks.sync [--tasks wide_image,motion,mask_t2i,ambiguous,sphere,mesh]
                                      [--samples 32,32,16,16,4,4]
                                      [--configs configs/tiny] [--output_dir outputs/sync_benchmark] [--readme]
                                      [--figures notebooks/figures]

Each (task, method) runs ``syncsde predict`` on the task's embedded config (``<configs>/<task config>.yaml``) with that
method's overrides (:func:`syncsde.evaluation.compare.methods`, plus the faithful and the seamless SyncSDE) into
``OUTPUT_DIR/<task>/<method>``; finished samples are skipped on a re-run. Wide images are compared with plain
single-window samples of the same prompts and seeds (``reference_wide.yaml`` into ``OUTPUT_DIR/wide_image/reference``).
The figures, per folder:

- **seam ratio**: the mean squared jump across the columns (wide images), frames (motion) or pixel pairs (mask T2I:
  across the mask boundary) where the output switches from one trajectory to another, over the same across all other
  neighbouring columns, frames or pixel pairs. 1 = seamless.
- **coherence** (wide images): the spread of block statistics — the variance of the mean colours of blocks as wide as
  the config's stride, whatever the method's, within each native-size crop of the canvas — over the same in plain
  single-window samples of the same prompts
  (the reference run). 1 = as coherent as one image; bands of differently coloured blocks raise it.
- **motion**: seam/inside joint acceleration (:func:`acceleration_ratio`).
- **mask T2I**: of the pixels of the object's colour (named in the object prompt), the share inside the mask
  (0 for a sample that shows no such pixel).
- **ambiguous images**: the worst reading's CLIP score (each reading against its own prompt).
- **sphere, mesh**: only the metrics callback's figures (CLIP score) and the cost; look at the figures.
- the field's own measures (:mod:`syncsde.evaluation.coherence`): Intra-LPIPS and Intra-Style-L of wide images
  (SyncDiffusion's protocol; the network used is named under the table), Visual Anagrams' alignment and concealment of
  ambiguous images, FlowMDM's Peak Jerk and Area Under the Jerk of motion transitions;
- FID, KID and CLIP score from the folder's ``metrics.json`` (the config's ``syncsde.evaluation.Metrics`` callback);
- the cost: seconds and network evaluations (NFE: rows the network ran, each guidance branch counted) per sample,
  from the sidecars.

Each figure of ours comes with its standard error over samples (``<figure>_se``, printed as ± in the table): of the
mean of per-sample values, or, for the wide-image seam ratio (a ratio of means pooled over samples), from bootstrap
resamples of the samples. KID's ± is torchmetrics' spread over feature subsets. A second table per task pairs every
method with the embedded config's own SyncSDE (in the ablation, the preset's row): its figure minus that row's on the
same prompts and seeds, with the standard error of the paired difference. The spread between prompts, which makes
most of each figure's own ±, cancels there, so a difference too small to read in the first table can still be
clear in the second (:meth:`Figure.minus`).

Under each table, the best method on each measure with a direction is named (ties within two standard errors are not
resolved: read the paired table). ``--readme`` writes the tables into the docs (``notebooks/results/sync_benchmark.md``);
``--figures DIR`` saves, per task, four samples (evenly spaced sample ids) of every method side by side
(:func:`syncsde.evaluation.compare.grid`) as ``DIR/tiny_<task>_methods.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import yaml
from PIL import Image

from syncsde.errors import InputError
from syncsde.evaluation.compare import run_in_process
from syncsde.windows import Windows

STRATEGY = "--model.init_args.strategy"
CONFIGS = {
    "wide_image": "wide.yaml",
    "motion": "motion.yaml",
    "mask_t2i": "mask_t2i.yaml",
    "ambiguous": "ambiguous.yaml",
    "sphere": "sphere.yaml",
    "mesh": "mesh.yaml",
}
REFERENCE = {"wide_image": "reference_wide.yaml"}
DEFAULT_SAMPLES = {"wide_image": 32, "motion": 32, "mask_t2i": 16, "ambiguous": 16, "sphere": 4, "mesh": 4}


def syncsde_inv_lambda(config: dict) -> float:
    return config["model"]["init_args"].get("strategy", {}).get("init_args", {}).get("inv_lambda", 5.0)


def syncsde_variants(task: str, config: dict) -> dict[str, list[str]]:
    """The faithful SyncSDE (paper preset, its 1/λ: 5, or 20 for motion, which the paper gives none) and the SyncSDE
    of the embedded config (the best preset for the task, at the config's 1/λ)."""
    init = config["model"]["init_args"]["strategy"]["init_args"]
    paper = preset_row(task, "paper", 20.0 if task == "motion" else 5.0)
    best, lam = init.get("preset", "paper"), syncsde_inv_lambda(config)
    own = {f"syncsde ({best}, 1/λ = {lam:g})": []}
    if best == "paper" and lam == (20.0 if task == "motion" else 5.0) and task != "wide_image":
        return own  # the config is the faithful SyncSDE already
    return {"syncsde (paper)": paper, **own}


def preset_row(task: str, preset: str, inv_lambda: float) -> list[str]:
    """The overrides of SyncSDE with ``preset`` at ``inv_lambda``; the paper preset with the official assembly."""
    row = [STRATEGY, "syncsde.strategies.SyncSDE"] + option("preset", preset) + option("inv_lambda", inv_lambda)
    return row + {"wide_image": ["--model.init_args.assembly", "overwrite"]}.get(task, []) * (preset == "paper")


def option(name: str, value) -> list[str]:
    return [f"{STRATEGY}.init_args.{name}", str(value)]


# SyncSDE variants measured on the way to the presets (``--ablation``): one option changed at a time, at the config's
# 1/λ unless the name says otherwise (the paper's explicit update diverges at the configs' 1/λ = 20, c_t > 2)
ABLATIONS = {
    "wide_image": {
        "paper (1/λ = 5)": option("preset", "paper") + option("inv_lambda", 5.0),
        "paper + feather assembly (1/λ = 5)": option("preset", "paper")
        + option("inv_lambda", 5.0)
        + ["--model.init_args.assembly", "feather"],
        "paper + exact correction": option("preset", "paper") + option("correction", "exact"),
        "paper + constant precision, exact": option("preset", "paper")
        + option("correction", "exact")
        + option("schedule_floor", 1.0),
        "chain": option("preset", "chain"),
        "canonical (the preset)": option("preset", "canonical"),
        "canonical, pre-step targets": option("preset", "canonical") + option("target", "pre_step"),
        "canonical, linear fade": option("preset", "canonical") + option("schedule_floor", 0.0),
        "canonical, 1/λ = 5": option("preset", "canonical") + option("inv_lambda", 5.0),
        "canonical, 1/λ = 100": option("preset", "canonical") + option("inv_lambda", 100.0),
        "canonical + feather assembly": option("preset", "canonical") + ["--model.init_args.assembly", "feather"],
        "canonical, feathered precision": option("preset", "canonical")
        + ["--model.init_args.canonical_blend", "feather", "--model.init_args.assembly", "feather"],
    },
    "motion": {
        "paper": option("preset", "paper"),
        "paper + exact correction": option("preset", "paper") + option("correction", "exact"),
        "chain (the preset)": option("preset", "chain"),
        "chain, pre-step targets": option("preset", "chain") + option("target", "pre_step"),
        "canonical": option("preset", "canonical"),
    },
}


def methods(
    task: str, config: dict, ablation: bool = False, inv_lambdas: Sequence[float | tuple[str, float]] = ()
) -> dict[str, list[str]]:
    """The rows of a task: the SyncSDE variants and every other method, or the ablation's; ``inv_lambdas`` adds the
    config's SyncSDE at each of those 1/λ (how the flow configs' 1/λ was chosen), and a ``(preset, 1/λ)`` pair that
    preset's row at that 1/λ (``("paper", 2.0)``: the faithful row with only 1/λ changed)."""
    from syncsde.evaluation.compare import methods, overrides

    if ablation:
        base = [STRATEGY, "syncsde.strategies.SyncSDE"] + option("inv_lambda", syncsde_inv_lambda(config))
        return {name: base + switch for name, switch in ABLATIONS.get(task, {}).items()}
    out = syncsde_variants(task, config)
    own = config["model"]["init_args"]["strategy"]["init_args"].get("preset")
    for item in inv_lambdas:
        preset, lam = item if isinstance(item, tuple) else (own or "paper", item)
        if preset == (own or "paper"):
            out.setdefault(f"syncsde ({preset}, 1/λ = {lam:g})", option("inv_lambda", lam))
        else:
            out.setdefault(f"syncsde ({preset}, 1/λ = {lam:g})", preset_row(task, preset, lam))
    # every other method, but the one the config's SyncSDE already is (the sphere's preset "global" is a method too)
    out.update({m: overrides(task, m, config) for m in methods(task) if m not in ("syncsde", own)})
    return out


def inv_lambda_row(text: str) -> float | tuple[str, float]:
    """One ``--inv_lambdas`` entry: ``2`` (the config's preset at 1/λ = 2) or ``paper:2`` (the paper preset's)."""
    preset, _, value = text.rpartition(":")
    try:
        return (preset, float(value)) if preset else float(value)
    except ValueError:
        raise SystemExit(
            f"--inv_lambdas: '{text}' is not a 1/λ nor PRESET:1/λ; e.g. --inv_lambdas 2,5,paper:0.9"
        ) from None


def anchor(chosen: dict[str, list[str]], ablation: bool = False) -> str | None:
    """The row every other row is compared with on the same samples: the embedded config as it is (its SyncSDE), or
    in the ablation the preset's row."""
    if ablation:
        return next((m for m in chosen if "(the preset)" in m), None)
    return next((m for m, switch in chosen.items() if not switch), None)


def slug(method: str) -> str:
    """The method's folder name, also its name for ``--methods``: ``syncsde (canonical, 1/λ = 20)`` →
    ``syncsde_canonical_inv_lambda_20``."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", method.replace("1/λ =", "inv_lambda")).strip("_")


def sample_overrides(config: dict, samples: int) -> list[str]:
    """Data overrides giving at least ``samples`` samples (each record repeated)."""
    init = config["data"]["init_args"]
    key, records = (
        ("samples_per_prompt", init.get("prompts", []))
        if "prompts" in init or "prompt_file" in init
        else ("samples_per_record", init.get("records", []))
    )
    if not records:
        raise InputError("the benchmark needs a config whose records (or prompts) are listed inline")
    return [f"--data.init_args.{key}", str(math.ceil(samples / len(records)))]


def run(args: list[str]) -> None:
    """``syncsde ARGS`` in this process."""
    run_in_process(args, "syncsde.evaluation.benchmarks.sync")


# -- figures ------------------------------------------------------------------------------------------------------
def load_image(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)


def samples(folder: Path) -> list[dict]:
    return json.loads((folder / "manifest.json").read_text())["samples"]


def switch_positions(weights: torch.Tensor) -> list[int]:
    """Positions p (1..L−1) where the set of windows contributing to the output changes between p−1 and p, from the
    (n, L) assembly weights."""
    support = weights > 0
    return [p for p in range(1, support.shape[1]) if not torch.equal(support[:, p], support[:, p - 1])]


def assembly_weights(windows: Windows, assembly: str) -> torch.Tensor:
    """(n, L) weight of each window at each axis position in the assembled output."""
    out = torch.zeros(windows.n, windows.L)
    if assembly == "overwrite":
        for j in range(windows.n):
            cols = windows.columns[j][: windows.s] if windows.circular else windows.columns[j]
            out[:, cols] = 0
            out[j, cols] = 1
        return out
    per_window = windows.assembly_weights(assembly)
    for j in range(windows.n):
        out[j, windows.columns[j]] = per_window[j]
    return out


def seam_ratio(jumps: torch.Tensor, seams: list[int]) -> float:
    """Mean of ``jumps`` (one per neighbouring pair p−1, p, indexed by p−1) at the seams over the rest."""
    seam = torch.zeros(len(jumps), dtype=torch.bool)
    seam[[p - 1 for p in seams]] = True
    return float(jumps[seam].mean() / jumps[~seam].mean())


def standard_error(values) -> float:
    """Standard error of the mean of per-sample values (0 for fewer than two)."""
    v = np.asarray(values, dtype=float)
    return float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0


def bootstrap_error(statistic, n: int, draws: int = 500) -> float:
    """Standard deviation of ``statistic(indices)`` over resamples of n samples with replacement (fixed seed)."""
    rng = np.random.default_rng(0)
    return float(np.std([statistic(rng.integers(0, n, n)) for _ in range(draws)], ddof=1)) if n > 1 else 0.0


@dataclass
class Figure:
    """One figure of a folder: a row of ``values`` per sample (keyed by ``ids``, its (seed, sample id)) and the
    figure of a subset of rows. ``pooled`` is a function of the rows' values (a ratio of means pooled over samples,
    error by bootstrap); ``None`` means the mean of per-sample values (its standard error)."""

    ids: list[tuple]
    values: np.ndarray
    pooled: Callable[[np.ndarray], float] | None = None

    def of(self, values: np.ndarray) -> float:
        return float(np.mean(values)) if self.pooled is None else self.pooled(values)

    def summary(self, name: str) -> dict:
        """``{name: figure, name_se: its standard error}``."""
        if self.pooled is None:
            se = standard_error(self.values)
        else:
            se = bootstrap_error(lambda idx: self.of(self.values[idx]), len(self.values))
        return {name: self.of(self.values), f"{name}_se": se}

    def minus(self, other: Figure) -> tuple[float, float]:
        """This figure minus ``other``'s on the samples both have (the same prompts and seeds; each side's figure
        by its own statistic, e.g. its own seam positions), and the standard error of that paired difference: each
        sample is compared with itself under the other method, so the spread between prompts, which dominates each
        figure's own ±, cancels."""
        theirs_at = {i: k for k, i in enumerate(other.ids)}
        pairs = [(k, theirs_at[i]) for k, i in enumerate(self.ids) if i in theirs_at]
        mine, theirs = self.values[[a for a, _ in pairs]], other.values[[b for _, b in pairs]]
        if self.pooled is None:
            d = mine - theirs
            return float(np.mean(d)), standard_error(d)
        diff = lambda idx: self.of(mine[idx]) - other.of(theirs[idx])  # noqa: E731
        return diff(slice(None)), bootstrap_error(diff, len(pairs))


def paired(figures: dict[str, Figure], base: dict[str, Figure], name: str) -> dict:
    """``{"paired_with": name, <figure>_diff: this method's figure minus the base's on the same samples,
    <figure>_diff_se: its standard error}``."""
    out = {"paired_with": name}
    for k, f in figures.items():
        if k in base:
            out[f"{k}_diff"], out[f"{k}_diff_se"] = f.minus(base[k])
    return out


def summaries(figures: dict[str, Figure]) -> dict:
    return {k: v for name, f in figures.items() for k, v in f.summary(name).items()}


def sample_ids(recs: list[dict]) -> list[tuple]:
    return [(s.get("seed"), s["sample_id"]) for s in recs]


def wide_figures(folder: Path, reference: Path | None, block: int | None = None) -> dict[str, Figure]:
    """Seam ratio and coherence; ``block``: the coherence's block width (default the folder's stride; the benchmark
    gives every method the config's, as SpotDiffusion's stride is a whole window: one block per crop)."""
    recs = samples(folder)
    ids = sample_ids(recs)
    images = torch.stack([load_image(folder / s["files"]["image"]) for s in recs])
    s0 = recs[0]
    windows = Windows(s0["width"], s0["height"], s0["stride"], s0.get("circular", False))
    seams = switch_positions(assembly_weights(windows, s0.get("assembly", "overwrite")))
    jumps = (images[..., 1:] - images[..., :-1]).pow(2).mean(dim=(1, 2))  # (N, L−1): per sample
    out = {"seam_ratio": Figure(ids, jumps.numpy(), lambda j: seam_ratio(torch.from_numpy(j).mean(0), seams))}
    if reference is not None:
        plain = torch.stack([load_image(reference / s["files"]["image"]) for s in samples(reference)])
        native, block = s0["height"], block or s0["stride"]
        crops = images.unfold(-1, native, block).permute(0, 3, 1, 2, 4)  # (N, crops, 3, H, native): every crop
        plain_spread = block_spread(plain, block)
        out["coherence"] = Figure(ids, np.array([block_spread(c, block) / plain_spread for c in crops]))
    return out


def block_spread(images: torch.Tensor, block: int) -> float:
    """Mean over images of the variance, across the image's stride-wide blocks, of the blocks' mean colours."""
    means = images[..., : images.shape[-1] // block * block].unfold(-1, block, block).mean(dim=(-3, -1))  # (N, 3, k)
    return float(means.var(dim=-1).sum(dim=1).mean())


def acceleration_ratio(joints: np.ndarray, seams: list[int]) -> float:
    """The joint acceleration (|Δ velocity|, averaged over joints) centred on the first frame of each new segment, over
    its median inside segments (1 = a transition as smooth as the motion itself)."""
    accel = np.linalg.norm(np.diff(joints, n=2, axis=0), axis=-1).mean(-1)  # accel[f]: frames f, f+1, f+2
    at = [s - 1 for s in seams]
    inside = np.median(np.delete(accel, [a + d for a in at for d in (-1, 0, 1)]))
    return float(accel[at].mean() / inside)


def motion_figures(folder: Path) -> dict[str, Figure]:
    recs = samples(folder)
    accel, velocity = [], []
    for s in recs:
        joints = np.load(folder / s["files"]["joints"])
        stride = s["segment_frames"] - s["overlap"]
        seams = [stride * k for k in range(1, s["segments"])]
        accel.append(acceleration_ratio(joints, seams))
        jumps = torch.from_numpy(np.linalg.norm(np.diff(joints, axis=0), axis=-1).mean(-1) ** 2)
        velocity.append(seam_ratio(jumps, seams))
    ids = sample_ids(recs)
    return {"seam_ratio": Figure(ids, np.array(velocity)), "seam_acceleration": Figure(ids, np.array(accel))}


def colour_of(prompt: str) -> tuple[float, float, float] | None:
    from syncsde.tiny.scenes import COLOURS

    names = [w for w in re.findall(r"[a-z]+", prompt.lower()) if w in COLOURS]
    return COLOURS[names[-1]] if names else None


def mask_figures(folder: Path, tolerance: float = 0.3) -> dict[str, Figure]:
    recs = samples(folder)
    ids, seams, coverage = sample_ids(recs), [], {}
    for s, sid in zip(recs, ids):
        image = load_image(folder / s["files"]["image"])
        mask = load_image(folder / s["files"]["mask"])[0] > 0.5
        jumps, straddles = [], []
        for d in (-1, -2):  # horizontal and vertical neighbours
            jumps.append((image.diff(dim=d) ** 2).mean(0).flatten())
            straddles.append((mask.diff(dim=d) != 0).flatten())  # pairs across the mask boundary
        jump, straddle = torch.cat(jumps), torch.cat(straddles)
        seams.append(float(jump[straddle].mean() / jump[~straddle].mean()))
        rgb = colour_of(s.get("object", s.get("prompt", "")))
        if rgb is not None:
            close = (image - torch.tensor(rgb)[:, None, None]).norm(dim=0) < tolerance
            coverage[sid] = float(close[mask].sum() / close.sum()) if close.any() else 0.0  # no object: 0
    out = {"seam_ratio": Figure(ids, np.array(seams))}
    if coverage:
        out["object_in_mask"] = Figure(list(coverage), np.array(list(coverage.values())))
    return out


def ambiguous_figures(folder: Path, clip_model: str) -> dict[str, Figure]:
    from syncsde.evaluation.features import CLIPEmbedder

    clip = CLIPEmbedder(clip_model)
    recs, worst = samples(folder), []
    for s in recs:
        scores = []
        for i, prompt in enumerate(s.get("prompts") or [s["prompt"], s["prompt2"]]):
            image = load_image(folder / s["files"][f"reading{i + 1}"])[None]
            scores.append(float(100 * (clip.encode_images(image) @ clip.encode_texts([prompt]).T).clamp_min(0)))
        worst.append(min(scores))
    return {"worst_reading_clip": Figure(sample_ids(recs), np.array(worst))}


def field_figures(task: str, folder: Path, recs: list[dict], clip_model: str) -> tuple[dict[str, Figure], str | None]:
    """The field's own measures of a folder, per sample (:mod:`syncsde.evaluation.coherence`), and the network that
    computed them (None where no learned network is involved)."""
    from syncsde.evaluation import coherence, motion_metrics

    if task == "wide_image":
        net = coherence.network("auto", clip_model)
        _, per = coherence.panorama_measures(folder, recs, net, None)
        keys, name = ("intra_lpips", "intra_style"), net.name
    elif task == "ambiguous":
        _, per = coherence.anagram_measures(folder, recs, clip_model)
        keys, name = ("alignment", "concealment"), coherence.clip_name(clip_model)
    elif task == "motion":
        length, jerk = motion_metrics.TRANSITION_LENGTH, motion_metrics.HUMANML3D_JERK
        _, per = coherence.motion_measures(folder, recs, length, jerk)
        keys, name = ("peak_jerk", "auj"), None
    else:
        return {}, None
    ids = sample_ids(recs)
    return {k: Figure(ids, np.array([per[s["sample_id"]][k] for s in recs])) for k in keys}, name


def has_metrics(config: dict) -> bool:
    """Whether the config measures its outputs (an ``syncsde.evaluation.Metrics`` callback)."""
    from syncsde.evaluation.evaluate import METRICS_CLASSES

    return any(c.get("class_path") in METRICS_CLASSES for c in config.get("trainer", {}).get("callbacks") or [])


def metrics_of(folder: Path) -> dict:
    path = folder / "metrics.json"
    if not path.is_file():
        return {}
    out = {}
    for name, r in json.loads(path.read_text())["metrics"].items():
        if isinstance(r, dict) and r.get("available"):
            out[name] = r["value"]
            if "std" in r:
                out[f"{name}_std"] = r["std"]
    return out


COLUMNS = {
    "seam_ratio": "seam ratio",
    "coherence": "coherence",
    "seam_acceleration": "seam/inside accel.",
    "object_in_mask": "object colour inside the mask",
    "worst_reading_clip": "worst reading CLIP",
    "intra_lpips": "Intra-LPIPS",
    "intra_style": "Intra-Style-L",
    "alignment": "alignment A",
    "concealment": "concealment C",
    "peak_jerk": "Peak Jerk",
    "auj": "AUJ",
    "fid": "FID",
    "kid": "KID",
    "clip_score": "CLIP",
    "seconds": "s/sample",
    "nfe": "NFE/sample",
}
# the measures with a direction (+1: higher is better, -1: lower), for the line naming the best method of each
BETTER = {
    "object_in_mask": 1, "worst_reading_clip": 1, "intra_lpips": -1, "intra_style": -1, "alignment": 1,
    "concealment": 1, "peak_jerk": -1, "auj": -1, "fid": -1, "kid": -1, "clip_score": 1, "seconds": -1, "nfe": -1,
}  # fmt: skip


def best_line(rows: dict, keys: list[str]) -> str:
    """``Best: <measure> <method>, …`` for the measures with a direction; where the runner-up is within two standard
    errors of the best (the larger of the two), both are named with "≈"."""
    parts = []
    for k in keys:
        if k not in BETTER:
            continue
        ranked = sorted(
            ((r[k], r.get(f"{k}_se", 0.0), m) for m, r in rows.items() if r.get(k) is not None),
            key=lambda v: -BETTER[k] * v[0],
        )
        if len(ranked) < 2:
            continue
        (v1, se1, m1), (v2, se2, m2) = ranked[:2]
        close = abs(v1 - v2) <= 2 * max(se1, se2)
        parts.append(f"{COLUMNS[k]} {m1}" + (f" ≈ {m2}" if close else ""))
    return ("Best (" + "; ".join(parts) + ").\n") if parts else ""


def to_markdown(results: dict) -> str:
    lines = []
    for task, rows in results.items():
        keys = [k for k in COLUMNS if any(k in r for r in rows.values())]
        if "worst_reading_clip" in keys:  # the CLIP score of ambiguous images is the worst reading already
            keys.remove("clip_score")
        lines.append(f"**{task}** ({next(iter(rows.values()))['num_samples']} samples per method)\n")
        lines.append("| method | " + " | ".join(COLUMNS[k] for k in keys) + " |")
        lines.append("|---" * (len(keys) + 1) + "|")
        for method, r in rows.items():
            cells = []
            for k in keys:
                v = r.get(k)
                cell = "–" if v is None else f"{v:.4g}"
                if k == "kid" and v is not None and "kid_std" in r:
                    cell = f"{v:.2g} ± {r['kid_std']:.2g}"
                elif v is not None and f"{k}_se" in r:
                    cell = f"{v:.4g} ± {r[f'{k}_se']:.2g}"
                cells.append(cell)
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
        network = next((r["measures_network"] for r in rows.values() if r.get("measures_network")), None)
        if network:
            lines.append(f"{' and '.join(COLUMNS[k] for k in keys if k in FIELD_NETWORK)} computed with {network}.\n")
        lines.append(best_line(rows, keys))
        lines += paired_markdown(rows)
    return "\n".join(lines)


FIELD_NETWORK = ("intra_lpips", "intra_style", "alignment", "concealment")  # the measures a learned network computes


def paired_markdown(rows: dict) -> list[str]:
    """The paired differences of a task's rows against the row they were paired with, as a table."""
    base = next((r["paired_with"] for r in rows.values() if "paired_with" in r), None)
    keys = [k for k in COLUMNS if any(f"{k}_diff" in r for r in rows.values())]
    if base is None or not keys:
        return []
    lines = [
        f"Paired with {base}: each row minus it on the same prompts and seeds, ± the standard error of the paired "
        "difference; **bold**: more than two standard errors from 0.\n",
        "| method | " + " | ".join(f"Δ {COLUMNS[k]}" for k in keys) + " |",
        "|---" * (len(keys) + 1) + "|",
    ]
    for method, r in rows.items():
        if method == base:
            continue
        cells = []
        for k in keys:
            d, se = r.get(f"{k}_diff"), r.get(f"{k}_diff_se")
            cell = "–" if d is None else f"{d:+.3g} ± {se:.2g}"
            cells.append(f"**{cell}**" if d is not None and abs(d) > 2 * se > 0 else cell)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines + [""]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default=",".join(CONFIGS))
    ap.add_argument("--samples", default=None, help="per task, comma-separated (default 32,32,16,16,4,4)")
    ap.add_argument("--methods", default=None, help="comma-separated folder names (default: every applicable method)")
    ap.add_argument(
        "--configs", default="configs/tiny", help="folder of the task configs (wide.yaml, motion.yaml, ...)"
    )
    ap.add_argument("--output_dir", default="outputs/sync_benchmark")
    ap.add_argument("--name", default=None, help="results name (default sync_benchmark, or sync_ablation)")
    ap.add_argument("--ablation", action="store_true", help="SyncSDE variants one option at a time (wide, motion)")
    ap.add_argument(
        "--inv_lambdas",
        default="",
        help="comma-separated 1/λ: the config's SyncSDE at each, as more rows; PRESET:1/λ (paper:2) that preset's",
    )
    ap.add_argument("--readme", action="store_true", help="write the table into the README")
    ap.add_argument(
        "--figures",
        default=None,
        help="save a grid of 4 samples of every method per task to DIR/<prefix>_<task>_methods.png",
    )
    ap.add_argument("--figure_prefix", default="tiny", help="the figures' file name prefix (default tiny)")
    args, rest = ap.parse_known_args(argv)
    tasks = args.tasks.split(",")
    unknown = [t for t in tasks if t not in CONFIGS]
    if unknown:
        raise SystemExit(
            f"syncsde.evaluation.benchmarks.sync: unknown task(s) {unknown}; choose from {', '.join(CONFIGS)}"
        )
    counts = dict(zip(tasks, map(int, args.samples.split(",")))) if args.samples else DEFAULT_SAMPLES
    from syncsde.evaluation.evaluate import evaluate_folder

    out = Path(args.output_dir)
    results: dict[str, dict] = {}
    configs = {t: str(Path(args.configs) / CONFIGS[t]) for t in tasks}
    for task in tasks:
        config = yaml.safe_load(Path(configs[task]).read_text())
        n = counts.get(task, DEFAULT_SAMPLES[task])
        reference, metrics_reference = None, []
        if task in REFERENCE:  # the benchmark's own reference run: the same sample ids as the methods' runs
            ref_path = str(Path(args.configs) / REFERENCE[task])
            ref_config = yaml.safe_load(Path(ref_path).read_text())
            reference = out / task / "reference"
            run(
                ["predict", "--config", ref_path, *sample_overrides(ref_config, n)]
                + ["--output_dir", str(reference), *rest]
            )
            metrics_reference = ["--trainer.callbacks.init_args.reference", str(reference)]
        inv_lambdas = [inv_lambda_row(v) for v in args.inv_lambdas.split(",") if v]
        chosen = methods(task, config, args.ablation, inv_lambdas)
        if args.methods:
            chosen = {m: v for m, v in chosen.items() if slug(m) in args.methods.split(",")}
        results[task], folders, figures = {}, {}, {}
        for method, switch in chosen.items():
            folder = folders[method] = out / task / slug(method)
            run(
                ["predict", "--config", configs[task], *switch, *sample_overrides(config, n), *metrics_reference]
                + ["--output_dir", str(folder), *rest]
            )
            if has_metrics(config):  # every sample in the folder (an earlier run's too), by today's metrics code
                evaluate_folder(folder, reference=None if reference is None else str(reference))
            recs = samples(folder)
            clip = (
                next(
                    (
                        c["init_args"].get("clip_model")
                        for c in config["trainer"].get("callbacks") or []
                        if "init_args" in c
                    ),
                    None,
                )
                or "syncsde:tiny-clip"
            )
            if task == "wide_image":
                figures[method] = wide_figures(folder, reference, config["model"]["init_args"].get("stride"))
            elif task == "motion":
                figures[method] = motion_figures(folder)
            elif task == "mask_t2i":
                figures[method] = mask_figures(folder)
            elif task == "ambiguous":
                figures[method] = ambiguous_figures(folder, clip)
            else:  # the sphere, the mesh: the metrics callback's figures and the cost
                figures[method] = {}
            field, network = field_figures(task, folder, recs, clip)
            figures[method].update(field)
            row = {"num_samples": len(recs), "seconds": float(np.mean([s["seconds"] for s in recs]))}
            if all("nfe" in s for s in recs):  # samples made before the sidecars recorded it have none
                row["nfe"] = float(np.mean([s["nfe"] for s in recs]))
            if network:
                row["measures_network"] = network
            row.update(summaries(figures[method]))
            row.update(metrics_of(folder))
            results[task][method] = row
            numbers = ", ".join(f"{k} {v:.4g}" for k, v in row.items() if isinstance(v, (int, float)))
            print(f"{task} {method}: {numbers}", file=sys.stderr)
        base = anchor(chosen, args.ablation)
        if base in figures:
            for method, row in results[task].items():
                if method != base:
                    row.update(paired(figures[method], figures[base], base))
        if args.figures:
            from syncsde.evaluation.compare import grid
            from syncsde.io import save_png

            labels = {m.replace("λ", "lambda"): f for m, f in folders.items()}  # PIL's default font has no Greek
            name = {"wide_image": "wide"}.get(task, task)
            save_png(
                Path(args.figures) / f"{args.figure_prefix}_{name}_methods.png", grid(labels, min_height=96, rows=4)
            )
    markdown = to_markdown(results)
    print(markdown)
    from syncsde.io import save_json

    name = args.name or ("sync_ablation" if args.ablation else "sync_benchmark")
    save_json(out / f"{name}.json", results)
    if args.readme:
        from syncsde.evaluation.benchmarks.readme import write_result

        write_result(name, markdown, results)
    return results


if __name__ == "__main__":
    main()
