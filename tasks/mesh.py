"""3D mesh texturing (SYNCSDE.md §6.5) with SyncSDE, and the SyncMVD baseline (BASELINES.md §4) as a strategy.

Ten views of the mesh (azimuths −180…135 at elevation 0, then elevation 30 at azimuths 0 and 180) are the
trajectories, each conditioned on its depth map (ControlNet, when the backbone has one) and on the prompt with a
view suffix; SyncMVD's multi-view attention lets each view attend to its neighbours (and to the front view while
t > 800). View 0 is free. While t > ``sync_t_min`` (200), view i ≥ 1 is pulled toward the render of the joint bake
of views 0..i−1 — one term, not a sum of pairwise terms:

    z = bake(x_t^0..x_t^{i−1}) (cosine exponent 1, no final Voronoi fill), r_i = render_i(z),
    x^i ← x̃^i − γ_t (1/λ)(t/T) M_i ⊙ (x_t^i − r_i),   T = 1000 as in the official code.

The bake is the inverse projection of BASELINES.md §4.3 (``bake: projection``, :mod:`syncsde.mesh.projection`), as
the official code bakes; ``bake: splat`` is the per-pixel alternative. M_i is the clean coverage (SYNCSDE.md §8: the
pixels of view i whose texel carries bake weight from earlier views) or, with ``coupling_mask: value_test``, the
official test on the render (channel 0 neither exactly 0 nor 1). Every bake and render is a sparse linear map built
once per mesh and kept on the task's device. The final texture is the bake of the decoded views (cosine exponent 6)
with Voronoi fill. Differences from the official code: ``syncsde/docs/differences_mesh.md``.

Outputs per mesh: the texture (main PNG), the views, a turntable GIF, a textured GLB and OBJ+MTL+PNG.

Flow-matching models (SD3, with or without its depth ControlNet ``sd3_controlnet``) run the same code in VP
coordinates (SYNCSDE.md §6.7.1): the bake and render are linear, so the coupling toward render_i(bake(·)) reads the
same on the VP state as on the flow state; the Euler step replaces DDPM, ``sync_t_min`` and ``T`` count flow
timesteps t = 1000σ. Multi-view attention (UNet self-attention only) and Flux (2×2-packed tokens) are refused.

``parallel: windows`` (:mod:`syncsde.parallel`, docs/parallel.md) splits the views over the run's
processes: each runs the denoiser (and ControlNet, with its views' depth) on its own views in calls of
``window_batch`` views; between steps it receives the states its strategy reads (SyncSDE: every earlier view, whose
joint bake pulls view i; the averaging baselines: every view), and inside the UNet, at every self-attention layer,
the keys/values of the neighbour and front views that other processes own (:mod:`syncsde.mesh.attention`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, fields
from functools import lru_cache, partial
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from jsonargparse import lazy_instance
from jsonargparse.typing import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from torch import Tensor

from syncsde.backbones.base import Backbone
from syncsde.coupling import Canonical, Coupling, SyncProblem
from syncsde.errors import InputError
from syncsde.mesh.cameras import PAPER_VIEWS, Camera
from syncsde.mesh.io import TexturedMesh, UpAxis, load_mesh
from syncsde.mesh.projection import (
    Bake,
    LinearMap,
    RenderIndex,
    ViewSamples,
    canonical_map,
    coupling_maps,
    project_bake,
    visible_texels,
)
from syncsde.mesh.raster import GBuffer, rasterize
from syncsde.mesh.texture import bake as splat_bake
from syncsde.mesh.texture import cosine_weight, render, voronoi_fill
from syncsde.registry import check_backbone
from syncsde.schedule import Schedule, Step, gamma
from syncsde.strategies import Strategy, SyncSDE
from syncsde.task import SampleOutput, SyncTask

CouplingMask = Literal["coverage", "value_test"]


def view_suffix(elevation: float, azimuth: float) -> str:
    """SyncMVD's prompt suffix: top above 30°, front within 30° of azimuth 0, back beyond 120°, else side."""
    a = (azimuth + 180) % 360 - 180
    if elevation > 30:
        return "top"
    if abs(a) <= 30:
        return "front"
    return "back" if abs(a) >= 120 else "side"


