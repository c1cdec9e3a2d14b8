"""Plain text-to-image sampling: one trajectory per sample, nothing to synchronize.

The reference sampler: reference sets for FID/KID are made with it (the paper's protocol), and the embedded
model's quality is measured with it.
"""

from __future__ import annotations

import torch
from jsonargparse import lazy_instance
from jsonargparse.typing import PositiveInt

from syncsde.backbones.base import Backbone
from syncsde.coupling import SyncProblem
from syncsde.strategies import Independent, Strategy
from syncsde.task import SampleOutput, SyncTask


class TextToImage(SyncTask):
    """Args (besides :class:`~syncsde.task.SyncTask`'s): height, width in pixels (default: the backbone's native
    size); sampler: ``ddim`` (the default, as the synchronized tasks) or ``ddpm``."""

    task_name = "text_to_image"
    needs = frozenset({"images"})
    provides = frozenset()  # one trajectory: nothing to synchronize

    def __init__(
        self,
        backbone: Backbone,
        strategy: Strategy = lazy_instance(Independent),
        height: PositiveInt | None = None,
        width: PositiveInt | None = None,
        **kwargs,
    ):
        super().__init__(backbone, strategy, **kwargs)
        self.height, self.width = height or self.native_size, width or self.native_size

    def trajectory_prompts(self, batch):
        return [[s["prompt"]] for s in batch]

    def initial_noise(self, batch, generators):
        f = self.backbone.scale_factor
        shape = (1, self.backbone.channels, self.height // f, self.width // f)
        return torch.stack([torch.randn(shape, generator=g) for g in generators])

    def problem(self, batch):
        return SyncProblem(1)

    def assemble(self, x0, batch):
        images = self.backbone.decode(x0[:, 0])
        return [SampleOutput(s["sample_id"], img, {}) for s, img in zip(batch, images)]

    def describe(self):
        return {"height": self.height, "width": self.width}
