"""SyncMVD's multi-view self-attention (BASELINES.md §4.4), as a diffusers attention processor on the UNet's
self-attention layers (not the ControlNet's).

View b's queries attend to the concatenated keys/values of its neighbours (the ring [b−1, b, b+1] of the
elevation-0 views; an elevated view to [its nearest elevation-0 view, itself]); while t > ``ref_t`` (800) the result
is averaged 1:1 with attention to the reference (front) view: h = (Attn(q, K_nbrs, V_nbrs) + w·Attn(q, K_ref, V_ref))
/ (1 + w). CFG branches and samples are separate groups of N rows and never attend to each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from syncsde.parallel import Exchange, Lockstep

if TYPE_CHECKING:
    from syncsde.task import NetworkCall


def neighbours(views: list[tuple[float, float]]) -> tuple[list[list[int]], int]:
    """Neighbour lists and the reference (front) view for (elevation, azimuth) cameras."""
    ring = sorted((i for i, (e, _) in enumerate(views) if e == 0), key=lambda i: views[i][1] % 360)
    pos = {v: k for k, v in enumerate(ring)}
    out = []
    for i, (_, a) in enumerate(views):
        if i in pos and len(ring) > 2:
            k = pos[i]
            out.append([ring[(k - 1) % len(ring)], i, ring[(k + 1) % len(ring)]])
        else:
            nearest = min(ring, key=lambda j: abs((views[j][1] - a + 180) % 360 - 180)) if ring else i
            out.append(sorted({nearest, i}))
    front = min(range(len(views)), key=lambda i: abs((views[i][1] + 180) % 360 - 180) + abs(views[i][0]))
    return out, front


class MultiViewAttention:
    """The processor; ``state["t"]`` holds the current timestep (set by a hook on the UNet's forward).

    Outside :meth:`run` a call holds every view (rows in groups of N). :meth:`run` runs a step's network calls on
    groups of views together (:class:`~syncsde.parallel.Lockstep`, each call its own rows): at every self-attention
    layer each call's keys/values join one table of the views this process holds, and under ``parallel: windows``
    the keys/values of the neighbour views (and, while t > ``ref_t``, of the reference view) that other processes
    compute are received from them. Each view's attention then reads exactly the keys/values it reads unsplit.
    """

    def __init__(self, nbrs: list[list[int]], ref: int, state: dict, ref_t: int = 800):
        self.nbrs, self.ref, self.state, self.ref_t = nbrs, ref, state, ref_t
        self.lockstep = Lockstep()
        self._place([range(len(nbrs))], 0)

    @classmethod
    def of(cls, views: list[tuple[float, float]], ref_t: int = 800) -> MultiViewAttention:
        """The processor for (elevation, azimuth) cameras."""
        nbrs, ref = neighbours(views)
        return cls(nbrs, ref, {}, ref_t)

    def _place(self, owned: list[range], rank: int) -> None:
        """Process ``rank`` of processes owning the views ``owned``: per reference attention (off, on), the exchange
        of the keys/values each process reads of views other processes own."""

        def needs(own: range, with_ref: bool) -> dict:
            read = {j for i in own for j in self.nbrs[i]} | ({self.ref} if with_ref else set())
            return {j: None for j in sorted(read) if j not in own}

        self.placed = (owned, rank)
        self.exchanges = {w: Exchange(owned, [needs(own, w) for own in owned], rank) for w in (False, True)}

    def run(self, calls: Sequence[NetworkCall], split: Exchange | None, what: str) -> list[Tensor]:
        """One step's network ``calls`` together; ``split``: the views each process owns (None: all are here)."""
        placed = ([range(len(self.nbrs))], 0) if split is None else (split.owned, split.rank)
        if placed != self.placed:
            self._place(*placed)
        return self.lockstep.run([(c.trajectories, c.run) for c in calls], what)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kw):
        if encoder_hidden_states is not None or hidden_states.ndim != 3:
            raise ValueError("multi-view attention applies to self-attention on token sequences only")
        views = self.lockstep.trajectories() or range(len(self.nbrs))
        rows, L, _ = hidden_states.shape
        g = len(views)
        if rows % g:
            raise ValueError(f"{rows} rows are not groups of {g} views; unset max_batch")
        q, k, v = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        H = attn.heads

        def split(x):  # (rows, L, C) → (groups, g, heads, L, d)
            return x.view(rows // g, g, L, H, -1).permute(0, 1, 3, 2, 4)

        q, k, v = split(q), split(k), split(v)
        w = 1.0 if self.state.get("t", 0) > self.ref_t else 0.0
        exchange = self.exchanges[bool(w)]
        k, v = self.lockstep.share(exchange, k, v, name="self-attention layer")  # (groups, local views, ...)
        at = exchange.where
        outs = []
        for a, i in enumerate(views):
            nb = self.nbrs[i]
            kk, vv = torch.cat([k[:, at[j]] for j in nb], -2), torch.cat([v[:, at[j]] for j in nb], -2)
            o = F.scaled_dot_product_attention(q[:, a], kk, vv)
            if w:
                ref = at[self.ref]
                o = (o + w * F.scaled_dot_product_attention(q[:, a], k[:, ref], v[:, ref])) / (1 + w)
            outs.append(o)
        out = torch.stack(outs, 1).permute(0, 1, 3, 2, 4).reshape(rows, L, -1)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor

    def attach(self, unet):
        """Put this processor on every self-attention (attn1) layer of ``unet``; returns a function that removes it."""
        saved = unet.attn_processors
        unet.set_attn_processor({n: self if n.endswith("attn1.processor") else p for n, p in saved.items()})
        hook = unet.register_forward_pre_hook(
            lambda m, args, kwargs: self.state.update(t=int(args[1][0])), with_kwargs=True
        )

        def remove():
            hook.remove()
            unet.set_attn_processor(saved)

        return remove


def install(unet, views: list[tuple[float, float]], ref_t: int = 800):
    """Put the processor on every self-attention (attn1) layer of ``unet``; returns a function that removes it."""
    return MultiViewAttention.of(views, ref_t).attach(unet)
