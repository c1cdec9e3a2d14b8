"""Metric callbacks: FID, KID, CLIP score and (for editing) LPIPS, collected during ``predict`` across processes.

Add to a config:

    trainer:
      callbacks:
        - class_path: syncsde.evaluation.Metrics
          init_args:
            reference: outputs/tiny/reference_wide   # a folder of images (or an output folder of a reference run)
            feature_network: syncsde:tiny-clip        # or "inception" (needs torch-fidelity and its weights)
            clip_model: syncsde:tiny-clip             # or a CLIP hub id / folder (openai/clip-vit-base-patch32)
            crop: 32                                   # wide images: random square crops of this size for FID/KID

At the end, rank 0 writes ``metrics.json`` into the output folder and appends one row to ``metrics.csv``. States
are torchmetrics metrics, so each process adds only its own samples and ``compute`` gathers them. A metric whose
network is unavailable is reported as ``{"available": false, "reason": ...}``, never silently dropped.

- FID / KID (torchmetrics) between the generated images (or crops) and the reference set; KID is reported as the
  mean and standard deviation over its subsets (``value`` ± ``std``), drawn with a fixed seed (the same images give
  the same KID).
- CLIP score: 100·max(cos(image, text), 0) — torchmetrics' definition — computed with the given CLIP model (the
  embedded tiny CLIP offline), judged fairly per task:
  - a sample with several readings (ambiguous images: each reading against its own prompt) scores its worst
    reading, the headline ``clip_score``; each reading's mean is reported too (``clip_score_reading1``, ...);
  - with ``crop`` (wide images), an image wider or taller than the crop is scored on native-size crops instead of
    being squeezed into the CLIP's input: ``clip_score`` is the mean over the same random crops as FID/KID, and
    ``clip_score_center`` the centre crop.
- LPIPS to the source image and background LPIPS (the source and the edit with the edit mask blanked) for editing;
  torchmetrics' LPIPS needs torchvision.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from PIL import Image

from syncsde.evaluation.features import CLIPEmbedder
from syncsde.io import atomic_write, save_json
from syncsde.writer import SampleWriter, read_sample, sidecars


def load_folder(folder: str | Path, limit: int | None = None) -> torch.Tensor:
    """The images of a folder as (N, 3, H, W): the main image of every sample of a syncsde output folder (from its
    manifest), or every PNG/JPEG of any other folder, sorted by name."""
    return load_images(folder_files(folder, limit))


def load_images(files) -> torch.Tensor:
    """Image files as (N, 3, H, W) in [0, 1]."""
    return torch.stack(
        [
            torch.from_numpy(np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
            for p in files
        ]
    )


def folder_files(folder: str | Path, limit: int | None = None) -> list[Path]:
    """The image files :func:`load_folder` reads."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"reference folder '{folder}' does not exist")
    manifest = folder / "manifest.json"
    if manifest.is_file():
        files = [folder / s["files"]["image"] for s in json.loads(manifest.read_text())["samples"]]
    else:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not files:
        raise FileNotFoundError(f"reference folder '{folder}' has no images")
    return files[:limit] if limit else files


def random_crops(image: torch.Tensor, size: int, count: int, seed: int) -> torch.Tensor:
    """``count`` square crops of ``size`` from (3, H, W), positions from (seed) alone."""
    g = torch.Generator().manual_seed(seed)
    H, W = image.shape[-2:]
    ys = torch.randint(0, H - size + 1, (count,), generator=g)
    xs = torch.randint(0, W - size + 1, (count,), generator=g)
    return torch.stack([image[:, y : y + size, x : x + size] for y, x in zip(ys.tolist(), xs.tolist())])


def center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """The centred square crop of ``size`` from (3, H, W)."""
    H, W = image.shape[-2:]
    y, x = (H - size) // 2, (W - size) // 2
    return image[:, y : y + size, x : x + size]


