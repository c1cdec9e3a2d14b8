"""Reproduce the paper's tables: ``syncsde reproduce TASK``.

    syncsde reproduce mask_t2i [--scale 0.01] [--configs configs/paper] [--data FILE_OR_DIR] [--output_dir DIR]
                               [--methods syncsde,synctweedies] [--dry_run] [any `syncsde predict` override,
                               e.g. --trainer.devices 4]
    syncsde reproduce edit --data DIR [--segmentation clipseg|own|FOLDER] [--segmentation_model ID_OR_FOLDER]

Runs the evaluation protocol of one task of the paper (SyncSDE, arXiv 2503.21555, as public notes describe its
appendix, not checked against the paper; docs/reproduce.md lists them): every method of the paper's table on the
same records and seeds, the reference set where the table has FID/KID, the metrics, and prints the table beside the
paper's published figures, with the difference and its standard error (bootstrap over samples; the paper's figure is
taken as exact).

- Each method runs ``syncsde predict`` in this process (:func:`syncsde.evaluation.compare.run_in_process`) on the
  config ``<configs>/<task>.yaml`` (``configs/paper`` by default: the official update and settings; ``configs/tiny``
  runs the same protocol on the embedded models) with the protocol's records, into ``DIR/<method>``; the reference
  set (plain sampling with the same backbone and prompts) goes to ``DIR/reference``. Finished samples are skipped
  on a re-run, so a stopped reproduction resumes where it stopped; ``--trainer.devices N`` (and any other option
  after the known ones) is passed to every run.
- Every record is listed once per sample (``samples_per_record: 1``), so a sample's id, and with it its noise, does
  not depend on how many samples are asked for: the first samples of a run are the first samples of the full run.
  The first ``--probe`` samples of the first method run before everything else (unless its folder holds them
  already); their seconds give the estimate of the hours the whole reproduction takes on this device, printed with
  the count of denoiser evaluations before anything runs, and updated after every run.
- The metrics are the config's ``syncsde.evaluation.Metrics`` callback's, recomputed (``syncsde evaluate``) where a
  folder's metrics.json is older than its samples or the reference set's; where the paper's network (Inception
  features, CLIP ViT-B/32, LPIPS) is not installed the config's stand-in is used and recorded. Everything that
  differs from the paper's protocol (networks, backbone, sample counts, data, unavailable metrics) is listed under
  the table and in ``DIR/reproduction.json``; the table is also written to ``DIR/table.md``.
- Editing's BG-LPIPS is measured on one background segmentation of each source image, the same for every method
  (:mod:`syncsde.evaluation.segmentation`): CLIPSeg prompted with the source word (``--segmentation clipseg``, the
  default), the user's masks (``--segmentation FOLDER``), or each method's own edit mask (``own``, today's figure
  and the default with the embedded models, which have no segmentation model); the table says which.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from syncsde import registry
from syncsde.errors import InputError
from syncsde.evaluation.motion_metrics import (
    HUMANML3D_JERK,
    TRANSITION_LENGTH,
    peak_jerk_auj,
    transition_curves,
    transitions_of,
)
from syncsde.evaluation.segmentation import CLIPSEG, THRESHOLD
from syncsde.io import save_json

# the networks the paper's metrics use (the configs/paper Metrics callback names them)
PAPER_NETWORKS = {"feature_network": "inception", "clip_model": "openai/clip-vit-base-patch32"}
# the stored copy of the paper (arXiv 2503.21555v2's HTML) gives its opening only (abstract, start of §1): none of
# its tables or its appendix could be read, so every figure and count below is as public notes transcribed it
UNCHECKED = "as transcribed in public notes; not checked against the paper (its stored copy gives the opening only)"
NOT_TRANSCRIBED = "not transcribed here (the table shows the measured figures only)"
NOT_PUBLISHED = "none: no published figures were found (the project page shows motion as a picture only)"
REFERENCE_SEED = 1000  # the reference set's seed: other noises than the generated samples' (seed 0)
# the task options a reference run shares with the protocol's runs (plain sampling with the same backbone)
SHARED_OPTIONS = ("num_inference_steps", "guidance_scale", "negative_prompt", "sampler_dtype", "sampler", "eta")
# official repository hjl1013/SyncSDE: data/prompt_mask_T2I.txt, data/prompt_wide_image.txt, data/prompt_ambiguous.txt
OFFICIAL_MASK_T2I = {
    "background": "a painting of a beach",
    "object": "a painting of a big boat",
    "prompt": "a painting of a beach with a big boat",
}
OFFICIAL_WIDE = "Natural landscape in anime style illustration."
OFFICIAL_AMBIGUOUS = ("an oil painting of a horse", "an oil painting of a snowy mountain village")
AMBIGUOUS_TRANSFORMS = ("rotate_cw", "rotate_ccw", "rotate_180", "flip")
EDIT_PAIRS = ("cat2dog", "dog2cat", "horse2zebra", "zebra2horse")


@dataclass(frozen=True)
class Column:
    """A figure of the paper's table: ``key`` in metrics.json, times ``scale`` in the paper's units."""

    label: str
    key: str
    scale: float = 1.0


@dataclass(frozen=True)
class Row:
    """A method of the paper's table: its syncsde method name ("syncsde": the config's own SyncSDE) and the paper's
    figures by column label ({} where none is transcribed)."""

    label: str
    method: str
    paper: dict = field(default_factory=dict)
    trajectories: int | None = None  # per sample where the method's differ from the protocol's (its own stride)


@dataclass(frozen=True)
class Records:
    """The protocol's records, each listed once per sample, the prompts of its reference set, and one line per way
    the records differ from the paper's."""

    records: list
    prompts: list
    notes: list
    mask_names: list = field(default_factory=list)  # editing: the file of each record's mask in --segmentation FOLDER


