"""Backbones on diffusers checkpoints: the shared loading code, Stable Diffusion (latent) and text-conditioned
pixel-space UNets, and a ControlNet on any UNet backbone (SD, SDXL).

Weights come from a local folder in diffusers layout (``model_index.json`` + component subfolders) or a hub id.
Only the components the backbone needs are loaded (no safety checker). Without weights the user gets one
line within seconds, never a long retry or a silently broken tokenizer; a checkpoint of another family (an SDXL
folder given to ``StableDiffusion``, say) gets one line naming the backbone class to use.
"""

from __future__ import annotations

import importlib
import json
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import torch
from torch import Tensor

from syncsde.backbones.base import Backbone, Conditioning
from syncsde.errors import InputError, ModelNotFoundError
from syncsde.hub import check_withdrawn
from syncsde.registry import register

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# model_index.json pipeline classes (by prefix) of the families with their own backbone; anything else is a plain
# text-conditioned UNet ("unet": SD 1.x/2.x, DeepFloyd IF, the embedded models)
FAMILIES = {"StableDiffusionXL": "sdxl", "StableDiffusion3": "sd3", "Flux": "flux"}
BACKBONES = {
    "unet": "StableDiffusion",
    "sdxl": "StableDiffusionXL",
    "sd3": "StableDiffusion3",
    "flux": "Flux",
}
TITLES = {"unet": "Stable Diffusion", "sdxl": "Stable Diffusion XL", "sd3": "Stable Diffusion 3", "flux": "Flux"}


def resolve_model(model: str, what: str = "--model.backbone.model", variant: str | None = None) -> Path:
    """A local diffusers folder for ``model`` — a folder path, a hub id (its ``variant`` weights, if given), or
    ``syncsde:<name>`` for a model shipped inside the package (``syncsde:tiny-ldm``) — or a one-line
    ModelNotFoundError."""
    if model.startswith("syncsde:"):
        path = embedded_path(model.split(":", 1)[1])
        if not (path / "model_index.json").is_file():
            raise ModelNotFoundError(
                f"embedded model '{model}' is not in this installation ({path}); reinstall syncsde"
            )
        return path
    path = Path(os.path.expanduser(model))
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelNotFoundError(
                f"'{model}' is not a diffusers pipeline folder (no model_index.json); point {what} at one"
            )
        return path
    if model.startswith((".", "/", "~")) or path.exists() or model.count("/") != 1:
        raise ModelNotFoundError(
            f"model folder '{model}' not found; give an existing diffusers folder or a hub id with {what}"
        )
    check_withdrawn(model, what)
    try:
        from diffusers import DiffusionPipeline

        return Path(DiffusionPipeline.download(model, etag_timeout=10, variant=variant))
    except Exception as e:  # offline, unknown id, gated repository, ...
        reason = short_reason(e)
        raise ModelNotFoundError(
            f"cannot load model '{model}' ({reason}); download it where the hub is reachable "
            f"(hf download {model} --local-dir DIR) and pass {what} DIR"
        ) from None


def short_reason(e: BaseException, limit: int = 120) -> str:
    """The gist of a library's error for a one-line message: its first line, shortened at a word boundary."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if text.lower().startswith("cannot load model") and ": " in text:
        text = text.split(": ", 1)[1]  # the caller names the model already
    if len(text) > limit:
        text = text[: text.rfind(" ", 0, limit)].rstrip(" ,;:(") + " ..."
    return text


# the views (syncsde.views: View.symmetry) each autoencoder commutes with, D(V(z)) ≈ V(D(z)), as measured
# (tests/test_ambiguous_flow.py): the embedded models' autoencoder (trained with flips) on held-out scenes decodes the
# flipped or turned latents within 1.9-2.2x its reconstruction error of the view of the decoded image — the quarter
# turns as well as the flips — and negate and the permutations at 3.0-7.4x; no real checkpoint's VAE is declared
# (measure it before adding one)
DIHEDRAL = frozenset({"flip", "rotate_180", "rotate_cw", "rotate_ccw"})
VAE_SYMMETRIES = {"syncsde:tiny-ldm": DIHEDRAL, "syncsde:tiny-flow": DIHEDRAL}


def embedded_path(name: str) -> Path:
    """Folder of a model shipped inside the package (syncsde/embedded/<name>)."""
    return Path(__file__).resolve().parents[1] / "embedded" / name


def read_index(folder: Path, option: str = "--model.backbone.model") -> dict:
    """A diffusers folder's ``model_index.json``, or a one-line ModelNotFoundError."""
    try:
        return json.loads((folder / "model_index.json").read_text())
    except (OSError, ValueError) as e:
        raise ModelNotFoundError(
            f"'{folder / 'model_index.json'}' is unreadable ({short_reason(e)}); point {option} at a complete "
            "diffusers folder"
        ) from None