def unavailable(reason: str) -> dict:
    return {"available": False, "reason": reason}


class Metrics(Callback):
    """Args:
    reference: folder of reference images for FID/KID (None: FID/KID are reported unavailable).
    feature_network: "syncsde:tiny-clip" / a CLIP hub id or folder (its image embeddings), or "inception".
    clip_model: CLIP model for the CLIP score.
    crop: square crop size (wide images: the native size): FID/KID on random crops, the CLIP score on the same
        random crops and on the centre crop; None = whole images, resized by the networks.
    crops_per_image: random crops per generated image.
    kid_subset_size: KID subset size (capped by the number of images).
    lpips: compute LPIPS and background LPIPS (editing; needs torchvision).
    output_dir: where metrics.json goes (default: the CLI's --output_dir, else the working directory).
    """

    def __init__(
        self,
        reference: str | None = None,
        feature_network: str = "syncsde:tiny-clip",
        clip_model: str = "syncsde:tiny-clip",
        crop: int | None = None,
        crops_per_image: int = 1,
        kid_subset_size: int = 100,
        lpips: bool = False,
        output_dir: str | None = None,
    ):
        super().__init__()
        self.reference, self.feature_network, self.clip_model = reference, feature_network, clip_model
        self.crop, self.crops_per_image, self.kid_subset_size = crop, crops_per_image, kid_subset_size
        self.want_lpips, self.output_dir = lpips, output_dir
        self.status: dict[str, dict] = {}
        self.metrics: dict[str, torch.nn.Module] = {}

    # -- a folder whose samples are all made ------------------------------------------------------------------
    def outdated(self, folder: Path) -> bool:
        """Whether ``folder``'s metrics.json is missing or older than its manifest (a run killed after its last
        sample): a rerun with nothing left to generate then recomputes them (:meth:`recompute`)."""
        metrics, manifest = Path(folder) / "metrics.json", Path(folder) / "manifest.json"
        return not metrics.is_file() or (manifest.is_file() and metrics.stat().st_mtime < manifest.stat().st_mtime)

    def recompute(self, folder: Path) -> None:
        """metrics.json (and a metrics.csv row) over every sample of ``folder``, with this callback's options."""
        from syncsde.evaluation.evaluate import evaluate_folder

        evaluate_folder(Path(folder), metrics=self)

    # -- set-up ---------------------------------------------------------------------------------------------
    def _features(self):
        if self.feature_network == "inception":
            return 2048
        return CLIPEmbedder(self.feature_network)

    def on_predict_start(self, trainer, pl_module):
        from torchmetrics import MeanMetric, SumMetric

        self.metrics = {"num_samples": SumMetric()}
        try:
            self.clip = CLIPEmbedder(self.clip_model).to(pl_module.device)
            self.metrics["clip_score"] = MeanMetric()
        except Exception as e:  # noqa: BLE001 (reported, not dropped)
            self.status["clip_score"] = unavailable(f"CLIP model '{self.clip_model}': {str(e).splitlines()[0]}")
        if self.reference is None:
            for name in ("fid", "kid"):
                self.status[name] = unavailable("no reference set: set reference to a folder of images")
        else:
            self._setup_fid_kid(trainer, pl_module)
        if self.want_lpips:
            try:
                from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

                self.metrics["lpips"] = LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True)
                self.metrics["background_lpips"] = LearnedPerceptualImagePatchSimilarity(
                    net_type="alex", normalize=True
                )
            except Exception as e:  # noqa: BLE001
                for name in ("lpips", "background_lpips"):
                    self.status[name] = unavailable(f"{type(e).__name__}: {str(e).splitlines()[0]}")
        for m in self.metrics.values():
            m.to(pl_module.device)

    def _setup_fid_kid(self, trainer, pl_module):
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.kid import KernelInceptionDistance

        try:
            features = self._features()
            reference = folder_files(self.reference)  # read 64 at a time below: 20,000 images do not fit at once
            self.metrics["fid"] = FrechetInceptionDistance(feature=features, normalize=True)
            subset = min(self.kid_subset_size, len(reference))
            self.metrics["kid"] = KernelInceptionDistance(feature=features, normalize=True, subset_size=subset)
        except Exception as e:  # noqa: BLE001
            for name in ("fid", "kid"):
                self.status[name] = unavailable(f"{type(e).__name__}: {str(e).splitlines()[0]}")
            return
        self.num_reference = len(reference)
        if len(reference) < trainer.world_size:
            for name in ("fid", "kid"):
                self.metrics.pop(name)
                self.status[name] = unavailable(f"{len(reference)} reference images for {trainer.world_size} processes")
            return
        # states are gathered over processes: each adds its share of the reference set, so the whole set counts once
        # and every process holds features (list states must not be empty on any process when they are synced)
        share = reference[trainer.global_rank :: trainer.world_size]
        try:
            for start in range(0, len(share), 64):
                chunk = load_images(share[start : start + 64]).to(pl_module.device)
                for name in ("fid", "kid"):
                    self.metrics[name].update(chunk, real=True)
        except Exception as e:  # noqa: BLE001 (an unreadable reference image, images of different sizes)
            for name in ("fid", "kid"):
                self.metrics.pop(name)
                self.status[name] = unavailable(f"{type(e).__name__}: {str(e).splitlines()[0]}")

    # -- collection -----------------------------------------------------------------------------------------
    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        for out in outputs:
            self.metrics["num_samples"].update(1.0)
            image = out.image.to(pl_module.device)
            crops = random_crops(image, self.crop, self.crops_per_image, out.sample_id) if self.crop else image[None]
            if "clip_score" in self.metrics:
                self._clip_scores(out, pl_module.device)
            if "fid" in self.metrics:
                self.metrics["fid"].update(crops, real=False)
                self.metrics["kid"].update(crops, real=False)
            if "lpips" in self.metrics and "source" in out.extras:
                src = out.extras["source"].to(image)[None]
                self.metrics["lpips"].update(image[None], src)
                if "mask" in out.extras:
                    keep = 1 - out.extras["mask"].to(image)[None]
                    self.metrics["background_lpips"].update(image[None] * keep, src * keep)

    def add_earlier_samples(self, trainer, pl_module) -> None:
        """The folder's samples made before this run (a resumed run), read back from disk: each process adds its
        share, so that metrics.json covers every sample of the manifest, not only this run's."""
        writer = next((c for c in trainer.callbacks if isinstance(c, SampleWriter)), None)
        pending = getattr(trainer.datamodule, "pending", None)
        if writer is None or pending is None:
            return
        made = {s["sample_id"] for s in pending()}
        earlier = [p for p in sidecars(writer.output_dir) if int(p.stem) not in made]
        for path in earlier[trainer.global_rank :: trainer.world_size]:
            sample = read_sample(writer.output_dir, json.loads(path.read_text()))
            self.on_predict_batch_end(trainer, pl_module, [sample], None, 0)

    def clip_score(self, images: torch.Tensor, text: str) -> torch.Tensor:
        """Mean of 100·max(cos, 0) of each image with the text."""
        cos = self.clip.encode_images(images) @ self.clip.encode_texts([text]).T
        return 100 * cos.clamp_min(0).mean()

    def sample_clip_scores(self, out, device) -> dict[str, list[torch.Tensor]]:
        """The CLIP-score values one sample adds to each CLIP metric (``clip_score``: its worst reading; with
        ``crop``, ``clip_score_center``: one per reading; ``clip_score_readingN`` where it has several readings)."""
        readings, values = [], {}
        for img, text in out.clip_pairs():
            img = img.to(device)
            if self.crop and max(img.shape[-2:]) > self.crop:
                readings.append(
                    self.clip_score(random_crops(img, self.crop, self.crops_per_image, out.sample_id), text)
                )
                values.setdefault("clip_score_center", []).append(
                    self.clip_score(center_crop(img, self.crop)[None], text)
                )
            else:
                readings.append(self.clip_score(img[None], text))
        values["clip_score"] = [torch.stack(readings).min()]
        if len(readings) > 1:
            values.update({f"clip_score_reading{i + 1}": [score] for i, score in enumerate(readings)})
        return values

    def _clip_scores(self, out, device) -> None:
        for name, scores in self.sample_clip_scores(out, device).items():
            for score in scores:
                self._update(name, score)

    def _update(self, name: str, value: torch.Tensor) -> None:
        """A mean metric created when a sample first reports it (every process reports the same names)."""
        from torchmetrics import MeanMetric

        if name not in self.metrics:
            self.metrics[name] = MeanMetric().to(value.device)
        self.metrics[name].update(value)

    def on_predict_end(self, trainer, pl_module):
        self.add_earlier_samples(trainer, pl_module)
        results = dict(self.status)
        kid = self.metrics.get("kid")
        if kid is not None:
            # torchmetrics 1.9 gathers list states chunk by chunk, and processes holding different numbers of chunks
            # (different numbers of update calls) fall out of step: give every process exactly one chunk
            for attr in ("real_features", "fake_features"):
                chunks = getattr(kid, attr)
                setattr(kid, attr, [torch.cat(chunks)] if chunks else [])
            # KID's subsets cannot be larger than either set (both known only once gathered)
            generated = int(self.metrics["num_samples"].compute()) * (self.crops_per_image if self.crop else 1)
            kid.subset_size = max(2, min(self.kid_subset_size, self.num_reference, generated))
        for name, metric in self.metrics.items():
            try:
                if name == "kid":  # its subsets are drawn from torch's global generator: seed them, so that the
                    with torch.random.fork_rng(devices=[]):  # same images give the same KID every time
                        torch.manual_seed(0)
                        value = metric.compute()
                else:
                    value = metric.compute()
                if name == "kid":
                    results[name] = {"available": True, "value": float(value[0]), "std": float(value[1])}
                elif name == "num_samples":
                    results[name] = int(value)
                    continue
                else:
                    results[name] = {"available": True, "value": float(value)}
            except Exception as e:  # noqa: BLE001 (e.g. too few samples for a covariance)
                results[name] = unavailable(f"{type(e).__name__}: {str(e).splitlines()[0]}")
        if not trainer.is_global_zero:
            return
        writer = next((c for c in trainer.callbacks if isinstance(c, SampleWriter)), None)
        out = Path(self.output_dir or (writer.output_dir if writer else "."))
        networks = {
            "feature_network": self.feature_network,
            "clip_model": self.clip_model,
            "reference": self.reference,
            "num_reference": getattr(self, "num_reference", 0),
            "crop": self.crop,
        }
        record = {
            "metrics": results,
            "networks": networks,
            "strategy": pl_module.strategy.describe(),
            "task": getattr(pl_module, "task_name", None),
        }
        save_json(out / "metrics.json", record)
        append_csv(out / "metrics.csv", flat_row(record))


def flat_row(record: dict) -> dict:
    row = {"task": record["task"], **{f"strategy.{k}": v for k, v in record["strategy"].items()}}
    for name, r in record["metrics"].items():
        row[name] = r if not isinstance(r, dict) else (r["value"] if r.get("available") else "")
        if isinstance(r, dict) and "std" in r:
            row[f"{name}_std"] = r["std"]
    return row


def append_csv(path: Path, row: dict) -> None:
    """Append one row (rewriting the file atomically, with the union of all columns)."""
    rows = list(csv.DictReader(path.open())) if path.exists() else []
    rows.append({k: str(v) for k, v in row.items()})
    fields = list(dict.fromkeys(k for r in rows for k in r))

    def write(p):
        with open(p, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)

    atomic_write(path, write)
