"""The Human Motion Diffusion Model (Tevet et al., ICLR 2023), transformer-encoder variant, as a backbone.

The module tree matches the official ``humanml_trans_enc_512`` checkpoints key for key (``input_process.poseEmbedding``,
``sequence_pos_encoder.pe``, ``seqTransEncoder.layers.N.*``, ``embed_timestep.time_embed.{0,2}``, ``embed_text``,
``output_process.poseFinal``); the CLIP text encoder is not in the checkpoint (as officially) and is loaded through
transformers (``openai/clip-vit-base-patch32`` by default, or a local folder). MDM predicts x₀ on normalised
HumanML3D features with a cosine schedule of 1000 steps; syncsde converts its x₀ to ε (prediction type "sample").
Classifier-free guidance as MDM: the unconditional branch masks the text embedding to zero (here: the empty prompt).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from jsonargparse.typing import PositiveInt
from torch import Tensor, nn

from syncsde.backbones.base import Backbone
from syncsde.backbones.diffusers import DTYPES
from syncsde.errors import InputError, ModelNotFoundError
from syncsde.motion.humanml import FEATURES, SCHEDULER, Normalizer, features_to_joints
from syncsde.registry import register


class PositionalEncoding(nn.Module):
    def __init__(self, d_model: int, dropout: float = 0.1, max_len: int = 5000):
        super().__init__()
        self.dropout = nn.Dropout(p=dropout)
        position = torch.arange(max_len, dtype=torch.float32)[:, None]
        div = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(position * div), torch.cos(position * div)
        self.register_buffer("pe", pe[:, None])  # (max_len, 1, d) as in MDM

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(x + self.pe[: x.shape[0]])


class TimestepEmbedder(nn.Module):
    def __init__(self, latent_dim: int, pos: PositionalEncoding):
        super().__init__()
        self.pos = [pos]  # shared, not a submodule (keeps the official key layout)
        self.time_embed = nn.Sequential(nn.Linear(latent_dim, latent_dim), nn.SiLU(), nn.Linear(latent_dim, latent_dim))

    def forward(self, t: Tensor) -> Tensor:
        return self.time_embed(self.pos[0].pe[t]).permute(1, 0, 2)  # (1, B, d)


class InputProcess(nn.Module):
    def __init__(self, input_feats: int, latent_dim: int):
        super().__init__()
        self.poseEmbedding = nn.Linear(input_feats, latent_dim)

    def forward(self, x: Tensor) -> Tensor:  # (B, J, F, T) → (T, B, d)
        B, J, Fe, T = x.shape
        return self.poseEmbedding(x.permute(3, 0, 1, 2).reshape(T, B, J * Fe))


class OutputProcess(nn.Module):
    def __init__(self, input_feats: int, latent_dim: int, njoints: int, nfeats: int):
        super().__init__()
        self.njoints, self.nfeats = njoints, nfeats
        self.poseFinal = nn.Linear(latent_dim, input_feats)

    def forward(self, h: Tensor) -> Tensor:  # (T, B, d) → (B, J, F, T)
        T, B, _ = h.shape
        return self.poseFinal(h).reshape(T, B, self.njoints, self.nfeats).permute(1, 2, 3, 0)


class MDMNet(nn.Module):
    """MDM's denoiser network: [timestep+text token, frames] → transformer encoder → x₀ (B, 263, 1, T)."""

    def __init__(
        self,
        njoints: int = FEATURES,
        nfeats: int = 1,
        latent_dim: int = 512,
        ff_size: int = 1024,
        num_layers: int = 8,
        num_heads: int = 4,
        dropout: float = 0.1,
        clip_dim: int = 512,
    ):
        super().__init__()
        self.input_process = InputProcess(njoints * nfeats, latent_dim)
        self.sequence_pos_encoder = PositionalEncoding(latent_dim, dropout)
        layer = nn.TransformerEncoderLayer(latent_dim, num_heads, ff_size, dropout, activation="gelu")
        self.seqTransEncoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.embed_timestep = TimestepEmbedder(latent_dim, self.sequence_pos_encoder)
        self.embed_text = nn.Linear(clip_dim, latent_dim)
        self.output_process = OutputProcess(njoints * nfeats, latent_dim, njoints, nfeats)

    def forward(self, x: Tensor, t: Tensor, text_embedding: Tensor) -> Tensor:
        emb = self.embed_timestep(t) + self.embed_text(text_embedding)[None]
        h = self.sequence_pos_encoder(torch.cat([emb, self.input_process(x)], dim=0))
        return self.output_process(self.seqTransEncoder(h)[1:])


