"""Attention statistics for the editing mask (SYNCSDE.md §6.2, BASELINES.md §5.2), as running means.

A :class:`AttentionRecorder` installs recording processors (diffusers' own ``AttnProcessor`` with its attention
probabilities observed) on the UNet layers it needs, and accumulates per sample:

- the cross-attention of the source word's token(s) from every cross-attention layer with at most ``mask_res²``
  queries (smaller maps bicubic-upsampled to ``mask_res²``), averaged over heads and layers, divided by its max,
  bicubic-upsampled to the self-attention's resolution — one map per step, averaged over steps;
- the self-attention of the first transformer block of the last attention module of the last up-block (the last
  up-block that has attention, for UNets whose final block has none), averaged over heads and over steps.

For Stable Diffusion at 512 px the self-attention's resolution is the latent's (64²), as in the reference.

Running means keep memory constant in the number of steps (the reference implementation stores every step's
4096×4096 map).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from syncsde.errors import InputError


class _Recording:
    def __init__(self, recorder: "AttentionRecorder", name: str, base):
        self.recorder, self.name, self.base = recorder, name, base

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
        original = attn.get_attention_scores
        is_cross = encoder_hidden_states is not None

        def scores(query, key, mask=None):
            probs = original(query, key, mask)
            self.recorder.observe(self.name, probs, attn.heads, is_cross)
            return probs

        attn.get_attention_scores = scores
        try:
            return self.base(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)
        finally:
            del attn.get_attention_scores


class AttentionRecorder:
    """Context manager over a diffusers UNet. Per step: ``begin_step(token_columns)`` then the network call(s),
    then ``end_step()``. ``token_columns[b]`` are sample b's source-word token positions."""

    def __init__(self, unet, mask_res: int = 16):
        from diffusers.models.attention_processor import AttnProcessor

        self.unet, self.mask_res = unet, mask_res
        self.base = AttnProcessor()
        block = [b for b in unet.up_blocks if getattr(b, "attentions", None)][-1]
        last = block.attentions[-1].transformer_blocks[0].attn1
        self.self_name = next(n for n, m in unet.attn_processors.items() if n.startswith(_module_name(unet, last)))
        self.cross_sum: Tensor | None = None
        self.self_sum: Tensor | None = None
        self.steps = 0
        self._step_maps: list[Tensor] = []
        self.self_res: int | None = None
        self._columns: Sequence[Sequence[int]] = ()

    def __enter__(self):
        self._saved = self.unet.attn_processors
        procs = {}
        for name in self._saved:
            recorded = name.endswith("attn2.processor") or name == self.self_name
            procs[name] = _Recording(self, name, self.base) if recorded else self._saved[name]
        self.unet.set_attn_processor(procs)
        return self

    def __exit__(self, *exc):
        self.unet.set_attn_processor(self._saved)

    def begin_step(self, token_columns: Sequence[Sequence[int]]):
        self._columns, self._step_maps = token_columns, []

    def observe(self, name: str, probs: Tensor, heads: int, is_cross: bool):
        B = probs.shape[0] // heads
        queries = probs.shape[1]
        if is_cross:
            if queries > self.mask_res**2:
                return
            p = probs.view(B, heads, queries, -1).mean(1).float()  # (B, Q, tokens)
            cols = torch.stack([p[b, :, list(c)].mean(-1) for b, c in enumerate(self._columns)])  # (B, Q)
            r = int(math.isqrt(queries))
            m = cols.view(B, 1, r, r)
            if r < self.mask_res:
                m = F.interpolate(m, size=(self.mask_res, self.mask_res), mode="bicubic", align_corners=False)
            self._step_maps.append(m)
        elif name == self.self_name:
            self.self_res = int(math.isqrt(queries))
            a = probs.view(B, heads, queries, queries).mean(1).float()
            self.self_sum = a if self.self_sum is None else self.self_sum + a

    def end_step(self):
        if not self._step_maps:
            raise InputError(f"no cross-attention layer has at most {self.mask_res}² queries; lower mask_res")
        m = torch.stack(self._step_maps).mean(0)  # layers
        m = m / m.flatten(1).max(-1).values.clamp_min(1e-12).view(-1, 1, 1, 1)
        m = F.interpolate(m, size=(self.self_res, self.self_res), mode="bicubic", align_corners=False)
        self.cross_sum = m if self.cross_sum is None else self.cross_sum + m
        self.steps += 1

    def means(self) -> tuple[Tensor, Tensor]:
        """(cross-attention mask M_c (B, r, r) in [0, 1], self-attention A (B, r², r²)), averaged over steps, at the
        self-attention's resolution r."""
        return (self.cross_sum[:, 0] / self.steps).clamp(0, 1), self.self_sum / self.steps


def _module_name(root, module) -> str:
    return next(n for n, m in root.named_modules() if m is module)


def edit_mask(cross: Tensor, self_attn: Tensor, threshold: float = 0.3) -> Tensor:
    """M = 1[A · M_c > threshold] (SYNCSDE.md §6.2): the cross-attention mask smoothed by self-attention.
    ``cross`` (B, h, w) in [0, 1], ``self_attn`` (B, hw, hw) row-stochastic → (B, 1, h, w) binary."""
    B, h, w = cross.shape
    if self_attn.shape[-1] != h * w:
        raise InputError(f"self-attention covers {self_attn.shape[-1]} pixels, the mask {h}x{w}: sizes differ")
    smooth = torch.bmm(self_attn, cross.reshape(B, h * w, 1)).view(B, 1, h, w)
    return (smooth > threshold).float()


def _strip(word: str) -> str:
    return word.strip(".,;:!?\"'()")


def find_word(prompt: str, word: str) -> int:
    """Index of the first whitespace-separated word of ``prompt`` equal to ``word`` (case and punctuation ignored)."""
    clean = [_strip(w).lower() for w in prompt.split()]
    if word.lower() not in clean:
        raise InputError(
            f"source word '{word}' is not in the source prompt '{prompt}'; its words are: {', '.join(clean)}"
        )
    return clean.index(word.lower())


def word_token_columns(tokenizer, prompt: str, word: str) -> list[int]:
    """Token positions (BOS = 0) of every sub-token of the first occurrence of ``word`` in ``prompt``."""
    words, i = prompt.split(), find_word(prompt, word)
    start = 1 + sum(len(tokenizer(w, add_special_tokens=False).input_ids) for w in words[:i])
    return list(range(start, start + len(tokenizer(words[i], add_special_tokens=False).input_ids)))


def replace_word(prompt: str, source: str, target: str) -> str:
    """The target prompt: the first occurrence of the source word replaced (punctuation kept)."""
    words, i = prompt.split(), find_word(prompt, source)
    words[i] = words[i].replace(_strip(words[i]), target)
    return " ".join(words)
