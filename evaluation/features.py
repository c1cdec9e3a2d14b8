"""Feature networks for the metrics: a CLIP model (hub id, local folder, or the embedded ``syncsde:tiny-clip``)
as image/text embedder, usable as torchmetrics' FID/KID ``feature`` module."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from syncsde.errors import ModelNotFoundError
from syncsde.tiny.clip import normalize, resolve_transformers_model


class CLIPEmbedder(nn.Module):
    """L2-normalised CLIP image and text embeddings. ``forward(images)`` takes (N, 3, H, W) in [0, 1] (resized to the
    model's input size), so the module doubles as a torchmetrics feature extractor (``num_features``)."""

    def __init__(self, model: str = "syncsde:tiny-clip"):
        super().__init__()
        from transformers import AutoTokenizer, CLIPModel

        self.name = model
        path = resolve_transformers_model(model)
        try:
            self.model = CLIPModel.from_pretrained(path).eval().requires_grad_(False)
            self.tokenizer = AutoTokenizer.from_pretrained(path)
        except OSError as e:
            raise ModelNotFoundError(
                f"cannot load CLIP model '{model}' ({str(e).splitlines()[0][:120]}); "
                "give a local folder in transformers CLIPModel layout"
            ) from None
        self.image_size = self.model.config.vision_config.image_size
        self.num_features = self.model.config.projection_dim
        self.max_length = min(self.tokenizer.model_max_length, self.model.config.text_config.max_position_embeddings)

    @staticmethod
    def _pooled(out) -> Tensor:
        return out.pooler_output if hasattr(out, "pooler_output") else out

    @torch.no_grad()
    def encode_images(self, images: Tensor) -> Tensor:
        device = next(self.model.parameters()).device
        x = images.float().to(device)
        if x.max() > 1.5:  # uint8 images (torchmetrics' convention)
            x = x / 255
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(
                x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True, align_corners=False
            )
        return F.normalize(self._pooled(self.model.get_image_features(pixel_values=normalize(x))), dim=-1)

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> Tensor:
        device = next(self.model.parameters()).device
        tok = self.tokenizer(
            list(texts), padding="max_length", max_length=self.max_length, truncation=True, return_tensors="pt"
        ).to(device)
        return F.normalize(self._pooled(self.model.get_text_features(**tok)), dim=-1)

    def forward(self, images: Tensor) -> Tensor:
        return self.encode_images(images).double()
