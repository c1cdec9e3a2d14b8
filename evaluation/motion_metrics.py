"""Peak Jerk (PJ) and Area Under the Jerk (AUJ) of motion transitions (FlowMDM, Barquero et al., CVPR 2024).

Jerk is the third finite difference of the joint positions, in metres per frame³ (no division by the frame time:
FlowMDM's units, for motion at 20 fps). For each frame, the jerk of one pose is the largest, over the joints, of the
L1 norm of its (x, y, z) jerk. A transition is judged on a window of ``length`` frames centred on the frame where the
next text takes over (``length // 2`` frames before it); the window's jerk curve has ``length − 3`` values. Over a
set of transitions, the curves are averaged frame by frame; PJ is the curve's maximum and AUJ the sum over its frames
of its absolute difference from the jerk of real motion (FlowMDM: 0.0330 on HumanML3D). See ``docs/evaluation.md``.
"""

from __future__ import annotations

import numpy as np

from syncsde.errors import InputError

TRANSITION_LENGTH = 60  # FlowMDM's window on HumanML3D (BABEL: 30)
HUMANML3D_JERK = 0.033031363  # FlowMDM's mean jerk of HumanML3D's real motion (m/frame³)


def jerk_curve(joints: np.ndarray) -> np.ndarray:
    """Per-frame jerk of a motion (frames, joints, 3) → (frames − 3,): max over joints of the L1 norm of Δ³x."""
    joints = np.asarray(joints, dtype=np.float64)
    if joints.ndim != 3 or joints.shape[-1] != 3 or joints.shape[0] < 4:
        raise InputError(f"joints of shape {tuple(joints.shape)}: give (frames ≥ 4, joints, 3) positions")
    return np.abs(np.diff(joints, n=3, axis=0)).sum(-1).max(-1)


def transition_windows(joints: np.ndarray, transitions: list[int], length: int = TRANSITION_LENGTH) -> np.ndarray:
    """The ``length`` frames around each transition frame t, [t − length//2, t − length//2 + length).
    (T, length, joints, 3)."""
    before = length // 2
    windows = []
    for t in transitions:
        if t - before < 0 or t - before + length > len(joints):
            raise InputError(
                f"the transition at frame {t} has no {length}-frame window inside the {len(joints)} frames; "
                "give a shorter --transition_length"
            )
        windows.append(joints[t - before : t - before + length])
    return np.stack(windows)


def peak_jerk_auj(curves: np.ndarray, reference_jerk: float = HUMANML3D_JERK) -> tuple[float, float]:
    """PJ and AUJ of a set of transition jerk curves (M, length − 3): the frame-wise mean curve's maximum, and the sum
    of its absolute difference from ``reference_jerk``."""
    mean = np.asarray(curves, dtype=np.float64).reshape(-1, np.shape(curves)[-1]).mean(0)
    return float(mean.max()), float(np.abs(mean - reference_jerk).sum())


def transitions_of(meta: dict) -> list[int]:
    """The frames where each next segment takes over, from a motion sidecar: syncsde's motion task keeps each overlap
    from the later segment, so segment k starts at k·(segment_frames − overlap)."""
    stride = meta["segment_frames"] - meta["overlap"]
    return [stride * k for k in range(1, meta["segments"])]


def transition_curves(joints: np.ndarray, transitions: list[int], length: int = TRANSITION_LENGTH) -> np.ndarray:
    """The jerk curve of each transition's window: (T, length − 3)."""
    return np.stack([jerk_curve(w) for w in transition_windows(joints, transitions, length)])
