"""Ambiguous images (SYNCSDE.md §6.4): one image that reads as a different prompt under each of N views (N ≥ 2).

Trajectory i (prompt p_i) is the image seen through view V_i, in the model's pixel space; the paper's case is N = 2
with V_0 = identity (``prompt``) and V_1 = V (``prompt2``): x^1 is free and x^2 is pulled toward V(x^1) with W = 1
on the whole image.

**N views.** SyncSDE's factorisation is autoregressive, p(x^1) p(x^2 | x^1) … p(x^N | x^1..x^{N−1}) (SYNCSDE.md §2),
so trajectory i may be coupled to every earlier one; the map from trajectory j into i's coordinates is
f_ij = V_i ∘ V_j⁻¹. We couple i **jointly to all j < i**, with one Gaussian term centred on the mean of the earlier
trajectories brought into its view,

    x^i ← x̃^i − c_t (x_t^i − V_i(mean_{j<i} V_j⁻¹(x_t^j))),

not to i−1 only. Every trajectory covers the whole image (unlike wide-image patches, where j−1 is the one neighbour
that shares most columns and the official chain uses it alone), so all earlier trajectories are equally relevant,
and the joint term is exactly how the official code couples views that each see the whole object: mesh view i is
pulled toward the render of the bake of all earlier views (SYNCSDE.md §5), and the bake of 1-to-1 views is the mean
of V_j⁻¹(x^j). One term keeps the coupling strength c_t of the paper for any N (a sum of i pairwise terms would
multiply it by i, and c_t already exceeds 1 at IF's first steps); for N = 2 it is the paper's update, bit for bit.

The output is the last trajectory x^N — optionally upscaled by DeepFloyd IF stage II without synchronization — which
is the image under view V_N; the canonical image is z = V_N⁻¹(x^N) and reading i is decode(V_i(z)). Saved: every
reading side by side (the main image), each reading alone (``_reading1.png`` …), and an animation that turns each
reading into the next. The baselines see the canonical image z with f_i = V_i and g = mean_i V_i⁻¹ (Visual Anagrams:
mean of the views' ε; negate keeps the variance channels, BASELINES.md §3.1).

A sample's prompts are ``prompt``/``prompt2`` or a list ``prompts``; its views are the task's ``view`` unless the
record has its own ``views`` (one per prompt). Difference from the official code: stage II is run on the output
trajectory only (the official code upscales both images and keeps x^2's), which gives the same kept output for half
the cost.

Stage II samples with DDIM built from IF-II's own scheduler config; ``stage2_scheduler: stage1`` reuses stage I's
(the official script hands stage I's DDIM object to stage II; docs/differences.md).
"""

from __future__ import annotations

from typing import Literal

import torch
from jsonargparse.typing import NonNegativeInt, PositiveInt

from syncsde.animation import readings_animation
from syncsde.backbones.base import Backbone
from syncsde.backbones.upscaler import IFUpscaler
from syncsde.coupling import Canonical, Coupling, SyncProblem
from syncsde.errors import InputError
from syncsde.sampler import sample_generator
from syncsde.strategies import Strategy
from syncsde.task import DEFAULT_STRATEGY, SampleOutput, SyncTask
from syncsde.views import View, get_view


def prompts_of(record: dict) -> list[str]:
    """A record's prompts, one per view: ``prompts``, or ``prompt`` and ``prompt2``."""
    return list(record["prompts"]) if "prompts" in record else [record["prompt"], record["prompt2"]]


def per_sample(views: list[list[View]], fn, x):
    """``fn(views, x)`` on the whole batch when every sample has the task's views, else sample by sample."""
    if all(vs is views[0] for vs in views):
        return fn(views[0], x)
    return torch.cat([fn(vs, x[b : b + 1]) for b, vs in enumerate(views)])


