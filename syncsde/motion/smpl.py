"""SMPL/SMPL-H/SMPL-X parameters of generated motion, as an AMASS-style ``.npz``, and posed meshes (smplx; the
user supplies the body model files, whose licence forbids shipping them).

The parameters are solved from the joint positions on the body model's own rest skeleton (its regressed joints at
β = 0) by analytic inverse kinematics (:func:`~syncsde.motion.skeleton.solve_rotations`): global orientation and
body pose as axis-angle (roma), translation = pelvis − rest pelvis, hands, jaw and eyes at rest. The posed body
follows every bone's direction; its bone lengths are the body model's. HumanML3D's own rotation features (dims
67..192, what MDM predicts) are not used: they are bone-alignment rotations from the dataset's inverse kinematics
over its own rest pose (arms down) and kinematic chains, not SMPL joint rotations — fed to SMPL directly they give
wrong poses (MDM issues #165, #187; HumanML3D issue #117) — and they carry no twist the positions lack.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import roma
import torch

from syncsde.errors import InputError
from syncsde.motion.humanml import NUM_JOINTS, PARENTS
from syncsde.motion.skeleton import solve_rotations


def check_model_path(model_path: str | Path) -> Path:
    path = Path(model_path)
    if not path.exists():
        raise InputError(
            f"--model.smpl_model '{model_path}' not found; SMPL export needs the SMPL/SMPL-H/SMPL-X "
            "files, which their licence forbids shipping: download them from smpl.is.tue.mpg.de and give their "
            "folder (or leave smpl_model unset for joints, BVH and video only)"
        )
    return path


@lru_cache(maxsize=2)
def load_body_model(model_path: str, model_type: str = "smpl"):
    """An smplx body model from a folder (``smplx.create`` layout) or an SMPL ``.pkl``/``.npz`` file."""
    import smplx

    path = check_model_path(model_path)
    return smplx.create(str(path), model_type=model_type) if path.is_dir() else smplx.SMPL(str(path))


def rest_joints(model) -> torch.Tensor:
    """(22, 3) rest positions of the body joints of an smplx model at β = 0."""
    with torch.no_grad():
        return (model.J_regressor @ model.v_template)[:NUM_JOINTS].double()


def smpl_params(joints: np.ndarray, rest: torch.Tensor) -> dict[str, torch.Tensor]:
    """(T, 22, 3) joint positions, (22, 3) rest joints → global_orient (T, 3), body (T, 21·3), transl (T, 3)."""
    j = torch.as_tensor(joints, dtype=torch.float64)
    offsets = torch.stack([rest[k] - rest[max(p, 0)] for k, p in enumerate(PARENTS)])
    rotvec = roma.rotmat_to_rotvec(solve_rotations(j, offsets))  # (T, 22, 3)
    return {"global_orient": rotvec[:, 0], "body": rotvec[:, 1:].flatten(1), "transl": j[:, 0] - rest[0]}


def smpl_export(joints: np.ndarray, model_path: str | Path, fps: float, model_type: str = "smpl"):
    """AMASS-style arrays — ``poses`` (T, 3·J) axis-angle over all of the model's J joints, ``trans``, ``betas``,
    ``gender``, ``mocap_framerate`` — and the posed vertices (T, V, 3)."""
    model = load_body_model(str(model_path), model_type)
    p = smpl_params(joints, rest_joints(model))
    T = p["body"].shape[0]
    rest_of_model = 3 * (model.NUM_JOINTS + 1 - NUM_JOINTS)  # SMPL's hands; SMPL-H/X's fingers, jaw, eyes
    poses = torch.cat([p["global_orient"], p["body"], torch.zeros(T, rest_of_model, dtype=torch.float64)], 1)
    body_pose = torch.cat([p["body"], torch.zeros(T, 3 * (model.NUM_BODY_JOINTS - (NUM_JOINTS - 1)))], 1)
    with torch.no_grad():
        out = model(
            global_orient=p["global_orient"].float(),
            body_pose=body_pose.float(),
            transl=p["transl"].float(),
            betas=torch.zeros(T, model.num_betas),
        )
    amass = {
        "poses": poses.numpy(),
        "trans": p["transl"].numpy(),
        "betas": np.zeros(model.num_betas),
        "gender": np.array(getattr(model, "gender", "neutral")),
        "mocap_framerate": np.array(float(fps)),
    }
    return amass, out.vertices.numpy()
