"""Image views for ambiguous images (SYNCSDE.md §6.4, BASELINES.md §3.1): exact index operations on the device.

Each view has ``view(x)`` and ``inverse_view(x)`` acting on the last two dims (H, W) of a tensor (…, C, H, W),
square images only. Rotations follow numpy's ``rot90`` (counter-clockwise positive): ``rotate_cw`` = rot90 k = −1.
Permutation views are gathers with a fixed index, so ``inverse_view(view(x)) == x`` exactly. ``negate`` is the one
view that is not a permutation: x ↦ −x on the model's (zero-centred) pixels, and it leaves a model's learned-variance
channels alone (``inverse_variance``, BASELINES.md §3.1).

**Where a view may act.** On a latent model a view taken on the latents is the view of the image only where the
autoencoder commutes with it, D(V(z)) ≈ V(D(z)). A view says which symmetry it is (``symmetry``: its name for the
exact transforms of the square — identity, flip, the rotations — and negate; None for the permutations, which no
autoencoder is trained for), and a backbone says which symmetries its autoencoder commutes with
(``Backbone.view_symmetries``; None: the working space is pixels, every view commutes). :func:`commutes` compares
the two; the ambiguous task's ``view_space: auto`` takes latent views where they commute and pixel views (decode,
view, re-encode) elsewhere (SYNCSDE.md §6.4.1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from syncsde.errors import InputError


class View:
    name = "view"
    symmetry: str | None = None  # which symmetry of the image this view is (see the module docstring)

    def view(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def inverse_view(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def inverse_variance(self, v: Tensor) -> Tensor:
        """The inverse view of a learned-variance output (DeepFloyd IF's channels 3–5): positions move as the image
        does; values are variances, so a sign change does not apply (BASELINES.md §3.1, §7)."""
        return self.inverse_view(v)

    @staticmethod
    def check(x: Tensor) -> int:
        if x.shape[-1] != x.shape[-2]:
            raise InputError(f"views need square images, got {x.shape[-2]}x{x.shape[-1]}; use a square size")
        return x.shape[-1]


class Identity(View):
    name = symmetry = "identity"

    def view(self, x):
        return x

    inverse_view = view


class Rotate(View):
    """rot90 by ``k`` quarter turns counter-clockwise on (H, W)."""

    def __init__(self, k: int, name: str):
        self.k, self.name, self.symmetry = k, name, name

    def view(self, x):
        self.check(x)
        return torch.rot90(x, self.k, dims=(-2, -1))

    def inverse_view(self, x):
        return torch.rot90(x, -self.k, dims=(-2, -1))


class Flip(View):
    """Upside down: out[y, x] = in[H−1−y, x]."""

    name = symmetry = "flip"

    def view(self, x):
        return torch.flip(x, dims=(-2,))

    inverse_view = view


class Negate(View):
    """x ↦ −x on every channel (on images in [0, 1]: 1 − x); its own inverse; variances unchanged."""

    name = symmetry = "negate"

    def view(self, x):
        return -x

    inverse_view = view

    def inverse_variance(self, v):
        return v


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


class Jigsaw(Permutation):
    """A jigsaw puzzle of n×n pieces (n = 4), rearranged with rotations — our own exact design (the official view uses
    piece masks shipped as images, BASELINES.md §3.1).

    Pieces: the square cells of an n×n grid; on every inner edge one of the two cells grows a round knob — the pixels
    of the other cell whose centres lie within 0.3·cell of the edge's midpoint. Which cell owns each knob is drawn
    from ``seed`` for one edge of every orbit under a quarter turn of the whole image and copied to the other three by
    that turn, so the cut is symmetric under rot90: the four pieces of an orbit (corners, inner pieces, two kinds of
    edge pieces) have one shape, turned. Knobs of one cell never touch (they sit at different edge midpoints).
    The view moves the piece at orbit position i to position σ(i) (σ a derangement of the four, drawn from ``seed``),
    turned with the whole image by the quarter turns between the two positions; a piece then exactly fills its new
    slot, so the view is a pixel permutation and its inverse is exact. The image size must be a multiple of 2n.
    """

    name = "jigsaw"

    def __init__(self, pieces: int = 4, seed: int = 0, knob: float = 0.3):
        super().__init__()
        self.n, self.seed, self.knob = pieces, seed, knob

    def owners(self, size: int) -> Tensor:
        """(size, size) piece index (row-major cell number) of every pixel."""
        n = self.n
        if size % (2 * n):
            raise InputError(f"jigsaw: image size {size} must be a multiple of {2 * n} (an even cell side)")
        c, gen = size // n, torch.Generator().manual_seed(self.seed)
        y, x = _grid(size)
        owner = (y // c) * n + x // c
        cell_of = owner.clone()
        taken = torch.zeros(size, size, dtype=torch.bool)
        done = set()
        for r in range(n):  # inner edges: (cell, right neighbour) and (cell, lower neighbour)
            for col in range(n):
                for nb in ((r, col + 1), (r + 1, col)):
                    if nb[0] >= n or nb[1] >= n or ((r, col), nb) in done:
                        continue
                    orbit = [(_turn((r, col), k, n), _turn(nb, k, n)) for k in range(4)]
                    a_owns = bool(torch.randint(2, (1,), generator=gen))
                    for a, b in orbit:
                        done |= {(a, b), (b, a)}
                        own, other = (a, b) if a_owns else (b, a)
                        my, mx = (a[0] + b[0] + 1) * c / 2, (a[1] + b[1] + 1) * c / 2  # edge midpoint
                        knob = (cell_of == other[0] * n + other[1]) & (
                            (y + 0.5 - my) ** 2 + (x + 0.5 - mx) ** 2 < (self.knob * c) ** 2
                        )
                        assert not (knob & taken).any(), "jigsaw knobs overlap"
                        taken |= knob
                        owner[knob] = own[0] * n + own[1]
        return owner

    def index(self, size):
        n, owner = self.n, self.owners(size)
        gen = torch.Generator().manual_seed(self.seed)
        idx = torch.arange(size * size).view(size, size)
        out = torch.full_like(idx, -1)
        seen = set()
        for q in ((r, col) for r in range(n) for col in range(n)):
            if q in seen:
                continue
            orbit = [_turn(q, k, n) for k in range(4)]
            seen |= set(orbit)
            sigma = torch.randperm(4, generator=gen)
            while (sigma == torch.arange(4)).any():  # a derangement: every piece moves
                sigma = torch.randperm(4, generator=gen)
            for i, (r, col) in enumerate(orbit):
                k = int(sigma[i] - i) % 4  # quarter turns of the whole image from slot i to slot σ(i)
                dst = torch.rot90(owner == r * n + col, k)
                out[dst] = torch.rot90(idx, k)[dst]
        return out.flatten()


def _turn(cell: tuple[int, int], k: int, n: int) -> tuple[int, int]:
    """Grid cell (row, col) after k counter-clockwise quarter turns of the whole n×n grid (as torch.rot90)."""
    r, c = cell
    for _ in range(k % 4):
        r, c = n - 1 - c, r
    return r, c


class FilePermutation(Permutation):
    """A permutation read from a ``.npy`` file: g² integers π (shape (g², ) or (g, g)) over a g×g grid of cells in
    raster order, out cell p = in cell π[p]. Applied at any size that is a multiple of g, each cell moving as a block
    (g = the image size: a pixel permutation)."""

    def __init__(self, path: str | Path):
        super().__init__()
        p = Path(path)
        if not p.is_file():
            raise InputError(f"permutation file '{path}' does not exist; give a .npy of g*g cell indices")
        try:
            pi = np.load(p, allow_pickle=False)
        except ValueError as e:
            raise InputError(f"cannot read permutation file '{path}' ({e}); save it with numpy.save") from None
        g = int(round(pi.size**0.5))
        if pi.ndim not in (1, 2) or g * g != pi.size or not np.issubdtype(pi.dtype, np.integer):
            raise InputError(f"'{path}' must hold g*g integers (shape (g*g,) or (g, g)), got {pi.dtype} {pi.shape}")
        if not np.array_equal(np.sort(pi.ravel()), np.arange(g * g)):
            raise InputError(f"'{path}' is not a permutation of 0..{g * g - 1}; every cell index must appear once")
        self.pi, self.grid, self.name = torch.as_tensor(pi.ravel(), dtype=torch.long), g, str(path)

    def index(self, size):
        g = self.grid
        if size % g:
            raise InputError(f"permutation '{self.name}' is over a {g}x{g} grid; image size {size} is not a multiple")
        b = size // g
        y, x = _grid(size)
        src = self.pi[(y // b) * g + x // b]
        return (((src // g) * b + y % b) * size + (src % g) * b + x % b).flatten()


def commutes(view: View, backbone) -> bool:
    """Whether ``view`` taken on ``backbone``'s working space is the view of its images: the backbone works in pixels
    (``view_symmetries`` None), the view is the identity, or the backbone declares the view's symmetry."""
    symmetries = getattr(backbone, "view_symmetries", None)
    return symmetries is None or view.symmetry == "identity" or view.symmetry in symmetries


def get_view(name: str) -> View:
    """A view by name: identity, rotate_cw, rotate_ccw, rotate_180, flip, negate, skew, patch_permute,
    pixel_permute, inner_circle, square_hinge, jigsaw — or the path of a ``.npy`` permutation (FilePermutation)."""
    if name.endswith(".npy"):
        return FilePermutation(name)
    factories = {
        "identity": Identity,
        "rotate_cw": lambda: Rotate(-1, "rotate_cw"),
        "rotate_ccw": lambda: Rotate(1, "rotate_ccw"),
        "rotate_180": lambda: Rotate(2, "rotate_180"),
        "flip": Flip,
        "negate": Negate,
        "skew": Skew,
        "patch_permute": PatchPermute,
        "pixel_permute": lambda: PatchPermute(None, name="pixel_permute"),
        "inner_circle": InnerCircle,
        "square_hinge": SquareHinge,
        "jigsaw": Jigsaw,
    }
    if name not in factories:
        raise InputError(f"unknown view '{name}'; choose one of {', '.join(factories)}, or a .npy permutation file")
    return factories[name]()


VIEW_NAMES = (
    "identity",
    "rotate_cw",
    "rotate_ccw",
    "rotate_180",
    "flip",
    "negate",
    "skew",
    "patch_permute",
    "pixel_permute",
    "inner_circle",
    "square_hinge",
    "jigsaw",
)