def variant_only(folder: Path) -> list[str]:
    """The weight variants of a model folder that holds only variant weight files (``STEM.fp16.safetensors``, sharded
    ``STEM-00001-of-00002.fp16.safetensors``) and no plain ones (``STEM.safetensors``); [] otherwise."""
    names = [f.name.split(".") for f in folder.glob("*") if f.suffix in (".safetensors", ".bin")]
    variants = {parts[1] for parts in names if len(parts) == 3}
    return sorted(variants) if variants and all(len(parts) == 3 for parts in names) else []


def variant_error(folder: Path, name: str | None, option: str) -> ModelNotFoundError | None:
    """The one-line refusal of a folder that holds only variant weights while no variant was given, or None."""
    variants = variant_only(folder / name if name else folder)
    if not variants:
        return None
    where = f"the {name} of '{folder}'" if name else f"'{folder}'"
    return ModelNotFoundError(
        f"{where} holds only {' and '.join(variants)} weights (*.{variants[0]}.safetensors); pass "
        f"{option.rsplit('.', 1)[0]}.variant {variants[0]}"
    )


def from_folder(cls, folder: Path, what: str, option: str, variant: str | None, subfolder: str | None = None):
    """``cls.from_pretrained`` on a local folder (its ``variant`` weights, if given), or a one-line
    ModelNotFoundError: a folder of variant weights only while no variant was given, or an incomplete folder."""
    options = {"subfolder": subfolder} if subfolder else {}
    if variant is not None:
        options["variant"] = variant
    try:
        return cls.from_pretrained(folder, local_files_only=True, **options)
    except Exception as e:  # noqa: BLE001 (missing or corrupt files raise many types)
        refusal = variant_error(folder, subfolder, option) if variant is None else None
        raise refusal or ModelNotFoundError(
            f"cannot load {what} ({short_reason(e)}); the folder is incomplete or corrupt: download it again and "
            f"pass it with {option}"
        ) from None


def load_component(folder: Path, name: str, variant: str | None = None):
    """Load one pipeline component by the class ``model_index.json`` names for it, as diffusers itself does (its
    ``variant`` weights, ``*.fp16.safetensors``, if given)."""
    option = "--model.backbone.model"
    entry = read_index(folder, option).get(name)
    if not entry or entry[0] is None:
        return None
    library, cls_name = entry
    cls = getattr(importlib.import_module(library), cls_name)
    if name == "scheduler":
        return dict(cls.load_config(folder, subfolder=name, local_files_only=True))
    variant = None if name.startswith("tokenizer") else variant  # tokenizers have no weight files
    obj = from_folder(cls, folder, f"the {name} of '{folder}'", option, variant, subfolder=name)
    if name.startswith("tokenizer") and len(obj) <= 2:
        raise ModelNotFoundError(f"the tokenizer in '{folder}' loaded with {len(obj)} tokens; the folder is incomplete")
    return obj


def checkpoint_family(index: dict) -> str:
    """The family of a diffusers folder from its ``model_index.json``: "sdxl", "sd3", "flux" or "unet"."""
    pipeline = index.get("_class_name") or ""
    return next((family for prefix, family in FAMILIES.items() if pipeline.startswith(prefix)), "unet")


def load_backbone(model: str, **options) -> "DiffusersModel":
    """The backbone for a diffusers folder or hub id, of the class its ``model_index.json`` names (SD, SDXL, SD3,
    Flux), with ``options`` (dtype, variant, ...)."""
    import syncsde.backbones as backbones

    family = checkpoint_family(read_index(resolve_model(model)))
    return getattr(backbones, BACKBONES[family])(model, **options)