@dataclass(frozen=True)
class Protocol:
    table: str
    config: str  # <configs>/<config>.yaml
    rows: tuple
    columns: tuple
    samples: int  # per record (per prompt, image, mesh)
    trajectories: int  # denoiser evaluations per sample and step at the paper's settings
    records: Callable  # (data, samples, base config) -> Records
    description: str
    reference: int = 0  # reference images per prompt (0: no FID/KID)
    source: str = UNCHECKED
    background: bool = False  # BG-LPIPS: the background of the source image (--segmentation)
    measures: str = "metrics"  # the metrics callback's metrics.json, or "motion": FlowMDM's PJ and AUJ of the joints


def _jsonl(path: str) -> list[dict]:
    """The records of a JSONL file, relative paths resolved against its folder."""
    from syncsde.data import read_lines

    p = Path(path)
    out = []
    for n, line in enumerate(read_lines(p, "--data"), 1):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path} line {n} is not JSON ({e.msg}); write one object per line") from None
        for key in ("mask", "image", "mesh"):
            if isinstance(rec.get(key), str) and not Path(rec[key]).is_absolute():
                rec[key] = str((p.parent / rec[key]).resolve())
        out.append(rec)
    return out


def _repeat(records: list[dict], n: int) -> list[dict]:
    return [dict(r) for r in records for _ in range(n)]


def mask_t2i_records(data, n, base) -> Records:
    if data:
        recs = _jsonl(data)
        notes = [f"records: {len(recs)} from {data}"]
    else:
        recs = [{**OFFICIAL_MASK_T2I, "mask": "configs/assets/mask_center.png"}]
        notes = [
            "records: the paper's 10 prompts are not public; the official repository's one prompt runs "
            "(data/prompt_mask_T2I.txt); give --data FILE.jsonl ({background, object, prompt, mask}) for others",
            "mask: configs/assets/mask_center.png stands in for the official data/mask_sample.png (not shipped)",
        ]
    return Records(_repeat(recs, n), [r["prompt"] for r in recs], notes)


def wide_records(data, n, base) -> Records:
    from syncsde.data import read_lines

    prompts = read_lines(data, "--data") if data else [OFFICIAL_WIDE]
    notes = (
        [f"prompts: {len(prompts)} from {data}"]
        if data
        else [
            "prompts: the official repository's one prompt (data/prompt_wide_image.txt); the paper's prompt list is "
            "not public; give --data FILE (one prompt a line) for others"
        ]
    )
    return Records(_repeat([{"prompt": p} for p in prompts], n), prompts, notes)


