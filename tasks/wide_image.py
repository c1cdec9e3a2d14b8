"""Wide images (panoramas) by synchronizing overlapping patches (SYNCSDE.md §6.3).

Geometry, in working-space (latent) columns, with window w = the backbone's native size and stride s:
patch j covers columns [s·j, s·j + w). Patch j is coupled to patch j−1 only (a chain, although it also
overlaps j−2, j−3, ...): f shifts patch j−1 left by s columns with zero fill, and W = 1 on the w − s columns
the two patches share. Patch 0 is free. Assembly overwrites in patch order, so latent block k comes from patch
min(k, n−1); the canvas is decoded once. At the paper's settings (512 px, stride 128 px, width 2048 px on SD)
w = 64, s = 16, n = 13 and the canvas is 64×256.

``circular=True`` (360° panorama, our extension): the canvas wraps, there are W/s patches and each contributes
its leftmost s columns. Where a patch's window runs past the right edge onto patch 0's columns, it is coupled to
patch 0 there instead of to its left neighbour, so the wrap seam is synchronized like any other; decoding pads
the latent circularly (8 columns each side, as diffusers' circular MultiDiffusion) and crops.
"""

from __future__ import annotations

from typing import Literal

import torch
from jsonargparse import lazy_instance
from jsonargparse.typing import PositiveInt
from torch import Tensor

from syncsde.backbones.base import Backbone
from syncsde.coupling import SyncProblem
from syncsde.errors import InputError
from syncsde.strategies import Strategy, SyncSDE
from syncsde.task import SampleOutput, SyncTask
from syncsde.windows import Windows


class WideImage(SyncTask):
    """Args (besides :class:`~syncsde.task.SyncTask`'s):
    height, width: output size in pixels (height = the backbone's native size, e.g. 512 for SD-2-base).
    stride: patch stride in pixels (a multiple of the backbone's scale factor).
    circular: 360° seamless panorama.
    init_from_canonical: draw one noise on the whole canvas and crop it (official ``init_xt_from_zt``);
        otherwise independent noise per patch.
    assembly: ``overwrite`` (paper), ``nearest`` (each column from the patch whose centre is nearest) or ``feather``
        (linear blend of the patches covering a column).
    """

    task_name = "wide_image"

    def __init__(
        self,
        backbone: Backbone,
        strategy: Strategy = lazy_instance(SyncSDE, inv_lambda=5.0),
        height: PositiveInt = 512,
        width: PositiveInt = 2048,
        stride: PositiveInt = 128,
        circular: bool = False,
        init_from_canonical: bool = True,
        assembly: Literal["overwrite", "nearest", "feather"] = "overwrite",
        num_inference_steps: PositiveInt = 50,
        guidance_scale: float = 7.5,
        negative_prompt: str = "",
        max_batch: PositiveInt | None = None,
        progress: bool = True,
    ):
        super().__init__(
            backbone,
            strategy,
            num_inference_steps,
            guidance_scale,
            negative_prompt,
            max_batch=max_batch,
            progress=progress,
        )
        self.height, self.width, self.stride = height, width, stride
        self.circular, self.init_from_canonical = circular, init_from_canonical
        self.assembly = assembly
        f, w = backbone.scale_factor, backbone.sample_size
        native = w * f
        if height != native:
            raise InputError(
                f"height {height} px must equal the backbone's native size {native} px (patches tile horizontally only)"
            )
        for name, v in (("width", width), ("stride", stride)):
            if v % f:
                raise InputError(f"{name} {v} px is not a multiple of the backbone's scale factor {f}")
        self.w, self.s, self.W = w, stride // f, width // f
        if not 0 < self.s <= self.w:
            raise InputError(f"stride {stride} px must be between {f} and the window size {native} px")
        if circular:
            if self.W % self.s or self.W < self.w:
                raise InputError(
                    f"circular width {width} px must be a multiple of the stride {stride} px and at least {native} px"
                )
            self.n = self.W // self.s
        else:
            if self.W < self.w or (self.W - self.w) % self.s:
                ok = native + stride * max(round((width - native) / stride), 0)
                raise InputError(
                    f"width {width} px does not fit patches of {native} px at stride {stride} px; use e.g. {ok} px"
                )
            self.n = (self.W - self.w) // self.s + 1
        self.windows = Windows(self.W, self.w, self.s, circular)
        self._couplings = self.windows.couplings()
        self._canonical = self.windows.canonical((backbone.channels, self.w))

    def problem(self, batch):
        return SyncProblem(self.n, self._couplings, canonical=self._canonical)

    # -- trajectories ---------------------------------------------------------------------------------------
    def trajectory_prompts(self, batch):
        return [[s["prompt"]] * self.n for s in batch]

    def crops(self, canvas: Tensor) -> Tensor:
        """(B, C, H, W) canvas → (B, n, C, H, w) patches."""
        return self._canonical.forward(canvas)

    def initial_noise(self, batch, generators):
        C, H = self.backbone.channels, self.w
        if self.init_from_canonical:
            return self.crops(torch.stack([torch.randn(C, H, self.W, generator=g) for g in generators]))
        return torch.stack([torch.randn(self.n, C, H, self.w, generator=g) for g in generators])

    def assemble_latent(self, x: Tensor) -> Tensor:
        """(B, n, C, H, w) → (B, C, H, W), by the task's ``assembly`` (:meth:`syncsde.windows.Windows.assemble`)."""
        return self.windows.assemble(x, self.assembly)

    def decode_canvas(self, canvas: Tensor) -> Tensor:
        if not self.circular:
            return self.backbone.decode(canvas)
        p = min(8, self.W)
        img = self.backbone.decode(torch.cat([canvas[..., -p:], canvas, canvas[..., :p]], dim=-1))
        f = self.backbone.scale_factor
        return img[..., p * f : img.shape[-1] - p * f]

    def assemble(self, x0, batch):
        images = self.decode_canvas(self.assemble_latent(x0))
        return [SampleOutput(s["sample_id"], img, {}) for s, img in zip(batch, images)]

    def describe(self):
        return {
            "height": self.height,
            "width": self.width,
            "stride": self.stride,
            "num_patches": self.n,
            "circular": self.circular,
            "init_from_canonical": self.init_from_canonical,
            "assembly": self.assembly,
        }