class DiffusersModel(Backbone):
    """What every backbone on a diffusers folder shares: loading its ``components`` (after checking that the folder
    is of this backbone's ``family``), the dtype choice, and the VAE between images and latents.

    Args:
        model: hub id or local diffusers folder.
        dtype: "auto" (``cuda_dtype`` on CUDA — float16, bfloat16 for Flux — float32 on CPU, chosen when the task
            moves to its device), or "float32" / "float16" / "bfloat16".
        variant: the weight files to load, as diffusers' ``variant``: ``fp16`` loads ``*.fp16.safetensors`` (a
            folder that holds only those needs it); None: the plain files.
    """

    family = "unet"
    components: tuple[str, ...] = ()
    pipeline: str | None = None  # the diffusers pipeline class whose ``encode_prompt`` encodes this family's prompts
    cuda_dtype = torch.float16
    upcast_vae = False  # keep the VAE in float32 when the network runs in float16 and the VAE asks (force_upcast)
    recorded = ("variant",)  # fp16 weight files round the weights: another sample

    def __init__(self, model: str, dtype: str = "auto", variant: str | None = None):
        super().__init__()
        if dtype != "auto" and dtype not in DTYPES:
            raise InputError(f"--model.backbone.dtype {dtype!r}: give 'auto' or one of {', '.join(sorted(DTYPES))}")
        self.name = model
        self.requested_dtype, self.variant = dtype, variant
        folder = resolve_model(model, variant=variant)
        self.pipeline_config = read_index(folder)
        family = checkpoint_family(self.pipeline_config)
        if family != self.family:
            raise InputError(
                f"'{model}' is a {self.pipeline_config.get('_class_name')} checkpoint, not one for "
                f"{type(self).__name__}: use --model.backbone.class_path "
                f"syncsde.backbones.{BACKBONES[family]}"
            )
        for name in self.components:
            setattr(self, name, load_component(folder, name, variant))
        self._scheduler_config = load_component(folder, "scheduler")
        if getattr(self, "vae", None) is not None:  # a latent model: only the symmetries measured for its autoencoder
            self.view_symmetries = VAE_SYMMETRIES.get(model, frozenset())
        for m in self.children():
            m.requires_grad_(False).eval()

    def run_dtype(self, device: torch.device) -> torch.dtype:
        """The requested dtype on ``device`` ("auto": half precision on CUDA only)."""
        if self.requested_dtype == "auto":
            return self.cuda_dtype if device.type == "cuda" else torch.float32
        return DTYPES[self.requested_dtype]

    def adapt_dtype(self, device: torch.device) -> None:
        """Apply the requested dtype once the device is known (:meth:`run_dtype`)."""
        dtype = self.run_dtype(device)
        self.to(dtype)
        vae = getattr(self, "vae", None)
        if self.upcast_vae and vae is not None and dtype == torch.float16 and vae.config.get("force_upcast", False):
            vae.to(torch.float32)  # SDXL's VAE overflows in float16 (its config's force_upcast)

    def scheduler_config(self) -> dict:
        return dict(self._scheduler_config)

    def prompt_encoder(self, **config):
        """The family's diffusers pipeline on the loaded components (the same modules: no copy of the weights),
        for its ``encode_prompt``."""
        import diffusers

        modules = {name: getattr(self, name) for name in self.components}
        return getattr(diffusers, self.pipeline)(**modules, scheduler=None, **config)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def decode(self, z: Tensor) -> Tensor:
        """Latents → images in [0, 1]: z / scaling_factor + shift_factor (SD3, Flux), then the VAE. Differentiable in z
        (the weights are frozen; the tasks decode under no_grad, SyncDiffusion's gradient through it)."""
        if self.vae is None:
            return super().decode(z)
        cfg = self.vae.config
        z = z / cfg.scaling_factor + (cfg.get("shift_factor") or 0.0)
        img = self.vae.decode(z.to(self.vae.dtype)).sample
        return (img.float() / 2 + 0.5).clamp(0, 1)

    @torch.no_grad()
    def encode(self, images: Tensor, noise: Tensor | None = None) -> Tensor:
        """Images in [0, 1] → latents: (z − shift_factor) · scaling_factor with z the VAE posterior mean, or with
        ``noise`` (standard normal, shaped like the latents) the posterior sample z = mean + std · noise (the official
        editing inversion's, BASELINES.md §5.1)."""
        if self.vae is None:
            return super().encode(images)
        cfg = self.vae.config
        dist = self.vae.encode((images * 2 - 1).to(self.vae.dtype)).latent_dist
        z = dist.mean if noise is None else dist.mean + dist.std * noise.to(dist.mean)
        return (z.float() - (cfg.get("shift_factor") or 0.0)) * cfg.scaling_factor


