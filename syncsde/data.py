"""DataModules: records of what to generate, one dict per sample, with resume support.

Every record gets a global ``sample_id`` (its index in the expanded list) and the run's ``seed``; the sample's
noise is seeded from exactly these two numbers. Samples whose sidecar already exists in the output folder are
skipped (resume) unless ``overwrite`` is set by the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from lightning import LightningDataModule
from torch.utils.data import DataLoader

from syncsde.errors import InputError


def sample_name(sample_id: int) -> str:
    return f"{sample_id:05d}"


class SampleDataModule(LightningDataModule):
    """Base: subclasses implement :meth:`records` (one dict per distinct input)."""

    def __init__(self, samples_per_record: int = 1, seed: int = 0, batch_size: int = 1):
        super().__init__()
        if samples_per_record < 1 or batch_size < 1:
            raise InputError("samples per prompt/record and batch_size must be at least 1")
        self.samples_per_record, self.seed, self.batch_size = samples_per_record, seed, batch_size
        self.output_dir: Path | None = None
        self.overwrite = False
        self._todo: list[dict] | None = None

    def records(self) -> list[dict]:
        raise NotImplementedError

    def samples(self) -> list[dict]:
        out = []
        for rec in self.records():
            for _ in range(self.samples_per_record):
                out.append({**rec, "sample_id": len(out), "seed": self.seed})
        return out

    def attach_output(self, output_dir: str | Path, overwrite: bool = False) -> None:
        """Set the output folder and freeze the list of samples to generate. The CLI calls this on every process
        before the processes meet, so no process can see another's first outputs and split the work differently."""
        self.output_dir, self.overwrite = Path(output_dir), overwrite
        self._todo = None
        self._todo = self.pending()

    def pending(self) -> list[dict]:
        """Samples still to generate: all of them, minus those with a sidecar in the output folder (resume)."""
        if self._todo is not None:
            return self._todo
        samples = self.samples()
        if self.output_dir is None or self.overwrite:
            return samples
        todo = []
        for s in samples:
            sidecar = self.output_dir / f"{sample_name(s['sample_id'])}.json"
            if not sidecar.exists():
                todo.append(s)
                continue
            old = json.loads(sidecar.read_text())
            if ("prompt" in s and old.get("prompt") != s["prompt"]) or old.get("seed") != s["seed"]:
                raise InputError(
                    f"{sidecar} was made from another prompt or seed; use a new --output_dir or --overwrite true"
                )
        return todo

    def predict_dataloader(self):
        todo = self.pending()
        world = self.trainer.world_size if self.trainer is not None else 1
        if len(todo) < world:
            raise InputError(
                f"{len(todo)} sample(s) to generate on {world} processes; use --trainer.devices {max(len(todo), 1)}"
            )
        return DataLoader(todo, batch_size=self.batch_size, shuffle=False, collate_fn=list)


