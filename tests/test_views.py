"""Views (SYNCSDE.md §9.10, BASELINES.md §7.1)."""

import numpy as np
import pytest
import torch

from syncsde.errors import InputError
from syncsde.views import VIEW_NAMES, Skew, get_view


@pytest.mark.parametrize("name", VIEW_NAMES)
@pytest.mark.parametrize("size", [64, 256])
def test_round_trip_exact(name, size):
    v = get_view(name)
    x = torch.randn(2, 3, size, size)
    assert torch.equal(v.inverse_view(v.view(x)), x)
    assert torch.equal(v.view(v.inverse_view(x)), x)
    assert torch.equal(torch.sort(v.view(x).flatten()).values, torch.sort(x.flatten()).values)  # a permutation


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
