"""The prediction writer: one PNG per sample (plus extras), a JSON sidecar, and a manifest — all atomic — and the
way back from a folder to its samples (:func:`read_sample`, for ``syncsde evaluate``)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image

from syncsde.data import sample_name
from syncsde.io import atomic_write, quantized, save_gif, save_json, save_mp4, save_npy, save_png, video_available
from syncsde.task import SampleOutput


class SampleWriter(BasePredictionWriter):
    """Writes ``<id>.png``, ``<id>_<extra>.png``, each animation as ``<id>_<name>.gif`` and — with the ``video``
    extra installed — also ``<id>_<name>.mp4``, and, last, ``<id>.json`` (its presence marks a finished sample);
    at the end, rank 0 writes ``manifest.json`` listing every sample in the folder. Animations play at the sample's
    ``fps`` (its sidecar's, e.g. motion at 20) or 12.5 frames per second.

    ``config`` (the run's configuration as YAML) is written to ``config.yaml`` just before the first sample is
    generated, so a run that stops earlier leaves no record. Once written, the sample's images are replaced by their
    8-bit values, so the callbacks after the writer (metrics) judge exactly what is on disk.
    """

    def __init__(self, output_dir: str | Path, config: str | None = None):
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.config = config
        self.video = video_available()
        self._told = False

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if self.config is not None and trainer.is_global_zero:
            text, self.config = self.config, None
            atomic_write(self.output_dir / "config.yaml", lambda p: p.write_text(text))

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        for out in prediction:
            self.write_sample(out)

    def write_sample(self, out: SampleOutput) -> None:
        name = sample_name(out.sample_id)
        images = {"image": out.image, **out.extras}
        files = {}
        fps = float(out.meta.get("fps", 12.5))
        for key, frames in out.animations.items():
            files[key] = f"{name}_{key}.gif"
            save_gif(self.output_dir / files[key], frames, round(1000 / fps))
            if self.video:
                files[f"{key}_mp4"] = f"{name}_{key}.mp4"
                save_mp4(self.output_dir / files[f"{key}_mp4"], frames, fps)
            elif not self._told:
                warnings.warn(
                    "animations are written as GIF only; MP4 needs imageio-ffmpeg, a dependency of syncsde: "
                    "pip install imageio-ffmpeg",
                    stacklevel=2,
                )
                self._told = True
        scored = []  # the (image, text) pairs the CLIP score judges, by file key; an image not saved otherwise is
        for k, (img, text) in enumerate(out.scored):  # saved as <id>_scored<k>.png
            key = next((key for key, t in images.items() if t is img), None)
            if key is None:
                key = f"scored{k}"
                images[key] = img
            scored.append([key, text])
        for key, img in images.items():
            files[key] = f"{name}.png" if key == "image" else f"{name}_{key}.png"
            save_png(self.output_dir / files[key], img)
        saved = {key: quantized(img) for key, img in images.items()}
        out.image, out.extras = saved["image"], {key: saved[key] for key in out.extras}
        out.scored = [(saved[key], text) for key, text in scored]
        for key, array in out.arrays.items():
            files[key] = f"{name}_{key}.npy"
            save_npy(self.output_dir / files[key], array)
        for key, data in out.files.items():
            files[key] = f"{name}/{key}"
            atomic_write(self.output_dir / files[key], lambda p, data=data: p.write_bytes(data))
        meta = {**out.meta, "sample_id": out.sample_id, "files": files, **({"scored": scored} if scored else {})}
        save_json(self.output_dir / f"{name}.json", meta)

    def on_predict_end(self, trainer, pl_module):
        trainer.strategy.barrier()
        if trainer.is_global_zero:
            write_manifest(self.output_dir)

    def on_exception(self, trainer, pl_module, exception):
        if trainer.is_global_zero and any(sidecars(self.output_dir)):  # a stopped run: the manifest of what it made
            write_manifest(self.output_dir)


def sidecars(output_dir: str | Path) -> list[Path]:
    """The sidecars of the finished samples of a folder, by sample id."""
    return sorted(p for p in Path(output_dir).glob("[0-9]*.json") if p.stem.isdigit())


def write_manifest(output_dir: Path) -> Path:
    samples = [json.loads(p.read_text()) for p in sidecars(output_dir)]
    return save_json(Path(output_dir) / "manifest.json", {"num_samples": len(samples), "samples": samples})


def read_image(path: Path) -> torch.Tensor:
    """A saved image back as (3, H, W) in [0, 1]."""
    with Image.open(path) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)


def read_sample(output_dir: str | Path, meta: dict) -> SampleOutput:
    """The sample a sidecar describes, as the task returned it: its images (main, extras) and the pairs its CLIP
    score judges. Animations, arrays and other files stay on disk."""
    folder = Path(output_dir)
    images = {key: read_image(folder / f) for key, f in meta["files"].items() if f.endswith(".png")}
    scored = [(images[key], text) for key, text in meta.get("scored", [])]
    extras = {k: v for k, v in images.items() if k != "image" and not k.startswith("scored")}
    return SampleOutput(meta["sample_id"], images["image"], meta, extras, scored=scored)
