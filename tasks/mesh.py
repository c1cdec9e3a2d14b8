"""3D mesh texturing (SYNCSDE.md §6.5) with SyncSDE, and the SyncMVD baseline (BASELINES.md §4) as a strategy.

Ten views of the mesh (azimuths −180…135 at elevation 0, then elevation 30 at azimuths 0 and 180) are the
trajectories, each conditioned on its depth map (ControlNet, when the backbone has one) and on the prompt with a
view suffix. View 0 is free. While t > ``sync_t_min`` (200), view i ≥ 1 is pulled toward the render of the joint
bake of views 0..i−1 — one term, not a sum of pairwise terms:

    z = bake(x_t^0..x_t^{i−1}) (cosine-weighted, exponent 1, no Voronoi fill), r_i = render_i(z),
    x^i ← x̃^i − γ_t (1/λ)(t/T) M_i ⊙ (x_t^i − r_i),

with M_i the region of view i already covered by earlier views — clean form (SYNCSDE.md §8): the explicit coverage
of the pixels whose texel carries bake weight from earlier views, within view i's object mask. It grows with i.
The final texture is the bake of the
decoded views (cosine exponent 6) with Voronoi fill.

Outputs per mesh: the texture (main PNG), the views, a turntable GIF, a textured GLB and OBJ+MTL+PNG.
Differences from the official code: coverage mask instead of the value test on channel 0; T = max inference
timestep (1000 only with ``T=1000``); ControlNet scale linear 0.7 → 0.9; depth rendered directly at the view size
(the official code renders at 512 px and resizes bilinearly before the blur).
"""

from __future__ import annotations

import io
from functools import lru_cache
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
from syncsde.mesh.io import TexturedMesh, load_mesh
from syncsde.mesh.raster import GBuffer, rasterize
from syncsde.mesh.texture import bake, cosine_weight, render, texel_index, voronoi_fill
from syncsde.schedule import Schedule
from syncsde.strategies import Strategy, SyncSDE
from syncsde.task import SampleOutput, SyncTask


def view_suffix(elevation: float, azimuth: float) -> str:
    """SyncMVD's prompt suffix: top above 30°, front within 30° of azimuth 0, back beyond 120°, else side."""
    a = (azimuth + 180) % 360 - 180
    if elevation > 30:
        return "top"
    if abs(a) <= 30:
        return "front"
    return "back" if abs(a) >= 120 else "side"


class Geometry:
    """Rasterized views of one mesh at the working (latent) and output sizes, the cosine weights, the coverage
    masks M_i, and the prefix bakes."""

    def __init__(self, mesh: TexturedMesh, cameras: list[Camera], latent_size: int, pixel_size: int, texture_size: int):
        self.mesh, self.cameras, self.texture_size = mesh, cameras, texture_size
        self.latent = rasterize(mesh, cameras, latent_size)
        self.pixel = self.latent if pixel_size == latent_size else rasterize(mesh, cameras, pixel_size)
        self.weights = [cosine_weight(g, c.eye, 1.0) for g, c in zip(self.latent, cameras)]
        self.coverage = torch.stack([self.covered(i, range(i)) for i in range(len(cameras))])  # M_i, (N, h, w)

    def covered(self, i: int, earlier) -> Tensor:
        """Pixels of view i (within its object mask) whose texel carries bake weight from the ``earlier`` views."""
        T = self.texture_size
        seen = torch.zeros(T * T, dtype=torch.bool)
        for j in earlier:
            g = self.latent[j]
            seen[texel_index(g.uv, T, T)[g.mask & (self.weights[j] > 0)]] = True
        g = self.latent[i]
        return (g.mask & seen[texel_index(g.uv, T, T)]).float()

    def joint_render(self, earlier: Tensor, i: int) -> Tensor:
        """render_i(bake(x^0..x^{i−1})): ``earlier`` (i, C, h, w) latents of views 0..i−1 of this mesh."""
        T = self.texture_size
        tex, _ = bake(list(earlier), self.latent[:i], [w.to(earlier) for w in self.weights[:i]], (T, T))
        return render(tex, self.latent[i])