def read_lines(path: str | Path, what: str) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what} '{path}' does not exist; give a text file with one entry per line")
    lines = [line.strip() for line in p.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


class PromptDataModule(SampleDataModule):
    """Prompts from the config (``prompts``) and/or a text file (``prompt_file``, one prompt a line, # comments).

    Args:
        prompts: list of prompts.
        prompt_file: text file with one prompt per line.
        samples_per_prompt: samples generated per prompt (sample ids run prompt-major).
        seed: the run's seed; each sample's noise comes from (seed, sample_id).
        batch_size: samples per predict_step.
    """

    def __init__(
        self,
        prompts: Sequence[str] = (),
        prompt_file: str | None = None,
        samples_per_prompt: int = 1,
        seed: int = 0,
        batch_size: int = 1,
    ):
        super().__init__(samples_per_prompt, seed, batch_size)
        self.prompts = list(prompts)
        self.prompt_file = prompt_file
        if not self.prompts and prompt_file is None:
            raise InputError("no prompts: set data.init_args.prompts or data.init_args.prompt_file")

    def records(self):
        prompts = self.prompts + (read_lines(self.prompt_file, "prompt_file") if self.prompt_file else [])
        if not prompts:
            raise InputError(f"prompt_file '{self.prompt_file}' holds no prompts")
        return [{"prompt": p} for p in prompts]


class RecordDataModule(SampleDataModule):
    """Records (dicts) from the config (``records``) and/or a JSONL file (``records_file``, one JSON object a line).

    Subclasses name the ``required`` keys and the ``path_keys`` whose relative paths are resolved against
    ``base_dir`` if given, else (for JSONL records) the JSONL file's folder, else the working directory.
    """

    required: tuple[str, ...] = ()
    path_keys: tuple[str, ...] = ()

    def __init__(
        self,
        records: Sequence[dict] = (),
        records_file: str | None = None,
        samples_per_record: int = 1,
        seed: int = 0,
        batch_size: int = 1,
        base_dir: str | None = None,
    ):
        super().__init__(samples_per_record, seed, batch_size)
        self.inline, self.records_file, self.base_dir = [dict(r) for r in records], records_file, base_dir
        if not self.inline and records_file is None:
            raise InputError("no records: set data.init_args.records or data.init_args.records_file")

    def records(self):
        out = [self._resolve(dict(r), self.base_dir) for r in self.inline]
        if self.records_file:
            base = self.base_dir or Path(self.records_file).parent
            for n, line in enumerate(read_lines(self.records_file, "records_file"), 1):
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise InputError(
                        f"{self.records_file} line {n} is not JSON ({e.msg}); write one object per line"
                    ) from None
                out.append(self._resolve(rec, base))
        for n, rec in enumerate(out):
            missing = [k for k in self.required if k not in rec]
            if missing:
                raise InputError(
                    f"record {n} lacks {', '.join(missing)}; every record needs {', '.join(self.required)}"
                )
        return out

    def _resolve(self, rec: dict, base) -> dict:
        for key in self.path_keys:
            if base is not None and key in rec and not Path(rec[key]).is_absolute():
                rec[key] = str(Path(base) / rec[key])
        return rec


class MaskPromptDataModule(RecordDataModule):
    """Mask-based text-to-image records: ``{"background", "object", "prompt" (the whole image), "mask" (image path)}``.

    Args: records, records_file (JSONL; relative mask paths are relative to it), samples_per_record, seed, batch_size.
    """

    required = ("background", "object", "prompt", "mask")
    path_keys = ("mask",)


class RegionPromptDataModule(RecordDataModule):
    """Region-prompt records: ``{"prompt" (the whole image), "background", "regions": [{"prompt", "mask"}, ...]}``,
    at least one region, masks as image paths (white = the region) resolved like ``mask`` in
    :class:`MaskPromptDataModule`.

    Args: records, records_file (JSONL; relative mask paths are relative to it), samples_per_record, seed, batch_size,
    base_dir.
    """

    required = ("prompt", "background", "regions")

    def records(self):
        out = super().records()
        for n, rec in enumerate(out):
            regions = rec["regions"]
            if not isinstance(regions, list) or not regions:
                raise InputError(f"record {n}: regions must be a non-empty list of {{prompt, mask}} objects")
            for k, region in enumerate(regions):
                if not isinstance(region, dict) or not {"prompt", "mask"} <= set(region):
                    raise InputError(f"record {n}, region {k}: give both a prompt and a mask (an image path)")
        return out

    def _resolve(self, rec: dict, base) -> dict:
        regions = rec.get("regions")
        if base is not None and isinstance(regions, list):
            rec["regions"] = [
                {**r, "mask": str(Path(base) / r["mask"])}
                if isinstance(r, dict) and isinstance(r.get("mask"), str) and not Path(r["mask"]).is_absolute()
                else r
                for r in regions
            ]
        return rec


class PanoramaDataModule(RecordDataModule):
    """360° panorama records: ``{"prompt"}``, and ``"depth"`` (an equirectangular depth picture, grayscale, near =
    white) when the backbone has a ControlNet; relative paths are resolved against ``base_dir`` or the JSONL file.

    Args: records, records_file (JSONL), base_dir, samples_per_record, seed, batch_size.
    """

    required = ("prompt",)
    path_keys = ("depth",)


class PromptPairDataModule(RecordDataModule):
    """Prompts of ambiguous images, one per view: ``{"prompt", "prompt2"}`` (the image reads as ``prompt``, and as
    ``prompt2`` once transformed by the task's view), or ``{"prompts": [p1, p2, ...], "views": [v1, v2, ...]}``
    (N readings; ``views`` optional, default the task's, ``.npy`` permutation paths relative to ``base_dir`` or the
    JSONL file's folder). The sidecar's prompt of a ``prompts`` record is the prompts joined by " | ".

    Args: records, records_file (JSONL), samples_per_record, seed, batch_size, base_dir.
    """

    def records(self):
        out = super().records()
        base = self.base_dir or (Path(self.records_file).parent if self.records_file else None)
        for n, rec in enumerate(out):
            if "prompts" in rec:
                prompts = rec["prompts"]
                if not isinstance(prompts, list) or len(prompts) < 2 or not all(isinstance(p, str) for p in prompts):
                    raise InputError(f"record {n}: prompts must be a list of at least two strings, one per view")
                rec.setdefault("prompt", " | ".join(prompts))
            elif not {"prompt", "prompt2"} <= set(rec):
                raise InputError(f"record {n} needs prompt and prompt2, or a list of prompts (one per view)")
            if "views" in rec:
                count = len(rec.get("prompts", (0, 0)))
                if not isinstance(rec["views"], list) or len(rec["views"]) != count:
                    raise InputError(f"record {n}: views must be a list with one view per prompt ({count})")
                rec["views"] = [
                    str(Path(base) / v) if base is not None and v.endswith(".npy") and not Path(v).is_absolute() else v
                    for v in rec["views"]
                ]
        return out


class ImageEditDataModule(RecordDataModule):
    """Real images to edit: ``{"image", "source_word", "target_word"}`` and optionally ``"prompt"`` (the source
    prompt; without it the task's captioner writes one). Images are found in ``base_dir`` (a folder of images) or
    next to the JSONL file.

    Args: records, records_file (JSONL), base_dir (image folder), samples_per_record, seed, batch_size.
    """

    required = ("image", "source_word", "target_word")
    path_keys = ("image",)


class MotionDataModule(RecordDataModule):
    """Long motions: ``{"texts": [one text per segment, ...]}`` (e.g. walk → jump → kick). The sidecar's prompt is
    the texts joined by " | ". Samples of one batch must have the same number of segments.

    Args: records, records_file (JSONL), samples_per_record, seed, batch_size.
    """

    required = ("texts",)

    def records(self):
        out = super().records()
        for n, rec in enumerate(out):
            if not isinstance(rec["texts"], list) or not rec["texts"]:
                raise InputError(f"record {n}: texts must be a non-empty list of strings, one per segment")
            rec["prompt"] = " | ".join(rec["texts"])
        return out


class MeshDataModule(RecordDataModule):
    """Meshes to texture: ``{"mesh": OBJ/GLB/GLTF/PLY path, "prompt"}``; relative mesh paths are resolved against
    ``base_dir`` or the JSONL file's folder.

    Args: records, records_file (JSONL), base_dir, samples_per_record, seed, batch_size.
    """

    required = ("mesh", "prompt")
    path_keys = ("mesh",)
