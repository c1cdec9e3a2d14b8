"""Region prompts: N masks, each with its own prompt, plus a background prompt (mask-based T2I for N regions,
SYNCSDE.md §6.1 generalised; MultiDiffusion's region-based generation, BASELINES.md §2.2).

Trajectories (0-based): 0 background, 1..K one per region (its prompt), K+1 the whole image (the record's prompt),
independent initial noises. With M_k the binary mask of region k at the working-space size and U = ∪_k M_k:

    x^k   <- x^0 with W = 1 − M_k                    (region k's trajectory follows the background outside its mask)
    x^K+1 <- x^0 with W = 1 − U,  x^K+1 <- x^k with W = P_k   (the whole image: background outside every mask,
                                                                region k on its part P_k of the masks)

The output is x^{K+1}. With one region this is the mask-based T2I task exactly (same trajectories, couplings,
noise and output). **Overlapping masks** (``overlap``): ``share`` (default) splits an overlap of m masks equally,
P_k = M_k / Σ_j M_j, so the whole image is pulled toward the mean of the overlapping regions — MultiDiffusion's
region averaging; ``last`` gives it to the later region (records list regions bottom to top, like layers). Either way
1 − U + Σ_k P_k = 1: one unit of precision at every position, as W_31 + W_32 = 1 in the mask
task (SYNCSDE.md §9 item 8).

The canonical image of the baselines is J = Σ_k P_k x^k + (1 − U) x^0 (region-based MultiDiffusion's J with
m_0 = 1 − U; the whole-image trajectory carries no weight and always equals J); MultiDiffusion bootstraps every region
trajectory (``bootstrap_steps``) with its own mask.
"""

from __future__ import annotations

from typing import Literal

import torch

from syncsde.backbones.base import Backbone
from syncsde.coupling import Coupling, Regions, SyncProblem
from syncsde.errors import InputError
from syncsde.masks import load_mask
from syncsde.strategies import Strategy
from syncsde.task import DEFAULT_STRATEGY, SampleOutput
from syncsde.tasks.mask_t2i import MaskTextToImage, RegionCanonical

# a distinct colour per region for the masks picture (background black)
PALETTE = torch.tensor(
    [[0.90, 0.30, 0.25], [0.25, 0.60, 0.90], [0.35, 0.80, 0.35], [0.95, 0.80, 0.20], [0.70, 0.40, 0.85],
     [0.95, 0.55, 0.15], [0.30, 0.85, 0.85], [0.90, 0.45, 0.70]]
)  # fmt: skip


def region_weights(masks: torch.Tensor, overlap: str) -> torch.Tensor:
    """P_k for binary masks (B, K, 1, h, w): ``share`` M_k / Σ_j M_j (0 outside every mask); ``last``: M_k where no
    later mask covers the position."""
    if overlap == "share":
        return masks / masks.sum(1, keepdim=True).clamp_min(1)
    if overlap == "last":
        later = masks.flip(1).cumsum(1).flip(1) - masks  # how many later masks cover each position
        return masks * (later == 0)
    raise InputError(f"overlap must be 'share' or 'last', got {overlap!r}")


class RegionTextToImage(MaskTextToImage):
    """Args (besides :class:`~syncsde.tasks.mask_t2i.MaskTextToImage`'s): overlap: ``share`` or ``last`` (see above).
    Records: ``{"prompt": whole image, "background": prompt, "regions": [{"prompt", "mask"}, ...]}``
    (:class:`syncsde.data.RegionPromptDataModule`). ``save_trajectories`` saves the decoded background and regions."""

    task_name = "regions"

    def __init__(
        self,
        backbone: Backbone,
        strategy: Strategy = DEFAULT_STRATEGY,
        overlap: Literal["share", "last"] = "share",
        **kwargs,
    ):
        super().__init__(backbone, strategy, **kwargs)
        region_weights(torch.ones(1, 1, 1, 1, 1), overlap)  # validates the rule
        self.overlap = overlap

    @staticmethod
    def count(batch) -> int:
        counts = {len(s["regions"]) for s in batch}
        if len(counts) != 1:
            raise InputError(f"samples of one batch must have the same number of regions, got {sorted(counts)}")
        return counts.pop()

    def trajectory_prompts(self, batch):
        return [[s["background"], *(r["prompt"] for r in s["regions"]), s["prompt"]] for s in batch]

    def initial_noise(self, batch, generators):
        shape = (self.count(batch) + 2, self.backbone.channels, *self.latent_size)
        return torch.stack([torch.randn(shape, generator=g) for g in generators])

    def masks(self, batch) -> torch.Tensor:
        """(B, K, 1, h, w) binary region masks at the working-space size; an empty mask, or one covering the whole
        image, is an error naming it."""
        h, w = self.latent_size
        out = []
        for s in batch:
            masks = [load_mask(r["mask"], h, w, self.backbone.scale_factor) for r in s["regions"]]
            for r, m in zip(s["regions"], masks):
                if bool(m.all()):
                    raise InputError(
                        f"mask '{r['mask']}' covers the whole image at {h}x{w}; leave some background (black) around "
                        "the region, or use plain text-to-image"
                    )
            out.append(torch.stack(masks))
        return torch.stack(out).to(self.device)

    def problem(self, batch):
        K = self.count(batch)
        m = self.masks(batch)
        parts = region_weights(m, self.overlap)
        outside = 1 - m.amax(1)  # 1 − U
        whole = K + 1
        couplings = [Coupling(k, 0, None, 1 - m[:, k - 1]) for k in range(1, K + 1)]
        couplings += [Coupling(whole, 0, None, outside)]
        couplings += [Coupling(whole, k, None, parts[:, k - 1]) for k in range(1, K + 1)]
        weights = torch.cat([outside[:, None], parts, torch.zeros_like(outside)[:, None]], dim=1)
        canonical = RegionCanonical(weights, (self.backbone.channels, *self.latent_size))
        regions = Regions({k: m[:, k - 1] for k in range(1, K + 1)}, self.encode_colours)
        return SyncProblem(K + 2, couplings, canonical, regions)

    def assemble(self, x0, batch):
        K = self.count(batch)
        whole = self.backbone.decode(x0[:, K + 1])
        m = torch.nn.functional.interpolate(self.masks(batch).flatten(1, 2), size=whole.shape[-2:], mode="nearest")
        colours = PALETTE[torch.arange(K) % len(PALETTE)].to(m)
        extras = {"masks": torch.einsum("bkhw,kc->bchw", region_weights(m[:, :, None], "last")[:, :, 0], colours)}
        if self.save_trajectories:
            extras["background"] = self.backbone.decode(x0[:, 0])
            for k in range(1, K + 1):
                extras[f"region{k}"] = self.backbone.decode(x0[:, k])
        return [
            SampleOutput(s["sample_id"], whole[b], {"num_regions": K}, {k: v[b] for k, v in extras.items()})
            for b, s in enumerate(batch)
        ]

    def describe(self):
        return {"height": self.height, "width": self.width, "overlap": self.overlap}
