"""The device check: every task's paper config on random-weight models of the real architectures, and timings
against diffusers, in one run prepared for a GPU lent for minutes.

    python -m syncsde.evaluation.benchmarks.device [--steps 2] [--out FILE] [--write]   # on CUDA, < 8 minutes
    python -m syncsde.evaluation.benchmarks.device --tiny                               # the same code on a CPU

Models: the real networks of SD-2, SD-1.5 + depth ControlNet, SDXL, SD3, Flux, DeepFloyd IF-I-M with IF-II-M and MDM,
built from the component configs in ``configs/device/<family>.json`` (their hub ``config.json`` arguments; parameter
counts checked against the released checkpoints by ``tests/test_device_check.py``), with random weights created
directly on the device in the backbone's ``dtype: auto`` (:func:`random_weights`): nothing is downloaded. Tokenizers
are small built vocabularies (``syncsde.testing``). ``--tiny``: the tiny pipelines of ``syncsde.testing`` through the
same loading code, the paper geometries scaled to their native size, 1 step, 1 thread.

What it does:

1. every task config of :data:`RUNS` (``configs/*.yaml``: its task options, strategy and first record) for ``--steps``
   steps: outputs finite, float32 images of the expected shape, the network in the expected dtype;
2. one 512×2048 panorama on SD-2 (``configs/wide.yaml``'s geometry), time per step (a run of ``--steps`` minus a run
   of 1 step) and peak memory (``torch.cuda.max_memory_allocated``): syncsde SyncSDE (13 windows), syncsde
   MultiDiffusion and diffusers' ``StableDiffusionPanoramaPipeline`` at its stride of 8 latents (25 windows), the
   pipeline at its default ``view_batch_size`` 1 and its best;
3. SyncSDE's scaling with ``window_batch`` and ``max_batch``, the UNet's attention (SDPA against diffusers' plain
   ``AttnProcessor``) and ``torch.compile`` on the UNet (CUDA only).

It prints one table, writes it with the raw numbers as JSON (``--out``), and with ``--write`` (CUDA) into the docs'
``device`` block (syncsde/docs/benchmarks.md, "GPU").
"""

from __future__ import annotations

import argparse
import importlib
import json
import tempfile
import time
import warnings
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs" / "device"
# (run name, task config, family of configs/device); the backbone class is the config's, on the family's folder
RUNS = [
    ("wide", "wide.yaml", "sd2"),
    ("canvas", "canvas.yaml", "sd2"),
    ("mask_t2i", "mask_t2i.yaml", "sd2"),
    ("regions", "regions.yaml", "sd2"),
    ("sphere", "sphere.yaml", "sd2"),
    ("mesh", "mesh.yaml", "sd15"),
    ("edit", "edit.yaml", "sd15"),  # SD-1.4: SD-1.5's architecture
    ("wide_sdxl", "wide_sdxl.yaml", "sdxl"),
    ("mask_t2i_sdxl", "mask_t2i_sdxl.yaml", "sdxl"),
    ("mesh_sdxl", "mesh_sdxl.yaml", "sdxl"),
    ("wide_sd3", "wide_sd3.yaml", "sd3"),
    ("wide_flux", "wide_flux.yaml", "flux"),
    ("mask_t2i_flux", "mask_t2i_flux.yaml", "flux"),
    ("ambiguous", "ambiguous.yaml", "if"),  # IF-I-M, and IF-II-M (configs/device/if2.json) as its upscaler
    ("motion", "motion.yaml", "mdm"),
]
NATIVE = {"sd2": 512, "sd15": 512, "sdxl": 1024, "sd3": 1024, "flux": 1024, "if": 64, "mdm": 196}  # native side
SIZE_KEYS = ("height", "width", "stride", "vertical_stride", "view_size", "latent_texture_size", "rgb_texture_size",
             "mask_res")  # fmt: skip