def negative_suffix(azimuth: float) -> str:
    """SyncMVD's negative-prompt suffix, the opposite of the view: none facing the front (|azimuth| < 30, elevation
    ignored), else "front"; the official string keeps both spaces around the empty direction (", ␣␣view.")."""
    a = (azimuth + 180) % 360 - 180
    return "" if -30 < a < 30 else "front"


# A texel whose total bake weight Σ V c^e is at most this was not seen: only at grazing angles (cos < 0.1 at e = 6),
# where the bake's normalisation (+1e-8, the official code's) darkens it toward black, and the Voronoi fill spread
# that black over everything unseen (the bottom of a mesh under the paper's cameras). It takes its nearest seen
# texel's value.
SEEN_WEIGHT = 1e-6


class Geometry:
    """One mesh seen from the task's cameras: G-buffers at the working (latent) and output sizes, the view samples,
    and the linear maps of the couplings, the canonical texture and the final bake — built once per bake and kept
    per device (:mod:`syncsde.mesh.projection`)."""

    def __init__(self, mesh: TexturedMesh, cameras: list[Camera], latent_size: int, pixel_size: int, texture_size: int):
        self.mesh, self.cameras, self.texture_size, self.latent_size = mesh, cameras, texture_size, latent_size
        self.latent = rasterize(mesh, cameras, latent_size)
        self.pixel = self.latent if pixel_size == latent_size else rasterize(mesh, cameras, pixel_size)
        self.samples = [ViewSamples.of(g, c.eye, texture_size) for g, c in zip(self.latent, cameras)]
        self._memo: dict = {}

    def _once(self, key, build):
        if key not in self._memo:
            self._memo[key] = build()
        return self._memo[key]

    def visible(self, size: int) -> Tensor:
        """V_j at a texture of side ``size`` (N, size²) (:func:`~syncsde.mesh.projection.visible_texels`)."""
        return self._once(("visible", size), lambda: visible_texels(self.mesh, self.cameras, size))

    def couplings(self, bake: Bake, device) -> list[tuple[LinearMap, Tensor]]:
        """For views 1..N−1: the map of render_i(bake(views 0..i−1)) and the coverage M_i (h·w,), on ``device``."""

        def build():
            visible = self.visible(self.texture_size) if bake == "projection" else None
            return coupling_maps(self.samples, self.texture_size, self.latent_size**2, bake, visible)

        cpu = self._once(("couplings", bake), build)
        return self._once(("couplings", bake, str(device)), lambda: [(m.to(device), c.to(device)) for m, c in cpu])

    def canonical(self, bake: Bake, device) -> tuple[LinearMap, RenderIndex]:
        """The bake g of all views into the texture and the renders f_i, on ``device``."""

        def build():
            visible = self.visible(self.texture_size) if bake == "projection" else None
            return canonical_map(self.samples, self.texture_size, bake, visible), RenderIndex.of(self.samples)

        cpu = self._once(("canonical", bake), build)
        return self._once(("canonical", bake, str(device)), lambda: (cpu[0].to(device), cpu[1].to(device)))

    def texture(self, views: Tensor, bake: Bake, exponent: float, size: int) -> Tensor:
        """The final texture (3, size, size) in [0, 1] from the decoded views (N, 3, H, W) at the output size: the bake
        with cosine exponent ``exponent``, then Voronoi fill of the texels no view saw (bake weight at most
        :data:`SEEN_WEIGHT`)."""
        if bake == "splat":
            weights = [cosine_weight(g, c.eye, exponent).to(views) for g, c in zip(self.pixel, self.cameras)]
            tex, w = splat_bake(list(views), self.pixel, weights, (size, size))
        else:
            samples = self._once(
                ("samples", size), lambda: [ViewSamples.of(g, c.eye, size) for g, c in zip(self.pixel, self.cameras)]
            )
            tex, w = project_bake(views.flatten(2), samples, self.visible(size), exponent, size)
            tex, w = tex.view(-1, size, size), w.view(size, size)
        return voronoi_fill(tex, w > SEEN_WEIGHT).clamp(0, 1)