class MeshCanonical(Canonical):
    """The (latent) UV texture as SyncTweedies' canonical variable: f_i = render into view i (the view keeps its
    own values outside the object, BASELINES.md §1.1 "bg" compositing), g = cosine-weighted bake of all views with
    Voronoi fill (SyncMVD, BASELINES.md §4.3)."""

    def __init__(self, geometries: list[Geometry], channels: int):
        self.geos = geometries
        T = geometries[0].texture_size
        self.shape = (channels, T, T)

    def forward(self, z: Tensor) -> Tensor:
        return torch.stack([torch.stack([render(z[b], g) for g in geo.latent]) for b, geo in enumerate(self.geos)])

    def forward_onto(self, z: Tensor, x: Tensor) -> Tensor:
        return torch.stack(
            [
                torch.stack([render(z[b], g, x[b, i]) for i, g in enumerate(geo.latent)])
                for b, geo in enumerate(self.geos)
            ]
        )

    def aggregate(self, x: Tensor) -> Tensor:
        out = []
        for b, geo in enumerate(self.geos):
            tex, w = bake(list(x[b]), geo.latent, geo.weights, self.shape[1:])
            out.append(voronoi_fill(tex, w > 0))
        return torch.stack(out)


@lru_cache(maxsize=8)
def _geometry(
    path: str, keep_uv: bool, views: tuple, distance: float, fov: float, latent: int, pixel: int, texture: int
) -> Geometry:
    cams = [Camera(e, a, distance, fov) for e, a in views]
    return Geometry(load_mesh(path, keep_uv), cams, latent, pixel, texture)


class MeshTexturing(SyncTask):
    """Args (besides :class:`~syncsde.task.SyncTask`'s):
    view_size: view resolution in pixels (768 in the paper; the working size is view_size / scale factor).
    latent_texture_size: side of the texture synchronized while sampling (1536); rgb_texture_size: final (1024).
    views: (elevation, azimuth) pairs in degrees (default: the paper's 10); distance, fov: cameras (2.0, 60°).
    prompt_prefix: prepended to every prompt; view_suffix: append ", <front|side|back|top> view.".
    final_exponent: cosine exponent of the final bake (6). keep_uv: keep the mesh's UVs when valid.
    T: the schedule's T (None = largest inference timestep; 1000 = the official code).
    turntable_frames: frames of the turntable GIF (0 = none).
    """

    task_name = "mesh"

    def __init__(
        self,
        backbone: Backbone,
        strategy: Strategy = lazy_instance(SyncSDE, inv_lambda=5.0, sync_t_min=200),
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
        T: PositiveInt | None = None,
        turntable_frames: NonNegativeInt = 24,
        multiview_attention: bool = False,
        num_inference_steps: PositiveInt = 30,
        guidance_scale: float = 15.5,
        sampler: Literal["ddim", "ddpm"] = "ddpm",
        negative_prompt: str = "oversmoothed, blurry, depth of field, out of focus, low quality, bloom, "
        "glowing effect.",
        progress: bool = True,
    ):
        super().__init__(
            backbone, strategy, num_inference_steps, guidance_scale, negative_prompt, sampler=sampler, progress=progress
        )
        self.view_size, self.latent_texture_size, self.rgb_texture_size = (
            view_size,
            latent_texture_size,
            rgb_texture_size,
        )
        if views is not None and not views:
            raise InputError("--model.init_args.views is empty; give (elevation, azimuth) pairs, or unset it")
        if fov >= 180:
            raise InputError(f"--model.init_args.fov {fov}: give a field of view below 180 degrees (the paper: 60)")
        self.views, self.distance, self.fov = [tuple(v) for v in (views or PAPER_VIEWS)], distance, fov
        self.prompt_prefix, self.use_suffix, self.final_exponent = prompt_prefix, view_suffix, final_exponent
        self.keep_uv, self.T, self.turntable_frames = keep_uv, T, turntable_frames
        self.multiview_attention = multiview_attention

    def _sample(self, batch, x_T):
        if not self.multiview_attention:
            return super()._sample(batch, x_T)
        from syncsde.mesh.attention import install

        remove = install(self.backbone.unet, self.views)
        try:
            return super()._sample(batch, x_T)
        finally:
            remove()

    def schedule(self) -> Schedule:
        return Schedule.from_config(
            self.backbone.scheduler_config(), self.num_inference_steps, self.sampler, self.eta, T=self.T
        )

    def geometry(self, record) -> Geometry:
        latent = self.view_size // self.backbone.scale_factor
        return _geometry(
            record["mesh"],
            self.keep_uv,
            tuple(self.views),
            self.distance,
            self.fov,
            latent,
            self.view_size,
            self.latent_texture_size,
        )

    def prepare(self, batch):
        records = [{**s, "geometry": self.geometry(s)} for s in batch]
        if hasattr(self.backbone, "set_control"):
            depth = [depth_image(g) for s in records for g in s["geometry"].pixel]
            self.backbone.set_control(torch.stack(depth).to(self.device))
        return records

    def trajectory_prompts(self, batch):
        def text(s, e, a):
            suffix = f", {view_suffix(e, a)} view." if self.use_suffix else ""
            return f"{self.prompt_prefix}{s['prompt']}{suffix}"

        return [[text(s, e, a) for e, a in self.views] for s in batch]

    def initial_noise(self, batch, generators):
        h = self.view_size // self.backbone.scale_factor
        return torch.stack(
            [torch.randn(len(self.views), self.backbone.channels, h, h, generator=g) for g in generators]
        )

    def problem(self, batch):
        geos = [s["geometry"] for s in batch]
        full = tuple(range(len(self.views)))
        couplings = []
        for i in range(1, len(self.views)):
            weight = torch.stack([geo.coverage[i] for geo in geos])[:, None].to(self.device)
            couplings.append(Coupling(i, full[:i], _JointBakeRender(geos, i), weight))
        return SyncProblem(
            len(self.views), couplings, {"geometries": geos}, MeshCanonical(geos, self.backbone.channels)
        )

    def assemble(self, x0, batch):
        outs = []
        for b, s in enumerate(batch):
            geo: Geometry = s["geometry"]
            views = self.backbone.decode(x0[b])  # (N, 3, H, W)
            if views.shape[-1] != self.view_size:
                views = F.interpolate(views, size=(self.view_size, self.view_size), mode="nearest")
            weights = [cosine_weight(g, c.eye, self.final_exponent) for g, c in zip(geo.pixel, geo.cameras)]
            size = (self.rgb_texture_size, self.rgb_texture_size)
            tex, w = bake(list(views.to(self.device)), geo.pixel, [w.to(self.device) for w in weights], size)
            tex = voronoi_fill(tex, w > 0).clamp(0, 1)
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
                    {"mesh": s["mesh"], "views": self.views},
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
        }