SD = "syncsde.backbones.StableDiffusion"  # SD-2, the panorama's backbone
PANORAMA_CHECKS = 11  # without torch.compile's 2 (CUDA)
MIN_SIZE = {"mask_res": 4}  # the tiny UNet's smallest attention map is 4²
# parameters (millions) of the released checkpoints' networks, which configs/device must reproduce, and the tolerance:
# 0.1 where the hub's config.json was read; DeepFloyd's M models are gated, so their configs are the published
# IF-I-XL / IF-II-L configs at the width that gives the published counts ("400M", "450M": IF's README)
KNOWN_PARAMETERS = {
    ("sd2", "unet"): (865.9, 0.1),
    ("sd15", "unet"): (859.5, 0.1),
    ("sd15", "controlnet"): (361.3, 0.1),
    ("sdxl", "unet"): (2567.5, 0.1),
    ("sd3", "transformer"): (2028.3, 0.1),
    ("flux", "transformer"): (11901.4, 0.1),
    ("flux", "text_encoder_2"): (4762.3, 0.1),  # T5-v1.1-XXL's encoder
    ("if", "text_encoder"): (4762.3, 0.1),
    ("if", "unet"): (400, 40),  # IF-I-M: 371.6
    ("if2", "unet"): (450, 45),  # IF-II-M: 461.8
    ("mdm", "clip"): (151.3, 0.1),  # CLIP ViT-B/32
}


# -- models from configs ----------------------------------------------------------------------------------------------
def family_config(family: str) -> dict:
    return json.loads((CONFIGS / f"{family}.json").read_text())


def build_component(spec: dict) -> torch.nn.Module:
    """A network from its entry in configs/device (``_class_name`` + config arguments), random weights, on the current
    default device and dtype (under ``torch.device("meta")``: no memory)."""
    import diffusers
    import transformers

    spec = dict(spec)
    name = spec.pop("_class_name")
    if hasattr(diffusers, name):
        return getattr(diffusers, name).from_config(spec).eval()
    cls = getattr(transformers, name)
    return cls(cls.config_class(**spec)).eval()


def library(name: str) -> str:
    import diffusers

    return "diffusers" if hasattr(diffusers, name) else "transformers"


def save_config_folder(family: str, path: Path) -> dict:
    """Folders of ``family`` holding configs and tokenizers only (no weights), loaded under :func:`random_weights`:
    ``model`` (a diffusers folder; MDM: its CLIP's folder), and where the family has them ``controlnet``, ``upscaler``
    (IF stage II, configs/device/if2.json), MDM's ``mean``, ``std`` and architecture (``mdm``)."""
    config = family_config(family)
    if family == "mdm":
        build_config_json(config["clip"], path)
        save_tokenizer("clip", path)
        return {"model": path, **mdm_statistics(path), "mdm": config["mdm"]}
    out, index = {"model": path}, {"_class_name": config["_class_name"]}
    for name, spec in config.items():
        folder = path / name
        if name == "_class_name":
            continue
        if name == "controlnet":
            out["controlnet"] = path.parent / f"{family}_controlnet"
            build_config_json(spec, out["controlnet"])
        elif name.endswith("scheduler"):
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "scheduler_config.json").write_text(json.dumps(spec))
            index[name] = ["diffusers", spec["_class_name"]]
        elif isinstance(spec, str):  # a tokenizer, built
            index[name] = ["transformers", save_tokenizer(spec, folder)]
        else:
            build_config_json(spec, folder)
            index[name] = [library(spec["_class_name"]), spec["_class_name"]]
    (path / "model_index.json").write_text(json.dumps(index))
    if family == "if":
        out["upscaler"] = save_config_folder("if2", path.parent / "if2")["model"]
    return out


def save_tokenizer(kind: str, folder: Path) -> str:
    """A small built tokenizer of ``kind`` ("clip" or "t5", ``syncsde.testing``) saved in ``folder``; its class name."""
    from syncsde.testing import byte_level_clip_tokenizer, tiny_t5

    tok = byte_level_clip_tokenizer() if kind == "clip" else tiny_t5()[0]
    tok.save_pretrained(folder)
    return type(tok).__name__


def mdm_statistics(path: Path) -> dict:
    """HumanML3D's feature mean and std as MDM reads them (zeros and ones: the network's weights are random too)."""
    import numpy as np

    from syncsde.motion.mdm import FEATURES

    path.mkdir(parents=True, exist_ok=True)
    np.save(path / "Mean.npy", np.zeros(FEATURES, np.float32))
    np.save(path / "Std.npy", np.ones(FEATURES, np.float32))
    return {"mean": path / "Mean.npy", "std": path / "Std.npy"}


def build_config_json(spec: dict, folder: Path) -> None:
    """The component's ``config.json`` as its library writes it (built on the meta device: no weights)."""
    folder.mkdir(parents=True, exist_ok=True)
    with torch.device("meta"):
        module = build_component(spec)
    if library(spec["_class_name"]) == "diffusers":
        module.save_config(folder)
    else:
        module.config.save_pretrained(folder)


