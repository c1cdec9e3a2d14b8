"""DataModules: records of what to generate, one dict per sample, with resume support.

Every record gets a global ``sample_id`` (its index in the expanded list) and the run's ``seed``; the sample's
noise is seeded from exactly these two numbers. Samples whose sidecar already exists in the output folder are
skipped (resume) unless ``overwrite`` is set by the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from jsonargparse.typing import NonNegativeInt, PositiveInt
from lightning import LightningDataModule
from torch.utils.data import DataLoader

from syncsde.errors import InputError


def sample_name(sample_id: int) -> str:
    return f"{sample_id:05d}"


class SampleDataModule(LightningDataModule):
    """Base: subclasses implement :meth:`records` (one dict per distinct input)."""

    def __init__(self, samples_per_record: PositiveInt = 1, seed: NonNegativeInt = 0, batch_size: PositiveInt = 1):
        super().__init__()
        if samples_per_record < 1 or batch_size < 1 or seed < 0:
            raise InputError("samples per prompt/record and batch_size must be at least 1, and seed at least 0")
        self.samples_per_record, self.seed, self.batch_size = samples_per_record, seed, batch_size
        self.output_dir: Path | None = None
        self.overwrite = False
        self.foreign: list[dict] = []
        self._todo: list[dict] | None = None

    def records(self) -> list[dict]:
        raise NotImplementedError

    def samples(self) -> list[dict]:
        out = []
        for rec in self.records():
            for _ in range(self.samples_per_record):
                # batch_size: the rows of a network call, which its float results depend on (SyncTask.settings)
                out.append({**rec, "sample_id": len(out), "seed": self.seed, "batch_size": self.batch_size})
        return out

    def attach_output(self, output_dir: str | Path, overwrite: bool = False, settings: dict | None = None) -> None:
        """Set the output folder and freeze the list of samples to generate. The CLI calls this on every process
        before the processes meet, so no process can see another's first outputs and split the work differently.

        ``settings`` are the task's settings that change a sample (:meth:`SyncTask.settings`). The folder's samples
        must have been made with the same settings and, sample by sample, from the same record and seed; otherwise
        this stops with one line naming the differences (resume never mixes settings). With ``overwrite`` every
        sample is regenerated, and samples of the folder outside this run's list that were made with other settings
        are listed in :attr:`foreign` (the CLI removes them, so the folder describes one set of settings).
        """
        self.output_dir, self.overwrite = Path(output_dir), overwrite
        self.foreign: list[dict] = []
        self._todo = None
        self._todo = self._plan(_normalized(settings or {}))

    def pending(self) -> list[dict]:
        """Samples still to generate: all of them, minus those with a sidecar in the output folder (resume)."""
        if self._todo is not None:
            return self._todo
        return self._plan({})

    def _plan(self, settings: dict) -> list[dict]:
        samples = self.samples()
        if self.output_dir is None or not self.output_dir.is_dir():
            return samples
        by_id = {s["sample_id"]: s for s in samples}
        done, differing, clashes = set(), {}, 0
        for sidecar in sorted(p for p in self.output_dir.glob("[0-9]*.json") if p.stem.isdigit()):
            try:
                old = json.loads(sidecar.read_text())
            except (OSError, json.JSONDecodeError):
                continue  # not a sidecar of ours
            diff = _differences(old, settings)
            s = by_id.get(int(sidecar.stem))
            if s is not None:
                diff.update(_differences(old, _normalized({k: v for k, v in s.items() if k != "sample_id"})))
            if diff:
                clashes += 1
                differing.update(diff)
                if self.overwrite and s is None:
                    self.foreign.append(old)
            elif s is not None:
                done.add(s["sample_id"])
        if differing and not self.overwrite:
            what = "; ".join(f"{k}: {_short(a)} there, {_short(b)} now" for k, (a, b) in differing.items())
            raise InputError(
                f"{self.output_dir} holds {clashes} sample(s) made with other settings ({what}); rerun with the "
                "folder's settings, add --overwrite true to replace them, or choose another --output_dir"
            )
        return samples if self.overwrite else [s for s in samples if s["sample_id"] not in done]

    def discard_foreign(self) -> None:
        """Delete the files of the samples listed in :attr:`foreign` (made with other settings; ``overwrite``)."""
        for meta in self.foreign:
            for f in meta.get("files", {}).values():
                (self.output_dir / f).unlink(missing_ok=True)
            (self.output_dir / f"{sample_name(meta['sample_id'])}.json").unlink(missing_ok=True)

    def predict_dataloader(self):
        todo = self.pending()
        world = self.trainer.world_size if self.trainer is not None else 1
        shared = getattr(getattr(self.trainer, "lightning_module", None), "parallel", "samples") == "windows"
        if len(todo) < world and not shared:  # parallel: windows: every process works on every sample
            raise InputError(
                f"{len(todo)} sample(s) to generate on {world} processes; use --trainer.devices {max(len(todo), 1)}"
            )
        return DataLoader(todo, batch_size=self.batch_size, shuffle=False, collate_fn=list)


def _normalized(values: dict) -> dict:
    """Values as a sidecar stores them (JSON), so that old and new compare equal when they are."""
    return json.loads(json.dumps(values, default=str))


def _differences(old: dict, new: dict) -> dict[str, tuple]:
    """Keys of ``new`` that ``old`` records with another value: {key: (old value, new value)}."""
    return {k: (old[k], v) for k, v in new.items() if k in old and old[k] != v}


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def not_a_file(path) -> str:
    """Why ``path`` (not a file) cannot be read: a folder, or nothing there."""
    return "is a folder, not a file" if isinstance(path, (str, Path)) and Path(path).is_dir() else "does not exist"


def read_lines(path: str | Path, what: str) -> list[str]:
    """The non-empty, non-comment lines of a text file; ``what`` names the option in errors."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what} '{path}' {not_a_file(path)}; give a text file with one entry per line")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise InputError(f"cannot read {what} '{path}' ({reason}); give a readable UTF-8 text file") from None
    lines = [line.strip() for line in text.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def check_image(path: str, what: str) -> None:
    """A readable image file, or one line naming it (PIL reads the header and checks the data)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()
    except Exception as e:  # noqa: BLE001 (PIL raises many types for bad files)
        reason = e.strerror if isinstance(e, OSError) and e.strerror else "not a readable image"
        raise InputError(f"{what} '{path}': {reason}; give a PNG or JPEG file") from None


def check_mesh(path: str, what: str) -> None:
    """A readable triangle mesh, or one line naming it."""
    from syncsde.mesh.io import load_mesh

    try:
        load_mesh(path)
    except InputError as e:
        raise InputError(f"{what}: {e}") from None


class PromptDataModule(SampleDataModule):
    """Prompts from the config (``prompts``) or a text file (``prompt_file``, one prompt a line, # comments), which
    replaces the config's prompts.

    Args:
        prompts: list of prompts.
        prompt_file: text file with one prompt per line (replaces ``prompts``).
        samples_per_prompt: samples generated per prompt (sample ids run prompt-major).
        seed: the run's seed; each sample's noise comes from (seed, sample_id).
        batch_size: samples per predict_step.
    """

    def __init__(
        self,
        prompts: Sequence[str] = (),
        prompt_file: str | None = None,
        samples_per_prompt: PositiveInt = 1,
        seed: NonNegativeInt = 0,
        batch_size: PositiveInt = 1,
    ):
        super().__init__(samples_per_prompt, seed, batch_size)
        self.prompts = list(prompts)
        self.prompt_file = prompt_file
        if not self.prompts and prompt_file is None:
            raise InputError("no prompts: set --data.prompts or --data.prompt_file")
        self.records()  # a missing or unreadable prompt file stops here, before any model weights are read

    def records(self):
        lines = read_lines(self.prompt_file, "--data.prompt_file") if self.prompt_file else []
        if self.prompt_file and not lines:
            raise InputError(
                f"--data.prompt_file '{self.prompt_file}' holds no prompts; give one prompt a line"
            )
        return [{"prompt": p} for p in (lines if self.prompt_file else self.prompts)]


class RecordDataModule(SampleDataModule):
    """Records (dicts) from the config (``records``) and/or a JSONL file (``records_file``, one JSON object a line).

    Subclasses name the ``required`` keys and the ``path_keys`` whose relative paths are resolved against
    ``base_dir`` if given, else (for JSONL records) the JSONL file's folder, else the working directory.
    """

    required: tuple[str, ...] = ()
    path_keys: tuple[str, ...] = ()
    file_checks = {"image": check_image, "mask": check_image, "mesh": check_mesh}  # path key -> content check

    def __init__(
        self,
        records: Sequence[dict] = (),
        records_file: str | None = None,
        samples_per_record: PositiveInt = 1,
        seed: NonNegativeInt = 0,
        batch_size: PositiveInt = 1,
        base_dir: str | None = None,
    ):
        super().__init__(samples_per_record, seed, batch_size)
        self.inline, self.records_file, self.base_dir = [dict(r) for r in records], records_file, base_dir
        if not self.inline and records_file is None:
            raise InputError("no records: set --data.records or --data.records_file")
        if base_dir is not None and not Path(base_dir).is_dir():
            raise InputError(f"--data.base_dir '{base_dir}' is not a folder; give the folder of the files")
        # every record and the files it names are checked now, before any model weights are read
        where = "--data.records_file" if records_file else "--data.records"
        for n, rec in enumerate(self.records()):
            for key in self.path_keys:
                what = f"record {n}'s {key} ({where})"
                if not isinstance(rec[key], str) or not Path(rec[key]).is_file():
                    raise InputError(f"{what} '{rec[key]}' {not_a_file(rec[key])}; give an existing file")
                self.file_checks.get(key, lambda path, what: None)(rec[key], what)

    def records(self):
        out = [self._resolve(dict(r), self.base_dir) for r in self.inline]
        if self.records_file:
            base = self.base_dir or Path(self.records_file).parent
            for n, line in enumerate(read_lines(self.records_file, "--data.records_file"), 1):
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
            texts = rec["texts"]
            if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
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