def load_checkpoint(path: str | Path) -> dict:
    """An official MDM checkpoint: a raw state dict, or one under "model"/"ema"/"state_dict"; CLIP keys dropped."""
    if not Path(path).is_file():
        raise ModelNotFoundError(
            f"MDM checkpoint '{path}' not found; download humanml_trans_enc_512 and pass its "
            "model000XXXXXX.pt with --model.backbone.checkpoint"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (torch raises many types for a file that is not a checkpoint)
        raise InputError(
            f"--model.backbone.checkpoint '{path}' is not a readable checkpoint "
            f"({type(e).__name__}); give the official model000XXXXXX.pt"
        ) from None
    for key in ("ema", "model", "state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
            break
    return {k: v for k, v in state.items() if not k.startswith("clip_model.")}


@register("backbone", "mdm")
class MDM(Backbone):
    """MDM (HumanML3D, transformer encoder) as a syncsde backbone over (263, 1, frames) features.

    Args:
        checkpoint: official checkpoint (``humanml_trans_enc_512/model000475000.pt``) or None (random weights).
        mean, std: HumanML3D ``Mean.npy`` / ``Std.npy`` (to turn features into joints).
        clip: CLIP for the text (hub id or folder), ``openai/clip-vit-base-patch32`` as MDM.
        text_tokens: MDM truncates HumanML3D texts to 20 CLIP tokens.
        latent_dim, ff_size, num_layers, num_heads, clip_dim: architecture (official: 512, 1024, 8, 4, 512).
        dtype: of the network: "auto" (float32 on every device, as the official code runs this 20M-parameter model)
            or "float32" / "float16" / "bfloat16"; the CLIP text encoder stays in float32.
    """

    prediction_type = "sample"
    cuda_dtype = torch.float32  # "auto" on every device
    abilities = frozenset({"joints", "vp_schedule"})
    channels, sample_size, scale_factor = FEATURES, 196, 1

    def __init__(
        self,
        checkpoint: str | None = None,
        mean: str | None = None,
        std: str | None = None,
        clip: str = "openai/clip-vit-base-patch32",
        text_tokens: PositiveInt = 20,
        latent_dim: PositiveInt = 512,
        ff_size: PositiveInt = 1024,
        num_layers: PositiveInt = 8,
        num_heads: PositiveInt = 4,
        clip_dim: PositiveInt = 512,
        dtype: str = "auto",
    ):
        super().__init__()
        if dtype != "auto" and dtype not in DTYPES:
            raise InputError(f"--model.backbone.dtype {dtype!r}: give 'auto' or one of {', '.join(sorted(DTYPES))}")
        self.requested_dtype = dtype
        normalizer = Normalizer(mean, std) if mean is not None and std is not None else None  # before the weights
        self.net = MDMNet(
            latent_dim=latent_dim, ff_size=ff_size, num_layers=num_layers, num_heads=num_heads, clip_dim=clip_dim
        ).eval()
        if checkpoint is not None:
            missing, unexpected = self.net.load_state_dict(load_checkpoint(checkpoint), strict=False)
            if missing or unexpected:
                raise InputError(
                    f"'{checkpoint}' is not an MDM trans_enc checkpoint of this size: missing "
                    f"{missing[:3]}, unexpected {unexpected[:3]}"
                )
        self.name = str(checkpoint or "mdm(random)")
        self.normalizer = normalizer
        self.text_tokens = text_tokens
        self.clip_name = clip
        self._clip = None

    def _load_clip(self):
        if self._clip is None:
            from transformers import AutoTokenizer, CLIPModel

            from syncsde.tiny.clip import resolve_transformers_model

            try:
                path = resolve_transformers_model(self.clip_name)
                model = CLIPModel.from_pretrained(path).eval().requires_grad_(False)
                tok = AutoTokenizer.from_pretrained(path)
            except OSError as e:
                raise ModelNotFoundError(
                    f"cannot load CLIP '{self.clip_name}' for MDM ({str(e).splitlines()[0][:100]}); "
                    "download openai/clip-vit-base-patch32 and pass --model.backbone.clip DIR"
                ) from None
            self._clip = (model, tok)
        return self._clip

    def scheduler_config(self) -> dict:
        return dict(SCHEDULER)

    def adapt_dtype(self, device: torch.device) -> None:
        self.net.to(self.cuda_dtype if self.requested_dtype == "auto" else DTYPES[self.requested_dtype])

    @torch.no_grad()
    def encode_prompts(self, prompts) -> Tensor:
        """CLIP text features (M, 512); the empty prompt is MDM's masked (zero) condition."""
        model, tok = self._load_clip()
        device = next(self.net.parameters()).device
        ids = tok(
            list(prompts), padding="max_length", max_length=self.text_tokens, truncation=True, return_tensors="pt"
        )
        feats = model.get_text_features(**ids.to(model.device))
        feats = (feats.pooler_output if hasattr(feats, "pooler_output") else feats).float().to(device)
        empty = torch.tensor([p == "" for p in prompts], device=device)
        return torch.where(empty[:, None], torch.zeros_like(feats), feats)

    def forward(self, x: Tensor, t: Tensor, context: Tensor) -> Tensor:
        return self.net(x, t, context.to(x.dtype))

    def decode(self, z: Tensor) -> Tensor:
        raise InputError("motion is not an image: use to_joints")

    def to_joints(self, x: Tensor) -> Tensor:
        """(..., 263, 1, T) normalised features → (..., T, 22, 3) joints."""
        if self.normalizer is None:
            raise InputError("joint positions need the HumanML3D mean and std: set backbone mean and std")
        feats = self.normalizer.denormalize(x[..., 0, :].transpose(-1, -2))
        return features_to_joints(feats)