def edit_records(data, n, base) -> Records:
    missing = (
        "syncsde reproduce edit needs the paper's LAION images, which the official repository does not ship: give "
        f"--data DIR (folders {', '.join(EDIT_PAIRS)} of images) or --data FILE.jsonl (image, source_word, "
        "target_word, optionally prompt)"
    )
    if not data:
        raise InputError(missing)
    path = Path(data)
    if path.is_file():
        recs = _jsonl(data)[: n * len(EDIT_PAIRS)]
        return Records(recs, [], [f"records: from {data}"], [f"{Path(r['image']).stem}.png" for r in recs])
    if not path.is_dir():
        raise InputError(f"--data '{data}' does not exist; " + missing.split(": ", 1)[1])
    recs, notes, names = [], [], []
    for pair in EDIT_PAIRS:
        source, target = pair.split("2")
        images = sorted(p for p in (path / pair).glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        if len(images) < n:
            notes.append(f"{pair}: {len(images)} images in {path / pair}, the protocol asks for {n}")
        recs += [{"image": str(p.resolve()), "source_word": source, "target_word": target} for p in images[:n]]
        names += [f"{pair}/{p.stem}.png" for p in images[:n]]
    if not recs:
        raise InputError(f"--data '{data}' holds no images in {', '.join(EDIT_PAIRS)}; " + missing.split(": ", 1)[1])
    return Records(recs, [], notes, names)


def ambiguous_records(data, n, base) -> Records:
    if data:
        pairs = [(r["prompt"], r["prompt2"]) for r in _jsonl(data)]
        notes = [f"prompt pairs: {len(pairs)} from {data}"]
    else:
        pairs = [OFFICIAL_AMBIGUOUS]
        notes = [
            "prompt pairs: the paper's 5 are not public; the official repository's one pair runs "
            "(data/prompt_ambiguous.txt); give --data FILE.jsonl ({prompt, prompt2}) for others"
        ]
    notes.append(
        f"transforms: {', '.join(AMBIGUOUS_TRANSFORMS)} (4 of the official script's 5; which 4 the paper used is our "
        "reading)"
    )
    recs = [{"prompts": list(p), "views": ["identity", v]} for p in pairs for v in AMBIGUOUS_TRANSFORMS]
    return Records(_repeat(recs, n), [], notes)


def mesh_records(data, n, base) -> Records:
    if data:
        recs = _jsonl(data)
        notes = [f"meshes: {len(recs)} from {data}"]
    else:
        recs = [dict(r) for r in base["data"]["init_args"]["records"]]
        notes = [
            "meshes: the paper's 6 are not all shipped (the official repository has clutch_bag.obj and turtle.obj); "
            f"the config's {len(recs)} record(s) run; give --data FILE.jsonl ({{mesh, prompt}}) for the paper's",
            "metrics: CLIP-S of the front view only (no reference set for FID/KID is reconstructed)",
        ]
    return Records(_repeat(recs, n), [], notes)


def motion_records(data, n, base) -> Records:
    if data:
        recs = _jsonl(data)
        notes = [f"text sequences: {len(recs)} from {data}"]
    else:
        recs = [dict(r) for r in base["data"]["init_args"]["records"]]
        notes = [f"text sequences: the config's {len(recs)}; give --data FILE.jsonl ({{texts}}) for others"]
    notes.append(
        "protocol: ours (the paper publishes no motion figures to compare with): FlowMDM's Peak Jerk and AUJ of the "
        f"transitions, {TRANSITION_LENGTH}-frame windows, real-motion jerk {HUMANML3D_JERK:.4f} (HumanML3D)"
    )
    return Records(_repeat(recs, n), [], notes)


KID, FID = Column("KID×10³", "kid", 1000.0), Column("FID", "fid")
CLIP = Column("CLIP-S", "clip_score", 0.01)  # ours: 100·max(cos, 0); the paper's: the cosine
PROTOCOLS = {
    "mask_t2i": Protocol(
        table="Table 1: mask-based T2I",
        config="mask_t2i",
        rows=(
            Row("MultiDiffusion", "multidiffusion_bootstrap", {"KID×10³": 47.694, "FID": 84.225, "CLIP-S": 0.330}),
            Row("SyncTweedies", "synctweedies", {"KID×10³": 117.360, "FID": 149.470, "CLIP-S": 0.307}),
            Row("SyncSDE 1/λ = 5", "syncsde", {"KID×10³": 43.774, "FID": 82.878, "CLIP-S": 0.332}),
        ),
        columns=(KID, FID, CLIP),
        samples=250,
        reference=2000,
        trajectories=3,
        records=mask_t2i_records,
        description="10 prompts × 250 images with a fixed mask; reference: 2,000 images per prompt from the same model "
        "(the whole-image prompt); FID/KID (Inception) over all images against all reference images, CLIP-S "
        "of the whole image with its prompt",
    ),
    "wide": Protocol(
        table="wide images",
        config="wide",
        rows=(
            Row("MultiDiffusion", "multidiffusion", trajectories=25),  # windows at stride 1/8 of the window
            Row("SyncTweedies", "synctweedies"),
            Row("SyncSDE 1/λ = 5", "syncsde"),
        ),
        columns=(KID, FID, Column("CLIP-S (centre crop)", "clip_score_center", 0.01)),
        samples=250,
        reference=2000,
        trajectories=13,
        records=wide_records,
        description="250 wide images per prompt; reference: 2,000 native-size images per prompt from the same "
        "model; FID/KID on random native-size crops of the wide images, CLIP-S on the centre crop",
        source=NOT_TRANSCRIBED,
    ),
    "edit": Protocol(
        table="Table 2: real-image editing",
        config="edit",
        rows=(
            Row("SyncSDE", "syncsde", {"CLIP-S": 0.313, "LPIPS": 0.254, "BG-LPIPS": 0.222}),
            Row("MasaCtrl", "masactrl", {"CLIP-S": 0.285, "LPIPS": 0.290, "BG-LPIPS": 0.341}),
        ),
        columns=(CLIP, Column("LPIPS", "lpips"), Column("BG-LPIPS", "background_lpips")),
        samples=250,
        trajectories=2,
        records=edit_records,
        description="4 editing pairs (cat→dog, dog→cat, horse→zebra, zebra→horse) on 250 LAION images each; CLIP-S of "
        "the edit with the target prompt, LPIPS to the source, background LPIPS outside the edited region",
        background=True,
    ),
    "ambiguous": Protocol(
        table="ambiguous images",
        config="ambiguous",
        rows=(
            Row("Visual Anagrams", "visual_anagrams"),
            Row("SyncTweedies", "synctweedies"),
            Row("SyncSDE 1/λ = 5", "syncsde"),
        ),
        columns=(CLIP,),
        samples=250,
        trajectories=2,
        records=ambiguous_records,
        description="5 prompt pairs × 4 transforms × 250 images; CLIP-S of each reading with its own prompt (the "
        "worst reading per image)",
        source=NOT_TRANSCRIBED,
    ),
    "mesh": Protocol(
        table="mesh texturing",
        config="mesh",
        rows=(Row("SyncMVD", "syncmvd"), Row("SyncSDE 1/λ = 5", "syncsde")),
        columns=(CLIP,),
        samples=100,
        trajectories=10,
        records=mesh_records,
        description="6 meshes × 100 textures, rendered from a fixed view; CLIP-S of the front view with the prompt",
        source=NOT_TRANSCRIBED,
    ),
    "motion": Protocol(
        table="long-horizon motion (no table in the paper)",
        config="motion",
        rows=(
            Row("MultiDiffusion", "multidiffusion"),
            Row("SyncTweedies", "synctweedies"),
            # 3 segments, then each of the 2 transitions re-sampled over the last 9/10 of the steps: ~4.8
            Row("DoubleTake", "doubletake", trajectories=5),
            Row("SyncSDE", "syncsde"),
        ),
        columns=(Column("PJ", "peak_jerk"), Column("AUJ", "auj")),
        samples=100,
        trajectories=3,
        records=motion_records,
        description="ours, no published protocol: 100 motions per text sequence (3 texts: 3 segments of 120 frames "
        "overlapping by 30); FlowMDM's Peak Jerk and Area Under the Jerk over the transitions (lower is smoother)",
        source=NOT_PUBLISHED,
        measures="motion",
    ),
}


# -- configs ------------------------------------------------------------------------------------------------------
def backbone_name(config: dict) -> str:
    """The backbone's model (hub id, folder, embedded name), its checkpoint, or else its class."""
    backbone = config["model"]["init_args"]["backbone"]
    init = backbone.get("init_args") or {}
    return init.get("model") or init.get("checkpoint") or backbone["class_path"]


def metrics_callback(config: dict) -> dict | None:
    from syncsde.evaluation.evaluate import METRICS_CLASSES

    for c in config.get("trainer", {}).get("callbacks") or []:
        if isinstance(c, dict) and c.get("class_path") in METRICS_CLASSES:
            return c
    return None


def protocol_config(base: dict, proto: Protocol, records: list, reference: Path | None, backbone) -> dict:
    """The base config with the protocol's records (each once per sample), the metrics' reference set, and the
    backbone's model where ``backbone`` overrides it."""
    cfg = copy.deepcopy(base)
    cfg.pop("output_dir", None)
    if backbone:
        cfg["model"]["init_args"]["backbone"].setdefault("init_args", {})["model"] = backbone
    old = cfg["data"]["init_args"]
    kept = {k: old[k] for k in ("seed", "batch_size") if k in old}
    if "prompts" in old or "prompt_file" in old:  # a PromptDataModule
        cfg["data"]["init_args"] = {"prompts": [r["prompt"] for r in records], "samples_per_prompt": 1, **kept}
    else:
        cfg["data"]["init_args"] = {"records": records, "samples_per_record": 1, **kept}
    if proto.measures != "metrics":  # measured from the samples' files afterwards (:func:`motion_statistics`)
        return cfg
    callback = metrics_callback(cfg)
    if callback is None:
        callback = {"class_path": "syncsde.evaluation.Metrics", "init_args": {}}
        cfg.setdefault("trainer", {}).setdefault("callbacks", []).append(callback)
    init = callback.setdefault("init_args", {})
    if reference is not None:
        init["reference"] = str(reference)
    if proto.background:
        init["lpips"] = True  # LPIPS where torchvision is installed (else reported unavailable)
    return cfg


def reference_config(cfg: dict, prompts: list[str]) -> dict:
    """Plain sampling (one trajectory, nothing synchronized) with the protocol's backbone and sampler settings, each
    prompt listed once per reference image."""
    init = cfg["model"]["init_args"]
    return {
        "trainer": {"accelerator": "auto", "devices": 1},
        "model": {
            "class_path": "syncsde.tasks.TextToImage",
            "init_args": {"backbone": init["backbone"], **{k: init[k] for k in SHARED_OPTIONS if k in init}},
        },
        "data": {
            "class_path": "syncsde.data.PromptDataModule",
            "init_args": {"prompts": prompts, "samples_per_prompt": 1, "seed": REFERENCE_SEED, "batch_size": 8},
        },
    }


def option_pairs(rest: list[str]) -> list[tuple[str, str | None]]:
    """``--a 1 --b=2 --c`` as [("--a", "1"), ("--b", "2"), ("--c", None)]."""
    out, i = [], 0
    while i < len(rest):
        arg = rest[i]
        if "=" in arg and arg.startswith("--"):
            out.append(tuple(arg.split("=", 1)))
        elif i + 1 < len(rest) and not rest[i + 1].startswith("--"):
            out.append((arg, rest[i + 1]))
            i += 1
        else:
            out.append((arg, None))
        i += 1
    return out


def flatten(pairs) -> list[str]:
    return [x for k, v in pairs for x in ((k,) if v is None else (k, v))]


def reference_options(rest: list[str]) -> list[str]:
    """The options of ``rest`` that apply to a reference run: the trainer's and the shared sampler settings."""
    shared = {f"--model.{k}" for k in SHARED_OPTIONS} | {f"--model.init_args.{k}" for k in SHARED_OPTIONS}
    return flatten((k, v) for k, v in option_pairs(rest) if k.startswith("--trainer.") or k in shared)


def option(rest: list[str], names: tuple[str, ...]):
    found = [v for k, v in option_pairs(rest) if k in names]
    return found[-1] if found else None


# -- estimate -----------------------------------------------------------------------------------------------------
@dataclass
class Work:
    """Denoiser evaluations (one trajectory at one step; guidance's two halves counted once) per folder."""

    evaluations: dict = field(default_factory=dict)  # folder -> evaluations of its whole run
    per_sample: dict = field(default_factory=dict)  # folder -> evaluations per sample

    def add(self, folder: Path, samples: int, per_sample: int) -> None:
        self.evaluations[folder], self.per_sample[folder] = samples * per_sample, per_sample

    def remaining(self) -> int:
        return sum(max(0, e - done(f) * self.per_sample[f]) for f, e in self.evaluations.items())

    def seconds_per_evaluation(self) -> float | None:
        """Measured on this device: the seconds of every finished sample over its evaluations."""
        secs = evals = 0.0
        for f in self.evaluations:
            for s in manifest_samples(f):
                secs, evals = secs + s.get("seconds", 0.0), evals + self.per_sample[f]
        return secs / evals if evals else None

    def line(self, devices: int) -> str:
        total, left = sum(self.evaluations.values()), self.remaining()
        text = f"syncsde reproduce: {total:,} denoiser evaluations in all, {left:,} left"
        rate = self.seconds_per_evaluation()
        if rate is not None and left:
            hours = left * rate / 3600 / max(devices, 1)
            text += f"; about {hours:.3g} h on this device × {devices} ({rate * 1000:.3g} ms per evaluation measured)"
        return text


def manifest_samples(folder: Path) -> list[dict]:
    from syncsde.writer import sidecars

    return [json.loads(p.read_text()) for p in sidecars(folder)] if Path(folder).is_dir() else []


def stale(folder: Path, reference: Path | None) -> bool:
    """Whether ``folder``'s metrics.json is missing or older than its samples or the reference set's."""
    metrics = folder / "metrics.json"
    if not metrics.is_file():
        return True
    manifests = [folder / "manifest.json"] + ([reference / "manifest.json"] if reference is not None else [])
    return any(m.is_file() and m.stat().st_mtime > metrics.stat().st_mtime for m in manifests)


def done(folder: Path) -> int:
    return len(manifest_samples(folder))


# -- statistics ---------------------------------------------------------------------------------------------------
def standard_error(values) -> float:
    v = np.asarray(values, dtype=float)
    return float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")


def bootstrap(statistic, sizes: tuple[int, ...], draws: int) -> float:
    """Standard deviation of ``statistic(*indices)`` over resamples (with replacement, fixed seed) of each set."""
    if min(sizes) < 2 or draws < 2:
        return float("nan")
    rng = np.random.default_rng(0)
    return float(np.std([statistic(*(rng.integers(0, n, n) for n in sizes)) for _ in range(draws)], ddof=1))


def folder_statistics(folder: Path, keys: set[str], draws: int, background: dict | None = None) -> dict[str, dict]:
    """Per folder and metric key: the figure recomputed from per-sample values (``value``) and its standard error
    (``se``): CLIP scores and LPIPS as means over samples; FID and KID with the folder's metric networks over
    bootstrap resamples of the generated samples (all crops of a sample together) and of the reference images.
    ``background``: object masks by sample id (:mod:`syncsde.evaluation.segmentation`), whose complement is the
    background of background LPIPS, in place of each sample's own edit mask."""
    import torch

    from syncsde.evaluation.evaluate import metrics_options
    from syncsde.evaluation.metrics import Metrics, folder_files, load_images, random_crops
    from syncsde.evaluation.segmentation import background_distances
    from syncsde.writer import read_sample

    device = "cuda" if torch.cuda.is_available() else "cpu"
    metrics = Metrics(**metrics_options(folder))
    samples = [read_sample(folder, meta) for meta in manifest_samples(folder)]
    out: dict[str, dict] = {}
    if any(k.startswith("clip_score") for k in keys):
        from syncsde.evaluation.features import CLIPEmbedder

        try:
            metrics.clip = CLIPEmbedder(metrics.clip_model).to(device)
        except Exception:  # noqa: BLE001 (metrics.json says why)
            metrics.clip = None
        if metrics.clip is not None:
            per: dict[str, list[float]] = {}
            for s in samples:
                for name, values in metrics.sample_clip_scores(s, device).items():
                    per.setdefault(name, []).append(float(torch.stack(values).mean()))
            out.update({k: {"value": float(np.mean(v)), "se": standard_error(v)} for k, v in per.items() if k in keys})
    if {"lpips", "background_lpips"} & keys and metrics.want_lpips:
        try:
            from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

            lpips = LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True).to(device)
        except Exception:  # noqa: BLE001 (no torchvision: metrics.json says so)
            lpips = None
        if lpips is not None:
            per = {"lpips": [], "background_lpips": []}
            for s in samples:
                if "source" not in s.extras:
                    continue
                image, src = s.image[None].to(device), s.extras["source"][None].to(device)
                per["lpips"].append(float(lpips(image, src)))
                if "mask" in s.extras and background is None:
                    keep = 1 - s.extras["mask"][None].to(device)
                    per["background_lpips"].append(float(lpips(image * keep, src * keep)))
            if background is not None:
                per["background_lpips"] = background_distances(samples, background, lpips, device)
            out.update({k: {"value": float(np.mean(v)), "se": standard_error(v)} for k, v in per.items() if v})
    if {"fid", "kid"} & keys and metrics.reference:
        from torchmetrics.image.fid import FrechetInceptionDistance, _compute_fid
        from torchmetrics.image.kid import poly_mmd

        try:
            metric = FrechetInceptionDistance(feature=metrics._features(), normalize=True).to(device)
            files = folder_files(metrics.reference)
        except Exception:  # noqa: BLE001 (metrics.json says why)
            return out

        def features(images):  # as torchmetrics' update: Inception takes 8-bit images, a custom network [0, 1]
            to_net = (lambda c: c) if metric.used_custom_model else (lambda c: (c * 255).byte())
            with torch.no_grad():
                return metric.inception(to_net(images.to(device))).double()

        # the reference set 64 images at a time: 2,000 images per prompt do not fit in memory as one tensor
        real = torch.cat([features(load_images(files[i : i + 64])) for i in range(0, len(files), 64)])
        crops = [
            random_crops(s.image, metrics.crop, metrics.crops_per_image, s.sample_id) if metrics.crop else s.image[None]
            for s in samples
        ]
        fake = torch.cat([features(c) for c in torch.cat(crops).split(64)])
        fake = fake.reshape(len(samples), -1, real.shape[1])  # (samples, crops, features)

        def moments(x):
            mu = x.mean(0)
            d = x - mu
            return mu, d.T @ d / (len(x) - 1)

        def fid(r, f):
            a, b = real[r], fake[f].reshape(-1, real.shape[1])
            return float(_compute_fid(*moments(a), *moments(b)))

        def kid(r, f):
            return float(poly_mmd(real[r], fake[f].reshape(-1, real.shape[1])))

        every = (np.arange(len(real)), np.arange(len(samples)))
        sizes = (len(real), len(samples))
        if "fid" in keys:
            out["fid"] = {"value": fid(*every), "se": bootstrap(fid, sizes, draws)}
        if "kid" in keys:
            out["kid"] = {"value": kid(*every), "se": bootstrap(kid, sizes, draws)}
    return out


