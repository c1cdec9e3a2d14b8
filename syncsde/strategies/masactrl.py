"""MasaCtrl (Cao et al., ICCV 2023; BASELINES.md §14): mutual self-attention control for editing.

The edit and the source image are sampled side by side in one network call per step. From step ``start_step`` on, in
the UNet's self-attention layers from ``start_layer`` on, the edit's queries read the source's keys and values
instead of its own, per guidance branch and per head:

    h_edit = softmax(s · Q_edit K_srcᵀ) V_src,    s = 1/√d (the layer's scale),

while the source's own layers are untouched, so that the edit keeps the source's content (textures, identity) where
its prompt changes the layout. Every trajectory then takes the plain DDIM step of its own ε.

Layers are the UNet's transformer blocks' self-attentions in the order the network runs them (down blocks, middle
block, up blocks): 16 in SD 1.x/2.x, 70 in SDXL. The public default, layers 10–15 of SD's 16 (the decoder's at 32²
and 64² latents), is the same fraction of the layers on any UNet: ``start_layer`` = round(10 L / 16), 44 of SDXL's 70
(the public SDXL script's first setting) and 4 of the embedded tiny-ldm's 7.

**Mask-guided** (``mask: true``, the public ``MutualSelfAttentionControlMask``): the edit's queries split the source's
keys by the task's mask M (the edited object): at positions where M = 1 they read only the source's object keys, at
the others only its background keys, h_edit = M ⊙ Attn(Q_edit, K_src|M) + (1 − M) ⊙ Attn(Q_edit, K_src|1−M) — M
brought to each layer's grid by nearest-neighbour resizing; a part empty at a layer's grid reads every key.

The task says which trajectory reads which (:class:`~syncsde.coupling.SelfAttention`, the provision
``self_attention``) and runs its sampling inside :meth:`MasaCtrl.rewired`.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from jsonargparse.typing import NonNegativeInt
from torch import Tensor

from syncsde.errors import InputError
from syncsde.strategies.base import Strategy

SD_LAYERS, SD_START_LAYER = 16, 10  # the public default: SD's 16 self-attention layers, controlled from the 11th


def self_attention_layers(unet) -> list:
    """The self-attention (``attn1``) of every transformer block of a diffusers UNet, in the order the network runs
    them: down blocks, middle block, up blocks."""
    blocks = [*unet.down_blocks, *([unet.mid_block] if unet.mid_block is not None else []), *unet.up_blocks]
    return [
        tb.attn1
        for block in blocks
        for attention in getattr(block, "attentions", None) or ()
        for tb in getattr(attention, "transformer_blocks", ())
    ]


class MasaCtrl(Strategy):
    """Args:
    start_step: the first controlled step (4 of 50, the public default; at or beyond the last step: no control).
    start_layer: the first controlled self-attention layer, counted from 0 in the order the UNet runs them; None:
        the public default 10 of SD's 16 as the same fraction of this UNet's layers (round(10 L / 16)). At or beyond
        the layer count: no control.
    mask: the mask-guided variant (the task's edit mask splits the source's keys into object and background).
    """

    name = "masactrl"

    def __init__(self, start_step: NonNegativeInt = 4, start_layer: NonNegativeInt | None = None, mask: bool = False):
        for option, value in (("start_step", start_step), ("start_layer", start_layer)):
            if value is not None and (not isinstance(value, int) or value < 0):
                raise InputError(f"--model.strategy.{option} {value!r}: give a step or layer index ≥ 0")
        self.start_step, self.start_layer, self.mask = start_step, start_layer, bool(mask)
        self.layer_count: int | None = None  # of the bound UNet
        self._layers: list = []
        self._state: dict | None = None  # this step's: trajectories, samples, pairs, masks, rows seen per layer

    def needs(self):
        return frozenset({"self_attention"})

    # -- the UNet ---------------------------------------------------------------------------------------------
    def bind(self, unet) -> None:
        """Find ``unet``'s self-attention layers (the task calls it once, when it is built)."""
        layers = self_attention_layers(unet)
        if not layers:
            raise InputError(
                f"MasaCtrl rewires the self-attention of a UNet's transformer blocks; {type(unet).__name__} has none: "
                "use an SD or SDXL backbone (--model.backbone sd or sdxl)"
            )
        self._layers, self.layer_count = layers, len(layers)

    @property
    def first_layer(self) -> int | None:
        """The first controlled layer: ``start_layer``, or the public default mapped to the bound UNet."""
        if self.start_layer is not None or self.layer_count is None:
            return self.start_layer
        return math.floor(SD_START_LAYER * self.layer_count / SD_LAYERS + 0.5)

    @property
    def controlled(self) -> list[int] | None:
        """The indices of the controlled layers (None before :meth:`bind`)."""
        return None if self.layer_count is None else list(range(self.first_layer, self.layer_count))

    @contextmanager
    def rewired(self):
        """The controlled layers run :meth:`_attend` for the duration (a sampling); their processors are restored
        after it, whatever happens."""
        if self.layer_count is None:
            raise ValueError("MasaCtrl.rewired before bind(unet)")
        layers = [self._layers[i] for i in self.controlled]
        saved = [layer.processor for layer in layers]
        for index, (layer, original) in zip(self.controlled, zip(layers, saved)):
            layer.set_processor(_Mutual(self, index, original))
        try:
            yield
        finally:
            for layer, original in zip(layers, saved):
                layer.set_processor(original)
            self._state = None

    # -- the step ---------------------------------------------------------------------------------------------
    def before_denoise(self, x, step, problem, noise=None):
        """Arm the control for this step's network call (from ``start_step`` on)."""
        attention = problem.attention
        if attention is None:
            raise InputError("MasaCtrl needs a task that says which trajectory reads which one's self-attention")
        self._state = None
        if step.index >= self.start_step and attention.sources:
            if self.mask and attention.masks is None:
                raise InputError("--model.strategy.mask true needs the task's edit mask; this task gives none")
            self._state = {
                "N": x.shape[1],
                "B": x.shape[0],
                "sources": dict(attention.sources),
                "masks": attention.masks if self.mask else None,
                "rows": {},
            }
        return x

    def step(self, x, eps, step, problem, noise=None):
        return self.plain_update(x, eps, step, noise)

    def describe(self):
        return {
            "method": self.name,
            "start_step": self.start_step,
            "start_layer": self.first_layer,
            "attention_layers": self.layer_count,
            "controlled_layers": self.controlled,
            "mask_guided": self.mask,
        }

    # -- the attention ----------------------------------------------------------------------------------------
    def _attend(self, attn, hidden: Tensor, index: int) -> Tensor:
        """One controlled self-attention layer on rows of whole samples: groups of N consecutive rows (one sample's
        trajectories in one guidance branch), the branches and samples in the order the task's call stacks them."""
        s = self._state
        rows, L, _ = hidden.shape
        N = s["N"]
        if rows % N:
            raise InputError(
                f"MasaCtrl reads every trajectory of a sample in one network call; a call of {rows} rows splits "
                f"samples of {N}: unset --model.max_batch and --model.window_batch, or give multiples of {N}"
            )
        first = s["rows"].get(index, 0)  # groups this layer has seen this step (max_batch splits a step's call)
        s["rows"][index] = first + rows // N
        q, k, v = attn.to_q(hidden), attn.to_k(hidden), attn.to_v(hidden)

        def heads(t: Tensor) -> Tensor:  # (rows, L, H·d) → (groups, N, H, L, d)
            return t.view(rows // N, N, L, attn.heads, -1).transpose(2, 3)

        q, k, v = heads(q), heads(k), heads(v)
        if attn.norm_q is not None:
            q, k = attn.norm_q(q), attn.norm_k(k)
        read = [s["sources"].get(j, j) for j in range(N)]  # the trajectory whose keys/values row j reads
        k, v = k[:, read], v[:, read]
        out = F.scaled_dot_product_attention(q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1), scale=attn.scale)
        out = out.view(q.shape)
        if s["masks"] is not None:
            out = self._masked(q, k, v, out, attn.scale, s, first, L)
        out = out.transpose(2, 3).reshape(rows, L, -1).to(q.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden
        return out / attn.rescale_output_factor

    def _masked(self, q, k, v, out, scale, s, first: int, L: int) -> Tensor:
        """The mask-guided variant on the edited trajectories' rows of ``out`` (groups, N, H, L, d)."""
        masks = s["masks"]
        h0, w0 = masks.shape[-2:]
        f = math.isqrt(h0 * w0 // L)
        if (h0 // f) * (w0 // f) != L:
            raise InputError(f"a self-attention layer of {L} positions is not a grid of the {h0}x{w0} mask")
        m = F.interpolate(masks.float(), size=(h0 // f, w0 // f), mode="nearest").flatten(1) > 0.5  # (B, L)
        samples = [(first + g) % s["B"] for g in range(out.shape[0])]
        m = m[samples]  # (groups, L)
        out = out.clone()
        for j in s["sources"]:
            parts = []
            for keep in (m, ~m):  # object keys, background keys (a part empty at this grid reads every key)
                keep = torch.where(keep.any(-1, keepdim=True), keep, torch.ones_like(keep))
                bias = keep[:, None, None, :]  # (groups, 1 head, 1 query, L keys)
                parts.append(F.scaled_dot_product_attention(q[:, j], k[:, j], v[:, j], attn_mask=bias, scale=scale))
            where = m[:, None, :, None].to(out.dtype)  # the edit's query positions on the object
            out[:, j] = where * parts[0] + (1 - where) * parts[1]
        return out


class _Mutual:
    """The processor of one controlled layer: :meth:`MasaCtrl._attend` while the control is armed, the layer's own
    processor otherwise (and for cross-attention)."""

    def __init__(self, owner: MasaCtrl, index: int, original):
        self.owner, self.index, self.original = owner, index, original

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kw):
        if self.owner._state is None or encoder_hidden_states is not None:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kw)
        plain = attn.group_norm is None and attn.spatial_norm is None and attention_mask is None
        if hidden_states.ndim != 3 or not plain:
            raise InputError("MasaCtrl rewires a transformer block's self-attention on token sequences only")
        return self.owner._attend(attn, hidden_states, self.index)
