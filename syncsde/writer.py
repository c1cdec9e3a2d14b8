"""The prediction writer: one PNG per sample (plus extras), a JSON sidecar, and a manifest — all atomic."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from lightning.pytorch.callbacks import BasePredictionWriter

from syncsde.data import sample_name
from syncsde.io import atomic_write, save_gif, save_json, save_mp4, save_npy, save_png, video_available


class SampleWriter(BasePredictionWriter):
    """Writes ``<id>.png``, ``<id>_<extra>.png``, each animation as ``<id>_<name>.gif`` and — with the ``video``
    extra installed — also ``<id>_<name>.mp4``, and, last, ``<id>.json`` (its presence marks a finished sample);
    at the end, rank 0 writes ``manifest.json`` listing every sample in the folder. Animations play at the sample's
    ``fps`` (its sidecar's, e.g. motion at 20) or 12.5 frames per second."""

    def __init__(self, output_dir: str | Path):
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.video = video_available()
        self._told = False

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        for out in prediction:
            self.write_sample(out)

    def write_sample(self, out) -> None:
        name = sample_name(out.sample_id)
        files = {"image": f"{name}.png"}
        save_png(self.output_dir / files["image"], out.image)
        for key, img in out.extras.items():
            files[key] = f"{name}_{key}.png"
            save_png(self.output_dir / files[key], img)
        fps = float(out.meta.get("fps", 12.5))
        for key, frames in out.animations.items():
            files[key] = f"{name}_{key}.gif"
            save_gif(self.output_dir / files[key], frames, round(1000 / fps))
            if self.video:
                files[f"{key}_mp4"] = f"{name}_{key}.mp4"
                save_mp4(self.output_dir / files[f"{key}_mp4"], frames, fps)
            elif not self._told:
                warnings.warn(
                    "animations are written as GIF only; MP4 needs the video extra: pip install syncsde[video]",
                    stacklevel=2,
                )
                self._told = True
        for key, array in out.arrays.items():
            files[key] = f"{name}_{key}.npy"
            save_npy(self.output_dir / files[key], array)
        for key, data in out.files.items():
            files[key] = f"{name}/{key}"
            atomic_write(self.output_dir / files[key], lambda p, data=data: p.write_bytes(data))
        save_json(self.output_dir / f"{name}.json", {**out.meta, "sample_id": out.sample_id, "files": files})

    def on_predict_end(self, trainer, pl_module):
        trainer.strategy.barrier()
        if trainer.is_global_zero:
            write_manifest(self.output_dir)


def write_manifest(output_dir: Path) -> Path:
    sidecars = sorted(p for p in Path(output_dir).glob("[0-9]*.json"))
    samples = [json.loads(p.read_text()) for p in sidecars]
    return save_json(Path(output_dir) / "manifest.json", {"num_samples": len(samples), "samples": samples})