def motion_statistics(folder: Path, draws: int) -> dict[str, dict]:
    """FlowMDM's Peak Jerk and AUJ of the folder's motions (their transitions' jerk curves averaged frame by frame,
    as ``syncsde.evaluation.coherence`` measures them), with standard errors over bootstrap resamples of the
    motions (all transitions of a motion together)."""
    curves = [
        transition_curves(np.load(Path(folder) / meta["files"]["joints"]), transitions_of(meta))
        for meta in manifest_samples(folder)
    ]
    out = {}
    for which, key in enumerate(("peak_jerk", "auj")):

        def figure(idx, which=which):
            return peak_jerk_auj(np.concatenate([curves[i] for i in idx]))[which]

        out[key] = {"value": figure(range(len(curves))), "se": bootstrap(figure, (len(curves),), draws)}
    return out


# -- the table ----------------------------------------------------------------------------------------------------
def fmt(x, digits: int = 4) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}g}"


def table_rows(
    proto: Protocol, folders: dict[str, Path], skipped: dict[str, str], draws: int, background: dict | None = None
) -> list[dict]:
    """Per row, the paper's figures beside the measured ones; with ``background`` (object masks by sample id), the
    measured BG-LPIPS is the one on the masks' background (:func:`folder_statistics`), not metrics.json's."""
    rows = []
    for row in proto.rows:
        entry = {"label": row.label, "method": row.method, "figures": {}}
        folder = folders.get(row.method)
        measured, stats = {}, {}
        if folder is None:
            entry["not_run"] = skipped.get(row.method, "not run")
        elif proto.measures == "motion":
            entry.update(folder=str(folder), num_samples=done(folder))
            stats = motion_statistics(folder, draws)
            measured = {k: {"available": True, "value": v["value"]} for k, v in stats.items()}
        else:
            entry.update(folder=str(folder), num_samples=done(folder))
            record = json.loads((folder / "metrics.json").read_text())
            measured = record["metrics"]
            stats = folder_statistics(folder, {c.key for c in proto.columns}, draws, background)
        for col in proto.columns:
            fig = {"paper": row.paper.get(col.label)}
            m = measured.get(col.key)
            if background is not None and col.key == "background_lpips" and col.key in stats:
                m = {"available": True, "value": stats[col.key]["value"]}
            if isinstance(m, dict) and m.get("available"):
                fig["measured"] = m["value"] * col.scale
                se = stats.get(col.key, {}).get("se")
                fig["se"] = None if se is None or math.isnan(se) else se * col.scale
                if fig["paper"] is not None:
                    fig["difference"] = fig["measured"] - fig["paper"]
            elif isinstance(m, dict):
                fig["unavailable"] = m.get("reason", "")
            entry["figures"][col.label] = fig
        rows.append(entry)
    return rows