class DiffusersBackbone(DiffusersModel):
    """A text-conditioned diffusers UNet, in latent space when the folder has a VAE, in pixel space otherwise.

    Args:
        model: hub id or local diffusers folder.
        dtype: "auto" (float16 on CUDA, float32 on CPU — chosen when the task moves to its device), or
            "float32" / "float16" / "bfloat16".
        variant: the weight files, as diffusers' (``fp16``: ``*.fp16.safetensors``); None: the plain ones.
    """

    components = ("unet", "vae", "text_encoder", "tokenizer")
    abilities = frozenset({"images", "vp_schedule", "unet_attention", "attention_maps"})

    def __init__(self, model: str, dtype: str = "auto", variant: str | None = None):
        super().__init__(model, dtype, variant)
        self.prediction_type = self._scheduler_config.get("prediction_type", "epsilon")
        cfg = self.unet.config
        self.channels = cfg.in_channels
        self.sample_size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
        if cfg.out_channels == 2 * cfg.in_channels:
            self.abilities = self.abilities | {"learned_variance"}
        self.scale_factor = self.vae_scale_factor if self.vae is not None else 1

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> Tensor:
        tok = self.tokenizer(  # T5 declares no limit: DeepFloyd IF pads to 77 (token_limit)
            list(prompts), padding="max_length", max_length=self.token_limit, truncation=True, return_tensors="pt"
        )
        device = self.text_encoder.device
        cfg = self.text_encoder.config  # T5 (DeepFloyd IF) reads the padding mask; SD's CLIP does not
        mask = tok.attention_mask.to(device) if getattr(cfg, "use_attention_mask", cfg.model_type == "t5") else None
        return self.text_encoder(tok.input_ids.to(device), attention_mask=mask)[0]

    def unet_inputs(self, x: Tensor, context: Conditioning) -> dict:
        """The conditioning keyword arguments of the UNet (and of a ControlNet on it) for rows ``x``."""
        return {"encoder_hidden_states": context.to(x.dtype)}

    @property
    def learned_variance(self) -> bool:
        return "learned_variance" in self.abilities

    def forward(self, x: Tensor, t: Tensor, context: Conditioning, variance: bool = False) -> Tensor:
        """The UNet's output; its learned-variance channels (if any) only with ``variance``."""
        out = self.unet(x, t, **self.unet_inputs(x, context)).sample
        return out if variance else out[:, : self.channels]


@register("backbone", "sd")
class StableDiffusion(DiffusersBackbone):
    """Stable Diffusion (1.x, 2.x) through diffusers; default ``stabilityai/stable-diffusion-2-base``."""

    def __init__(
        self, model: str = "stabilityai/stable-diffusion-2-base", dtype: str = "auto", variant: str | None = None
    ):
        super().__init__(model, dtype, variant)
        if self.vae is None:
            raise ModelNotFoundError(
                f"'{model}' has no VAE: it is not a Stable Diffusion checkpoint (use DiffusersBackbone)"
            )


@register("backbone", "deepfloyd_if")
class DeepFloydIF(DiffusersBackbone):
    """DeepFloyd IF stage I (pixel space, 64², T5 text encoder with its padding mask, learned-variance channels
    dropped: ε = the first 3 output channels). Default ``DeepFloyd/IF-I-M-v1.0`` (gated on the hub: accept its
    licence, download, and pass the folder). Its scheduler config keeps clip_sample and dynamic thresholding, which
    syncsde's DDIM step applies as diffusers does (SYNCSDE.md §6.4)."""

    def __init__(self, model: str = "DeepFloyd/IF-I-M-v1.0", dtype: str = "auto", variant: str | None = None):
        super().__init__(model, dtype, variant)
        if self.vae is not None:
            raise ModelNotFoundError(
                f"'{model}' has a VAE: it is a latent model, not DeepFloyd IF (use StableDiffusion)"
            )

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> Tensor:
        """T5 embeddings of the prompts lowercased and stripped, as IF's pipelines prepare them (``clean_caption``
        off, as the official code calls them)."""
        return super().encode_prompts([p.lower().strip() for p in prompts])


