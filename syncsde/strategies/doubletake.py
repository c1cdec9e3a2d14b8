"""DoubleTake (PriorMDM, Shafir et al., arXiv 2303.01418; BASELINES.md §13): a long motion from segments that agree
on a shared "handshake", then a second take that re-samples every transition.

The segments are consecutive windows of w frames along the last axis overlapping by h frames (the handshake: the
motion task's ``overlap``). Segment i's last h frames and segment i+1's first h frames are the same frames of the
sequence.

**First take.** Every segment is sampled with its own text. After each step (the last one included), the handshake of
segments i and i+1 becomes one linear cross-fade, written into both:

    H_k = (1 − k/h) x^i[w − h + k] + (k/h) x^{i+1}[k],    k = 0..h−1,

so the two segments carry identical handshake frames at every step (the public code's unfolding blend).

**Second take.** From the first take's result, each transition i | i+1 gets a window of w frames centred on the
handshake, at p = ⌊(w − h)/2⌋: segment i's last p + h frames then segment i+1's frames h..w − p − 1. The windows are
re-noised to the step at index round(skip · S) of the S-step schedule and sampled from there, with x̂₀ pinned by a
soft inpainting mask m at every step:

    x̂₀ ← (1 − m) x̂₀ + m y,    ε ← (x_t − √ᾱ_t x̂₀)/√(1 − ᾱ_t),

y the window of the first take; m = 1 away from the transition, 0 on the handshake, and on the ``blend_len`` = b
frames before it 0.85 − 0.85 k/b (k = 0..b−1, falling toward the handshake), after it 0.85 k/b (rising from 0); no
ramps when b < 2 (the public code's mask). Finally the handshake and the b frames on each side of it are taken from
the second take into both segments; every other frame keeps the first take's value.

Differences from the public code: the second take's windows are w frames long, the segments' size (the public code
joins the two segments' interiors, 2(w − 2h) + h frames; the embedded model has a fixed length); each window row is
conditioned as the segment before the transition with the task's guidance, where the public code masks the text
(unconditional, guidance 0); and the window stack has the task's N rows, so the last row (the last segment, wholly
pinned) is sampled and discarded.
"""

from __future__ import annotations

import torch
from jsonargparse.typing import NonNegativeInt
from torch import Tensor

from syncsde.coupling import SyncProblem
from syncsde.errors import InputError
from syncsde.schedule import Step, eps_from_x0
from syncsde.strategies.base import Strategy

MASK_PEAK = 0.85  # the inpainting mask's value next to the blend windows (the public code's)


