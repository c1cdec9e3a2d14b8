"""SMPL/SMPL-X mesh sequences from HumanML3D features through smplx (the user supplies the model files).

HumanML3D's features hold 6D local rotations of joints 1..21 (dims 67..192) and the root's heading and position;
they are turned into SMPL ``body_pose`` (axis-angle; hand joints zero), ``global_orient`` (the heading about y) and
``transl``, and posed with smplx. The dataset's rest pose is not exactly SMPL's, so the mesh follows the motion
closely but not to the millimetre (MDM's own renderer fits SMPL to the joints instead).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from syncsde.errors import InputError
from syncsde.motion.humanml import recover_root

ROT = slice(67, 67 + 21 * 6)


def rot6d_to_matrix(d6: Tensor) -> Tensor:
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    return torch.stack([b1, b2, torch.cross(b1, b2, dim=-1)], dim=-2)


def matrix_to_axis_angle(m: Tensor) -> Tensor:
    """Rotation matrices (..., 3, 3) → axis-angle (..., 3)."""
    cos = ((m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2] - 1) / 2).clamp(-1 + 1e-7, 1 - 1e-7)
    angle = torch.acos(cos)
    axis = torch.stack([m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1)
    return F.normalize(axis, dim=-1) * angle[..., None]


def smpl_params(features: Tensor) -> dict[str, Tensor]:
    """(T, 263) de-normalised features → SMPL global_orient (T, 3), body_pose (T, 69), transl (T, 3)."""
    if features.shape[-1] < ROT.stop:
        raise InputError(
            "mesh export needs joint rotations (HumanML3D's 263 features, e.g. from MDM); this "
            f"backbone predicts {features.shape[-1]} dims (positions only)"
        )
    T = features.shape[0]
    quat, root = recover_root(features)
    heading = 2 * torch.atan2(quat[:, 2], quat[:, 0])  # the quaternion's angle is a half-angle (HumanML3D)
    global_orient = torch.stack([torch.zeros(T), -heading, torch.zeros(T)], -1)
    body = matrix_to_axis_angle(rot6d_to_matrix(features[:, ROT].reshape(T, 21, 6)))
    body_pose = torch.cat([body.reshape(T, 63), torch.zeros(T, 6)], -1)  # SMPL's two hand joints at rest
    return {"global_orient": global_orient, "body_pose": body_pose, "transl": root}


def smpl_sequence(backbone, sequence: Tensor, model_path: str | Path, model_type: str = "smpl") -> np.ndarray:
    """Vertices (T, V, 3) of the posed body model for one generated sequence (C, 1, T) of normalised features."""
    import smplx

    path = Path(model_path)
    if not path.exists():
        raise InputError(
            f"SMPL model files not found at '{model_path}'. Mesh export needs the SMPL/SMPL-X files, "
            "which their licence forbids shipping: download them from smpl.is.tue.mpg.de and set "
            "smpl_model to their folder (or leave smpl_model unset for joints only)"
        )
    normalizer = getattr(backbone, "normalizer", None)
    feats = sequence[:, 0].T.float().cpu()
    feats = normalizer.denormalize(feats) if normalizer is not None else feats
    params = smpl_params(feats)
    model = smplx.create(str(path), model_type=model_type) if path.is_dir() else smplx.SMPL(str(path))
    with torch.no_grad():
        out = model(**params, betas=torch.zeros(feats.shape[0], model.num_betas))
    return out.vertices.numpy()