@contextmanager
def random_weights(device: torch.device, dtype: torch.dtype):
    """Inside the block, every diffusers and transformers network ``from_pretrained`` builds its config with random
    weights, created directly on ``device`` in ``dtype`` (tokenizers and scheduler configs still load from files)."""
    from diffusers import ModelMixin
    from transformers import PreTrainedModel

    def diffusers_model(cls, path, subfolder=None, **_):
        return cls.from_config(cls.load_config(path, subfolder=subfolder, local_files_only=True)).eval()

    def transformers_model(cls, path, subfolder=None, **_):
        return cls(cls.config_class.from_pretrained(Path(path) / (subfolder or ""))).eval()

    saved = ModelMixin.__dict__["from_pretrained"], PreTrainedModel.__dict__["from_pretrained"]
    default = torch.get_default_dtype()
    ModelMixin.from_pretrained = classmethod(diffusers_model)
    PreTrainedModel.from_pretrained = classmethod(transformers_model)
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        ModelMixin.from_pretrained, PreTrainedModel.from_pretrained = saved
        torch.set_default_dtype(default)


TINY_MDM = dict(latent_dim=32, ff_size=64, num_layers=1, num_heads=2, clip_dim=64)  # on syncsde:tiny-clip


def save_tiny_folder(family: str, path: Path) -> dict:
    """The tiny pipeline of ``family`` (``syncsde.testing``) in the folders of :func:`save_config_folder`."""
    from syncsde import testing as T

    if family == "mdm":
        return {"model": "syncsde:tiny-clip", **mdm_statistics(path), "mdm": TINY_MDM}
    save = {"sd2": T.save_tiny_sd, "sd15": T.save_tiny_sd, "sdxl": T.save_tiny_sdxl, "sd3": T.save_tiny_sd3,
            "flux": T.save_tiny_flux, "if": T.save_tiny_if}  # fmt: skip
    out = {"model": save[family](path)}
    if family in ("sd15", "sdxl"):
        out["controlnet"] = T.save_tiny_controlnet(path.parent / f"{family}_controlnet", out["model"])
    if family == "if":
        out["upscaler"] = T.save_tiny_if_upscaler(path.parent / "if2")
    return out


# -- runs --------------------------------------------------------------------------------------------------------------
def import_path(path: str):
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def expected_dtype(cls, device: torch.device) -> torch.dtype:
    """The dtype of ``dtype: auto`` for a backbone (or IF's upscaler) class."""
    return cls.cuda_dtype if device.type == "cuda" else torch.float32


def make_backbone(class_path: str, folders: dict, device: torch.device):
    """The backbone ``class_path`` (a task config's) on the family's folders, random weights on ``device``."""
    cls = import_path(class_path)
    with random_weights(device, expected_dtype(cls, device)):
        if "ControlNet" in cls.__name__:
            return cls(str(folders["model"]), str(folders["controlnet"]))
        if cls.__name__ == "MDM":
            mdm = cls(None, str(folders["mean"]), str(folders["std"]), clip=str(folders["model"]), **folders["mdm"])
            mdm._load_clip()  # now, under random_weights (MDM loads its CLIP on the first prompt)
            return mdm
        return cls(str(folders["model"]))


def task_from_config(config_name: str, backbone, steps: int, scale: float, folders: dict, device: torch.device):
    """The task of ``configs/<config_name>`` on ``backbone``: its options (sizes divided by ``scale``; tiny models
    (``scale`` > 1) render 1 turntable frame of a mesh), its strategy, ``steps`` steps; and its first record. Its
    captioner is left out (the record carries its prompt, so BLIP is never needed), its upscaler is built on
    ``folders["upscaler"]``."""
    from syncsde.backbones.diffusers import VaeTiling

    config = yaml.safe_load((ROOT / "configs" / config_name).read_text())
    model = config["model"]
    options = {k: v for k, v in model["init_args"].items() if k not in ("backbone", "strategy")}
    for key in SIZE_KEYS:
        if key in options:
            options[key] = max(MIN_SIZE.get(key, 1) if scale > 1 else 1, round(options[key] / scale))
    if scale > 1 and model["class_path"].endswith("MeshTexturing"):
        options["turntable_frames"] = 1
    if "vae_tiling" in options:
        options["vae_tiling"] = VaeTiling(**options["vae_tiling"])
    if "captioner" in options:
        options["captioner"] = None
    if "upscaler" in options:
        spec = options["upscaler"]
        cls = import_path(spec["class_path"])
        with random_weights(device, expected_dtype(cls, device)):
            args = {**spec["init_args"], "model": str(folders["upscaler"]), "num_inference_steps": steps}
            options["upscaler"] = cls(**args)
    strategy = model["init_args"]["strategy"]
    strategy = import_path(strategy["class_path"])(**strategy.get("init_args", {}))
    options.update(num_inference_steps=steps, progress=False)
    task = import_path(model["class_path"])(backbone, strategy, **options)
    data = config["data"]["init_args"]
    if "records_file" in data:
        record = json.loads((ROOT / data["records_file"]).read_text().splitlines()[0])
    else:
        record = data["records"][0] if "records" in data else {"prompt": data["prompts"][0]}
    if "image" in record:
        record["image"] = str(ROOT / data.get("base_dir", ".") / record["image"])
    return task, {**record, "sample_id": 0, "seed": 0}


