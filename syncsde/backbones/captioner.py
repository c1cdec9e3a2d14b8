"""The text side of editing: BLIP captions for records without a source prompt, and CLIP text similarity for a source
word the caption does not contain (SYNCSDE.md §6.2)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from jsonargparse.typing import NonNegativeInt, PositiveInt
from torch import nn

from syncsde.backbones.diffusers import embedded_path
from syncsde.errors import ModelNotFoundError


class Captioner(nn.Module):
    """BLIP (``BlipForConditionalGeneration``) from a hub id or local folder; default
    ``Salesforce/blip-image-captioning-base``, loaded on the first caption (records that carry a prompt never load
    it). The generation settings default to those of the official code's captioner (salesforce-lavis
    ``blip_caption`` base_coco): the text prompt "a picture of " (removed from the caption), beam search with 3
    beams, 10 to 30 tokens counting the prompt.

    Args: model, prompt, num_beams, min_length, max_length.
    """

    def __init__(
        self,
        model: str = "Salesforce/blip-image-captioning-base",
        prompt: str = "a picture of ",
        num_beams: PositiveInt = 3,
        min_length: NonNegativeInt = 10,
        max_length: PositiveInt = 30,
    ):
        super().__init__()
        self.name, self.prompt = model, prompt
        self.generation = dict(num_beams=num_beams, min_length=min_length, max_length=max_length)
        self.processor = self.model = None  # loaded on the first caption: records with a prompt never need BLIP

    def load(self, device: torch.device | str = "cpu") -> "Captioner":
        """Load the processor and model (once), on ``device``."""
        if self.model is None:
            from transformers import AutoProcessor, BlipForConditionalGeneration

            try:
                self.processor = AutoProcessor.from_pretrained(self.name)
                self.model = BlipForConditionalGeneration.from_pretrained(self.name).eval().requires_grad_(False)
            except OSError as e:
                raise ModelNotFoundError(
                    f"cannot load captioner '{self.name}' ({str(e).splitlines()[0][:120]}) for a record without "
                    "\"prompt\"; download it and pass the folder with --model.captioner.model DIR, or give every "
                    "record a prompt"
                ) from None
        return self.to(device)

    @torch.no_grad()
    def forward(self, images: list[torch.Tensor]) -> list[str]:
        """Images (3, H, W) in [0, 1] → captions."""
        self.load(images[0].device)
        pixels = [(i.clamp(0, 1) * 255).byte().cpu() for i in images]
        text = [self.prompt] * len(images) if self.prompt else None
        inputs = self.processor(images=pixels, text=text, return_tensors="pt").to(next(self.model.parameters()).device)
        out = self.model.generate(
            pixel_values=inputs.pixel_values.to(self.model.dtype), input_ids=inputs.get("input_ids"), **self.generation
        )
        return [c[len(self.prompt) :].strip() for c in self.processor.batch_decode(out, skip_special_tokens=True)]


class ClipWords:
    """Cosine similarity of single words under a CLIP text encoder: the official code's choice of the caption word to
    edit when the source word is not in the caption (the word whose CLIP ViT-B/32 text embedding is closest).

    Args: model (a CLIP hub id such as ``openai/clip-vit-base-patch32``, a local folder in transformers' CLIPModel
    layout, or the embedded ``syncsde:tiny-clip``), device.
    """

    def __init__(self, model: str, device: torch.device | str = "cpu"):
        from transformers import AutoTokenizer, CLIPModel

        path = str(embedded_path(model.split(":", 1)[1])) if model.startswith("syncsde:") else model
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = CLIPModel.from_pretrained(path).eval().requires_grad_(False).to(device)
        except OSError as e:
            raise ModelNotFoundError(
                f"cannot load CLIP model '{model}' for the source-word fallback ({str(e).splitlines()[0][:120]}); "
                "pass a local folder with --model.clip_model DIR, or set missing_word: error"
            ) from None
        self.name = model

    @torch.no_grad()
    def nearest(self, word: str, candidates: Sequence[str]) -> int:
        """Index of the candidate whose text embedding has the highest cosine similarity to ``word``'s."""
        tok = self.tokenizer([word, *candidates], padding=True, return_tensors="pt").to(self.model.device)
        features = self.model.get_text_features(**tok)
        emb = F.normalize(getattr(features, "pooler_output", features).float(), dim=-1)
        return int((emb[1:] @ emb[0]).argmax())