def markdown(proto: Protocol, rows: list[dict], substitutions: list[str]) -> str:
    head = ["method"]
    for c in proto.columns:
        head += [f"{c.label} paper", f"{c.label} measured ± SE", f"{c.label} Δ ± SE"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["label"] + (f" ({r['not_run']})" if "not_run" in r else "")]
        for c in proto.columns:
            f = r["figures"][c.label]
            se = f" ± {fmt(f.get('se'), 2)}" if f.get("se") is not None else ""
            cells.append(fmt(f["paper"]))
            cells.append(fmt(f["measured"]) + se if "measured" in f else ("n/a" if "unavailable" in f else "–"))
            cells.append(fmt(f["difference"]) + se if "difference" in f else "–")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"{proto.table}; the paper's figures: {proto.source}. Δ = measured − paper; its SE is the measured "
        "figure's (bootstrap over samples; the paper's figure taken as exact).",
    ]
    lines += ["", "Substitutions and differences from the paper's protocol:"] + [f"- {s}" for s in substitutions]
    return "\n".join(lines)


def substitutions(proto, cfg, paper_cfg, rows, folders, scale, n, notes, rest, segmentation=None) -> list[str]:
    out = []
    model, paper_model = backbone_name(cfg), backbone_name(paper_cfg)
    if model != paper_model:
        out.append(f"backbone: {model} instead of the paper's {paper_model}")
    ours, paper = cfg["model"]["init_args"].get("strategy", {}), paper_cfg["model"]["init_args"].get("strategy", {})
    if ours != paper:
        out.append(
            f"SyncSDE: {json.dumps(ours.get('init_args', ours))} instead of the paper's "
            f"{json.dumps(paper.get('init_args', paper))}"
        )
    if scale != 1:
        out.append(f"samples: {n} per record instead of {proto.samples} (--scale {scale:g})")
        if proto.reference:
            out.append(
                f"reference: {max(2, round(proto.reference * scale))} images per prompt instead of {proto.reference}"
            )
    out += notes
    for folder in folders.values():
        if not (folder / "metrics.json").is_file():  # measured from the samples' files (motion)
            continue
        networks = json.loads((folder / "metrics.json").read_text()).get("networks", {})
        for key, paper in PAPER_NETWORKS.items():
            used = networks.get(key)
            line = f"{key}: {used} instead of the paper's {paper}"
            if used != paper and line not in out and (key == "clip_model" or networks.get("reference")):
                out.append(line)
    for r in rows:
        for label, f in r["figures"].items():
            if "unavailable" in f:
                line = f"{label}: not measured ({f['unavailable']})"
                if line not in out:
                    out.append(line)
    if segmentation:
        out.append(segmentation)
    if rest:
        out.append(f"options passed to every run: {' '.join(flatten(option_pairs(rest)))}")
    return out