def expected_shape(task, name: str) -> tuple[int, ...] | None:
    if name.startswith(("wide", "canvas")):
        return (3, task.height, task.width)
    if name.startswith("mask_t2i") or name in ("regions", "edit"):
        return (3, task.native_size, task.native_size)
    if name.startswith("mesh"):
        return (3, task.rgb_texture_size, task.rgb_texture_size)
    if name == "ambiguous":  # the two views side by side, from stage II
        side = task.upscaler.unet.config.sample_size
        return (3, side, 2 * side)
    return None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def timed(device: torch.device, fn):
    """(result, seconds, peak MiB) of ``fn()``."""
    reset_peak(device)
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - start, peak_mib(device)


class Checker:
    """Runs the checks and keeps the table rows; a failed check is a row, not the end of the run."""

    def __init__(self, total: int):
        self.rows, self.total, self.done, self.start = [], total, 0, time.perf_counter()

    def run(self, section: str, name: str, fn) -> dict:
        self.done += 1
        print(f"[{self.done}/{self.total}] {section}: {name} ({time.perf_counter() - self.start:.0f} s)", flush=True)
        try:
            row = {"section": section, "name": name, "ok": True, **fn()}
        except Exception as e:  # noqa: BLE001 (a failure is reported in the table; the other checks still run)
            row = {"section": section, "name": name, "ok": False, "error": f"{type(e).__name__}: {str(e)[:200]}"}
        self.rows.append(row)
        return row


def check_task(name: str, config: str, backbone, device, steps: int, scale: float, folders: dict) -> dict:
    task, record = task_from_config(config, backbone, steps, scale, folders, device)
    task.to(device)
    task.on_predict_start()
    outputs, seconds, peak = timed(device, lambda: task.run([record]))
    out = outputs[0]
    image, want = out.image, expected_shape(task, name)
    upscaler = getattr(task, "upscaler", None)  # IF stage II
    nets = [getattr(task.backbone, n) for n in ("unet", "transformer", "net") if hasattr(task.backbone, n)][:1]
    nets += [upscaler.unet] if upscaler is not None else []
    problems = []
    if not torch.isfinite(image).all() or not all(np.isfinite(a).all() for a in out.arrays.values()):
        problems.append("non-finite output")
    if image.dtype != torch.float32:
        problems.append(f"image dtype {image.dtype}")
    if want is not None and tuple(image.shape) != want:
        problems.append(f"shape {tuple(image.shape)} != {want}")
    if name == "motion":  # every segment's frames, HumanML3D's features
        frames = task.segment_frames + (task.segment_frames - task.overlap) * (len(record["texts"]) - 1)
        if out.arrays["features"].shape != (frames, task.backbone.channels):
            problems.append(f"features {out.arrays['features'].shape} != {(frames, task.backbone.channels)}")
    if getattr(task, "captioner", None) is not None or getattr(task, "_clip_words", None) is not None:
        problems.append("a captioner or CLIP was loaded for a record whose words are in its prompt")
    for net in nets:
        dtype = next(p.dtype for p in net.parameters())
        if dtype != expected_dtype(type(upscaler if net is nets[-1] and upscaler else task.backbone), device):
            problems.append(f"{type(net).__name__} in {dtype}")
    if problems:
        raise AssertionError("; ".join(problems))
    dtype = next(p.dtype for p in nets[0].parameters())
    return {"shape": list(image.shape), "dtype": str(dtype), "seconds": round(seconds, 2), "peak_mib": peak}


