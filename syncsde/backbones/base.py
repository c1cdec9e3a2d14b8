"""The backbone protocol and classifier-free guidance over one batched call."""

from __future__ import annotations

from typing import Callable, Sequence, Union

import torch
from torch import Tensor, nn

from syncsde.schedule import Schedule, Step, to_epsilon

# text conditioning: one row per prompt, a tensor or a dict of tensors (SDXL: embeddings and pooled embeddings)
Conditioning = Union[Tensor, dict[str, Tensor]]


def map_rows(fn: Callable[..., Tensor], *conds: Conditioning) -> Conditioning:
    """Apply ``fn`` to a conditioning's tensor, or to each entry of dict conditionings (same keys)."""
    if isinstance(conds[0], dict):
        return {k: fn(*(c[k] for c in conds)) for k in conds[0]}
    return fn(*conds)


def take_rows(cond: Conditioning, index: Sequence[int]) -> Conditioning:
    """Rows ``index`` of a conditioning."""
    return map_rows(lambda c: c[list(index)], cond)


def cat_rows(*conds: Conditioning) -> Conditioning:
    """Conditionings stacked along their rows."""
    return map_rows(lambda *c: torch.cat(c), *conds)


def split_rows(cond: Conditioning, size: int) -> list[Conditioning]:
    """A conditioning in chunks of at most ``size`` rows."""
    if isinstance(cond, dict):
        parts = {k: v.split(size) for k, v in cond.items()}
        return [{k: parts[k][i] for k in cond} for i in range(len(next(iter(parts.values()))))]
    return list(cond.split(size))


class Backbone(nn.Module):
    """A denoiser in its own working space (SD latents, IF pixels, motion features, or your own).

    To plug in your own model, subclass and implement:

    - ``channels``, ``sample_size`` (native spatial size of the working space, e.g. 64 for SD-2-base latents),
      ``scale_factor`` (output pixels per working-space unit: 8 for SD's VAE, 1 in pixel space),
      ``prediction_type`` ("epsilon", "sample", "v_prediction", or "flow" for flow-matching velocity models, which
      take the VP state and return v, see :mod:`syncsde.schedule`) and ``name`` (written into sidecars);
    - ``scheduler_config()``: a diffusers scheduler config dict (``num_train_timesteps``, betas, ...);
    - ``encode_prompts(prompts)``: conditioning for a list of prompts, one row per prompt: a tensor, or a dict of
      tensors (:data:`Conditioning`);
    - ``forward(x, t, context)``: the raw network output for M rows (no guidance), ``t`` of shape (M,) (integer
      timesteps, or the float 1000·σ of flow schedules);
    - ``decode(z)`` to images in [0, 1] and ``encode(images)`` back (identity-like in pixel space).

    Declare ``abilities`` (:data:`syncsde.registry.ABILITIES`): what the backbone can do, which tasks check against
    what they need (:func:`syncsde.registry.check`). The default is an image model on a VP schedule.

    Optional: ``schedule(...)`` when the inference schedule depends on more than the config (Flux's
    resolution-dependent shift); ``adapt_dtype(device)`` to choose a dtype once the device is known; the ability
    ``guidance_distilled`` for models distilled from guidance (Flux: no unconditional branch;
    ``forward(..., guidance=w)`` gets the guidance scale, an input of Flux-dev's network).

    Classifier-free guidance, prediction-type conversion and batching are done by :func:`guided_eps`. A backbone
    with the ability ``learned_variance`` returns 2C channels (ε-part, variance part); :func:`guided_eps` keeps the
    variance part only for strategies that use it (Visual Anagrams: ``Strategy.uses``).
    """

    channels: int = 4
    sample_size: int = 64
    scale_factor: int = 1
    prediction_type: str = "epsilon"
    name: str = "backbone"
    abilities: frozenset[str] = frozenset({"images", "vp_schedule"})
    # the symmetries of the image (syncsde.views: View.symmetry) that its autoencoder commutes with, D(V(z)) ≈ V(D(z));
    # None: a view of the working space is a view of the image (pixel space, or a decoder that only upsamples)
    view_symmetries: frozenset[str] | None = None

    def scheduler_config(self) -> dict:
        raise NotImplementedError

    def schedule(
        self,
        num_inference_steps: int,
        kind: str = "ddim",
        eta: float = 0.0,
        T: int | float | None = None,
        shape: Sequence[int] | None = None,
    ) -> Schedule:
        """The inference schedule for trajectories of working-space ``shape`` (C, h, w) (None: the native size)."""
        return Schedule.from_config(self.scheduler_config(), num_inference_steps, kind, eta, T, model=self.name)

    @property
    def guidance_distilled(self) -> bool:
        """Distilled from guidance: no unconditional branch; the guidance scale is a network input."""
        return "guidance_distilled" in self.abilities

    def adapt_dtype(self, device: torch.device) -> None:
        """Choose the dtype once the device is known (default: keep it)."""

    def run_dtype(self, device: torch.device) -> torch.dtype:
        """The dtype the network will run in on ``device`` (what :meth:`adapt_dtype` chooses; default: its own)."""
        return self.dtype

    recorded: tuple[str, ...] = ()  # options (attribute names) that change a sample besides the name and dtype

    def settings(self, device: torch.device) -> dict:
        """What of the backbone changes a sample run on ``device``, for the sidecars (a resumed run compares them):
        its name, the dtype its network runs in, and the attributes named in ``recorded``."""
        dtype = str(self.run_dtype(device)).removeprefix("torch.")
        return {"backbone": self.name, "dtype": dtype, **{k: getattr(self, k) for k in self.recorded}}

    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        raise NotImplementedError

    @property
    def token_limit(self) -> int | None:
        """The tokens (start and end included) of a prompt the text encoder reads — the tokenizer's
        ``model_max_length``, 77 for a T5 that declares none — or None without a ``tokenizer``."""
        tokenizer = getattr(self, "tokenizer", None)
        if tokenizer is None:
            return None
        return tokenizer.model_max_length if tokenizer.model_max_length < 100_000 else 77

    def token_counts(self, prompts: Sequence[str]) -> list[int]:
        """Each prompt's token count (start and end included) before truncation to :attr:`token_limit`."""
        return [len(ids) for ids in self.tokenizer(list(prompts), truncation=False).input_ids]

    def forward(self, x: Tensor, t: Tensor, context: Conditioning) -> Tensor:
        raise NotImplementedError

    def decode(self, z: Tensor) -> Tensor:
        return (z / 2 + 0.5).clamp(0, 1)

    def encode(self, images: Tensor) -> Tensor:
        return images * 2 - 1

    @property
    def dtype(self) -> torch.dtype:
        p = next(self.parameters(), None)
        return p.dtype if p is not None else torch.float32