# -- the background of BG-LPIPS ----------------------------------------------------------------------------------
def segmentation_choice(value: str | None, proto: Protocol, model: str | None) -> str | None:
    """The protocol's background segmentation: ``--segmentation`` as given, else CLIPSeg, or ``own`` with the
    embedded models (which have no segmentation model to go with them); None where the table has no BG-LPIPS."""
    if not proto.background:
        if value is not None:
            raise InputError(f"--segmentation {value}: only the edit protocol has BG-LPIPS; leave it out here")
        return None
    if value is None:
        return "own" if str(model).startswith("syncsde:") else "clipseg"
    if value not in ("clipseg", "own") and not Path(value).is_dir():
        raise InputError(f"--segmentation {value}: give clipseg, own, or a folder of masks (one per source image)")
    return value


def segmentation_masks(choice: str, recs: Records, args, out: Path) -> tuple[dict | None, str]:
    """Object masks by sample id (None: each method's own edit mask) and the line that says where they came from."""
    from syncsde.evaluation import segmentation as seg

    images = [r["image"] for r in recs.records]
    if choice == "own":
        why = (
            " (the default with the embedded models, which have no segmentation model)" if not args.segmentation else ""
        )
        return None, (
            f"BG-LPIPS: the background is the complement of each method's own edit mask{why}, not the paper's "
            "background of the source image; each method is judged on its own pixels"
        )
    if choice != "clipseg":
        masks = seg.folder_masks(choice, recs.mask_names, images)
        line = f"BG-LPIPS: the background of each source image outside the masks in {choice}, the same for every method"
    else:
        import torch
        from PIL import Image

        from syncsde.io import save_png

        def pictures():  # one at a time: a thousand source images need not sit in memory together
            for path in images:
                with Image.open(path) as im:
                    yield im.convert("RGB")

        words = [r["source_word"] for r in recs.records]
        device = "cuda" if torch.cuda.is_available() else "cpu"
        masks = seg.clipseg_masks(pictures(), words, args.segmentation_model, args.segmentation_threshold, device)
        (out / "segmentation").mkdir(parents=True, exist_ok=True)
        for i, m in enumerate(masks):
            save_png(out / "segmentation" / f"{i:05d}.png", m.expand(3, -1, -1))
        line = (
            f"BG-LPIPS: the background of each source image outside CLIPSeg's mask of its source word "
            f"({args.segmentation_model}, sigmoid > {args.segmentation_threshold:g}; {out / 'segmentation'}), the "
            "same for every method; the paper's segmentation is not known"
        )
    return dict(enumerate(masks)), line


