"""Views (SYNCSDE.md §9.10, BASELINES.md §7.1)."""

import numpy as np
import pytest
import torch

from syncsde.errors import InputError
from syncsde.views import VIEW_NAMES, Jigsaw, Skew, get_view

PERMUTATIONS = [n for n in VIEW_NAMES if n != "negate"]


@pytest.mark.parametrize("name", VIEW_NAMES)
@pytest.mark.parametrize("size", [64, 256])
def test_round_trip_exact(name, size):
    v = get_view(name)
    x = torch.randn(2, 3, size, size)
    assert torch.equal(v.inverse_view(v.view(x)), x)
    assert torch.equal(v.view(v.inverse_view(x)), x)
    if name in PERMUTATIONS:
        assert torch.equal(torch.sort(v.view(x).flatten()).values, torch.sort(x.flatten()).values)
        assert torch.equal(v.inverse_variance(v.view(x)), x)  # variances move with their pixels


def test_negate_rules():
    """BASELINES.md §3.1 / §7.1: −x on every channel, its own inverse; the variance channels are left unchanged."""
    v = get_view("negate")
    x = torch.randn(1, 6, 8, 8)
    assert torch.equal(v.view(x), -x) and torch.equal(v.inverse_view(-x), x)
    assert torch.equal(v.inverse_variance(x[:, 3:]), x[:, 3:])


@pytest.mark.parametrize("size", [32, 64, 256])
def test_jigsaw_moves_whole_pieces(size):
    """Every piece lands, turned, exactly on another piece's slot: the view maps the piece-label image to a
    relabelling of itself (pieces stay whole), and no piece keeps its slot."""
    j = Jigsaw()
    owners = j.owners(size)
    assert torch.bincount(owners.flatten()).min() > 0.6 * (size // 4) ** 2  # 16 real pieces, knobs included
    moved = j.view(owners[None].double())[0].long()
    pairs = torch.unique(torch.stack([owners.flatten(), moved.flatten()]), dim=1)
    assert pairs.shape[1] == 16  # slot -> one piece: a bijection of pieces
    assert torch.equal(torch.sort(pairs[1]).values, torch.arange(16))
    assert not (pairs[0] == pairs[1]).any()
    x = torch.arange(size * size, dtype=torch.float64).view(1, size, size)
    assert not torch.equal(j.view(x), x)
    with pytest.raises(InputError, match="multiple of 8"):
        j.view(torch.randn(1, 12, 12))


def test_permutation_from_file(tmp_path):
    """A g×g cell permutation from a .npy file moves blocks at any multiple of g; bad files get one clear line."""
    rng = np.random.default_rng(0)
    pi = rng.permutation(16)
    np.save(tmp_path / "p.npy", pi.reshape(4, 4))
    v = get_view(str(tmp_path / "p.npy"))
    x = torch.randn(3, 64, 64)
    out = v.view(x)
    for p in (0, 5, 15):  # out cell p = in cell π[p]
        q = int(pi[p])
        assert torch.equal(
            out[:, (p // 4) * 16 : (p // 4 + 1) * 16, (p % 4) * 16 : (p % 4 + 1) * 16],
            x[:, (q // 4) * 16 : (q // 4 + 1) * 16, (q % 4) * 16 : (q % 4 + 1) * 16],
        )
    assert torch.equal(v.inverse_view(out), x)
    np.save(tmp_path / "bad.npy", np.array([0, 0, 1, 2]))
    with pytest.raises(InputError, match="not a permutation"):
        get_view(str(tmp_path / "bad.npy"))
    with pytest.raises(InputError, match="does not exist"):
        get_view(str(tmp_path / "none.npy"))
    with pytest.raises(InputError, match="not a multiple"):
        v.view(torch.randn(1, 18, 18))


def test_rotations_follow_numpy():
    x = torch.arange(16.0).view(1, 4, 4)
    assert np.array_equal(get_view("rotate_cw").view(x)[0].numpy(), np.rot90(x[0].numpy(), -1))
    assert np.array_equal(get_view("rotate_ccw").view(x)[0].numpy(), np.rot90(x[0].numpy(), 1))
    H = 4
    out = get_view("rotate_cw").view(x)[0]
    assert all(out[y, xx] == x[0, H - 1 - xx, y] for y in range(H) for xx in range(H))  # BASELINES.md §3.1
    assert torch.equal(get_view("flip").view(x)[0], x[0].flip(0))


def test_skew_shifts_at_64():
    d = Skew(1.5).shifts(64)
    assert d[:3].tolist() == [-48, -46, -45] and d[32] == 0 and d[62:].tolist() == [45, 46]
    x = torch.randn(1, 64, 64)
    out = Skew(1.5).view(x)
    for col in (0, 1, 32, 63):
        assert torch.equal(out[0, :, col], torch.roll(x[0, :, col], int(d[col])))


def test_errors():
    with pytest.raises(InputError, match="square"):
        get_view("rotate_cw").view(torch.randn(1, 3, 8, 16))
    with pytest.raises(InputError, match="unknown view"):
        get_view("twirl")