class _JointBakeRender:
    """f for view i: the render of the joint bake of views 0..i−1, for every mesh of the batch."""

    def __init__(self, geos: list[Geometry], i: int):
        self.geos, self.i = geos, i

    def __call__(self, earlier: Tensor) -> Tensor:  # (B, i, C, h, w)
        return torch.stack([geo.joint_render(earlier[b], self.i) for b, geo in enumerate(self.geos)])


def depth_image(g: GBuffer, blur_sigma: float = 2.0, blur_size: int = 5) -> Tensor:
    """The ControlNet's depth condition as SyncMVD makes it (BASELINES.md §4.1): per-view min–max normalised inverse
    depth (near = 1, far = 0.1, background 0), Gaussian-blurred (kernel 5, σ 2), as a 3-channel image in [0, 1]."""
    inv = torch.where(g.mask, 1 / g.depth.clamp_min(1e-6), torch.zeros_like(g.depth))
    vals = inv[g.mask]
    if vals.numel():
        lo, hi = vals.min(), vals.max()
        inv = torch.where(g.mask, 0.1 + 0.9 * (inv - lo) / (hi - lo).clamp_min(1e-6), inv)
    if blur_sigma > 0:
        r = torch.arange(blur_size, dtype=inv.dtype) - blur_size // 2
        k = torch.exp(-(r**2) / (2 * blur_sigma**2))
        k = (k[:, None] * k[None]) / k.sum() ** 2
        inv = F.conv2d(inv[None, None], k[None, None], padding=blur_size // 2)[0, 0]
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
    tm = trimesh.Trimesh(
        mesh.vertices.numpy(),
        mesh.faces.numpy(),
        process=False,
        visual=trimesh.visual.TextureVisuals(uv=mesh.uvs.numpy(), image=image),
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
