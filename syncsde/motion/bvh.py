"""BVH export of generated joint positions (Blender, MotionBuilder, game engines import BVH).

The hierarchy is the 22-joint SMPL skeleton in a T-pose (:data:`~syncsde.motion.skeleton.T_POSE` directions) with
the sequence's own bone lengths (median over frames), in metres, y up. The root has position and rotation channels,
every other joint rotation channels, "Zrotation Yrotation Xrotation" (R = Rz·Ry·Rx, degrees). Rotations are solved
from the joint positions (:func:`~syncsde.motion.skeleton.solve_rotations`), so no twist about a bone is invented.
Played back, the skeleton reproduces the joint positions up to how much the generated bones change length over time
(a model that predicts positions need not keep bones rigid); :func:`motion_bvh` returns the mean and largest joint
error (metres) for the sidecar.
"""

from __future__ import annotations

import numpy as np
import roma
import torch

from syncsde.motion.humanml import JOINT_NAMES, PARENTS
from syncsde.motion.skeleton import CHILDREN, T_POSE, bone_lengths, forward_kinematics, solve_rotations

END_SITE = 0.1  # metres past each leaf joint (head top, toes, hands), along its bone: gives leaf bones a length


def motion_bvh(joints: np.ndarray, fps: float) -> tuple[str, dict[str, float]]:
    """(T, 22, 3) joint positions → (BVH text, {"mean", "max"} joint position error of the BVH skeleton, metres)."""
    j = torch.as_tensor(joints, dtype=torch.float64)
    directions = torch.nn.functional.normalize(torch.as_tensor(T_POSE), dim=-1)
    offsets = directions * bone_lengths(j)[:, None]
    local = solve_rotations(j, offsets)
    err = (forward_kinematics(local, offsets, j[:, 0]) - j).norm(dim=-1)
    error = {"mean": round(float(err.mean()), 6), "max": round(float(err.max()), 6)}
    euler = roma.rotmat_to_euler("ZYX", local, degrees=True)  # (T, 22, 3): z, y, x
    lines = ["HIERARCHY"]

    def joint(k: int, depth: int) -> None:
        pad = "  " * depth
        o = offsets[k].tolist()
        head = "ROOT" if PARENTS[k] < 0 else "JOINT"
        channels = "6 Xposition Yposition Zposition" if PARENTS[k] < 0 else "3"
        lines.extend(
            [
                f"{pad}{head} {JOINT_NAMES[k]}",
                f"{pad}{{",
                f"{pad}  OFFSET {o[0]:.6f} {o[1]:.6f} {o[2]:.6f}",
                f"{pad}  CHANNELS {channels} Zrotation Yrotation Xrotation",
            ]
        )
        for c in CHILDREN[k]:
            joint(c, depth + 1)
        if not CHILDREN[k]:
            e = (directions[k] * END_SITE).tolist()
            lines.extend(
                [f"{pad}  End Site", f"{pad}  {{", f"{pad}    OFFSET {e[0]:.6f} {e[1]:.6f} {e[2]:.6f}", f"{pad}  }}"]
            )
        lines.append(f"{pad}}}")

    joint(0, 0)
    order = _depth_first(0)
    frames = torch.cat([j[:, 0], euler[:, order].flatten(1)], dim=1).numpy()
    lines += ["MOTION", f"Frames: {len(frames)}", f"Frame Time: {1 / fps:.6f}"]
    lines += [" ".join(f"{v:.6f}" for v in row) for row in frames]
    return "\n".join(lines) + "\n", error


def _depth_first(k: int) -> list[int]:
    """Joints in the order their channels appear in the file."""
    return [k] + [d for c in CHILDREN[k] for d in _depth_first(c)]
