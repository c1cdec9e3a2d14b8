"""Attention statistics for the editing mask (SYNCSDE.md §6.2, BASELINES.md §5.2), as running means, and the text
helpers of editing (the source word in the caption, its tokens, the target prompt).

A :class:`AttentionRecorder` watches the UNet layers it needs and accumulates per sample:

- the cross-attention of the source word's token(s) from every cross-attention layer with at most ``mask_res²``
  queries (smaller maps bicubic-upsampled to ``mask_res²``), averaged over heads and layers, divided by its max,
  bicubic-upsampled to the self-attention's resolution — one map per step, averaged over steps;
- the self-attention of the first transformer block of the last attention module of the last up-block (the last
  up-block that has attention, for UNets whose final block has none), averaged over heads and over steps.

For Stable Diffusion at 512 px the self-attention's resolution is the latent's (64²), as in the reference.

The network keeps its own attention processors (PyTorch's scaled-dot-product attention, which need not form the
probabilities): the recorder reads the query and key each watched layer computes (forward hooks on its ``to_q`` and
``to_k``) and forms the probabilities itself, a block of query rows at a time, so that it never holds more than
``chunk_elements`` of them at once. Running means keep memory constant in the number of steps (the reference
implementation stores every step's 4096×4096 map); what remains is the running sum of the self-attention itself
(r⁴ floats per sample: 64 MiB at 64²). ``python -m syncsde.evaluation.benchmarks.edit_memory`` measures the peak.

A :class:`JointAttentionRecorder` gathers the same two statistics from an SD3 MMDiT's joint attention (SYNCSDE.md
§6.2.1): image-to-text for the word's map, image-to-image for the smoothing, over every joint block.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from syncsde.errors import InputError


class AttentionRecorder:
    """Context manager over a diffusers UNet. Per step: ``begin_step(token_columns)`` then the network call(s),
    then ``end_step()``. ``token_columns[b]`` are sample b's source-word token positions. A step's rows may arrive in
    several network calls (``max_batch``), in order."""

    def __init__(self, unet, mask_res: int = 16, chunk_elements: int = 1 << 22):
        from diffusers.models.attention_processor import Attention

        self.mask_res, self.chunk_elements = mask_res, chunk_elements
        block = [b for b in unet.up_blocks if getattr(b, "attentions", None)][-1]
        self.self_layer = block.attentions[-1].transformer_blocks[0].attn1
        self.cross_layers = [m for n, m in unet.named_modules() if isinstance(m, Attention) and n.endswith("attn2")]
        for layer in [self.self_layer, *self.cross_layers]:
            if getattr(layer, "norm_q", None) is not None or getattr(layer, "norm_k", None) is not None:
                raise InputError("editing reads attention from query and key: UNets with q/k norms are not supported")
        self.cross_sum: Tensor | None = None
        self.self_sum: Tensor | None = None
        self.self_res: int | None = None
        self.steps = 0
        self._columns: Sequence[Sequence[int]] = ()
        self._maps: dict[int, list[Tensor]] = {}  # this step's cross-attention maps per layer, in row chunks
        self._self_rows = 0  # rows of this step the self-attention has seen

    def __enter__(self):
        self._hooks = []
        for index, layer in enumerate([self.self_layer, *self.cross_layers]):
            seen: dict[str, Tensor] = {}
            self._hooks += [
                layer.to_q.register_forward_hook(lambda m, i, out, seen=seen: seen.__setitem__("q", out)),
                layer.to_k.register_forward_hook(lambda m, i, out, seen=seen: seen.__setitem__("k", out)),
                layer.register_forward_hook(partial(self._observe, seen=seen, index=index)),
            ]
        return self

    def __exit__(self, *exc):
        for hook in self._hooks:
            hook.remove()

    def begin_step(self, token_columns: Sequence[Sequence[int]]):
        self._columns, self._maps, self._self_rows = token_columns, {}, 0

    def _observe(self, layer, inputs, output, seen: dict, index: int):
        if "q" not in seen or "k" not in seen:
            raise InputError("the UNet's attention processor skips to_q/to_k; editing cannot read its attention")
        q = rearrange(seen.pop("q").float(), "b n (h d) -> b h n d", h=layer.heads)
        k = rearrange(seen.pop("k").float(), "b n (h d) -> b h n d", h=layer.heads)
        if index == 0:
            self._observe_self(q, k, layer.scale)
        elif q.shape[2] <= self.mask_res**2:
            self._observe_cross(q, k, layer.scale, index)

    def _observe_self(self, q: Tensor, k: Tensor, scale: float):
        B, heads, Q, _ = q.shape
        start, self._self_rows = self._self_rows, self._self_rows + B
        if self.self_sum is None:
            self.self_sum = q.new_zeros(len(self._columns), Q, Q)
            self.self_res = math.isqrt(Q)
        block = max(1, self.chunk_elements // (B * heads * Q))
        for r in range(0, Q, block):
            probs = (q[:, :, r : r + block] @ k.transpose(-1, -2) * scale).softmax(-1)
            self.self_sum[start : start + B, r : r + block] += probs.mean(1)

    def _observe_cross(self, q: Tensor, k: Tensor, scale: float, index: int):
        maps = self._maps.setdefault(index, [])
        start = sum(m.shape[0] for m in maps)
        probs = (q @ k.transpose(-1, -2) * scale).softmax(-1).mean(1)  # (B, Q, tokens)
        columns = self._columns[start : start + probs.shape[0]]
        word = torch.stack([probs[b, :, list(c)].mean(-1) for b, c in enumerate(columns)])  # (B, Q)
        r = math.isqrt(q.shape[2])
        m = word.view(-1, 1, r, r)
        if r < self.mask_res:
            m = F.interpolate(m, size=(self.mask_res, self.mask_res), mode="bicubic", align_corners=False)
        maps.append(m)

    def end_step(self):
        if not self._maps:
            raise InputError(f"no cross-attention layer has at most {self.mask_res}² queries; lower mask_res")
        m = torch.stack([torch.cat(chunks) for chunks in self._maps.values()]).mean(0)  # layers
        m = m / m.flatten(1).max(-1).values.clamp_min(1e-12).view(-1, 1, 1, 1)
        m = F.interpolate(m, size=(self.self_res, self.self_res), mode="bicubic", align_corners=False)
        self.cross_sum = m if self.cross_sum is None else self.cross_sum + m
        self.steps += 1

    def means(self) -> tuple[Tensor, Tensor]:
        """(cross-attention mask M_c (B, r, r) in [0, 1], self-attention A (B, r², r²)), averaged over steps, at the
        self-attention's resolution r."""
        return (self.cross_sum[:, 0] / self.steps).clamp(0, 1), self.self_sum / self.steps


