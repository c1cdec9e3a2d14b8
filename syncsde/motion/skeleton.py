"""The 22-joint SMPL body skeleton: forward kinematics, and joint rotations solved from joint positions.

Conventions (SMPL's): y up, facing +z, the body's left at +x; the local rotation of joint k turns the bones from k to
its children, G_k = G_parent(k) · L_k, and p_c = p_k + G_k · d_c for each child c with rest offset d_c.

:func:`solve_rotations` is analytic inverse kinematics: a joint with several children (pelvis, spine3) takes the
rotation that best maps its rest offsets onto the observed bones (orthogonal Procrustes, roma); a joint with one
child takes the smallest rotation from where its parent carries the rest bone to the observed bone (no twist about
the bone, which positions cannot tell); a leaf keeps its parent's orientation. For a rigid skeleton moved by
twist-free rotations (the embedded procedural motions) this recovers the rotations, and the positions exactly.
"""

from __future__ import annotations

import numpy as np
import roma
import torch
from torch import Tensor

from syncsde.motion.humanml import PARENTS

# rest offsets from the parent joint (metres), arms down: the embedded procedural skeleton
OFFSETS = np.array(
    [
        [0, 0, 0],
        [0.06, -0.09, 0],
        [-0.06, -0.09, 0],
        [0, 0.11, 0],
        [0, -0.38, 0],
        [0, -0.38, 0],
        [0, 0.13, 0],
        [0, -0.40, 0],
        [0, -0.40, 0],
        [0, 0.05, 0],
        [0, -0.05, 0.12],
        [0, -0.05, 0.12],
        [0, 0.21, 0],
        [0.07, 0.12, 0],
        [-0.07, 0.12, 0],
        [0, 0.09, 0.02],
        [0.11, 0.03, 0],
        [-0.11, 0.03, 0],
        [0, -0.26, 0],
        [0, -0.26, 0],
        [0, -0.25, 0],
        [0, -0.25, 0],
    ],
    dtype=np.float64,
)
# the same skeleton in a T-pose (upper arms and forearms along ±x): the rest pose of BVH exports
T_POSE = OFFSETS.copy()
T_POSE[[18, 19, 20, 21]] = [[0.26, 0, 0], [-0.26, 0, 0], [0.25, 0, 0], [-0.25, 0, 0]]
CHILDREN = [[c for c, p in enumerate(PARENTS) if p == j] for j in range(len(PARENTS))]


def forward_kinematics(local: Tensor, offsets: Tensor, root: Tensor | None = None) -> Tensor:
    """(..., 22, 3, 3) local rotations, (22, 3) rest offsets [, (..., 3) root positions] → (..., 22, 3) positions."""
    glob, pos = [], []
    for j, p in enumerate(PARENTS):
        if p < 0:
            glob.append(local[..., j, :, :])
            zero = torch.zeros_like(local[..., j, :, 0])
            pos.append(zero if root is None else zero + root.to(local))
            continue
        glob.append(glob[p] @ local[..., j, :, :])
        pos.append(pos[p] + glob[p] @ offsets[j].to(local))
    return torch.stack(pos, dim=-2)


def solve_rotations(joints: Tensor, offsets: Tensor) -> Tensor:
    """(T, 22, 3) joint positions and (22, 3) rest offsets → (T, 22, 3, 3) local rotations (module docstring)."""
    T = joints.shape[0]
    offsets = offsets.to(joints)
    eye = torch.eye(3, dtype=joints.dtype).expand(T, 3, 3)
    glob: list[Tensor] = []
    for j, p in enumerate(PARENTS):
        parent = eye if p < 0 else glob[p]
        kids = CHILDREN[j]
        bones = joints[:, kids] - joints[:, j : j + 1]  # (T, k, 3) observed
        if len(kids) > 1:  # argmin_R Σ_c |R d_c − v_c|²
            glob.append(roma.special_procrustes(torch.einsum("tci,cj->tij", bones, offsets[kids])))
        elif len(kids) == 1:
            glob.append(_swing(parent @ offsets[kids[0]], bones[:, 0]) @ parent)
        else:
            glob.append(parent)
    glob_t = torch.stack(glob, dim=1)
    parents = torch.stack([eye if p < 0 else glob[p] for p in PARENTS], dim=1)
    return parents.transpose(-1, -2) @ glob_t


def _swing(a: Tensor, b: Tensor) -> Tensor:
    """The smallest rotations taking directions a (T, 3) to b (T, 3); any axis ⊥ a for opposite directions."""
    a, b = torch.nn.functional.normalize(a, dim=-1), torch.nn.functional.normalize(b, dim=-1)
    axis = torch.cross(a, b, dim=-1)
    s, c = axis.norm(dim=-1), (a * b).sum(-1)
    other = torch.where((a[:, :1].abs() < 0.9), torch.tensor([1.0, 0, 0]).to(a), torch.tensor([0, 1.0, 0]).to(a))
    fallback = torch.nn.functional.normalize(torch.cross(a, other, dim=-1), dim=-1)
    unit = torch.where((s > 1e-9)[:, None], axis / s.clamp_min(1e-12)[:, None], fallback)
    return roma.rotvec_to_rotmat(unit * torch.atan2(s, c)[:, None])


def bone_lengths(joints: Tensor) -> Tensor:
    """(22,) median length over frames of each joint's bone from its parent (0 for the root)."""
    lengths = torch.stack([(joints[:, j] - joints[:, max(p, 0)]).norm(dim=-1) for j, p in enumerate(PARENTS)], 1)
    return lengths.median(dim=0).values