# -- the panorama against diffusers ------------------------------------------------------------------------------
def panorama_checks(check: Checker, sd2, device: torch.device, steps: int, scale: float, compile_unet: bool) -> None:
    from diffusers import DDIMScheduler, StableDiffusionPanoramaPipeline
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    from syncsde.strategies import MultiDiffusion, SyncSDE
    from syncsde.tasks import WideImage

    height, width, prompt = round(512 / scale), round(2048 / scale), "Natural landscape in anime style illustration."
    pipe = StableDiffusionPanoramaPipeline(
        vae=sd2.vae, text_encoder=sd2.text_encoder, tokenizer=sd2.tokenizer, unet=sd2.unet,
        scheduler=DDIMScheduler.from_config(sd2.scheduler_config()), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    # the pipeline's windows: 64 latents at a stride of 8 (its get_views), scaled with the model's native size
    pipe.get_views = partial(type(pipe).get_views, pipe, window_size=sd2.sample_size, stride=max(1, round(8 / scale)))
    views = len(pipe.get_views(height, width))

    def per_step(run) -> dict:
        """Seconds per step (a run of ``steps`` minus a run of 1 step, the rest being text, VAE and set-up), the whole
        run's seconds and peak memory."""
        _, one, _ = timed(device, lambda: run(1))
        image, full, peak = timed(device, lambda: run(steps))
        assert tuple(image.shape) == (3, height, width) and torch.isfinite(image).all()
        step = (full - one) / (steps - 1) if steps > 1 else full
        return {"s_per_step": round(step, 4), "seconds": round(full, 2), "peak_mib": peak}

    def syncsde(strategy, stride, **kw):
        task = WideImage(sd2, strategy, height, width, stride=stride, guidance_scale=7.5, progress=False, **kw)
        task.to(device)

        def run(n):
            task.num_inference_steps = n
            return task.generate([prompt])[0].image

        return run

    def diffusers_run(view_batch_size):
        def run(n):
            return pipe(
                prompt, height=height, width=width, num_inference_steps=n, guidance_scale=7.5,
                view_batch_size=view_batch_size, generator=torch.Generator(device).manual_seed(0), output_type="pt",
            ).images[0].float()  # fmt: skip

        return run

    stride = round(128 / scale)
    rows = {
        "syncsde SyncSDE (13 windows)": syncsde(SyncSDE(5.0), stride),
        f"syncsde MultiDiffusion ({views} windows)": syncsde(MultiDiffusion(), round(64 / scale)),
        f"diffusers StableDiffusionPanoramaPipeline ({views} windows), view_batch_size 1": diffusers_run(1),
    }
    for name, run in rows.items():
        check.run("panorama 512×2048", name, lambda run=run: per_step(run))
    for vbs in sorted({5, views} - {1}):
        name = f"diffusers pipeline, view_batch_size {vbs}"
        check.run("panorama 512×2048", name, lambda v=vbs: per_step(diffusers_run(v)))
    for window_batch in (1, 4, None):
        label = "all 13" if window_batch is None else window_batch
        run = syncsde(SyncSDE(5.0), stride, window_batch=window_batch)
        check.run("SyncSDE scaling", f"window_batch {label}", lambda run=run: per_step(run))
    check.run("SyncSDE scaling", "max_batch 2", lambda: per_step(syncsde(SyncSDE(5.0), stride, max_batch=2)))
    sdpa = sd2.unet.attn_processors
    sd2.unet.set_attn_processor(AttnProcessor())
    try:
        check.run("attention", "plain AttnProcessor", lambda: per_step(syncsde(SyncSDE(5.0), stride)))
    finally:
        sd2.unet.set_attn_processor(sdpa)
    check.run("attention", "SDPA (AttnProcessor2_0, default)", lambda: per_step(syncsde(SyncSDE(5.0), stride)))
    assert all(isinstance(p, AttnProcessor2_0) for p in sdpa.values())
    if compile_unet:
        unet = sd2.unet
        sd2.unet = torch.compile(unet)
        try:
            run = syncsde(SyncSDE(5.0), stride)
            first = lambda: {"seconds": round(timed(device, lambda: run(1))[1], 1)}  # noqa: E731
            check.run("torch.compile", "UNet compile + first run", first)
            check.run("torch.compile", "UNet compiled", lambda: per_step(run))
        finally:
            sd2.unet = unet


# -- the table ---------------------------------------------------------------------------------------------------------
def table(rows: list[dict], device_name: str, steps: int) -> str:
    """One markdown table of every check, and the syncsde / diffusers ratios of the panorama."""
    lines = [
        f"Device check on **{device_name}**, random-weight models of the real architectures (configs/device), "
        f"`dtype: auto`, {steps} steps (`python -m syncsde.evaluation.benchmarks.device`):",
        "",
        "| section | check | result | s per step | run s | peak MiB |",
        "|---|---|---|---|---|---|",
    ]

    def fmt(v, digits):
        return "" if v is None else f"{v:.{digits}f}"

    for r in rows:
        result = ("ok " + " × ".join(map(str, r.get("shape", [])))).strip() if r["ok"] else f"FAILED: {r['error']}"
        if r.get("dtype"):
            result += f" ({r['dtype'].replace('torch.', '')})"
        lines.append(
            f"| {r['section']} | {r['name']} | {result} | {fmt(r.get('s_per_step'), 3)} | {fmt(r.get('seconds'), 1)} | "
            f"{fmt(r.get('peak_mib'), 0)} |"
        )
    pano = {r["name"]: r for r in rows if r["section"] == "panorama 512×2048" and r["ok"]}
    ours = next((r for n, r in pano.items() if n.startswith("syncsde SyncSDE")), None)
    theirs = [r for n, r in pano.items() if n.startswith("diffusers")]
    if ours and theirs:
        default = next(r for r in theirs if r["name"].endswith("view_batch_size 1"))
        best = min(theirs, key=lambda r: r["s_per_step"])
        lines += ["", f"SyncSDE / diffusers per step: {ours['s_per_step'] / default['s_per_step']:.2f}× its default "
                  f"view_batch_size, {ours['s_per_step'] / best['s_per_step']:.2f}× its best ({best['name']})."]
        if ours.get("peak_mib") and best.get("peak_mib"):
            lines[-1] += f" Peak memory: {ours['peak_mib'] / best['peak_mib']:.2f}× its best's."
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny models, 1 step (CPU): the same code paths")
    ap.add_argument("--steps", type=int, default=None, help="steps of every run (default 2; --tiny: 1)")
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "device" / "device.json", help="the JSON written")
    ap.add_argument("--only", nargs="*", help="only these task runs (names of RUNS); none: all")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile (CUDA)")
    ap.add_argument("--write", action="store_true", help="write the table into the docs (CUDA runs only)")
    args = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    if args.tiny:  # tiny tensors: a second thread only adds synchronisation (the same code paths)
        torch.set_num_threads(1)
    steps = args.steps or (1 if args.tiny else 2)
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU (tiny models)"
    runs = [r for r in RUNS if not args.only or r[0] in args.only]
    families = sorted({f for _, _, f in runs} | {"sd2"})
    compile_unet = device.type == "cuda" and not args.no_compile
    check = Checker(len(runs) + PANORAMA_CHECKS + 2 * compile_unet)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # SyncSDE's c_t > 2 at 2 steps, diffusers' deprecations: timings, not images
        save = save_tiny_folder if args.tiny else save_config_folder
        for family in families:
            folders = save(family, Path(tmp) / family)
            backbones = {}  # class path -> the backbone on this family's folders, shared by its runs
            for name, config, fam in runs:
                if fam != family:
                    continue
                path = yaml.safe_load((ROOT / "configs" / config).read_text())["model"]["init_args"]["backbone"]
                if path["class_path"] not in backbones:
                    backbones[path["class_path"]] = make_backbone(path["class_path"], folders, device)
                b = backbones[path["class_path"]]
                scale = NATIVE[family] / (b.sample_size * b.scale_factor)
                run = partial(check_task, name, config, b, device, steps, scale, folders)
                check.run("task", name, run)
            if family == "sd2":
                sd2 = backbones.get(SD) or make_backbone(SD, folders, device)
                scale = NATIVE["sd2"] / (sd2.sample_size * sd2.scale_factor)
                panorama_checks(check, sd2, device, max(steps, 2), scale, compile_unet)
                del sd2
            del backbones
            if device.type == "cuda":
                torch.cuda.empty_cache()
    text = table(check.rows, device_name, steps)
    print(text)
    data = {"device": device_name, "steps": steps, "torch": torch.__version__, "rows": check.rows}
    from syncsde.io import atomic_write

    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out, lambda p: p.write_text(json.dumps(data, indent=2) + "\n"))
    if args.write and device.type == "cuda":
        from syncsde.evaluation.benchmarks.readme import write_result

        write_result("device", text, data)
    return data


if __name__ == "__main__":
    main()