class JointAttentionRecorder:
    """The edit mask's statistics from an SD3 MMDiT (``SD3Transformer2DModel``; SYNCSDE.md §6.2.1), with
    :class:`AttentionRecorder`'s interface (``begin_step``, the network call(s), ``end_step``, ``means``).

    Every joint block attends over one sequence, the image tokens followed by the text tokens. The image-token queries'
    probabilities split into two parts that play the UNet's two roles: against the text keys (image-to-text: the
    cross-attention) and against the image keys (image-to-image: the self-attention). Each part is renormalised over
    its own keys — the joint softmax conditioned on the key lying in that part, i.e. a softmax over those keys
    alone — so the text part is a distribution over the prompt's tokens as a UNet's cross-attention is, and the image
    part is row-stochastic as :func:`edit_mask` needs. Per step, both are averaged over heads and over every joint
    block (``block.attn``; SD3.5's image-only ``attn2`` is not read); the word's map is the mean over its token
    columns, divided by its max; over steps, running means. The maps are at the transformer's token grid (the latent
    over the patch size: 8×8 for ``syncsde:tiny-flow``, 64×64 for SD3 at 1024 px, where the running sum of the
    image part holds 64 MiB per sample as the UNet recorder's at 64²).

    The transformer keeps its own attention processors: a forward pre-hook on each block's attention reads the
    block's inputs, computes the query of the image tokens and the keys of both streams again (with the block's q/k
    norms, as SD3.5 has them; SD3 has no rotary embedding) and forms the probabilities of the image-token rows only,
    ``chunk_elements`` at a time. ``grid`` is the token grid (rows, columns).
    """

    def __init__(self, transformer, grid: tuple[int, int], chunk_elements: int = 1 << 22):
        self.layers = [block.attn for block in transformer.transformer_blocks]
        self.grid, self.chunk_elements = tuple(grid), chunk_elements
        self.cross_sum: Tensor | None = None
        self.self_sum: Tensor | None = None
        self.steps = 0
        self._columns: Sequence[Sequence[int]] = ()
        self._cross: dict[int, list[Tensor]] = {}  # this step's image-to-word maps per block, in row chunks
        self._rows: dict[int, int] = {}  # rows of this step each block has seen

    def __enter__(self):
        self._hooks = [
            layer.register_forward_pre_hook(partial(self._observe, index=index), with_kwargs=True)
            for index, layer in enumerate(self.layers)
        ]
        return self

    def __exit__(self, *exc):
        for hook in self._hooks:
            hook.remove()

    def begin_step(self, token_columns: Sequence[Sequence[int]]):
        self._columns, self._cross, self._rows = token_columns, {}, {}

    @staticmethod
    def _heads(attn, x: Tensor, proj, norm) -> Tensor:
        out = proj(x).unflatten(-1, (attn.heads, -1)).transpose(1, 2)  # (B, heads, n, d)
        return (out if norm is None else norm(out)).float()

    def _observe(self, attn, args, kwargs, index: int):
        image = kwargs.get("hidden_states", args[0] if args else None)
        text = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None)
        if text is None:
            raise InputError("an SD3 block attended without text tokens; editing reads joint attention")
        q = self._heads(attn, image, attn.to_q, attn.norm_q)
        k_image = self._heads(attn, image, attn.to_k, attn.norm_k)
        k_text = self._heads(attn, text, attn.add_k_proj, getattr(attn, "norm_added_k", None))
        B, heads, N, d = q.shape
        if N != self.grid[0] * self.grid[1]:
            raise InputError(f"the transformer sees {N} image tokens, not the {self.grid[0]}x{self.grid[1]} grid")
        start = self._rows.get(index, 0)
        self._rows[index] = start + B
        columns = self._columns[start : start + B]
        if self.self_sum is None:
            self.self_sum = q.new_zeros(len(self._columns), N, N)
        word = q.new_zeros(B, N)
        block = max(1, self.chunk_elements // (B * heads * max(N, k_text.shape[2])))
        scale = d**-0.5  # scaled_dot_product_attention's
        for r in range(0, N, block):
            rows = q[:, :, r : r + block]
            to_image = (rows @ k_image.transpose(-1, -2) * scale).softmax(-1).mean(1)  # (B, rows, image tokens)
            self.self_sum[start : start + B, r : r + block] += to_image / len(self.layers)
            to_text = (rows @ k_text.transpose(-1, -2) * scale).softmax(-1).mean(1)  # (B, rows, text tokens)
            word[:, r : r + block] = torch.stack([to_text[b][:, list(c)].mean(-1) for b, c in enumerate(columns)])
        self._cross.setdefault(index, []).append(word)

    def end_step(self):
        if len(self._cross) != len(self.layers):
            raise InputError(f"{len(self._cross)} of the {len(self.layers)} joint blocks ran during the step")
        m = torch.stack([torch.cat(chunks) for chunks in self._cross.values()]).mean(0)  # blocks
        m = (m / m.max(-1, keepdim=True).values.clamp_min(1e-12)).view(-1, *self.grid)
        self.cross_sum = m if self.cross_sum is None else self.cross_sum + m
        self.steps += 1

    def means(self) -> tuple[Tensor, Tensor]:
        """(image-to-word mask M_c (B, h, w) in [0, 1], image-to-image attention A (B, hw, hw)), averaged over steps,
        at the token grid (h, w)."""
        return (self.cross_sum / self.steps).clamp(0, 1), self.self_sum / self.steps


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


def find_word(prompt: str, word: str) -> int | None:
    """Index of the first whitespace-separated word of ``prompt`` equal to ``word`` (case and punctuation ignored),
    or None."""
    clean = [_strip(w).lower() for w in prompt.split()]
    return clean.index(word.lower()) if word.lower() in clean else None


def missing_word_error(prompt: str, word: str) -> InputError:
    clean = ", ".join(_strip(w).lower() for w in prompt.split())
    return InputError(
        f"source word '{word}' is not in the source prompt '{prompt}'; its words are: {clean} "
        "(or set missing_word: clip to edit the caption word closest to it)"
    )


def word_token_columns(tokenizer, prompt: str, index: int) -> list[int]:
    """Token positions (BOS = 0) of every sub-token of word ``index`` of ``prompt`` (whitespace-separated), after
    the special tokens the tokenizer puts before the first word (CLIP's BOS; none for T5)."""
    words = prompt.split()
    start = leading_tokens(tokenizer) + sum(len(tokenizer(w, add_special_tokens=False).input_ids) for w in words[:index])
    return list(range(start, start + len(tokenizer(words[index], add_special_tokens=False).input_ids)))


def leading_tokens(tokenizer) -> int:
    """How many special tokens the tokenizer puts before the text (1 for CLIP's BOS, 0 for T5)."""
    plain = tokenizer("a", add_special_tokens=False).input_ids
    ids = tokenizer("a").input_ids
    return next(k for k in range(len(ids)) if ids[k : k + len(plain)] == plain)

def replace_word(prompt: str, index: int, source: str, target: str) -> str:
    """The target prompt: word ``index`` of the prompt edited. The source word itself (case and punctuation ignored)
    becomes the target word with its punctuation kept; a word that contains it gets it replaced inside ("cats" →
    "dogs"); any other word (the caption word CLIP found closest to an absent source word) becomes the target word —
    the official code's rules (SYNCSDE.md §6.2)."""
    words = prompt.split()
    word = words[index]
    if _strip(word).lower() == source.lower():
        words[index] = word.replace(_strip(word), target)
    elif source in word:
        words[index] = word.replace(source, target)
    else:
        words[index] = target
    return " ".join(words)