class MeshCanonical(Canonical):
    """The (latent) UV texture as SyncTweedies' canonical variable: f_i = render into view i (the view keeps its
    own values outside the object, BASELINES.md §1.1 "bg" compositing), g = the bake of all views with Voronoi fill
    (SyncMVD, BASELINES.md §4.3), at the texels some view reads (the rest of the texture is never read). The maps are
    built on first use, once per mesh."""

    def __init__(self, geometries: list[Geometry], channels: int, bake: Bake, device):
        self.geos, self.bake, self.device = geometries, bake, device
        T = geometries[0].texture_size
        self.shape = (channels, T, T)

    def _maps(self):
        return [geo.canonical(self.bake, self.device) for geo in self.geos]

    def forward(self, z: Tensor) -> Tensor:
        n, h = len(self.geos[0].cameras), self.geos[0].latent_size
        return self.forward_onto(z, z.new_zeros(z.shape[0], n, self.shape[0], h, h))

    def forward_onto(self, z: Tensor, x: Tensor) -> Tensor:
        out = [f.onto(z[b].flatten(1), x[b].flatten(2)) for b, (_, f) in enumerate(self._maps())]
        return torch.stack(out).view_as(x)

    def aggregate(self, x: Tensor) -> Tensor:
        return torch.stack([g(x[b].flatten(2)) for b, (g, _) in enumerate(self._maps())]).view(-1, *self.shape)


@dataclass(frozen=True)
class _OfficialGammaStep(Step):
    """A step whose γ_t reads ᾱ at the official code's t' = t − 1000 // 30, whatever the step count (SYNCSDE.md §6.5
    step 4); the plain update still uses the schedule's own t'."""

    abar_gamma: float = 0.0

    @property
    def gamma(self) -> float:
        return float(gamma(self.abar_t, self.abar_gamma))


def official_gamma(schedule: Schedule, config: dict, steps: int) -> Schedule:
    """``schedule`` with γ_t read at t' = t − N_train // ``steps`` (the official mesh code: 30, whatever the step
    count; ᾱ_prev = the schedule's final value past t' < 0, a point the official code never reaches)."""
    from diffusers import DDPMScheduler

    if any(s.kind not in ("ddim", "ddpm") for s in schedule.steps):
        raise InputError("gamma_steps applies to DDIM/DDPM (β-schedule) models only; unset it for this backbone")
    train = DDPMScheduler.from_config({k: v for k, v in dict(config).items() if not k.startswith("_")})
    abar, gap = train.alphas_cumprod.to(torch.float64), train.config.num_train_timesteps // steps
    return Schedule(
        tuple(
            _OfficialGammaStep(
                **{f.name: getattr(s, f.name) for f in fields(s)},
                abar_gamma=float(abar[s.t - gap]) if s.t >= gap else s.abar_prev,
            )
            for s in schedule.steps
        ),
        schedule.prediction,
    )


class _JointBakeRender:
    """f for view i: render_i of the joint bake of views 0..i−1, for every mesh of the batch (one linear map each)."""

    def __init__(self, maps: list[LinearMap], size: int):
        self.maps, self.size = maps, size

    def __call__(self, earlier: Tensor) -> Tensor:  # (B, i, C, h, w)
        out = torch.stack([m(e.flatten(2)) for m, e in zip(self.maps, earlier)])
        return out.view(*out.shape[:2], self.size, self.size)