class DoubleTake(Strategy):
    """Args:
    handshake: blend each pair of consecutive segments on their shared frames after every step (the first take).
    second_take: re-sample every transition in a window centred on it (needs a task that provides ``denoise``).
    blend_len: frames on each side of a handshake that the second take re-samples with the soft mask (10, the public
        README's setting).
    skip: the fraction of the schedule the second take skips before it starts (0.1: the public code's 100 of 1000).
    """

    name = "doubletake"

    def __init__(
        self, handshake: bool = True, second_take: bool = True, blend_len: NonNegativeInt = 10, skip: float = 0.1
    ):
        if not 0 <= skip < 1:
            raise InputError(f"--model.strategy.skip {skip}: give a fraction of the schedule in [0, 1)")
        if blend_len < 0:
            raise InputError(f"--model.strategy.blend_len {blend_len}: give a number of frames ≥ 0")
        self.handshake, self.second_take = bool(handshake), bool(second_take)
        self.blend_len, self.skip = int(blend_len), float(skip)
        self._steps: list[Step] = []  # the steps of the current run, for the second take

    def needs(self):
        return frozenset({"canonical", "denoise"} if self.second_take else {"canonical"})

    def step(self, x, eps, step, problem, noise=None):
        if step.index == 0:
            self._steps = []
        self._steps.append(step)
        out = self.plain_update(x, eps, step, noise)
        if x.shape[1] < 2 or not (self.handshake or self.second_take):
            return out
        h = self.handshake_frames(x, problem)
        if self.handshake:
            out = shake(out, h)
        if self.second_take and step.t_prev < 0:  # the last step: the first take is done
            out = self.take_two(out, h, problem, noise)
        return out

    def handshake_frames(self, x: Tensor, problem: SyncProblem) -> int:
        """h, the frames consecutive segments share, from the canonical sequence's length L = w + (N − 1)(w − h)."""
        n, w = x.shape[1], x.shape[-1]
        if problem.canonical is None:
            raise InputError("DoubleTake needs the segments' whole sequence (a task that provides it: motion)")
        stride, rest = divmod(problem.canonical.shape[-1] - w, n - 1)
        h = w - stride
        if rest or not 0 < h <= w // 2:
            raise InputError(
                f"DoubleTake needs segments overlapping by at most half their length; these {n} segments of {w} frames "
                f"make {problem.canonical.shape[-1]}: set the task's overlap to at most {w // 2}"
            )
        if self.second_take and w < 2 * (h + self.blend_len):
            raise InputError(
                f"DoubleTake's second take needs segments of at least 2·(overlap + blend_len) = "
                f"{2 * (h + self.blend_len)} frames, these have {w}: lower --model.strategy.blend_len or the overlap"
            )
        return h

    def mask(self, n: int, w: int, h: int) -> Tensor:
        """The second take's inpainting mask (n, w): rows 0..n−2 around a handshake at p = ⌊(w − h)/2⌋, the last row
        (the pinned filler) all ones."""
        p, b = (w - h) // 2, self.blend_len
        m = torch.ones(n, w)
        m[:-1, p : p + h] = 0
        if b >= 2:
            ramp = torch.arange(b) * (MASK_PEAK / b)
            m[:-1, p - b : p] = MASK_PEAK - ramp
            m[:-1, p + h : p + h + b] = ramp
        return m

    def take_two(self, x0: Tensor, h: int, problem: SyncProblem, noise) -> Tensor:
        """The second take on the first take's result ``x0`` (B, N, ..., w)."""
        if problem.denoise is None:
            raise InputError(
                "DoubleTake's second take calls the network again: it needs a task that provides denoise (motion); "
                "or set --model.strategy.second_take false"
            )
        if noise is None:
            raise ValueError("DoubleTake's second take re-noises the transitions: it needs the sampler's noise")
        n, w = x0.shape[1], x0.shape[-1]
        p, b = (w - h) // 2, self.blend_len
        pinned = torch.cat([transition_windows(x0, h), x0[:, -1:]], 1)
        m = self.mask(n, w, h).to(x0).view(n, *[1] * (x0.ndim - 3), w)
        steps = self._steps[round(self.skip * len(self._steps)) :]
        abar = steps[0].abar_t
        y = abar**0.5 * pinned + (1 - abar) ** 0.5 * noise()
        for s in steps:
            eps = problem.denoise(y, s).to(y.dtype)
            x0_hat = (1 - m) * s.x0(y, eps) + m * pinned
            y = s.update(y, x0_hat, eps_from_x0(y, x0_hat, s.abar_t), noise() if s.stochastic else None).to(y.dtype)
        out = x0.clone()
        out[:, :-1, ..., w - h - b :] = y[:, :-1, ..., p - b : p + h]  # segment i: its last b frames, the handshake
        out[:, 1:, ..., : h + b] = y[:, :-1, ..., p : p + h + b]  # segment i+1: the handshake, its next b frames
        return out

    def describe(self):
        return {
            "method": self.name,
            "handshake": self.handshake,
            "second_take": self.second_take,
            "blend_len": self.blend_len,
            "skip": self.skip,
        }


def shake(x: Tensor, h: int) -> Tensor:
    """The handshake blend of consecutive segments (B, N, ..., w) on their h shared frames, written into both."""
    alpha = (torch.arange(h) / h).to(x)
    out = x.clone()
    blend = x[:, :-1, ..., -h:] * (1 - alpha) + x[:, 1:, ..., :h] * alpha
    out[:, :-1, ..., -h:] = blend
    out[:, 1:, ..., :h] = blend
    return out


def transition_windows(x: Tensor, h: int) -> Tensor:
    """(B, N − 1, ..., w): window i spans the handshake of segments i and i+1 at p = ⌊(w − h)/2⌋ — segment i's last
    p + h frames, then segment i+1's frames h..w − p − 1."""
    w = x.shape[-1]
    p = (w - h) // 2
    return torch.cat([x[:, :-1, ..., w - h - p :], x[:, 1:, ..., h : w - p]], -1)