class ViewCanonical(Canonical):
    """The image as SyncTweedies' canonical variable: f_i = view i, g = mean_i V_i⁻¹(x^i); ``views[b]`` holds
    sample b's views."""

    def __init__(self, views: list[list[View]], shape):
        self.views, self.shape = views, shape

    def forward(self, z):
        return per_sample(self.views, lambda vs, z: torch.stack([v.view(z) for v in vs], dim=1), z)

    def aggregate(self, x):
        return per_sample(
            self.views, lambda vs, x: torch.stack([v.inverse_view(x[:, i]) for i, v in enumerate(vs)]).mean(0), x
        )

    def aggregate_variance(self, v):
        return per_sample(
            self.views, lambda vs, v: torch.stack([w.inverse_variance(v[:, i]) for i, w in enumerate(vs)]).mean(0), v
        )


class _EarlierViews:
    """f for trajectory i: V_i(mean_{j<i} V_j⁻¹(x^j)) (for i = 1: V_1(V_0⁻¹(x^0)))."""

    def __init__(self, views: list[list[View]], i: int):
        self.views, self.i = views, i

    def _map(self, vs, x):  # x: (B, ...) for i = 1, else (B, i, ...)
        if self.i == 1:
            return vs[1].view(vs[0].inverse_view(x))
        return vs[self.i].view(torch.stack([vs[j].inverse_view(x[:, j]) for j in range(self.i)]).mean(0))

    def __call__(self, x):
        return per_sample(self.views, self._map, x)