@dataclass(frozen=True)
class _ValueTestCoupling(Coupling):
    """The official mask (SYNCSDE.md §6.5 step 3, §8): M_i, the pixels whose rendered channel 0 is neither exactly 0
    nor 1, is a function of the render, so this coupling pulls toward the render there and toward view i's own value
    elsewhere; W ⊙ (x^i − f) with W = 1 is then exactly the official M_i ⊙ (x^i − r_i)."""

    def pulled_toward(self, x: Tensor) -> Tensor:
        r = super().pulled_toward(x)
        mask = (r[:, :1] != 0) & (r[:, :1] != 1)
        return torch.where(mask, r, x[:, self.target])


@lru_cache(maxsize=8)
def _geometry(
    path: str, load: tuple, views: tuple, distance: float, fov: float, latent: int, pixel: int, texture: int
) -> Geometry:
    cams = [Camera(e, a, distance, fov) for e, a in views]
    return Geometry(load_mesh(path, *load), cams, latent, pixel, texture)


class MeshTexturing(SyncTask):
    """Args (besides :class:`~syncsde.task.SyncTask`'s):
    view_size: view resolution in pixels (768 in the paper; the working size is view_size / scale factor).
    latent_texture_size: side of the texture synchronized while sampling (1536); rgb_texture_size: final (1024).
    views: (elevation, azimuth) pairs in degrees (default: the paper's 10); distance, fov: cameras (2.0, 60°).
    prompt_prefix: prepended to every prompt; view_suffix: append ", <front|side|back|top> view." to the prompt and
    SyncMVD's opposite-view suffix to the negative prompt (", front view." unless facing the front).
    final_exponent: cosine exponent of the final bake (6). keep_uv: keep the mesh's UVs when valid.
    up_axis: the file's up axis, "y" or "z" (z-up files are turned y-up). flip_uv: the file's v runs downwards.
    merge_parts: merge several materials/geometries into one mesh with one new UV atlas (else refuse them).
    T: T of the coupling weight (1/λ)(t/T): 1000 (the official code; SYNCSDE.md §2, §8; on a flow model t/T = σ),
    None = the largest inference timestep. gamma_steps: γ_t reads ᾱ at t' = t − 1000 // gamma_steps (the official
    code hard-codes 30); None = the sampler's own t' (the same at the paper's 30 steps). β-schedule models only.
    bake: ``projection`` (BASELINES.md §4.3, the official inverse projection) or ``splat`` (each pixel to its own
    texel: at 1536² from 96² views only a few percent of a view is coupled). coupling_mask: ``coverage`` (clean,
    SYNCSDE.md §8) or ``value_test`` (official).
    multiview_attention: SyncMVD's attention between neighbouring views (BASELINES.md §4.4), on in the official run;
    UNet backbones only (SD3's joint attention is refused: SYNCSDE.md §6.7.1).
    sampler: ``ddpm`` (the paper's) or ``ddim``; None: ``ddpm`` on β-schedule models, the Euler step (``ddim``) on
    flow-matching models (their ``ddpm`` is the DDPM posterior on the VP-equivalent ᾱ: syncsde.schedule).
    turntable_frames: frames of the turntable GIF (0 = none).
    parallel, window_batch: as :class:`~syncsde.task.SyncTask`'s, the views being the windows; with multi-view
    attention, calls of ``window_batch`` views run together and exchange keys/values at every self-attention layer.
    """

    task_name = "mesh"
    window_parallel = True  # parallel: windows splits the views
    needs = frozenset({"images"})  # VP and flow-matching models (SYNCSDE.md §6.7.1); multi-view attention: a UNet

    def __init__(
        self,
        backbone: Backbone,
        strategy: Strategy = lazy_instance(SyncSDE, sync_t_min=200),
        view_size: PositiveInt = 768,
        latent_texture_size: PositiveInt = 1536,
        rgb_texture_size: PositiveInt = 1024,
        views: list[tuple[float, float]] | None = None,
        distance: PositiveFloat = 2.0,
        fov: PositiveFloat = 60.0,
        prompt_prefix: str = "Best quality, extremely detailed ",
        view_suffix: bool = True,
        final_exponent: NonNegativeFloat = 6.0,
        keep_uv: bool = True,
        up_axis: UpAxis = "y",
        flip_uv: bool = False,
        merge_parts: bool = True,
        T: PositiveInt | None = 1000,
        gamma_steps: PositiveInt | None = None,
        bake: Bake = "projection",
        coupling_mask: CouplingMask = "coverage",
        turntable_frames: NonNegativeInt = 24,
        multiview_attention: bool = True,
        num_inference_steps: PositiveInt = 30,
        guidance_scale: float = 15.5,
        sampler: Literal["ddim", "ddpm"] | None = None,
        negative_prompt: str = "oversmoothed, blurry, depth of field, out of focus, low quality, bloom, "
        "glowing effect.",
        **kwargs,
    ):
        flow = "flow_matching" in backbone.abilities
        if "packed_tokens" in backbone.abilities:
            raise InputError(
                f"the mesh task bakes and renders single latents between views and the texture; {backbone.name} "
                f"({type(backbone).__name__}) works on 2x2-packed tokens, which a view at an angle would move whole: "
                "use sd3_controlnet, sd_controlnet or sdxl_controlnet"
            )
        if flow and gamma_steps is not None:
            raise InputError(
                f"--model.gamma_steps reads γ_t from a β-schedule's ᾱ table; {backbone.name} is a flow-matching model: "
                "unset --model.gamma_steps"
            )
        if sampler is None:  # the paper's DDPM on β-schedule models; a flow model's Euler step (DDIM, η = 0)
            sampler = "ddim" if flow else "ddpm"
        super().__init__(
            backbone, strategy, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
            negative_prompt=negative_prompt, sampler=sampler, **kwargs,
        )  # fmt: skip
        if bake not in ("projection", "splat"):
            raise InputError(f"bake must be 'projection' (official) or 'splat', got {bake!r}")
        if coupling_mask not in ("coverage", "value_test"):
            raise InputError(f"coupling_mask must be 'coverage' or 'value_test' (official), got {coupling_mask!r}")
        if gamma_steps is not None and gamma_steps < 1:
            raise InputError(f"gamma_steps must be a positive step count (the official code has 30), got {gamma_steps}")
        self.view_size, self.latent_texture_size, self.rgb_texture_size = (
            view_size,
            latent_texture_size,
            rgb_texture_size,
        )
        if views is not None and not views:
            raise InputError("--model.views is empty; give (elevation, azimuth) pairs, or unset it")
        if fov >= 180:
            raise InputError(f"--model.fov {fov}: give a field of view below 180 degrees (the paper: 60)")
        self.views, self.distance, self.fov = [tuple(v) for v in (views or PAPER_VIEWS)], distance, fov
        self.prompt_prefix, self.use_suffix, self.final_exponent = prompt_prefix, view_suffix, final_exponent
        self.keep_uv, self.T, self.gamma_steps, self.turntable_frames = keep_uv, T, gamma_steps, turntable_frames
        self.load_options = (keep_uv, up_axis, flip_uv, merge_parts)
        self.bake, self.coupling_mask, self.multiview_attention = bake, coupling_mask, multiview_attention
        if multiview_attention:
            check_backbone(self, backbone, {"unet_attention"}, "multiview_attention")
        self.attention = None  # the multi-view attention of the last sampling (its exchanges count the bytes sent)

    def _sample(self, batch, x_T):
        if not self.multiview_attention:
            return super()._sample(batch, x_T)
        from syncsde.mesh.attention import MultiViewAttention

        self.attention = MultiViewAttention.of(self.views)
        remove = self.attention.attach(self.backbone.unet)
        try:
            return super()._sample(batch, x_T)
        finally:
            remove()

    def network_calls(self, calls, what):
        """Each call with the depth control of its own views (a ControlNet backbone); with multi-view attention, the
        calls run together and exchange keys/values at every self-attention layer (:mod:`syncsde.mesh.attention`)."""
        if "controlnet" in self.backbone.abilities:
            calls = [call._replace(run=partial(self._controlled, call)) for call in calls]
        if not self.multiview_attention:
            return super().network_calls(calls, what)
        return self.attention.run(calls, self.split, what)

    def _controlled(self, call) -> Tensor:
        with self.backbone.control_rows(call.rows):
            return call.run()

    def window_count(self, record) -> int:
        return len(self.views)

    def schedule(self, shape=None) -> Schedule:  # ``shape``: the working-space shape, for backbones that need it
        schedule = self.backbone.schedule(self.num_inference_steps, self.sampler, self.eta, T=self.T, shape=shape)
        if self.gamma_steps is None:
            return schedule
        return official_gamma(schedule, self.backbone.scheduler_config(), self.gamma_steps)

    def geometry(self, record) -> Geometry:
        latent = self.view_size // self.backbone.scale_factor
        return _geometry(
            record["mesh"],
            self.load_options,
            tuple(self.views),
            self.distance,
            self.fov,
            latent,
            self.view_size,
            self.latent_texture_size,
        )

    def prepare(self, batch):
        records = [{**s, "geometry": self.geometry(s)} for s in batch]
        if "controlnet" in self.backbone.abilities:
            depth = [depth_image(g) for s in records for g in s["geometry"].pixel]
            h = records[0]["geometry"].latent_size  # the view's working shape sets a flow model's shift
            steps = self.schedule((self.backbone.channels, h, h)).steps
            self.backbone.set_control(torch.stack(depth).to(self.device), [step.t for step in steps])
        return records

    def trajectory_prompts(self, batch):
        def pair(s, e, a):
            if not self.use_suffix:
                return f"{self.prompt_prefix}{s['prompt']}", self.negative_prompt
            return (
                f"{self.prompt_prefix}{s['prompt']}, {view_suffix(e, a)} view.",
                f"{self.negative_prompt}, {negative_suffix(a)} view.",
            )

        return [[pair(s, e, a) for e, a in self.views] for s in batch]

    def initial_noise(self, batch, generators):
        h = self.view_size // self.backbone.scale_factor
        return torch.stack(
            [torch.randn(len(self.views), self.backbone.channels, h, h, generator=g) for g in generators]
        )

    def problem(self, batch):
        geos = [s["geometry"] for s in batch]
        maps = [geo.couplings(self.bake, self.device) for geo in geos]
        h, full = geos[0].latent_size, tuple(range(len(self.views)))
        couplings = []
        for i in range(1, len(self.views)):
            f = _JointBakeRender([m[i - 1][0] for m in maps], h)
            if self.coupling_mask == "value_test":
                couplings.append(_ValueTestCoupling(i, full[:i], f))
            else:
                weight = torch.stack([m[i - 1][1] for m in maps]).view(len(geos), 1, h, h)
                couplings.append(Coupling(i, full[:i], f, weight))
        canonical = MeshCanonical(geos, self.backbone.channels, self.bake, self.device)
        return SyncProblem(len(self.views), couplings, canonical)

    def assemble(self, x0, batch):
        outs = []
        for b, s in enumerate(batch):
            geo: Geometry = s["geometry"]
            views = self.backbone.decode(x0[b])  # (N, 3, H, W)
            if views.shape[-1] != self.view_size:
                views = F.interpolate(views, size=(self.view_size, self.view_size), mode="nearest")
            tex = geo.texture(views.to(self.device), self.bake, self.final_exponent, self.rgb_texture_size)
            grid = torch.cat([torch.cat(list(views[r : r + 5]), -1) for r in range(0, len(views), 5)], -2)
            anim = (
                {"turntable": turntable(geo.mesh, tex, self.turntable_frames, self.distance, self.fov)}
                if self.turntable_frames
                else {}
            )
            files = exports(geo.mesh, tex)
            outs.append(
                SampleOutput(
                    s["sample_id"],
                    tex,
                    {"mesh": s["mesh"], "views": self.views, "uv": geo.mesh.uv_source},
                    {"views": grid},
                    anim,
                    files=files,
                    scored=[(views[self.front_view()], s["prompt"])],
                )
            )
        return outs

    def front_view(self) -> int:
        return min(range(len(self.views)), key=lambda i: abs(self.views[i][1]) + abs(self.views[i][0]))

    def describe(self):
        return {
            "view_size": self.view_size,
            "latent_texture_size": self.latent_texture_size,
            "rgb_texture_size": self.rgb_texture_size,
            "num_views": len(self.views),
            "T": self.T,
            "gamma_steps": self.gamma_steps,
            "bake": self.bake,
            "coupling_mask": self.coupling_mask,
            "multiview_attention": self.multiview_attention,
        }


