"""HumanML3D's 263-dimensional rotation-invariant features and their conversion to 22 joint positions.

Layout per frame (HumanML3D, Guo et al. 2022): root angular velocity about y (1), root linear velocity in the
root's heading frame (x, z: 2), root height (1), local joint positions of joints 1..21 relative to the root in the
heading frame (63), joint 6D rotations (126), local joint velocities (66), foot contacts (4). The positions are
recovered exactly as the dataset's own ``recover_from_ric``: integrate the heading, rotate and integrate the root
velocity, then place the local joint positions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import roma
import torch
from torch import Tensor

from syncsde.errors import InputError

NUM_JOINTS = 22
FEATURES = 263
ROTATIONS = slice(67, 67 + 21 * 6)  # the 6D rotations of joints 1..21 among the features
# MDM's diffusion: cosine schedule, 1000 steps, x₀ prediction (also used by the embedded procedural model)
SCHEDULER = dict(
    beta_schedule="squaredcos_cap_v2",
    num_train_timesteps=1000,
    prediction_type="sample",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=0,
)
# parent of each of the 22 SMPL body joints (HumanML3D's kinematic chains), for drawing skeletons
PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19)
JOINT_NAMES = (
    "pelvis",
    "left_hip",
    "right_hip",
    "spine1",
    "left_knee",
    "right_knee",
    "spine2",
    "left_ankle",
    "right_ankle",
    "spine3",
    "left_foot",
    "right_foot",
    "neck",
    "left_collar",
    "right_collar",
    "head",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
)


def qinv(q: Tensor) -> Tensor:
    """Inverse (conjugate) of unit quaternions in HumanML3D's (w, x, y, z) order."""
    return q * torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=q.dtype, device=q.device)


def qrot(q: Tensor, v: Tensor) -> Tensor:
    """Rotate vectors v (..., 3) by unit quaternions q (..., 4) in HumanML3D's (w, x, y, z) order (roma: x, y, z, w)."""
    return roma.quat_action(roma.quat_wxyz_to_xyzw(q), v, is_normalized=True)


def recover_root(data: Tensor) -> tuple[Tensor, Tensor]:
    """Root rotation quaternions (..., F, 4) and root positions (..., F, 3) from features (..., F, 263)."""
    rot_vel = data[..., 0]
    angle = torch.zeros_like(rot_vel)
    angle[..., 1:] = rot_vel[..., :-1]
    angle = torch.cumsum(angle, dim=-1)
    quat = torch.zeros(*data.shape[:-1], 4, dtype=data.dtype, device=data.device)
    quat[..., 0], quat[..., 2] = torch.cos(angle), torch.sin(angle)
    pos = torch.zeros(*data.shape[:-1], 3, dtype=data.dtype, device=data.device)
    pos[..., 1:, 0], pos[..., 1:, 2] = data[..., :-1, 1], data[..., :-1, 2]
    pos = torch.cumsum(qrot(qinv(quat), pos), dim=-2)
    pos[..., 1] = data[..., 3]
    return quat, pos


def features_to_joints(data: Tensor, joints: int = NUM_JOINTS) -> Tensor:
    """(..., F, 263) de-normalised features → (..., F, 22, 3) joint positions (HumanML3D ``recover_from_ric``)."""
    if data.shape[-1] < 4 + (joints - 1) * 3:
        raise InputError(f"features have {data.shape[-1]} dims; HumanML3D needs {FEATURES}")
    quat, root = recover_root(data)
    local = data[..., 4 : 4 + (joints - 1) * 3].reshape(*data.shape[:-1], joints - 1, 3)
    local = qrot(qinv(quat)[..., None, :].expand(*local.shape[:-1], 4), local)
    local = local + torch.stack([root[..., 0], torch.zeros_like(root[..., 0]), root[..., 2]], -1)[..., None, :]
    return torch.cat([root[..., None, :], local], dim=-2)


class Normalizer:
    """HumanML3D feature statistics (``Mean.npy`` / ``Std.npy`` shipped with the dataset and MDM checkpoints)."""

    def __init__(self, mean: str | Path | np.ndarray, std: str | Path | np.ndarray):
        self.mean = torch.as_tensor(_load(mean, "mean"), dtype=torch.float32)
        self.std = torch.as_tensor(_load(std, "std"), dtype=torch.float32)
        if self.mean.shape != self.std.shape:
            raise InputError(f"mean {tuple(self.mean.shape)} and std {tuple(self.std.shape)} differ in shape")

    def normalize(self, x: Tensor) -> Tensor:
        return (x - self.mean.to(x)) / self.std.to(x)

    def denormalize(self, x: Tensor) -> Tensor:
        return x * self.std.to(x) + self.mean.to(x)


def _load(value, what):
    if isinstance(value, (str, Path)):
        option = f"--model.backbone.{what}"
        if not Path(value).is_file():
            raise InputError(
                f"{option} '{value}' not found; give the HumanML3D {what.capitalize()}.npy of the checkpoint"
            )
        try:
            return np.load(value)
        except (OSError, ValueError) as e:
            raise InputError(
                f"{option} '{value}' is not a .npy array ({e}); give HumanML3D's {what.capitalize()}.npy"
            ) from None
    return value
