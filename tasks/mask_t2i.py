"""Mask-based text-to-image (SYNCSDE.md §6.1): an object placed in a masked region.

Three trajectories, one prompt each, independent initial noises: x^1 background, x^2 object, x^3 whole image.
Couplings (identity maps, M = 1 on the object):
    x^2 <- x^1 with W_21 = 1 − M   (the object trajectory follows the background outside the mask)
    x^3 <- x^1 with W_31 = 1 − M   and   x^3 <- x^2 with W_32 = M   (background from x^1, object from x^2)
The output is x^3. Trajectory indices here are 0-based: 0 background, 1 object, 2 whole.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jsonargparse.typing import PositiveInt

from syncsde.backbones.base import Backbone
from syncsde.coupling import Canonical, Coupling, Regions, SyncProblem
from syncsde.masks import load_mask
from syncsde.strategies import Strategy
from syncsde.task import DEFAULT_STRATEGY, SampleOutput, SyncTask


class RegionCanonical(Canonical):
    """One image shared by all trajectories: f_i = identity, g = Σ_i w_i x^i / Σ_i w_i (0 where Σ w = 0)."""

    def __init__(self, weights: torch.Tensor, shape):
        self.weights, self.shape = weights, shape  # (B, N, 1, h, w)

    def forward(self, z):
        return z[:, None].expand(-1, self.weights.shape[1], *z.shape[1:]).clone()

    def aggregate(self, x):
        w = self.weights.to(x)
        return (w * x).sum(1) / w.sum(1).clamp_min(1e-12)


class MaskTextToImage(SyncTask):
    """Args (besides :class:`~syncsde.task.SyncTask`'s): height, width (default: the backbone's native size);
    save_trajectories: also save the decoded background and object trajectories."""

    task_name = "mask_t2i"
    needs = frozenset({"images"})  # the sampler alone: VP and flow-matching models
    provides = frozenset({"couplings", "canonical", "regions"})

    def __init__(
        self,
        backbone: Backbone,
        strategy: Strategy = DEFAULT_STRATEGY,
        height: PositiveInt | None = None,
        width: PositiveInt | None = None,
        save_trajectories: bool = False,
        **kwargs,
    ):
        super().__init__(backbone, strategy, **kwargs)
        self.height, self.width = height or self.native_size, width or self.native_size
        self.save_trajectories = save_trajectories

    @property
    def latent_size(self) -> tuple[int, int]:
        f = self.backbone.scale_factor
        return self.height // f, self.width // f

    def trajectory_prompts(self, batch):
        return [[s["background"], s["object"], s["prompt"]] for s in batch]

    def initial_noise(self, batch, generators):
        shape = (3, self.backbone.channels, *self.latent_size)
        return torch.stack([torch.randn(shape, generator=g) for g in generators])

    def masks(self, batch) -> torch.Tensor:
        """(B, 1, h, w) binary masks at the working-space size."""
        return torch.stack([load_mask(s["mask"], *self.latent_size, self.backbone.scale_factor) for s in batch]).to(self.device)

    def validate(self, record):
        self.masks([record])  # readable, not empty (regions: not covering everything) at the working size

    def problem(self, batch):
        m = self.masks(batch)
        couplings = [Coupling(1, 0, None, 1 - m), Coupling(2, 0, None, 1 - m), Coupling(2, 1, None, m)]
        # canonical view for the baselines: the image J = ((1−M) x^bg + M x^obj) / 1; the whole-image trajectory
        # carries no weight and always equals J (region-based MultiDiffusion, BASELINES.md §2.2)
        canonical = RegionCanonical(
            torch.stack([1 - m, m, torch.zeros_like(m)], dim=1), (self.backbone.channels, *self.latent_size)
        )
        return SyncProblem(3, couplings, canonical, Regions({1: m}, self.encode_colours))

    def encode_colours(self, colours: torch.Tensor) -> torch.Tensor:
        """Uniform-colour images (K, 3) in [0, 1] at the output size → the backbone's working space."""
        images = colours[:, :, None, None].expand(-1, 3, self.height, self.width).to(self.device)
        return self.backbone.encode(images)

    def assemble(self, x0, batch):
        whole = self.backbone.decode(x0[:, 2])
        extras = {"mask": F.interpolate(self.masks(batch), size=whole.shape[-2:], mode="nearest").expand(-1, 3, -1, -1)}
        if self.save_trajectories:
            extras["background"], extras["object"] = self.backbone.decode(x0[:, 0]), self.backbone.decode(x0[:, 1])
        return [
            SampleOutput(s["sample_id"], whole[b], {}, {k: v[b] for k, v in extras.items()})
            for b, s in enumerate(batch)
        ]

    def describe(self):
        return {"height": self.height, "width": self.width}