def depth_image(g: GBuffer, blur_sigma: float = 2.0, blur_size: int = 5) -> Tensor:
    """The ControlNet's depth condition as the official code makes it (BASELINES.md §4.1): per-view min–max normalised
    inverse depth (nearest point 1, farthest 0, background 0), Gaussian-blurred (kernel 5, σ 2, reflected borders), as
    a 3-channel image in [0, 1]."""
    inv = torch.where(g.mask, 1 / g.depth.clamp_min(1e-6), torch.zeros_like(g.depth))
    vals = inv[g.mask]
    if vals.numel():
        lo, hi = vals.min(), vals.max()
        inv = torch.where(g.mask, (inv - lo) / (hi - lo).clamp_min(1e-6), inv)
    if blur_sigma > 0:
        r = torch.arange(blur_size, dtype=inv.dtype) - blur_size // 2
        k = torch.exp(-(r**2) / (2 * blur_sigma**2))
        k = (k[:, None] * k[None]) / k.sum() ** 2
        pad = blur_size // 2
        inv = F.conv2d(F.pad(inv[None, None], (pad,) * 4, mode="reflect"), k[None, None])[0, 0]
    return inv[None].expand(3, -1, -1)


def turntable(mesh: TexturedMesh, texture: Tensor, frames: int, distance: float, fov: float, size: int = 256):
    cams = [Camera(15, a, distance, fov) for a in np.linspace(-180, 180, frames, endpoint=False)]
    return [render(texture.cpu(), g, 1.0) for g in rasterize(mesh, cams, size)]


