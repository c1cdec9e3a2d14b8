"""Image views for ambiguous images (SYNCSDE.md §6.4, BASELINES.md §3.1): exact index operations on the device.

Each view has ``view(x)`` and ``inverse_view(x)`` acting on the last two dims (H, W) of a tensor (…, C, H, W),
square images only. Rotations follow numpy's ``rot90`` (counter-clockwise positive): ``rotate_cw`` = rot90 k = −1.
Permutation views are gathers with a fixed index, so ``inverse_view(view(x)) == x`` exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor

from syncsde.errors import InputError


class View:
    name = "view"

    def view(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def inverse_view(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    @staticmethod
    def check(x: Tensor) -> int:
        if x.shape[-1] != x.shape[-2]:
            raise InputError(f"views need square images, got {x.shape[-2]}x{x.shape[-1]}; use a square size")
        return x.shape[-1]


class Identity(View):
    name = "identity"

    def view(self, x):
        return x

    inverse_view = view


class Rotate(View):
    """rot90 by ``k`` quarter turns counter-clockwise on (H, W)."""

    def __init__(self, k: int, name: str):
        self.k, self.name = k, name

    def view(self, x):
        self.check(x)
        return torch.rot90(x, self.k, dims=(-2, -1))

    def inverse_view(self, x):
        return torch.rot90(x, -self.k, dims=(-2, -1))


class Flip(View):
    """Upside down: out[y, x] = in[H−1−y, x]."""

    name = "flip"

    def view(self, x):
        return torch.flip(x, dims=(-2,))

    inverse_view = view


class Permutation(View):
    """out_flat[p] = in_flat[π[p]] over the H·W pixels, π built once per size by ``index(H)``."""

    def __init__(self):
        self._cache: dict[int, tuple[Tensor, Tensor]] = {}

    def index(self, size: int) -> Tensor:
        raise NotImplementedError

    def _perm(self, x: Tensor) -> tuple[Tensor, Tensor]:
        size = self.check(x)
        if size not in self._cache:
            perm = self.index(size)
            assert torch.equal(torch.sort(perm).values, torch.arange(size * size)), f"{self.name} is not a permutation"
            self._cache[size] = (perm, torch.argsort(perm))
        return tuple(p.to(x.device) for p in self._cache[size])

    def _apply(self, x: Tensor, perm: Tensor) -> Tensor:
        return x.flatten(-2)[..., perm].view_as(x)

    def view(self, x):
        return self._apply(x, self._perm(x)[0])

    def inverse_view(self, x):
        return self._apply(x, self._perm(x)[1])


def _grid(size: int) -> tuple[Tensor, Tensor]:
    return torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")


class Skew(Permutation):
    """Column x is rolled along H by d_x = trunc(s·(x − ⌊H/2⌋)): out[:, y, x] = in[:, (y − d_x) mod H, x]."""

    name = "skew"

    def __init__(self, factor: float = 1.5):
        super().__init__()
        self.factor = factor

    def shifts(self, size: int) -> Tensor:
        return torch.trunc(self.factor * (torch.arange(size, dtype=torch.float64) - size // 2)).long()

    def index(self, size):
        y, x = _grid(size)
        return (((y - self.shifts(size)[x]) % size) * size + x).flatten()


class PatchPermute(Permutation):
    """n×n patches in raster order; out patch k = in patch π(k), π random from ``seed`` (pixel_permute: n = size)."""

    def __init__(self, num_patches: int | None = 8, seed: int = 0, name: str = "patch_permute"):
        super().__init__()
        self.num_patches, self.seed, self.name = num_patches, seed, name

    def index(self, size):
        n = self.num_patches or size
        if size % n:
            raise InputError(f"{self.name}: image size {size} is not divisible into {n}x{n} patches")
        p = size // n
        pi = torch.randperm(n * n, generator=torch.Generator().manual_seed(self.seed))
        y, x = _grid(size)
        k = (y // p) * n + (x // p)
        src = pi[k]
        return (((src // n) * p + y % p) * size + (src % n) * p + x % p).flatten()


class InnerCircle(Permutation):
    """180° rotation inside the disc (x − H/2 + ½)² + (y − H/2 + ½)² < r², r = 3H/8."""

    name = "inner_circle"

    def index(self, size):
        y, x = _grid(size)
        r = 3 * size / 8
        inside = (x - size / 2 + 0.5) ** 2 + (y - size / 2 + 0.5) ** 2 < r**2
        src = torch.where(inside, (size - 1 - y) * size + (size - 1 - x), y * size + x)
        return src.flatten()


class SquareHinge(Permutation):
    """3×3 blocks of side ⌊H/3⌋ (leftover unchanged); block (i, j) rotated by rot90 k = −1 if i+j even, else +1."""

    name = "square_hinge"

    def index(self, size):
        idx = torch.arange(size * size).view(size, size)
        out = idx.clone()
        b = size // 3
        for i in range(3):
            for j in range(3):
                block = idx[i * b : (i + 1) * b, j * b : (j + 1) * b]
                out[i * b : (i + 1) * b, j * b : (j + 1) * b] = torch.rot90(block, -1 if (i + j) % 2 == 0 else 1)
        return out.flatten()


def get_view(name: str) -> View:
    """A view by name: identity, rotate_cw, rotate_ccw, rotate_180, flip, skew, patch_permute, pixel_permute,
    inner_circle, square_hinge."""
    factories = {
        "identity": Identity,
        "rotate_cw": lambda: Rotate(-1, "rotate_cw"),
        "rotate_ccw": lambda: Rotate(1, "rotate_ccw"),
        "rotate_180": lambda: Rotate(2, "rotate_180"),
        "flip": Flip,
        "skew": Skew,
        "patch_permute": PatchPermute,
        "pixel_permute": lambda: PatchPermute(None, name="pixel_permute"),
        "inner_circle": InnerCircle,
        "square_hinge": SquareHinge,
    }
    if name not in factories:
        raise InputError(f"unknown view '{name}'; choose one of {', '.join(factories)}")
    return factories[name]()


VIEW_NAMES = (
    "identity",
    "rotate_cw",
    "rotate_ccw",
    "rotate_180",
    "flip",
    "skew",
    "patch_permute",
    "pixel_permute",
    "inner_circle",
    "square_hinge",
)
