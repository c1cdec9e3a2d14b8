"""SpotDiffusion (BASELINES.md §10): non-overlapping windows whose tiling moves by a random offset every step, with
the canvas wrapping around; nothing is averaged, so a step costs the network one row per tile of the canvas.

The task's windows must tile the canvas without overlap (stride = window size: the method sets ``stride: window``).
With Z the canvas in its own fixed frame and S_k the tiling's offset at step k (per axis),

    L = roll(Z, −S_k),   x^i = f_i(L),   x^i ← U(x^i, x̂₀(x^i, ε̂^i)),   Z ← roll(g(x), S_k),

where f_i crops tile i, g puts the tiles back (they cover each position once) and U is the scheduler's update per
tile. S_0 = 0 and S_{k+1} = S_k + c_k (mod the canvas size) with c_k uniform on [0, W): the public code's
``torch.randint(0, W, (1,))`` crop of the doubled canvas after every step. The public code keeps the canvas in the
rolled frame and returns it there, i.e. the final image rolled by S_K; here the canvas stays in its own frame
(the same image, rolled back by S_K). Offsets along the rows (a canvas taller than one window) are our extension.
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor

from syncsde.errors import InputError
from syncsde.strategies.base import Strategy


class SpotDiffusion(Strategy):
    """Args:
    vertical: also shift the rows on a canvas taller than one window (our extension; the public code shifts the
        columns only, so a 2-D canvas keeps its row seams fixed with ``false``).
    """

    name = "spotdiffusion"

    def __init__(self, vertical: bool = True):
        self.vertical = bool(vertical)
        self._offsets: Tensor | None = None  # (B, 2) current offsets (rows, columns) of each sample's tiling
        self._generators: list[torch.Generator] = []

    def needs(self):
        return frozenset({"canonical"})

    def check(self, x: Tensor, canon) -> tuple[int, int]:
        """The canvas size (H, W), after checking that the windows tile it without overlap."""
        if canon is None:
            raise InputError("spotdiffusion needs a task with a canvas (a task that provides a canonical variable)")
        H, W = canon.shape[-2:]
        if x.shape[1] * x.shape[-2] * x.shape[-1] != H * W:
            raise InputError(
                f"spotdiffusion needs windows that tile the canvas without overlap ({x.shape[1]} windows of "
                f"{x.shape[-2]}x{x.shape[-1]} on {H}x{W}): use --model.stride window --model.vertical_stride window"
            )
        return H, W

    def generators(self, noise) -> list[torch.Generator]:
        """One generator per sample for the shifts, seeded from two values of the sample's own noise (so that the
        shifts depend only on (seed, sample id), whatever the batch and the state's dtype)."""
        if noise is None:
            raise InputError("spotdiffusion draws its shifts from each sample's generator: run it through a task")
        gens = []
        for values in noise((2,)).detach().double().cpu():
            digest = hashlib.sha256(values.numpy().tobytes()).digest()
            gens.append(torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)))
        return gens

    def increments(self, size: tuple[int, int]) -> Tensor:
        """Each sample's next offset increments (B, 2): uniform on [0, H) for the rows (0 unless shifted), [0, W) for
        the columns."""
        H, W = size
        out = []
        for g in self._generators:
            c = int(torch.randint(0, W, (1,), generator=g))
            r = int(torch.randint(0, H, (1,), generator=g)) if self.vertical and H else 0
            out.append((r, c))
        return torch.tensor(out)

    def offsets(self, x: Tensor, step, problem, noise) -> Tensor:
        """The offsets (B, 2) of each sample's tiling at this step: 0 at the first, then the running sum of the
        increments drawn after each step, modulo the canvas size."""
        H, W = self.check(x, problem.canonical)
        if step.index == 0 or self._offsets is None or len(self._offsets) != x.shape[0]:
            self._generators = self.generators(noise)
            self._offsets = torch.zeros(x.shape[0], 2, dtype=torch.long)
        else:
            rows = H if H > x.shape[-2] else 0  # one row of windows: nothing to shift vertically
            self._offsets = (self._offsets + self.increments((rows, W))) % torch.tensor([H, W])
        return self._offsets

    @staticmethod
    def roll(z: Tensor, offsets: Tensor, sign: int) -> Tensor:
        """Each sample's canvas (B, ..., H, W) rolled by ``sign`` × its offsets (rows, columns)."""
        return torch.stack([torch.roll(c, (sign * int(o[0]), sign * int(o[1])), (-2, -1)) for c, o in zip(z, offsets)])

    def before_denoise(self, x, step, problem, noise=None):
        offsets = self.offsets(x, step, problem, noise)
        canon = problem.canonical
        return canon.forward(self.roll(canon.aggregate(x), offsets, -1)) if offsets.any() else x

    def step(self, x, eps, step, problem, noise=None):
        x = self.plain_update(x, eps, step, noise)
        if not self._offsets.any():
            return x
        canon = problem.canonical
        return canon.forward(self.roll(canon.aggregate(x), self._offsets, 1))

    def describe(self):
        return {"method": self.name, "vertical": self.vertical}
