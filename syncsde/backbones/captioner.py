"""Image captioning for editing records without a source prompt: BLIP through transformers."""

from __future__ import annotations

import torch
from jsonargparse.typing import PositiveInt
from torch import nn

from syncsde.errors import ModelNotFoundError


class Captioner(nn.Module):
    """BLIP (``BlipForConditionalGeneration``) from a hub id or local folder; default
    ``Salesforce/blip-image-captioning-base`` (the reference used BLIP base_coco through salesforce-lavis)."""

    def __init__(self, model: str = "Salesforce/blip-image-captioning-base", max_new_tokens: PositiveInt = 30):
        super().__init__()
        from transformers import AutoProcessor, BlipForConditionalGeneration

        try:
            self.processor = AutoProcessor.from_pretrained(model)
            self.model = BlipForConditionalGeneration.from_pretrained(model).eval()
        except OSError as e:
            raise ModelNotFoundError(
                f"cannot load captioner '{model}' ({str(e).splitlines()[0][:120]}); download it "
                "and pass the folder with --model.init_args.captioner.init_args.model DIR"
            ) from None
        self.name, self.max_new_tokens = model, max_new_tokens

    @torch.no_grad()
    def forward(self, images: list[torch.Tensor]) -> list[str]:
        """Images (3, H, W) in [0, 1] → captions."""
        inputs = self.processor(images=[(i.clamp(0, 1) * 255).byte().cpu() for i in images], return_tensors="pt")
        device = next(self.model.parameters()).device
        out = self.model.generate(
            pixel_values=inputs.pixel_values.to(device, self.model.dtype), max_new_tokens=self.max_new_tokens
        )
        return [c.strip() for c in self.processor.batch_decode(out, skip_special_tokens=True)]