@dataclass
class VaeTiling:
    """When and how a large canvas goes through the VAE in tiles (diffusers' ``AutoencoderKL`` tiling: tiles of
    ``tile_size`` pixels overlapping by ``overlap``, blended linearly), so memory stays that of one tile.

    Args:
        mode: ``auto`` tiles images of more than ``above`` native-size images of pixels (SD-2: more than 512×2048, so
            the paper's panorama is decoded in one pass); ``on`` always; ``off`` never.
        above: the ``auto`` threshold, in native-size images.
        tile_size: tile side in pixels (None: the VAE's own ``sample_size``).
        overlap: the share of a tile blended with its neighbour (diffusers' default 0.25).
    """

    mode: Literal["auto", "on", "off"] = "auto"
    above: float = 4.0
    tile_size: int | None = None
    overlap: float = 0.25

    def __post_init__(self):
        if self.mode not in ("auto", "on", "off"):
            raise InputError(f"vae_tiling mode must be auto, on or off, got {self.mode!r}")
        if not 0 <= self.overlap < 1 or (self.tile_size is not None and self.tile_size < 8):
            raise InputError(
                f"vae_tiling needs 0 <= overlap < 1 and tile_size >= 8, got {self.overlap}, {self.tile_size}"
            )

    def tiles(self, backbone, height: int, width: int) -> bool:
        """Whether an image of height × width pixels goes through this backbone's VAE in tiles."""
        vae = getattr(backbone, "vae", None)
        if vae is None or not hasattr(vae, "use_tiling") or self.mode == "off":
            return False
        native = backbone.sample_size * backbone.scale_factor
        return self.mode == "on" or height * width > self.above * native * native

    @contextmanager
    def active(self, backbone, height: int, width: int):
        """Tiling on the backbone's VAE while the block runs, if an image of this size calls for it."""
        if not self.tiles(backbone, height, width):
            yield
            return
        vae = backbone.vae
        names = ("use_tiling", "tile_sample_min_size", "tile_latent_min_size", "tile_overlap_factor")
        saved = {k: getattr(vae, k) for k in names}
        size = self.tile_size or saved["tile_sample_min_size"]
        size = size[0] if isinstance(size, (list, tuple)) else size
        vae.use_tiling, vae.tile_overlap_factor = True, self.overlap
        vae.tile_sample_min_size, vae.tile_latent_min_size = size, size // backbone.vae_scale_factor
        try:
            yield
        finally:
            for k, v in saved.items():
                setattr(vae, k, v)

    def decode(self, backbone, z: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        """``backbone.decode(z)``, tiled if the canvas calls for it (``size``: the canvas size in pixels that decides,
        default z's)."""
        f = backbone.scale_factor
        with self.active(backbone, *(size or (z.shape[-2] * f, z.shape[-1] * f))):
            return backbone.decode(z)

    def encode(self, backbone, images: Tensor) -> Tensor:
        """``backbone.encode(images)``, tiled if the canvas calls for it."""
        with self.active(backbone, images.shape[-2], images.shape[-1]):
            return backbone.encode(images)


def resolve_single(model: str, what: str, variant: str | None = None) -> Path:
    """A local folder for a single diffusers model (config.json + weights): a folder path or a hub id."""
    path = Path(os.path.expanduser(model))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"'{model}' has no config.json; point {what} at a diffusers model folder")
        return path
    if model.startswith((".", "/", "~")) or model.count("/") != 1:
        raise ModelNotFoundError(f"model folder '{model}' not found; give an existing folder or a hub id with {what}")
    check_withdrawn(model, what)
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(
                model,
                allow_patterns=[
                    "config.json",
                    f"diffusion_pytorch_model{'.' + variant if variant else ''}.safetensors",
                ],
                etag_timeout=10,
            )
        )
    except Exception as e:  # noqa: BLE001
        reason = short_reason(e)
        raise ModelNotFoundError(
            f"cannot load model '{model}' ({reason}); download it where the hub is reachable "
            f"(hf download {model} --local-dir DIR) and pass {what} DIR"
        ) from None


SCALE_SCHEDULES = ("linear", "official", "syncmvd")


_CONTROL_ROWS = threading.local()  # the control rows of this thread's network calls (ControlNet.control_rows)


