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

**Where the views act** (``view_space``, SYNCSDE.md §6.4.1): on the working space, or through the autoencoder —
each step every map acts on the trajectories' x̂₀ decoded, viewed in pixels and re-encoded, at the noise level of the
quantity it maps (:class:`Estimate`, filled by the sampler's ``SyncProblem.observe``). On flow-matching backbones
the task runs unchanged in the VP coordinates of :mod:`syncsde.schedule`; on Flux a view acts on the latents under
the packed tokens (:class:`PackedView`).

Stage II samples with DDIM built from IF-II's own scheduler config; ``stage2_scheduler: stage1`` reuses stage I's
(the official script hands stage I's DDIM object to stage II; docs/differences.md).
"""

from __future__ import annotations

from typing import Literal

import torch
from jsonargparse.typing import NonNegativeInt, PositiveInt
from torch import Tensor

from syncsde.animation import readings_animation
from syncsde.backbones.base import Backbone
from syncsde.backbones.flux import pack, unpack
from syncsde.backbones.upscaler import IFUpscaler
from syncsde.coupling import Canonical, Coupling, SyncProblem
from syncsde.errors import InputError
from syncsde.sampler import sample_generator
from syncsde.schedule import eps_from_x0
from syncsde.strategies import Strategy
from syncsde.task import DEFAULT_STRATEGY, SampleOutput, SyncTask
from syncsde.views import View, commutes, get_view

VIEW_SPACES = ("latent", "pixel", "auto")


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


class PackedView(View):
    """A view on Flux's packed tokens (2×2 latents per token, :func:`~syncsde.backbones.flux.pack`): unpack, view,
    pack. Under the flips and turns whole tokens move and the four latents inside each are permuted as the view moves
    them; the permutations move single latents between tokens (an exact permutation of the latents all the same)."""

    def __init__(self, inner: View):
        self.inner, self.name, self.symmetry = inner, inner.name, inner.symmetry

    def view(self, x):
        return pack(self.inner.view(unpack(x)))

    def inverse_view(self, x):
        return pack(self.inner.inverse_view(unpack(x)))

    def inverse_variance(self, v):
        return pack(self.inner.inverse_variance(unpack(v)))


def signal(s: Tensor, x0: Tensor, eps: Tensor) -> Tensor:
    """The coefficient a of x̂₀ in s ≈ a·x̂₀ + c·ε̂, least squares over the last three dims (one a per leading index):
    √ᾱ_t for the state x_t, 1 for x̂₀, 0 for ε̂, √ᾱ_{t'} for a DDIM step's x_{t'} (0 where x̂₀ and ε̂ are parallel)."""
    s, x0, eps = s.double(), x0.double(), eps.double()
    dot = lambda u, v: (u * v).sum((-3, -2, -1))  # noqa: E731
    g00, g01, g11 = dot(x0, x0), dot(x0, eps), dot(eps, eps)
    det = g00 * g11 - g01**2
    a = (dot(s, x0) * g11 - dot(s, eps) * g01) / det.clamp_min(1e-300)
    return torch.where(det > 1e-9 * g00 * g11, a, 0.0)


class Estimate:
    """The step's clean estimate, for views taken in pixels (SYNCSDE.md §6.4.1): the
    sampler's ``observe`` gives x̂₀ and ε̂ of every trajectory (B, N, ...); their pixels D(x̂₀) in [−1, 1] and the
    round trip's residual Δ = x̂₀ − E(D(x̂₀)) are computed once per step, when a map first asks.
    ``decode``/``encode``: working space ↔ pixels in [−1, 1] (the identity on a pixel-space backbone)."""

    def __init__(self, decode, encode):
        self.decode, self.encode = decode, encode
        self.x0 = self.eps = None
        self.cache: dict = {}

    def observe(self, x: Tensor, eps: Tensor, step) -> None:
        self.x0 = step.x0(x, eps[:, :, : x.shape[2]])
        self.eps = eps_from_x0(x, self.x0, step.abar_t)
        self.cache = {}

    def cached(self, key, fn):
        if key not in self.cache:
            self.cache[key] = fn()
        return self.cache[key]

    @property
    def pixels(self) -> Tensor:
        return self.cached("pixels", lambda: self.decode(self.x0.flatten(0, 1)).unflatten(0, self.x0.shape[:2]))

    @property
    def residual(self) -> Tensor:
        return self.cached("residual", lambda: self.x0 - self.reencode(self.pixels))

    def reencode(self, p: Tensor) -> Tensor:
        """E of pixels (..., 3, H, W), stacked as they come."""
        return self.encode(p.flatten(0, p.ndim - 4)).unflatten(0, p.shape[:-3]).to(self.x0)

    def signal(self, s: Tensor, trajectories) -> Tensor:
        """(B, 1, 1, 1): the x̂₀-coefficient of ``s`` (B, ...) or (B, k, ...), averaged over its k trajectories."""
        x0, eps = self.x0[:, trajectories], self.eps[:, trajectories]
        a = signal(s, x0, eps)
        return (a if a.ndim == 1 else a.mean(1)).view(-1, 1, 1, 1).to(s)


class _PixelEarlierViews(_EarlierViews):
    """f for trajectory i through the autoencoder: f(s) = L(s) + a(s)·δ with L the latent map above, a(s) the
    x̂₀-coefficient of s, and δ = E(V_i(P)) + Δ^i − L(x̂₀), P = mean_{j<i} V_j⁻¹(D(x̂₀^j)) the earlier views' pixel
    consensus (``pixel_views``: the views in pixels; ``on``: (B, 1, 1, 1), 1 for the samples mapped in pixels)."""

    def __init__(self, views, pixel_views, i: int, estimate: Estimate, on: Tensor):
        super().__init__(views, i)
        self.pixel_views, self.estimate, self.on = pixel_views, estimate, on
        self.sources = 0 if i == 1 else list(range(i))

    def delta(self) -> Tensor:
        est, i = self.estimate, self.i
        pixels = per_sample(self.pixel_views, self._map, est.pixels[:, self.sources])
        return est.reencode(pixels) + est.residual[:, i] - super().__call__(est.x0[:, self.sources])

    def __call__(self, x):
        delta = self.estimate.cached(("coupling", self.i), self.delta)
        return super().__call__(x) + (self.on.to(x) * self.estimate.signal(x, self.sources)) * delta


class PixelViewCanonical(ViewCanonical):
    """The canonical image through the autoencoder: z₀ = E(P), P = mean_i V_i⁻¹(D(x̂₀^i)) the pixel consensus, and
    f_i(z₀) = E(V_i(P)) + Δ^i; on any other quantity, the latent maps plus its x̂₀-coefficient times the difference
    (as :class:`_PixelEarlierViews`)."""

    def __init__(self, views, shape, pixel_views, estimate: Estimate, on: Tensor):
        super().__init__(views, shape)
        self.pixel_views, self.estimate, self.on = pixel_views, estimate, on

    def consensus(self) -> Tensor:  # P, (B, 3, H, W)
        mean = lambda vs, p: torch.stack([v.inverse_view(p[:, i]) for i, v in enumerate(vs)]).mean(0)  # noqa: E731
        return self.estimate.cached("consensus", lambda: per_sample(self.pixel_views, mean, self.estimate.pixels))

    def z0(self) -> Tensor:
        return self.estimate.cached("z0", lambda: self.estimate.reencode(self.consensus()))

    def aggregate(self, x):
        est = self.estimate
        delta = est.cached("aggregate", lambda: self.z0() - super(PixelViewCanonical, self).aggregate(est.x0))
        return super().aggregate(x) + (self.on.to(x) * est.signal(x, slice(None))) * delta

    def forward_delta(self) -> Tensor:
        est, p = self.estimate, self.consensus()
        views = per_sample(self.pixel_views, lambda vs, p: torch.stack([v.view(p) for v in vs], dim=1), p)
        return est.reencode(views) + est.residual - super().forward(self.z0())

    def forward(self, z):
        est = self.estimate
        delta = est.cached("forward", self.forward_delta)
        eps = est.cached("eps_z", lambda: super(PixelViewCanonical, self).aggregate(est.eps))
        a = signal(z, self.z0(), eps).view(-1, 1, 1, 1, 1).to(z)
        return super().forward(z) + (self.on.to(z)[:, None] * a) * delta


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
    view_space: where the views act (SYNCSDE.md §6.4.1): ``latent``, on the working space
        (exact on pixel models; on latent models exact only where the autoencoder commutes with the view);
        ``pixel``, through the autoencoder — each map acts on the trajectories' x̂₀ decoded, viewed in pixels and
        re-encoded, at the state's noise level (one decode and encode per step), and the readings are views of the
        decoded image; ``auto``: latent where every view a map composes commutes with the backbone's autoencoder
        (``Backbone.view_symmetries``: identity, flip and the turns on the embedded models, as measured; none
        declared on real VAEs), pixel elsewhere.

    Backbones: VP models (DeepFloyd IF, SD, the embedded tiny-ldm) and flow-matching ones (SD3; Flux, whose views
    act on its packed tokens unpacked: :class:`PackedView`).
    """

    task_name = "ambiguous"
    needs = frozenset({"images"})  # the sampler alone: VP and flow-matching models

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
        view_space: Literal["latent", "pixel", "auto"] = "latent",
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
        if view_space not in VIEW_SPACES:
            raise InputError(f"--model.view_space {view_space!r}: choose one of {', '.join(VIEW_SPACES)}")
        self.view_space = view_space
        if upscaler is not None and "vp_schedule" not in backbone.abilities:
            raise InputError(
                f"the upscaler is DeepFloyd IF's stage II, which follows IF's stage I; {backbone.name} is not: drop "
                "--model.upscaler"
            )
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
        image = torch.zeros(3, self.size * self.backbone.scale_factor, self.size * self.backbone.scale_factor)
        views = self.sample_views([record])[0]
        for v, w in zip(views, self.working_views([views])[0]):  # known views, one per prompt, that apply at the
            w.view(x)  # working size, and at the image's where they act in pixels
            if self.view_space != "latent":
                v.view(image)

    def working_views(self, views: list[list[View]]) -> list[list[View]]:
        """The views on the backbone's working space: themselves, or on Flux's packed tokens :class:`PackedView`."""
        if "packed_tokens" not in self.backbone.abilities:
            return views
        packed = {id(v): PackedView(v) for vs in views for v in vs}
        return [[packed[id(v)] for v in vs] for vs in views]

    def in_pixels(self, views: list[View]) -> bool:
        """Whether maps composing ``views`` act through the autoencoder (``view_space``)."""
        if self.view_space == "auto":
            return not all(commutes(v, self.backbone) for v in views)
        return self.view_space == "pixel"

    def autoencoder(self):
        """Working space ↔ pixels in [−1, 1] for views in pixels: the backbone's decoder and encoder, or the identity
        where the working space is pixels (``view_symmetries`` None)."""
        if self.backbone.view_symmetries is None:
            return (lambda z: z), (lambda p: p)
        return (lambda z: self.backbone.decode(z) * 2 - 1), (lambda p: self.backbone.encode((p + 1) / 2))

    def trajectory_prompts(self, batch):
        return [prompts_of(s) for s in batch]

    def initial_noise(self, batch, generators):
        views = self.working_views(self.sample_views(batch))
        shape = (self.backbone.channels, self.size, self.size)
        if self.init_from_canonical:  # x_T^i = V_i(z_T): the views of one noise
            z = torch.stack([torch.randn(shape, generator=g) for g in generators])
            return ViewCanonical(views, shape).forward(z)
        return torch.stack([torch.randn((len(vs), *shape), generator=g) for vs, g in zip(views, generators)])

    def problem(self, batch):
        pixel_views = self.sample_views(batch)
        views, n = self.working_views(pixel_views), len(pixel_views[0])
        shape = (self.backbone.channels, self.size, self.size)
        mask = lambda flags: torch.tensor(flags, dtype=torch.float32).view(-1, 1, 1, 1)  # noqa: E731
        estimate = Estimate(*self.autoencoder())
        couplings = []
        for i in range(1, n):
            on = [self.in_pixels(vs[: i + 1]) for vs in pixel_views]
            f = _PixelEarlierViews(views, pixel_views, i, estimate, mask(on)) if any(on) else _EarlierViews(views, i)
            couplings.append(Coupling(i, 0 if i == 1 else tuple(range(i)), f))
        on = [self.in_pixels(vs) for vs in pixel_views]
        canonical = PixelViewCanonical(views, shape, pixel_views, estimate, mask(on)) if any(on) else None
        return SyncProblem(
            n,
            couplings,
            canonical=canonical or ViewCanonical(views, shape),
            observe=estimate.observe if any(on) else None,
        )

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
        readings = self.readings(x, views).unflatten(0, (len(batch), n))
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

    def readings(self, x: Tensor, views: list[list[View]]) -> Tensor:
        """Reading i = V_i(V_N⁻¹(x^N)), (B·N, 3, H, W): the views of the latents decoded, or — where the views act in
        pixels — the views of the decoded image (in [−1, 1], so that negate is 1 − x)."""
        if not any(self.in_pixels(vs) for vs in views):
            working = self.working_views(views)
            return self.backbone.decode(
                torch.cat(
                    [torch.stack([v.view(vs[-1].inverse_view(x[b])) for v in vs]) for b, vs in enumerate(working)]
                )
            )
        out = []
        for b, (vs, ws) in enumerate(zip(views, self.working_views(views))):
            if self.in_pixels(vs):
                image = self.backbone.decode(x[b : b + 1])[0] * 2 - 1
                out.append(torch.stack([v.view(vs[-1].inverse_view(image)) for v in vs]) / 2 + 0.5)
            else:
                out.append(self.backbone.decode(torch.stack([w.view(ws[-1].inverse_view(x[b])) for w in ws])))
        return torch.cat(out)

    def describe(self):
        return {
            **({"view_space": self.view_space} if self.view_space != "latent" else {}),
            "view": self.view_name,
            "size": self.size * self.backbone.scale_factor,
            "upscaler": getattr(self.upscaler, "name", None),
            **({"stage2_scheduler": self.stage2_scheduler} if self.upscaler is not None else {}),
        }