# -- the command --------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict:
    from syncsde.evaluation.compare import overrides, recompute_metrics, run_in_process, task_of

    ap = argparse.ArgumentParser(prog="syncsde reproduce", description=__doc__.splitlines()[0])
    ap.add_argument("task", choices=sorted(PROTOCOLS), help="the paper's task whose table to reproduce")
    ap.add_argument("--scale", type=float, default=1.0, help="share of the protocol's samples (e.g. 0.01)")
    ap.add_argument("--configs", default="configs/paper", help="folder of task configs (configs/tiny: embedded models)")
    ap.add_argument("--backbone", default=None, help="the backbone's model instead of the config's")
    ap.add_argument("--data", default=None, help="the paper's data where the official repository ships none")
    ap.add_argument("--output_dir", default=None, help="default outputs/reproduce/<task>")
    ap.add_argument("--methods", default=None, help="comma-separated rows to run (method names); default all")
    ap.add_argument("--probe", type=int, default=2, help="samples of the first method run first, for the estimate")
    ap.add_argument("--bootstrap", type=int, default=100, help="bootstrap draws (FID, KID, motion SEs)")
    ap.add_argument("--dry_run", action="store_true", help="print the protocol's work and stop")
    ap.add_argument(
        "--segmentation",
        default=None,
        help="edit: BG-LPIPS's background: clipseg (CLIPSeg on each source image, prompted with its source word; "
        "the default), own (each method's own edit mask; the default with the embedded models) or FOLDER (your "
        "masks, one per source image: white the object)",
    )
    ap.add_argument("--segmentation_model", default=CLIPSEG, help="CLIPSeg hub id or saved folder")
    ap.add_argument("--segmentation_threshold", type=float, default=THRESHOLD, help="on CLIPSeg's sigmoid")
    args, rest = ap.parse_known_args(argv)
    proto = PROTOCOLS[args.task]
    if not args.scale > 0:
        raise InputError(f"--scale {args.scale} must be above 0 (1: the paper's sample counts)")
    config_path = Path(args.configs) / f"{proto.config}.yaml"
    paper_path = Path("configs/paper") / f"{proto.config}.yaml"
    for p in (config_path, paper_path):
        if not p.is_file():
            raise InputError(f"{p} does not exist; run syncsde reproduce from the repository's root")
    base = yaml.safe_load(config_path.read_text())
    paper_cfg = yaml.safe_load(paper_path.read_text())
    out = Path(args.output_dir or f"outputs/reproduce/{args.task}")
    n = max(1, round(proto.samples * args.scale))
    recs = proto.records(args.data, n, base)
    model = args.backbone or backbone_name(base)
    segmentation = segmentation_choice(args.segmentation, proto, model)
    masks, seg_line = None, None
    if segmentation not in (None, "own", "clipseg"):  # the user's masks: checked before anything runs
        masks, seg_line = segmentation_masks(segmentation, recs, args, out)

    task_name = task_of(base)
    task_class = registry.get("task", task_name)
    wanted = args.methods.split(",") if args.methods else [r.method for r in proto.rows]
    unknown = sorted(set(wanted) - {r.method for r in proto.rows})
    if unknown:
        names = ", ".join(r.method for r in proto.rows)
        raise InputError(
            f"--methods {','.join(unknown)}: not a row of the paper's {args.task} table; choose from {names}"
        )
    runnable, skipped = [], {}
    for row in proto.rows:
        if row.method not in wanted:
            skipped[row.method] = "not asked for (--methods)"
        elif row.method != "syncsde" and registry.find("method", row.method) is None:
            skipped[row.method] = "not in syncsde"  # a row of the paper that no registered method runs
        elif row.method != "syncsde" and not registry.get("method", row.method).applies_to(task_class):
            skipped[row.method] = f"does not apply to syncsde's {task_name} task"
        else:
            runnable.append(row.method)

    reference = out / "reference" if proto.reference else None
    cfg = protocol_config(base, proto, recs.records, reference, args.backbone)
    steps = int(
        option(rest, ("--model.num_inference_steps", "--model.init_args.num_inference_steps"))
        or cfg["model"]["init_args"].get("num_inference_steps", 50)
    )
    devices_opt = option(rest, ("--trainer.devices",))
    devices = int(devices_opt) if devices_opt and devices_opt.isdigit() else 1

    work = Work()
    for row in proto.rows:
        if row.method in runnable:
            work.add(out / row.method, len(recs.records), (row.trajectories or proto.trajectories) * steps)
    ref_prompts = []
    if reference is not None:
        ref_n = max(2, round(proto.reference * args.scale))
        ref_prompts = [p for p in recs.prompts for _ in range(ref_n)]
        work.add(reference, len(ref_prompts), steps)
    print(f"syncsde reproduce {args.task}: {proto.description}", file=sys.stderr)
    for note in recs.notes:
        print(f"syncsde reproduce: {note}", file=sys.stderr)
    print(work.line(devices), file=sys.stderr)
    if args.dry_run:
        return {"task": args.task, "evaluations": sum(work.evaluations.values()), "remaining": work.remaining()}
    out.mkdir(parents=True, exist_ok=True)
    if segmentation in ("own", "clipseg"):  # CLIPSeg loads (or says why not) before anything runs
        masks, seg_line = segmentation_masks(segmentation, recs, args, out)
    protocol_file = out / "protocol.yaml"
    protocol_file.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    for method, reason in skipped.items():
        print(f"syncsde reproduce: {method}: {reason}; its row shows the paper's figures only", file=sys.stderr)

    def predict(config: Path, method: str, folder: Path, label: str) -> None:
        extra = overrides(task_name, method, cfg) if method else []
        options = rest if method else reference_options(rest)
        run_in_process(["predict", "--config", str(config), *extra, "--output_dir", str(folder), *options], label)

    probe = max(args.probe, devices) if args.probe > 0 else 0
    if runnable and done(out / runnable[0]) < probe:  # the first samples of the first method: seconds per evaluation
        probe_file = out / "probe.yaml"
        probe_cfg = protocol_config(base, proto, recs.records[:probe], reference, args.backbone)
        probe_file.write_text(yaml.safe_dump(probe_cfg, sort_keys=False, allow_unicode=True))
        predict(probe_file, runnable[0], out / runnable[0], f"syncsde reproduce: probe ({runnable[0]})")
        print(work.line(devices), file=sys.stderr)
    if reference is not None:
        ref_file = out / "reference.yaml"
        ref_file.write_text(yaml.safe_dump(reference_config(cfg, ref_prompts), sort_keys=False, allow_unicode=True))
        predict(ref_file, "", reference, "syncsde reproduce: reference set")
        print(work.line(devices), file=sys.stderr)
    folders = {}
    for method in runnable:
        folders[method] = out / method
        predict(protocol_file, method, folders[method], f"syncsde reproduce: {method}")
        print(work.line(devices), file=sys.stderr)
    if proto.measures == "metrics":
        recompute_metrics([f for f in folders.values() if stale(f, reference)])

    rows = table_rows(proto, folders, skipped, args.bootstrap, masks)
    subs = substitutions(proto, cfg, paper_cfg, rows, folders, args.scale, n, recs.notes, rest, seg_line)
    text = markdown(proto, rows, subs)
    result = {
        "task": args.task,
        "table": proto.table,
        "paper_figures": proto.source,
        "protocol": proto.description,
        "config": str(config_path),
        "scale": args.scale,
        "samples_per_record": n,
        "rows": rows,
        "substitutions": subs,
        "segmentation": segmentation,
        "evaluations": sum(work.evaluations.values()),
        "seconds_per_evaluation": work.seconds_per_evaluation(),
    }
    save_json(out / "reproduction.json", result)
    (out / "table.md").write_text(text + "\n")
    print(text)
    print(f"syncsde reproduce: wrote {out / 'table.md'} and {out / 'reproduction.json'}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