class ControlNet:
    """A ControlNet on a backbone (SYNCSDE.md §6.5), mixed in before the backbone class: SD-1.5 with
    ``lllyasviel/control_v11f1p_sd15_depth`` (:class:`StableDiffusionControlNet`), SDXL with
    ``diffusers/controlnet-depth-sdxl-1.0`` (:class:`~syncsde.backbones.sdxl.StableDiffusionXLControlNet`), SD3.5 with
    its depth ControlNet (:class:`~syncsde.backbones.sd3.StableDiffusion3ControlNet`, which redefines ``fit``,
    ``set_control`` and ``controlled``). On a UNet the ControlNet takes the same conditioning as the UNet
    (``unet_inputs``). The task sets the control images (``set_control``, one per row, in [0, 1]) and the sampling
    timesteps.

    The conditioning scale at step i of S (timesteps t_0 > … > t_{S−1}), by ``scale_schedule``:

    - ``linear`` (default): the clean schedule of SYNCSDE.md §8, linear from ``scale_start`` at t = 1000 to
      ``scale_end`` at t = 0, and off once the sampling progress 1 − t/1000 passes ``guidance_end`` (the official
      ``control_guidance_end`` 0.99).
    - ``official``: what the official SyncSDE code (hjl1013/SyncSDE, the SyncTweedies mesh code it vendors) passes to
      the ControlNet: ``scale_start`` at every step, times SyncMVD's ``controlnet_keep`` — 0 where (i + 1)/S >
      ``guidance_end`` (the last step, for S < 100). Its loop anneals the scale after each step, but the network reads
      the scale from a keyword dictionary built once before the loop, so the annealed value never arrives.
    - ``syncmvd``: SyncMVD's own code (LIU-Yuxin/SyncMVD, BASELINES.md §4.1), where the annealed value does arrive:
      ``scale_start`` at the first step, then α·``scale_start`` + (1 − α)·``scale_end`` with α = p/``guidance_end``
      from the previous step's progress p = 1 − t_{i−1}/1000 (``scale_end`` once p > ``guidance_end``): from about
      0.9 down to 0.7 with the defaults, though documented as increasing; times the same ``controlnet_keep``.
    """

    abilities = DiffusersBackbone.abilities | {"controlnet"}
    recorded = ("variant", "controlnet_name", "scale_start", "scale_end", "guidance_end", "scale_schedule")
    controlnet_class = "ControlNetModel"  # the diffusers class of the ControlNet

    def fit(self, config) -> list[tuple[str, object, object]]:
        """(setting, the ControlNet's value, the base model's value) for the settings that must agree."""
        return [
            (key, config.get(key), self.unet.config.get(key)) for key in ("addition_embed_type", "cross_attention_dim")
        ]

    def __init__(
        self,
        model: str,
        controlnet: str,
        dtype: str = "auto",
        scale_start: float = 0.7,
        scale_end: float = 0.9,
        guidance_end: float = 0.99,
        scale_schedule: Literal["linear", "official", "syncmvd"] = "linear",
        variant: str | None = None,
    ):
        if scale_schedule not in SCALE_SCHEDULES:
            raise InputError(
                f"--model.backbone.scale_schedule {scale_schedule!r}: choose one of {', '.join(SCALE_SCHEDULES)}"
            )
        # both models are looked for before either is loaded, so that one line names all that is missing
        option = "--model.backbone.controlnet"
        missing = []
        for name, find in (
            (model, lambda m: resolve_model(m, variant=variant)),
            (controlnet, lambda m: resolve_single(m, option, variant)),
        ):
            try:
                find(name)
            except ModelNotFoundError:
                missing.append(name)
        if missing:
            raise ModelNotFoundError(
                f"cannot load {' nor '.join(repr(m) for m in missing)}: {type(self).__name__} needs "
                f"{TITLES[self.family]} ('{model}') and its ControlNet ('{controlnet}'); download what is missing "
                "where the hub is reachable (hf download ID --local-dir DIR) and pass --model.backbone.model DIR "
                f"and {option} DIR"
            )
        super().__init__(model, dtype, variant=variant)
        import diffusers

        folder = resolve_single(controlnet, option, variant)
        cls = getattr(diffusers, self.controlnet_class)
        self.controlnet = from_folder(cls, folder, f"ControlNet '{controlnet}'", option, variant)
        self.controlnet.requires_grad_(False).eval()
        for key, theirs, ours in self.fit(self.controlnet.config):
            if theirs != ours:
                raise InputError(
                    f"ControlNet '{controlnet}' does not fit '{model}' ({key} {theirs} vs {ours}): use a ControlNet "
                    "trained for this base model"
                )
        self.scale_start, self.scale_end, self.guidance_end = scale_start, scale_end, guidance_end
        self.scale_schedule, self.controlnet_name = scale_schedule, controlnet
        self.control: Tensor | None = None
        self.timesteps: list[float] | None = None

    def set_control(self, images: Tensor | None, timesteps: Sequence[float]) -> None:
        """The control images (one per row, in [0, 1]; ``None``: no ControlNet) and the sampling timesteps
        t_0 > … > t_{S−1} (which the ``official`` and ``syncmvd`` schedules count steps by; a flow model's are
        fractional)."""
        self.control = images
        self.timesteps = [int(t) if float(t).is_integer() else float(t) for t in timesteps]

    @contextmanager
    def control_rows(self, rows: Sequence[int]):
        """Network calls of this thread, inside the block, on the rows ``rows`` of the control images only (a call on
        some of a batch's trajectories; threads: :class:`syncsde.parallel.Lockstep`)."""
        _CONTROL_ROWS.rows = list(rows)
        try:
            yield
        finally:
            _CONTROL_ROWS.rows = None

    def control_scale(self, t: float) -> float:
        if self.scale_schedule == "linear":
            progress = 1 - t / 1000
            if progress > self.guidance_end:
                return 0.0
            return self.scale_start + (self.scale_end - self.scale_start) * progress
        steps = len(self.timesteps)
        i = min(range(steps), key=lambda k: abs(self.timesteps[k] - t))  # the network reads t in its own precision
        if abs(self.timesteps[i] - t) > 0.5:
            raise ValueError(f"timestep {t} is not among the sampling timesteps given to set_control")
        if (i + 1) / steps > self.guidance_end:  # SyncMVD's controlnet_keep
            return 0.0
        if self.scale_schedule == "official" or i == 0:
            return self.scale_start
        progress = 1 - self.timesteps[i - 1] / 1000
        if progress > self.guidance_end:
            return self.scale_end
        alpha = progress / self.guidance_end
        return alpha * self.scale_start + (1 - alpha) * self.scale_end

    def forward(self, x: Tensor, t: Tensor, context: Conditioning, **kw) -> Tensor:
        if self.control is None:
            return super().forward(x, t, context, **kw)
        scale = self.control_scale(float(t[0]))
        if scale == 0:
            return super().forward(x, t, context, **kw)
        rows = getattr(_CONTROL_ROWS, "rows", None)
        cond = self.control if rows is None else self.control[rows]
        if x.shape[0] == 2 * cond.shape[0]:  # both CFG branches see the same control
            cond = torch.cat([cond, cond])
        if x.shape[0] != cond.shape[0]:
            raise ModelNotFoundError(
                f"{x.shape[0]} rows but {cond.shape[0]} control images; max_batch cannot split "
                "ControlNet calls: unset it"
            )
        return self.controlled(x, t, context, cond, scale)

    def controlled(self, x: Tensor, t: Tensor, context: Conditioning, cond: Tensor, scale: float) -> Tensor:
        """The network's output with the ControlNet's residuals at conditioning scale ``scale``, ``cond`` the control
        of each row of ``x``."""
        inputs = self.unet_inputs(x, context)
        down, mid = self.controlnet(
            x, t, controlnet_cond=cond.to(x.dtype), conditioning_scale=scale, return_dict=False, **inputs
        )
        return self.unet(x, t, down_block_additional_residuals=down, mid_block_additional_residual=mid, **inputs).sample


@register("backbone", "sd_controlnet")
class StableDiffusionControlNet(ControlNet, StableDiffusion):
    """Stable Diffusion 1.x with a ControlNet (:class:`ControlNet`): default SD-1.5 with the depth ControlNet
    ``lllyasviel/control_v11f1p_sd15_depth`` (SYNCSDE.md §6.5)."""

    def __init__(
        self,
        model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5",
        controlnet: str = "lllyasviel/control_v11f1p_sd15_depth",
        dtype: str = "auto",
        scale_start: float = 0.7,
        scale_end: float = 0.9,
        guidance_end: float = 0.99,
        scale_schedule: Literal["linear", "official", "syncmvd"] = "linear",
        variant: str | None = None,
    ):
        super().__init__(model, controlnet, dtype, scale_start, scale_end, guidance_end, scale_schedule, variant)