def guided_eps(
    backbone: Backbone,
    x: Tensor,
    step: Step,
    cond: Conditioning,
    uncond: Conditioning | None,
    guidance_scale: float,
    max_batch: int | None = None,
    variance: bool = False,
) -> Tensor:
    """ε = ε_u + w(ε_c − ε_u) for M rows, both branches in ONE network call of 2M rows (SYNCSDE.md §2, §3.1);
    with ``variance``, the learned-variance channels of a backbone that returns them follow ε (from the conditional
    branch).

    ``x`` is (M, C, H, W) in float32; the network runs in the backbone's dtype; the result is float32. With w = 1 or
    no unconditional context only the conditional branch is run; a guidance-distilled backbone
    (``guidance_distilled``) gets w as an input instead, in one branch. ``max_batch`` optionally splits the call into
    chunks of at most that many rows (to fit memory); by default everything is one call. The result is ε, except
    for flow-matching backbones: their guided velocity v, which the flow step turns into x̂₀ (ε̂ is undetermined
    at σ = 1, see :mod:`syncsde.schedule`).
    """
    distilled = backbone.guidance_distilled
    guided = not distilled and uncond is not None and guidance_scale != 1.0
    xin = torch.cat([x, x]) if guided else x
    ctx = cat_rows(uncond, cond) if guided else cond
    t = torch.full((xin.shape[0],), step.t, device=x.device)  # int64 timesteps, or float32 1000σ (flow)
    extra = {"guidance": guidance_scale} if distilled else {}
    if variance and "learned_variance" in backbone.abilities:
        extra["variance"] = True
    xin = xin.to(backbone.dtype)
    if max_batch is None or xin.shape[0] <= max_batch:
        out = backbone(xin, t, ctx, **extra)
    else:
        chunks = zip(xin.split(max_batch), t.split(max_batch), split_rows(ctx, max_batch))
        out = torch.cat([backbone(a, b, c, **extra) for a, b, c in chunks])
    out = out.float()
    C = x.shape[1]
    var = out[:, C:]  # learned-variance channels (DeepFloyd IF), when asked for
    out = out[:, :C]
    if guided:
        out_u, out_c = out.chunk(2)
        out = out_u + guidance_scale * (out_c - out_u)
        var = var.chunk(2)[1]  # the conditional branch's variance, as DeepFloyd IF does
    if backbone.prediction_type != "flow":
        out = to_epsilon(out, x, step.abar_t, backbone.prediction_type)
    return torch.cat([out, var], 1) if var.shape[1] else out
