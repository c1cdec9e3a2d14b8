"""Long-horizon human motion (SYNCSDE.md §6.6, [reconstructed]: no official code exists).

K segments of ``segment_frames`` (120) frames overlapping by ``overlap`` (30) frames, one text per segment. By
analogy with wide images (§6.3): segment i is pulled toward segment i−1 on the overlap,
    x^i ← x̃^i − c_t W ⊙ (x_t^i − shift(x_t^{i−1})),
where shift puts frames 90..119 of x^{i−1} at frames 0..29 (zeros elsewhere) and W = 1 on frames 0..29; segment 0
is free. Output: the concatenation with each overlap taken from the later segment, 120 + 90(K−1) frames. The
baselines see the whole sequence as the canonical variable (averaging on the overlaps = MultiDiffusion).

Outputs per sample: a filmstrip PNG of the skeleton, a skeleton animation (bones coloured by segment; GIF, and MP4
with the video extra), the joints (``_joints.npy``, (frames, 22, 3)), the features (``_features.npy``), a BVH of the
skeleton (``NNNNN/motion.bvh``, :mod:`syncsde.motion.bvh`), and — with the user's SMPL/SMPL-H/SMPL-X model files
(``smpl_model``) — the body parameters as an AMASS-style ``NNNNN/smpl.npz`` and the posed vertices
(``_smpl.npy``, (frames, V, 3)). Joint rotations, for the BVH and SMPL, are solved from the joint positions, which
every backbone predicts (:mod:`syncsde.motion.smpl` says why MDM's HumanML3D rotation features are not SMPL's); the
sidecar says so, and gives the BVH skeleton's mean and largest deviation from the joints (``bvh_error_m``).
"""

from __future__ import annotations

import colorsys
import io
from typing import Literal

import numpy as np
import torch
from jsonargparse.typing import PositiveInt

from syncsde.backbones.base import Backbone
from syncsde.coupling import SyncProblem
from syncsde.errors import InputError
from syncsde.motion.bvh import motion_bvh
from syncsde.motion.humanml import ROTATIONS
from syncsde.motion.render import filmstrip, skeleton_frames
from syncsde.strategies import Strategy
from syncsde.task import DEFAULT_STRATEGY, SampleOutput, SyncTask
from syncsde.windows import Windows


