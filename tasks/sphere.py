"""360×180 panoramas: perspective views on the sphere synchronized through an equirectangular canvas (SyncTweedies'
360° panorama setting, BASELINES.md §1.4; the geometry, its couplings and canonical variable: :mod:`syncsde.sphere`).

Each view is a native-size image (512 px on SD: a 64² latent) of ``fov`` degrees (72) at an (elevation, azimuth).
``views: synctweedies`` is SyncTweedies' own set (8 views on the horizon every 45°; it leaves the caps above and
below about ±45° unseen, as theirs does); ``sphere`` (default) adds rings at ±45° and the poles so that the whole
sphere is seen. SyncSDE pulls view i toward the render of the joint bake of the earlier views on the cells they cover
(as the mesh task does); the averaging baselines average through the canvas. The output is the bake of the decoded
views into an equirectangular image of ``height`` × 2·``height`` pixels, with a viewer picture of perspective crops.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import numpy as np
import torch
from jsonargparse.typing import PositiveFloat, PositiveInt
from torch import Tensor

from syncsde.backbones.base import Backbone
from syncsde.coupling import SyncProblem
from syncsde.errors import InputError
from syncsde.masks import load_image
from syncsde.sphere import VIEW_SETS, Sphere, perspective
from syncsde.strategies import Strategy
from syncsde.task import DEFAULT_STRATEGY, SampleOutput, SyncTask
from syncsde.tasks.wide_image import global_view, with_global_noise

# the viewer picture: perspective crops (elevation, azimuth) of the finished panorama
VIEWER = [(0.0, 0.0), (0.0, 90.0), (0.0, 180.0), (0.0, -90.0), (90.0, 0.0), (-90.0, 0.0)]


@lru_cache(maxsize=8)
def sphere(views: tuple, fov: float, size: int, height: int) -> Sphere:
    return Sphere(views, fov, size, height)


class SpherePanorama(SyncTask):
    """Args (besides :class:`~syncsde.task.SyncTask`'s):
    views: ``sphere`` (20 views covering the sphere), ``synctweedies`` (their 8 horizon views), ``cubes`` (two cube
        maps at FoV 90°, the second turned 45°: StochSync's alternating views) or a list of
        (elevation, azimuth) pairs in degrees, in the order of the autoregressive couplings.
    fov: field of view of every view in degrees (72, SyncTweedies').
    height: output equirectangular height in pixels (width = 2·height; SyncTweedies' RGB canvas is 1024×2048).
    canonical_height: rows of the working-space canvas (None: 8 × the view's working size, so that each view pixel
        reads its own cell).
    init_from_canonical: views start as crops of one canvas noise (else independent noise per view, as SyncTweedies'
        panorama run).
    assembly: ``feather`` (view pixels weighted by their distance to the view's edge) or ``mean`` (SyncTweedies).
    prompt_prefix: prepended to every prompt (SyncTweedies' "Best quality, extremely detailed ").
    viewer_size: side in pixels of each crop of the viewer picture (90° field of view).
    view_prompts: prompts that depend on the view's direction (as view-dependent prompts for meshes): a mapping from
        ``above`` (views at elevation >= ``view_elevation``), ``horizon`` and ``below`` (<= −``view_elevation``) to a
        prompt, in which ``{prompt}`` stands for the record's prompt (e.g. ``above: "{prompt}, the sky"``); a
        direction left out keeps the record's prompt, and so does the global view, which sees every direction.
    view_elevation: the elevation in degrees (0 to 90) from which a view counts as above or below the horizon.
    """

    task_name = "sphere"
    needs = frozenset({"images"})  # the sampler alone: VP and flow-matching models (SYNCSDE.md §6.7)
    provides = SyncTask.provides | {"global_view", "differentiable"}  # differentiable: SyncDiffusion

    def __init__(
        self,
        backbone: Backbone,
        strategy: Strategy = DEFAULT_STRATEGY,
        views: str | list[tuple[float, float]] = "sphere",
        fov: PositiveFloat = 72.0,
        height: PositiveInt = 1024,
        canonical_height: PositiveInt | None = None,
        init_from_canonical: bool = False,
        assembly: Literal["feather", "mean"] = "feather",
        prompt_prefix: str = "Best quality, extremely detailed ",
        viewer_size: PositiveInt = 256,
        view_prompts: dict[str, str] | None = None,
        view_elevation: float = 30.0,
        num_inference_steps: PositiveInt = 30,
        **kwargs,
    ):
        super().__init__(backbone, strategy, num_inference_steps=num_inference_steps, **kwargs)
        if isinstance(views, str):
            if views not in VIEW_SETS:
                raise InputError(f"views must be one of {', '.join(VIEW_SETS)} or a list of (elevation, azimuth)")
            views = VIEW_SETS[views]
        if not views or any(len(v) != 2 or not -90 <= v[0] <= 90 for v in views):
            raise InputError("views must be (elevation, azimuth) pairs in degrees with -90 <= elevation <= 90")
        self.views = tuple((float(e), float(a)) for e, a in views)
        self.fov, self.height, self.assembly = float(fov), height, assembly
        self.canonical_height = canonical_height or 8 * backbone.sample_size
        self.init_from_canonical, self.prompt_prefix, self.viewer_size = init_from_canonical, prompt_prefix, viewer_size
        unknown = sorted(set(view_prompts or {}) - {"above", "horizon", "below"})
        if unknown:
            raise InputError(f"--model.view_prompts {unknown}: name the directions above, horizon and below")
        if not 0 <= view_elevation <= 90:
            raise InputError(f"--model.view_elevation {view_elevation}: give an elevation in degrees from 0 to 90")
        self.view_prompts, self.view_elevation = dict(view_prompts or {}), float(view_elevation)
        self.geometry = sphere(self.views, self.fov, backbone.sample_size, self.canonical_height)
        self._couplings = self.geometry.couplings()
        self._canonical = self.geometry.canonical((backbone.channels,))
        self.n = len(self.views)
        size = backbone.sample_size
        self.global_view = global_view(self, (size, size), (self.canonical_height, 2 * self.canonical_height))
        if self.global_view is not None and "controlnet" in backbone.abilities:
            raise InputError(
                "--model.strategy.global_view: the global view has no depth picture of its own; use a backbone "
                "without ControlNet, or global_view: 0"
            )

    def validate(self, record):
        control = "controlnet" in self.backbone.abilities
        if "depth" in record and not control:
            raise InputError(
                "records give depth pictures, but the backbone has no ControlNet; use "
                "syncsde.backbones.StableDiffusionControlNet (or drop 'depth')"
            )
        if control:
            if "depth" not in record:
                raise InputError(
                    f"sample {record['sample_id']} has no 'depth': a ControlNet backbone needs an equirectangular "
                    "depth picture per record (grayscale, near = white)"
                )
            self.depth_picture(record["depth"])

    def prepare(self, batch):
        """The views' control images from each record's equirectangular ``depth`` picture (ControlNet backbones)."""
        for s in batch:
            self.validate(s)
        if "controlnet" in self.backbone.abilities:
            size = self.native_size
            views = [perspective(self.depth_picture(s["depth"]), self.views, self.fov, size, "bilinear") for s in batch]
            steps = [step.t for step in self.schedule().steps]
            self.backbone.set_control(torch.cat(views).clamp(0, 1).to(self.device), steps)
        return list(batch)

    @staticmethod
    def depth_picture(path: str) -> Tensor:
        """(3, H, W) in [0, 1] from a grayscale equirectangular picture (a 2:1 image)."""
        image = load_image(path, "L")
        if image.width != 2 * image.height:
            raise InputError(f"depth picture '{path}' is {image.width}x{image.height}; give a 2:1 equirectangular one")
        gray = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)
        return gray[None].expand(3, -1, -1)

    def direction(self, elevation: float) -> str:
        """``above``, ``horizon`` or ``below``: where a view at ``elevation`` degrees looks (for ``view_prompts``)."""
        if elevation >= self.view_elevation:
            return "above"
        return "below" if elevation <= -self.view_elevation else "horizon"

    def trajectory_prompts(self, batch):
        """Each view's prompt (its direction's ``view_prompts`` entry, else the record's), then the global view's."""
        out = []
        for s in batch:
            own = [self.view_prompts.get(self.direction(e), "{prompt}") for e, _ in self.views]
            own += ["{prompt}"] * (self.global_view is not None)
            out.append([f"{self.prompt_prefix}{p.replace('{prompt}', s['prompt'])}" for p in own])
        return out

    def initial_noise(self, batch, generators):
        C, h = self.backbone.channels, self.backbone.sample_size
        if self.init_from_canonical:
            H = self.canonical_height
            x = self._canonical.forward(torch.stack([torch.randn(C, H, 2 * H, generator=g) for g in generators]))
        else:
            x = torch.stack([torch.randn(len(self.views), C, h, h, generator=g) for g in generators])
        return with_global_noise(x, self.global_view, generators)

    def problem(self, batch):
        view = self.global_view
        return SyncProblem(self.n + (view is not None), self._couplings, canonical=self._canonical, global_view=view)

    def equirectangular(self, views: Tensor) -> Tensor:
        """Decoded views (B, N, 3, S, S) → equirectangular images (B, 3, height, 2·height) by the task's assembly."""
        return sphere(self.views, self.fov, views.shape[-1], self.height).assemble(views, self.assembly).clamp(0, 1)

    def viewer(self, panorama: Tensor) -> Tensor:
        """Perspective crops (90°) of one panorama (3, H, 2H): four horizon views on top, up and down below."""
        crops = perspective(panorama.cpu(), VIEWER, 90.0, self.viewer_size, "bilinear")
        top = torch.cat(list(crops[:4]), -1)
        bottom = torch.cat([crops[4], crops[5], torch.ones_like(crops[4]), torch.ones_like(crops[4])], -1)
        return torch.cat([top, bottom], -2).clamp(0, 1)

    def assemble(self, x0, batch):
        x0 = x0[:, : self.n]  # the views (a global view, if any, is not part of the output)
        B, N = x0.shape[:2]
        views = self.backbone.decode(x0.flatten(0, 1)).unflatten(0, (B, N))
        panoramas = self.equirectangular(views)
        outs = []
        for b, s in enumerate(batch):
            viewer = self.viewer(panoramas[b])
            horizon = viewer[:, : self.viewer_size]
            crops = [horizon[..., k * self.viewer_size : (k + 1) * self.viewer_size] for k in range(4)]
            outs.append(
                SampleOutput(
                    s["sample_id"],
                    panoramas[b],
                    {"views": [list(v) for v in self.views], "uncovered": round(self.geometry.uncovered, 4)},
                    {"viewer": viewer, "views": torch.cat(list(views[b]), -1)},
                    scored=[(c, s["prompt"]) for c in crops],
                )
            )
        return outs

    def describe(self):
        return {
            "height": self.height,
            "width": 2 * self.height,
            "fov": self.fov,
            "num_views": len(self.views),
            "canonical_height": self.canonical_height,
            "init_from_canonical": self.init_from_canonical,
            "assembly": self.assembly,
            **({"global_trajectory": True} if self.global_view is not None else {}),
            **({"view_prompts": self.view_prompts, "view_elevation": self.view_elevation} if self.view_prompts else {}),
        }