def exports(mesh: TexturedMesh, texture: Tensor) -> dict[str, bytes]:
    """A textured GLB, and OBJ + MTL + PNG referring to each other by name."""
    import trimesh
    from PIL import Image

    from syncsde.io import to_pil

    image = to_pil(texture)
    # the texture is the colour: white base factor, not metallic (trimesh's defaults darken it to 40%, metallic)
    material = trimesh.visual.material.PBRMaterial(
        baseColorTexture=image, baseColorFactor=[255, 255, 255, 255], metallicFactor=0.0, roughnessFactor=1.0
    )
    tm = trimesh.Trimesh(
        mesh.vertices.numpy(),
        mesh.faces.numpy(),
        vertex_normals=mesh.normals.numpy(),
        process=False,
        visual=trimesh.visual.TextureVisuals(uv=mesh.uvs.numpy(), material=material),
    )
    obj_text, extra = trimesh.exchange.obj.export_obj(
        tm, include_texture=True, return_texture=True, mtl_name="material.mtl"
    )
    files = {"mesh.glb": tm.export(file_type="glb")}
    for name, data in extra.items():
        if name.endswith(".mtl"):
            files["material.mtl"] = data
        else:
            buf = io.BytesIO()
            Image.open(io.BytesIO(data)).save(buf, format="PNG")
            files[name] = buf.getvalue()
    files["mesh.obj"] = obj_text.encode()
    return files