class LongMotion(SyncTask):
    """Args (besides :class:`~syncsde.task.SyncTask`'s):
    segment_frames: frames per segment (120); overlap: frames shared by consecutive segments (30).
    init_from_canonical: one noise over the whole sequence, cropped per segment.
    smpl_model: folder (or SMPL .pkl) of the user's body model files, for the AMASS-style parameters and meshes.
    smpl_model_type: smpl, smplh or smplx (folders in ``smplx.create``'s layout).
    render_size: side of the skeleton drawings in pixels; filmstrip_every: frames between filmstrip poses.
    """

    task_name = "motion"
    needs = frozenset({"joints", "vp_schedule"})
    provides = frozenset({"couplings", "canonical", "denoise"})

    def __init__(
        self,
        backbone: Backbone,
        strategy: Strategy = DEFAULT_STRATEGY,
        segment_frames: PositiveInt = 120,
        overlap: PositiveInt = 30,
        init_from_canonical: bool = True,
        smpl_model: str | None = None,
        smpl_model_type: Literal["smpl", "smplh", "smplx"] = "smpl",
        render_size: PositiveInt = 160,
        filmstrip_every: PositiveInt = 15,
        guidance_scale: float = 2.5,
        **kwargs,
    ):
        super().__init__(backbone, strategy, guidance_scale=guidance_scale, negative_prompt="", **kwargs)
        if not 0 < overlap < segment_frames:
            raise InputError(f"overlap {overlap} must be between 1 and segment_frames − 1 ({segment_frames - 1})")
        if smpl_model is not None:
            from syncsde.motion.smpl import check_model_path

            check_model_path(smpl_model)  # before sampling, not after
        self.segment_frames, self.overlap = segment_frames, overlap
        self.init_from_canonical = init_from_canonical
        self.smpl_model, self.smpl_model_type = smpl_model, smpl_model_type
        self.render_size, self.filmstrip_every = render_size, filmstrip_every

    def windows(self, segments: int) -> Windows:
        stride = self.segment_frames - self.overlap
        return Windows(self.segment_frames + stride * (segments - 1), self.segment_frames, stride)

    def segments(self, batch) -> int:
        counts = {len(s["texts"]) for s in batch}
        if len(counts) > 1:
            raise InputError("samples of one batch have different numbers of segments; use data.batch_size 1")
        return counts.pop()

    def validate(self, record):
        self.backbone.encode_prompts(list(record["texts"]))  # texts the backbone reads (the embedded model: actions)

    def trajectory_prompts(self, batch):
        return [list(s["texts"]) for s in batch]

    def initial_noise(self, batch, generators):
        win = self.windows(self.segments(batch))
        C = self.backbone.channels
        if self.init_from_canonical:
            z = torch.stack([torch.randn(C, 1, win.L, generator=g) for g in generators])
            return win.canonical((C, 1)).forward(z)
        return torch.stack([torch.randn(win.n, C, 1, win.w, generator=g) for g in generators])

    def problem(self, batch):
        win = self.windows(self.segments(batch))
        return SyncProblem(win.n, win.couplings(), canonical=win.canonical((self.backbone.channels, 1)))

    def assemble(self, x0, batch):
        K = x0.shape[1]
        sequence = self.windows(K).assemble(x0)  # (B, C, 1, L)
        joints = self.backbone.to_joints(sequence).cpu().numpy()  # (B, L, 22, 3)
        stride = self.segment_frames - self.overlap
        segment_of_frame = np.minimum(np.arange(sequence.shape[-1]) // stride, K - 1)
        palette = np.array([colorsys.hsv_to_rgb(k / max(K, 1), 0.8, 0.75) for k in range(K)])
        fps = 20  # HumanML3D's frame rate (MDM and the embedded procedural model)
        rotations = "solved from the joint positions (inverse kinematics; no twist about the bones)" + (
            "; the backbone's HumanML3D rotation features are not SMPL joint rotations and are not used"
            if self.backbone.channels >= ROTATIONS.stop
            else "; the backbone predicts joint positions only"
        )
        outs = []
        for b, s in enumerate(batch):
            frames = skeleton_frames(joints[b], self.render_size, palette[segment_of_frame])
            bvh, error = motion_bvh(joints[b], fps)
            meta = {
                "frames": int(sequence.shape[-1]),
                "segments": K,
                "fps": fps,
                "rotations": rotations,
                "bvh_error_m": error,
            }
            arrays = {"joints": joints[b], "features": sequence[b, :, 0].T.cpu().numpy()}
            files = {"motion.bvh": bvh.encode()}
            if self.smpl_model is not None:
                from syncsde.motion.smpl import smpl_export

                amass, arrays["smpl"] = smpl_export(joints[b], self.smpl_model, fps, self.smpl_model_type)
                buf = io.BytesIO()
                np.savez(buf, **amass)
                files["smpl.npz"] = buf.getvalue()
            else:
                meta["smpl"] = (
                    "not exported: set smpl_model to a folder of SMPL/SMPL-H/SMPL-X model files (user-supplied)"
                )
            outs.append(
                SampleOutput(
                    s["sample_id"],
                    filmstrip(frames, self.filmstrip_every),
                    meta,
                    animations={"skeleton": frames},
                    arrays=arrays,
                    files=files,
                )
            )
        return outs

    def describe(self):
        return {
            "segment_frames": self.segment_frames,
            "overlap": self.overlap,
            "init_from_canonical": self.init_from_canonical,
        }
