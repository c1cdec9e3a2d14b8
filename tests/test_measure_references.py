"""Peak Jerk and AUJ against FlowMDM's evaluation code (BarqueroGerman/FlowMDM), re-derived here: its
``calculate_jerk`` (data_loaders/humanml/utils/metrics.py), ``evaluate_jerk`` (utils/metrics.py) and the transition
slicing of ``CompMDMUnfoldingGeneratedDataset`` (data_loaders/datasets_composition.py)."""

import numpy as np
import pytest

from syncsde.evaluation import motion_metrics as mm


def flowmdm_jerk(poses, lengths):
    """``calculate_jerk``: finite differences of (BS, N, 22, 3) positions three times, the frames past each length
    zeroed, L1 over (x, y, z), max over joints → (BS, N − 3)."""
    vel = poses[:, 1:] - poses[:, :-1]
    acc = vel[:, 1:] - vel[:, :-1]
    jerk = acc[:, 1:] - acc[:, :-1]
    for i in range(jerk.shape[0]):
        jerk[i, lengths[i] - 3 :] = 0
    return np.max(np.abs(np.sum(np.abs(jerk), axis=-1)), axis=-1)


def flowmdm_transitions(unfolded, lengths, transition_length):
    """The transition slices: around each cumulative segment end ``mid``, [mid − L//2, mid + L − L//2)."""
    left, right = transition_length // 2, transition_length - transition_length // 2
    mid, out = 0, []
    for length in lengths[:-1]:
        mid += length
        out.append(unfolded[mid - left : mid + right])
    return out


@pytest.mark.parametrize("length", [60, 31])
def test_peak_jerk_and_auj_equal_flowmdm(length):
    rng = np.random.default_rng(0)
    motions = [np.cumsum(rng.normal(scale=0.01, size=(320, 22, 3)), 0) for _ in range(2)]  # two 3-segment samples
    meta = {"segment_frames": 120, "overlap": 20, "segments": 3}  # segments take over at frames 100 and 200
    windows = [w for m in motions for w in flowmdm_transitions(m, [100, 100, 120], length)]
    jerks = flowmdm_jerk(np.stack(windows), [length] * len(windows))  # (transitions, length − 3)
    seq = jerks.mean(axis=0)
    reference_pj, reference_auj = seq.max(), np.sum(np.abs(seq - 0.033031363))  # evaluate_jerk, HumanML3D's GT
    curves = np.concatenate([mm.transition_curves(m, mm.transitions_of(meta), length) for m in motions])
    pj, auj = mm.peak_jerk_auj(curves)
    assert curves.shape == (4, length - 3)
    assert pj == pytest.approx(reference_pj, rel=1e-12) and auj == pytest.approx(reference_auj, rel=1e-12)
    shifted = np.concatenate([mm.transition_curves(m, [101, 201], length) for m in motions])
    assert mm.peak_jerk_auj(shifted)[1] != pytest.approx(reference_auj, rel=1e-6)  # the comparison can fail
