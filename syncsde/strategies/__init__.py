"""Strategies: the only place where trajectories interact during sampling (ARCHITECTURE.md), and the methods —
strategies with settings — by their short names (``syncsde predict ... --method NAME``; ``syncsde methods`` lists
them, :mod:`syncsde.registry`)."""

from functools import partial

from syncsde.registry import get, method, names
from syncsde.strategies.base import Independent, Strategy
from syncsde.strategies.doubletake import DoubleTake
from syncsde.strategies.least_squares import LeastSquares
from syncsde.strategies.masactrl import MasaCtrl
from syncsde.strategies.mixture import MixtureOfDiffusers
from syncsde.strategies.spotdiffusion import SpotDiffusion
from syncsde.strategies.stochsync import StochSync
from syncsde.strategies.syncdiffusion import SyncDiffusion
from syncsde.strategies.syncsde import SyncSDE
from syncsde.strategies.synctweedies import MultiDiffusion, SyncTweedies, VisualAnagrams

__all__ = [
    "Strategy", "Independent", "SyncSDE", "SyncTweedies", "MultiDiffusion", "VisualAnagrams", "MixtureOfDiffusers",
    "LeastSquares", "DoubleTake", "SpotDiffusion", "StochSync", "SyncDiffusion",
]


def description_keys(method: str) -> tuple[str, ...]:
    """The sidecar keys that describe a strategy, for the ``method`` its sidecars name (``Strategy.describe``): read
    from the strategy class itself, so that tables and metrics never keep a copied list."""
    classes = {m.strategy.name: m.strategy for m in map(partial(get, "method"), names("method"))}
    cls = classes.get(method)
    return tuple(cls().describe()) if cls is not None else ("method",)


RESET = dict(correlation=None, schedule_floor=None, correction=None, target=None)  # the preset decides them all
method("paper", SyncSDE, "SyncSDE, the paper's update (SYNCSDE.md §3), bit-identical to the official code",
       args=dict(preset="paper", **RESET))
method("canonical", SyncSDE, "SyncSDE, every trajectory a noisy view of the canonical variable (SYNCSDE.md §4.1)",
       args=dict(preset="canonical", **RESET))
method("chain", SyncSDE, "SyncSDE, the task's couplings at constant precision, exact and post-step (SYNCSDE.md §4.1)",
       args=dict(preset="chain", **RESET))
method("independent", Independent, "no coupling: every trajectory an ordinary sampling run",
       task_args={"mesh": {"multiview_attention": False}}, baseline_for=("*",))
method("synctweedies", SyncTweedies, "SyncTweedies: x̂₀ averaged in canonical space (case 2, BASELINES.md §1)",
       args=dict(case=2), task_args={"ambiguous": {"init_from_canonical": True}},
       baseline_for=("wide_image", "mask_t2i", "ambiguous", "motion"))
for case in range(7):
    method(f"synctweedies_{case}", SyncTweedies, f"SyncTweedies case {case} (BASELINES.md §1)", args=dict(case=case),
           task_args={"ambiguous": {"init_from_canonical": True}})
method("multidiffusion", MultiDiffusion, "MultiDiffusion: x_{t-1} averaged over the overlaps (BASELINES.md §2)",
       baseline_for=("wide_image", "motion"))
method("multidiffusion_bootstrap", MultiDiffusion,
       "region-based MultiDiffusion with 20 bootstrapping steps (BASELINES.md §2.2)",
       args=dict(bootstrap_steps=20), baseline_for=("mask_t2i",))
method("visual_anagrams", VisualAnagrams,
       "Visual Anagrams: ε averaged over views, IF's variance rule (BASELINES.md §3)",
       task_args={"ambiguous": {"init_from_canonical": True, "sampler": "ddpm"}}, tasks=("ambiguous",),
       baseline_for=("ambiguous",))
method("syncmvd", SyncTweedies,
       "SyncMVD: texture-space x̂₀ averaging while t > 200, multi-view attention (BASELINES.md §4)",
       args=dict(case=5, sync_t_min=200), task_args={"mesh": {"multiview_attention": True}}, tasks=("mesh",),
       baseline_for=("mesh",))
method("mixture_of_diffusers", MixtureOfDiffusers,
       "Mixture of Diffusers: ε fused with Gaussian weights centred on each window or region (BASELINES.md §8)",
       tasks=("wide_image", "wide_prompts", "regions", "mask_t2i"))
method("least_squares", LeastSquares,
       "LF-MultiDiffusion: x_{t-1} fused by regularised least squares through linear views (BASELINES.md §11)",
       tasks=("wide_image", "motion", "sphere"), baseline_for=("sphere",))
method("doubletake", DoubleTake,
       "DoubleTake: handshake-blended segments, then a second take over each transition (BASELINES.md §13)",
       task_args={"motion": {"overlap": 20, "init_from_canonical": False}}, tasks=("motion",),
       baseline_for=("motion",))
method("spotdiffusion", SpotDiffusion,
       "SpotDiffusion: non-overlapping windows shifted at random every step, canvas wrapped (BASELINES.md §10)",
       task_args={"wide_image": {"stride": "window", "vertical_stride": "window"}}, tasks=("wide_image",),
       baseline_for=("wide_image",))
method("global", SyncSDE,
       "SyncSDE canonical + a global view of the canvas: one scene on tall canvases and spheres (SYNCSDE.md §4.2)",
       args=dict(preset="global", inv_lambda=20.0, **RESET, global_view=None, global_schedule=None, global_fit=None),
       tasks=("wide_image", "sphere"), baseline_for=("sphere",))
method("stochsync", StochSync,
       "StochSync: fused x̂₀ re-noised with fresh noise, multi-step x̂₀, disjoint views per step (BASELINES.md §12)",
       task_args={"sphere": {"views": "cubes", "fov": 90.0, "num_inference_steps": 12},
                  "mesh": {"multiview_attention": False, "num_inference_steps": 25},
                  "wide_image": {"num_inference_steps": 25}},
       tasks=("sphere", "mesh", "wide_image"), baseline_for=("sphere", "mesh", "wide_image"))
method("syncdiffusion", SyncDiffusion,
       "SyncDiffusion: each window moved down an LPIPS gradient toward an anchor window, then MultiDiffusion "
       "(BASELINES.md §9)", tasks=("wide_image", "sphere"), baseline_for=("wide_image", "sphere"))
method("masactrl", MasaCtrl,
       "MasaCtrl: from step 4 the edit's self-attention reads the source's keys and values in the UNet's decoder "
       "layers (BASELINES.md §14)", task_args={"edit": {"layout": "pair"}}, tasks=("edit",), baseline_for=("edit",))
method("global_scaled", SyncSDE,
       "SyncSDE global view whose share falls with the canvas's squash into it: one row of windows too "
       "(SYNCSDE.md §4.2.1)",
       args=dict(preset="global", inv_lambda=20.0, **RESET, global_view=None, global_schedule=None,
                 global_fit="scaled"),
       tasks=("wide_image", "sphere"))