class AmbiguousImage(SyncTask):
    """Args (besides :class:`~syncsde.task.SyncTask`'s):
    view: one view V — the image reads as ``prompt`` and, under V, as ``prompt2`` — or a list of views, one per
        prompt of a ``prompts`` record (the first usually identity). Names: identity, rotate_cw, rotate_ccw,
        rotate_180, flip, negate, skew, patch_permute, pixel_permute, inner_circle, square_hinge, jigsaw, or the
        path of a ``.npy`` permutation (:class:`~syncsde.views.FilePermutation`). A record's own ``views`` win.
    upscaler: optional :class:`~syncsde.backbones.upscaler.IFUpscaler` (IF stage II, unsynchronized).
    stage2_scheduler: the DDIM of stage II from IF-II's own scheduler config (``own``) or from stage I's (``stage1``,
        the official code's).
    size: side in pixels of the square images (views need square images); default the backbone's native size.
    animation_frames: frames of each reading-to-reading transition of the animation (0 = no animation).
    init_from_canonical: x_T^i = V_i(z_T) (the views of one noise) instead of independent noises.
    sampler: ``ddim`` or ``ddpm`` (Visual Anagrams samples with DDPM; BASELINES.md §3.2).
    """

    task_name = "ambiguous"

    def __init__(
        self,
        backbone: Backbone,
        strategy: Strategy = DEFAULT_STRATEGY,
        view: str | list[str] = "rotate_cw",
        upscaler: IFUpscaler | None = None,
        stage2_scheduler: Literal["own", "stage1"] = "own",
        size: PositiveInt | None = None,
        animation_frames: NonNegativeInt = 24,
        init_from_canonical: bool = False,
        num_inference_steps: PositiveInt = 30,
        guidance_scale: float = 10.0,
        **kwargs,
    ):
        super().__init__(
            backbone, strategy, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, **kwargs
        )
        self.view_name = view
        self.view_names = ["identity", view] if isinstance(view, str) else list(view)
        if len(self.view_names) < 2:
            raise InputError(f"view: give one view, or a list of at least two (one per prompt), got {view}")
        self.views = [get_view(v) for v in self.view_names]
        if stage2_scheduler not in ("own", "stage1"):
            raise InputError(f"stage2_scheduler must be 'own' or 'stage1', got {stage2_scheduler!r}")
        self.upscaler, self.stage2_scheduler = upscaler, stage2_scheduler
        if upscaler is not None and stage2_scheduler == "stage1":
            upscaler.set_scheduler(backbone.scheduler_config())
        self.size = (size or self.native_size) // backbone.scale_factor
        self.animation_frames, self.init_from_canonical = animation_frames, init_from_canonical

    def on_predict_start(self) -> None:
        super().on_predict_start()
        if self.upscaler is not None:
            self.upscaler.adapt_dtype(self.device)

    def sample_views(self, batch) -> list[list[View]]:
        """Each sample's views (its record's ``views``, else the task's), one per prompt; one count per batch."""
        out = []
        for s in batch:
            views = [get_view(v) for v in s["views"]] if "views" in s else self.views
            n = len(s["prompts"]) if "prompts" in s else 2 if "prompt2" in s else len(views)
            if len(views) != n:
                raise InputError(
                    f"sample {s['sample_id']} has {n} prompts but {len(views)} views; give one view per prompt "
                    "(model.view as a list, or the record's views)"
                )
            out.append(views)
        if len({len(v) for v in out}) > 1:
            raise InputError("samples of one batch have different numbers of prompts; use data.batch_size 1")
        return out

    def validate(self, record):
        x = torch.zeros(self.backbone.channels, self.size, self.size)
        for v in self.sample_views([record])[0]:  # known views, one per prompt, that apply at the working size
            v.view(x)

    def trajectory_prompts(self, batch):
        return [prompts_of(s) for s in batch]

    def initial_noise(self, batch, generators):
        views = self.sample_views(batch)
        shape = (self.backbone.channels, self.size, self.size)
        if self.init_from_canonical:  # x_T^i = V_i(z_T): the views of one noise
            z = torch.stack([torch.randn(shape, generator=g) for g in generators])
            return ViewCanonical(views, shape).forward(z)
        return torch.stack([torch.randn((len(vs), *shape), generator=g) for vs, g in zip(views, generators)])

    def problem(self, batch):
        views = self.sample_views(batch)
        n = len(views[0])
        couplings = [Coupling(i, 0 if i == 1 else tuple(range(i)), _EarlierViews(views, i)) for i in range(1, n)]
        return SyncProblem(n, couplings, canonical=ViewCanonical(views, (self.backbone.channels, self.size, self.size)))

    def upscale(self, x: torch.Tensor, batch) -> torch.Tensor:
        """Stage II on the output trajectory of each sample, with its prompt, from the sample's second noise stream."""
        neg = self.backbone.encode_prompts([self.negative_prompt])
        out = []
        for b, s in enumerate(batch):
            emb = self.backbone.encode_prompts([prompts_of(s)[-1]])
            out.append(self.upscaler(x[b : b + 1], emb, neg, sample_generator(s["seed"], s["sample_id"], stream=1)))
        return torch.cat(out)

    def assemble(self, x0, batch):
        x = x0[:, -1]
        if self.upscaler is not None:
            x = self.upscale(x, batch)
        views = self.sample_views(batch)
        n = len(views[0])
        readings = self.backbone.decode(  # reading i = V_i(V_N⁻¹(x^N)), decoded: (B·N, 3, H, W)
            torch.cat([torch.stack([v.view(vs[-1].inverse_view(x[b])) for v in vs]) for b, vs in enumerate(views)])
        ).unflatten(0, (len(batch), n))
        outs = []
        for b, s in enumerate(batch):
            r = list(readings[b])
            anim = (
                {"animation": readings_animation(r, views[b], self.animation_frames)} if self.animation_frames else {}
            )
            outs.append(
                SampleOutput(
                    s["sample_id"],
                    torch.cat(r, dim=-1),
                    {},
                    {f"reading{i + 1}": r[i] for i in range(n)},
                    anim,
                    scored=list(zip(r, prompts_of(s))),
                )
            )
        return outs

    def describe(self):
        return {
            "view": self.view_name,
            "size": self.size * self.backbone.scale_factor,
            "upscaler": getattr(self.upscaler, "name", None),
            **({"stage2_scheduler": self.stage2_scheduler} if self.upscaler is not None else {}),
        }
