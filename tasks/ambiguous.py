"""Ambiguous images (SYNCSDE.md §6.4): one image that reads as ``prompt``, and as ``prompt2`` under a view V.

Two trajectories in the model's pixel space: x^1 (``prompt``) is free; x^2 (``prompt2``) is pulled toward V(x^1)
with W = 1 on the whole image. The output is x^2 — optionally upscaled by DeepFloyd IF stage II without
synchronization — which reads as ``prompt2``; its inverse view V⁻¹(x^2) reads as ``prompt``. Saved: both readings
side by side (the main image), each reading alone, and an animation of the transformation.

Difference from the official code: stage II is run on x^2 only (the official code upscales both images and keeps
x^2's), which gives the same kept output for half the cost.
"""

from __future__ import annotations

from typing import Literal

import torch
from jsonargparse import lazy_instance

from syncsde.animation import view_animation
from syncsde.backbones.base import Backbone
from syncsde.backbones.upscaler import IFUpscaler
from syncsde.coupling import Canonical, Coupling, SyncProblem
from syncsde.sampler import sample_generator
from syncsde.strategies import Strategy, SyncSDE
from syncsde.task import SampleOutput, SyncTask
from syncsde.views import Identity, get_view


class ViewCanonical(Canonical):
    """The image as SyncTweedies' canonical variable: f_i = view i (identity, V), g = mean_i V_i⁻¹(x^i)."""

    def __init__(self, views, shape):
        self.views, self.shape = views, shape

    def forward(self, z):
        return torch.stack([v.view(z) for v in self.views], dim=1)

    def aggregate(self, x):
        return torch.stack([v.inverse_view(x[:, i]) for i, v in enumerate(self.views)]).mean(0)


class AmbiguousImage(SyncTask):
    """Args (besides :class:`~syncsde.task.SyncTask`'s):
    view: identity, rotate_cw, rotate_ccw, rotate_180, flip, skew, patch_permute, pixel_permute, inner_circle,
        square_hinge.
    upscaler: optional :class:`~syncsde.backbones.upscaler.IFUpscaler` (IF stage II, unsynchronized).
    size: side in pixels of the square images (views need square images); default the backbone's native size.
    animation_frames: frames of the transformation GIF (0 = no animation).
    init_from_canonical: x_T^2 = V(x_T^1) (the view of one noise) instead of independent noises.
    """

    task_name = "ambiguous"

    def __init__(
        self,
        backbone: Backbone,
        strategy: Strategy = lazy_instance(SyncSDE, inv_lambda=5.0),
        view: str = "rotate_cw",
        upscaler: IFUpscaler | None = None,
        size: int | None = None,
        animation_frames: int = 24,
        init_from_canonical: bool = False,
        num_inference_steps: int = 30,
        guidance_scale: float = 10.0,
        negative_prompt: str = "",
        sampler: Literal["ddim", "ddpm"] = "ddim",
        max_batch: int | None = None,
        progress: bool = True,
    ):
        super().__init__(
            backbone,
            strategy,
            num_inference_steps,
            guidance_scale,
            negative_prompt,
            sampler=sampler,
            max_batch=max_batch,
            progress=progress,
        )
        self.view_name, self.view = view, get_view(view)
        self.upscaler = upscaler
        self.size = (size or self.native_size) // backbone.scale_factor
        self.animation_frames, self.init_from_canonical = animation_frames, init_from_canonical

    def trajectory_prompts(self, batch):
        return [[s["prompt"], s["prompt2"]] for s in batch]

    def initial_noise(self, batch, generators):
        if self.init_from_canonical:  # x_T^i = V_i(z_T): the views of one noise
            z = torch.stack(
                [torch.randn(self.backbone.channels, self.size, self.size, generator=g) for g in generators]
            )
            return torch.stack([z, self.view.view(z)], dim=1)
        shape = (2, self.backbone.channels, self.size, self.size)
        return torch.stack([torch.randn(shape, generator=g) for g in generators])

    def problem(self, batch):
        canonical = ViewCanonical([Identity(), self.view], (self.backbone.channels, self.size, self.size))
        return SyncProblem(2, [Coupling(1, 0, self.view.view)], canonical=canonical)

    def upscale(self, x: torch.Tensor, batch) -> torch.Tensor:
        """Stage II on x^2 of each sample, with prompt2, from the sample's own second noise stream."""
        neg = self.backbone.encode_prompts([self.negative_prompt])
        out = []
        for b, s in enumerate(batch):
            emb = self.backbone.encode_prompts([s["prompt2"]])
            out.append(self.upscaler(x[b : b + 1], emb, neg, sample_generator(s["seed"], s["sample_id"], stream=1)))
        return torch.cat(out)

    def assemble(self, x0, batch):
        x2 = x0[:, 1]
        if self.upscaler is not None:
            x2 = self.upscale(x2, batch)
        reading2 = self.backbone.decode(x2)
        reading1 = self.view.inverse_view(reading2)
        outs = []
        for b, s in enumerate(batch):
            anim = (
                {"animation": view_animation(reading1[b], self.view, self.animation_frames)}
                if self.animation_frames
                else {}
            )
            outs.append(
                SampleOutput(
                    s["sample_id"],
                    torch.cat([reading1[b], reading2[b]], dim=-1),
                    {},
                    {"reading1": reading1[b], "reading2": reading2[b]},
                    anim,
                    scored=[(reading1[b], s["prompt"]), (reading2[b], s["prompt2"])],
                )
            )
        return outs

    def describe(self):
        return {
            "view": self.view_name,
            "size": self.size * self.backbone.scale_factor,
            "upscaler": getattr(self.upscaler, "name", None),
        }
