"""SyncDiffusion (BASELINES.md §9): before MultiDiffusion's step, every window's state takes one gradient step that
makes its foreseen image look like an anchor window's.

Per step i (while i < ``sync_thres`` and (i + 1) is a multiple of ``sync_freq``), with a the anchor window, x̂₀(x, t)
Tweedie's estimate from the guided ε, D the decoder and L a perceptual distance (LPIPS),

    x_t^j ← x_t^j − w_i ∇_{x_t^j} L(D(x̂₀(x_t^j, t)), sg[D(x̂₀(x_t^a, t))])   for every window j ≠ a,
    w_i = sync_weight · sync_decay_rate^i,

the gradient flowing through the denoiser and the decoder (sg: no gradient into the anchor's image); then the usual
MultiDiffusion step from the moved states: x^j ← f_j(g{U(x_t^j, x̂₀^j)}). Each window's loss depends on its own state
only, so the gradient of the sum over a group of windows is every window's own gradient.
"""

from __future__ import annotations

from typing import Literal

import torch
from jsonargparse.typing import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from torch import Tensor

from syncsde.errors import InputError
from syncsde.perceptual import Network, clip_name, clip_network, lpips_network, resolve
from syncsde.strategies.base import Reads
from syncsde.strategies.synctweedies import MultiDiffusion


class SyncDiffusion(MultiDiffusion):
    """Args (defaults: the public code's sample script, w = 20 decaying by 0.95 a step, every step of the first 10):
    sync_weight: the gradient step w at the first step (0: MultiDiffusion exactly).
    sync_decay_rate: w_i = sync_weight · sync_decay_rate^i.
    sync_freq: take the gradient step every ``sync_freq`` steps (at steps i with (i + 1) divisible by it).
    sync_thres: take it only in the first ``sync_thres`` steps (0: MultiDiffusion exactly).
    anchor: the anchor window's index (None: the middle one, N // 2, as the public code).
    network: the perceptual distance: ``lpips`` (LPIPS-VGG, SyncDiffusion's; needs torchvision), ``clip`` (the CLIP
        ``clip``'s hidden states with LPIPS's normalisation), or ``auto`` (lpips exactly when torchvision is
        installed).
    clip: the CLIP of ``network: clip`` (hub id, folder, or the embedded ``syncsde:tiny-clip``).
    grad_batch: windows per gradient pass (1: one at a time, as the public code and its memory; None: all at once).
    """

    name = "syncdiffusion"

    def __init__(
        self,
        sync_weight: NonNegativeFloat = 20.0,
        sync_decay_rate: PositiveFloat = 0.95,
        sync_freq: PositiveInt = 1,
        sync_thres: NonNegativeInt = 10,
        anchor: NonNegativeInt | None = None,
        network: Literal["auto", "lpips", "clip"] = "auto",
        clip: str = "syncsde:tiny-clip",
        grad_batch: PositiveInt | None = 1,
    ):
        super().__init__()
        self.sync_weight, self.sync_decay_rate = float(sync_weight), float(sync_decay_rate)
        self.sync_freq, self.sync_thres, self.anchor = int(sync_freq), int(sync_thres), anchor
        self.kind = resolve(network, "--model.strategy.network")  # lpips or clip, known before anything loads
        self.network, self.clip, self.grad_batch = network, clip, grad_batch
        self._net: Network | None = None

    def needs(self):
        return frozenset({"canonical", "differentiable"})

    def reads(self):  # every window reads the anchor's state
        return Reads(everything=True)

    def weight(self, index: int) -> float:
        """w_i of step ``index`` (0 where no gradient step is taken)."""
        if index >= self.sync_thres or (index + 1) % self.sync_freq:
            return 0.0
        return self.sync_weight * self.sync_decay_rate**index

    def perceptual(self, device: torch.device) -> Network:
        """The perceptual network, loaded once, on ``device``."""
        if self._net is None:
            if self.kind == "clip":
                self._net = clip_network(self.clip)
            else:
                try:
                    self._net = lpips_network()
                except Exception as e:  # noqa: BLE001 (e.g. the VGG weights cannot be downloaded offline)
                    raise InputError(
                        f"--model.strategy.network {self.network}: LPIPS/VGG could not be loaded "
                        f"({str(e).splitlines()[0][:160]}); use --model.strategy.network clip"
                    ) from None
        return self._net.to(device)

    def before_denoise(self, x, step, problem, noise=None):
        w = self.weight(step.index)
        if w == 0:
            return x
        return x - w * self.gradient(x, step, problem).to(x.dtype)

    def gradient(self, x: Tensor, step, problem) -> Tensor:
        """∇_{x^j} L(D(x̂₀^j), sg[D(x̂₀^a)]) for every window j (zero for the anchor a), in float32."""
        diff = problem.differentiable
        if diff is None:
            raise InputError("SyncDiffusion needs a problem with a differentiable denoiser (a task that provides it)")
        N = x.shape[1]
        a = N // 2 if self.anchor is None else self.anchor
        if a >= N:
            raise InputError(f"--model.strategy.anchor {a}: the sample has {N} windows (0 to {N - 1})")
        others = [j for j in range(N) if j != a]
        size = self.grad_batch or len(others)
        # gradients even when called in inference mode: on a copy of the states made outside it, with a network
        # loaded outside it (the task runs Lightning's predict loop without inference mode for this strategy)
        with torch.inference_mode(False), torch.enable_grad():
            net = self.perceptual(x.device)
            x = x.float().clone()
            grad = torch.zeros_like(x)
            with torch.no_grad():
                xa = x[:, a : a + 1]
                anchor = diff.decode(step.x0(xa, diff.eps(xa, step, [a])).flatten(0, 1))  # (B, 3, H, W)
            for start in range(0, len(others), size):
                group = others[start : start + size]
                xj = x[:, group].requires_grad_()
                images = diff.decode(step.x0(xj, diff.eps(xj, step, group)).flatten(0, 1))  # rows b·k + j
                loss = net.distance(images, anchor.repeat_interleave(len(group), 0)).sum()
                grad[:, group] = torch.autograd.grad(loss, xj)[0]
        return grad

    def describe(self):
        return {
            "method": self.name,
            "sync_weight": self.sync_weight,
            "sync_decay_rate": self.sync_decay_rate,
            "sync_freq": self.sync_freq,
            "sync_thres": self.sync_thres,
            "anchor": self.anchor,
            "grad_batch": self.grad_batch,  # rows of a gradient pass: the network's float results depend on them
            "network": "lpips-vgg" if self.kind == "lpips" else clip_name(self.clip),
        }
