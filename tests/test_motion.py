"""Motion: HumanML3D feature-to-joint conversion on constructed examples."""

import math

import torch

from syncsde.motion.humanml import FEATURES, features_to_joints, qrot


def test_qrot_quarter_turn_about_y():
    q = torch.tensor([math.cos(math.pi / 4), 0.0, math.sin(math.pi / 4), 0.0])  # 90° about +y
    torch.testing.assert_close(qrot(q, torch.tensor([1.0, 0.0, 0.0])), torch.tensor([0.0, 0.0, -1.0]))


def test_straight_walk_without_turning():
    """No rotation, constant forward root velocity v along z: the root advances v per frame, joints ride along."""
    F, v = 5, 0.1
    data = torch.zeros(F, FEATURES)
    data[:, 2] = v  # root linear velocity (z) in the heading frame
    data[:, 3] = 0.9  # root height
    data[:, 4:7] = torch.tensor([0.1, -0.1, 0.0])  # joint 1 (left hip) relative to the root
    joints = features_to_joints(data)
    assert joints.shape == (F, 22, 3)
    torch.testing.assert_close(joints[:, 0, 2], torch.arange(F) * v)
    torch.testing.assert_close(joints[:, 0, 1], torch.full((F,), 0.9))
    torch.testing.assert_close(
        joints[:, 1], joints[:, 0] * torch.tensor([1.0, 0.0, 1.0]) + torch.tensor([0.1, -0.1, 0.0])
    )


def test_turning_in_place_rotates_local_joints():
    """HumanML3D's heading quaternion is (cos a, 0, sin a, 0) with a the accumulated feature 0, a half-angle: a value
    of π/4 turns the body by 90°, and frame 1's local offsets are rotated by the inverse heading."""
    data = torch.zeros(2, FEATURES)
    data[:, 0] = math.pi / 4
    data[:, 4:7] = torch.tensor([1.0, 0.0, 0.0])
    joints = features_to_joints(data)
    torch.testing.assert_close(joints[0, 1], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(joints[1, 1], torch.tensor([0.0, 0.0, 1.0]), atol=1e-6, rtol=0)


def test_mdm_loads_official_key_layout(tmp_path):
    """A checkpoint written in the official layout (random weights, CLIP keys included as in some releases) loads;
    the network maps (B, 263, 1, T) to the same shape."""
    from syncsde.motion.mdm import MDM, MDMNet

    net = MDMNet(latent_dim=64, ff_size=128, num_layers=2, num_heads=4)
    state = {k: torch.randn_like(v) for k, v in net.state_dict().items()}
    official = {
        "input_process.poseEmbedding.weight",
        "sequence_pos_encoder.pe",
        "embed_timestep.time_embed.0.weight",
        "embed_timestep.time_embed.2.bias",
        "embed_text.weight",
        "output_process.poseFinal.weight",
        "seqTransEncoder.layers.1.self_attn.in_proj_weight",
        "seqTransEncoder.layers.0.linear1.weight",
        "seqTransEncoder.layers.0.norm2.bias",
    }
    assert official <= set(state)
    torch.save({**state, "clip_model.positional_embedding": torch.zeros(3)}, tmp_path / "model000475000.pt")
    mdm = MDM(str(tmp_path / "model000475000.pt"), latent_dim=64, ff_size=128, num_layers=2, num_heads=4)
    torch.testing.assert_close(mdm.net.embed_text.weight, state["embed_text.weight"])
    out = mdm(torch.randn(2, FEATURES, 1, 30), torch.tensor([5, 900]), torch.randn(2, 512))
    assert out.shape == (2, FEATURES, 1, 30)
    torch.save({"model": {k: v for k, v in state.items() if "embed_text" not in k}}, tmp_path / "bad.pt")
    from syncsde.errors import InputError

    try:
        MDM(str(tmp_path / "bad.pt"), latent_dim=64, ff_size=128, num_layers=2, num_heads=4)
        raise AssertionError("a checkpoint without embed_text must be refused")
    except InputError as e:
        assert "embed_text" in str(e)


import numpy as np  # noqa: E402
import pytest  # noqa: E402

from syncsde.coupling import coupling_residuals  # noqa: E402
from syncsde.errors import InputError  # noqa: E402
from syncsde.motion.procedural import ProceduralMotion, action_clip, joints_to_features, label  # noqa: E402
from syncsde.strategies import Independent, SyncSDE  # noqa: E402


@pytest.fixture(scope="module")
def motion_model():
    return ProceduralMotion(clips=64, rank=24)


def record(texts, i=0):
    return {"texts": texts, "prompt": " | ".join(texts), "sample_id": i, "seed": 0}


def test_joints_to_features_inverts_recovery():
    j = action_clip("run", 60, np.random.default_rng(1))
    rec = features_to_joints(torch.tensor(joints_to_features(j))).numpy()
    np.testing.assert_allclose(rec, j - j[0, 0] * np.array([1, 0, 1]), atol=1e-9)  # up to the start position


def test_seam_coupling_exactly_as_spec(motion_model):
    from syncsde.tasks import LongMotion

    task = LongMotion(motion_model, SyncSDE(5.0), progress=False)
    batch = [record(["a person walks", "a person jumps", "a person kicks"])]
    problem = task.problem(batch)
    assert [(c.target, c.source) for c in problem.couplings] == [(1, 0), (2, 1)]  # segment 0 free, chain
    x = torch.randn(1, 3, 67, 1, 120)
    for c in problem.couplings:
        f = c.pulled_toward(x)
        torch.testing.assert_close(f[..., :30], x[:, c.source, ..., 90:120])  # frames 90..119 -> 0..29
        assert torch.count_nonzero(f[..., 30:]) == 0
        assert torch.equal(c.weight, (torch.arange(120) < 30).float())
    assert task.windows(3).L == 120 + 90 * 2


def test_motion_outputs_and_sync_effect(motion_model):
    from syncsde.tasks import LongMotion

    batch = [record(["a person walks forward", "a person jumps"])]
    gaps = {}
    for name, strat in (("sync", SyncSDE(5.0)), ("free", Independent())):
        task = LongMotion(
            motion_model, strat, num_inference_steps=20, guidance_scale=1.0, init_from_canonical=False, progress=False
        )
        gaps[name] = coupling_residuals(task.trajectories(batch), task.problem(batch).couplings).abs().mean()
    assert (
        gaps["sync"] < 0.75 * gaps["free"]
    )  # measured 0.61x at 20 steps: the (t/T) weight fades, the prior pulls back
    out = task.run(batch)[0]
    assert out.arrays["joints"].shape == (210, 22, 3) and out.arrays["features"].shape == (210, 67)
    assert len(out.animations["skeleton"]) == 210 and out.meta["frames"] == 210


def test_unknown_action_and_missing_smpl(motion_model, tmp_path):
    from syncsde.tasks import LongMotion

    with pytest.raises(InputError, match="knows no action in 'a person juggles'"):
        label("a person juggles")
    with pytest.raises(InputError, match="smpl_model .* not found"):  # checked when the task is made, before sampling
        LongMotion(motion_model, SyncSDE(5.0), num_inference_steps=2, smpl_model=str(tmp_path / "nope"), progress=False)


def test_mdm_task_end_to_end_with_tiny_clip(tmp_path):
    """A random MDM (official layout, small) with the embedded tiny CLIP as text encoder: the whole task runs, the
    empty prompt is MDM's zero (masked) condition, and features become joints via the HumanML3D statistics."""
    from syncsde.motion.mdm import MDM
    from syncsde.tasks import LongMotion

    np.save(tmp_path / "Mean.npy", np.zeros(FEATURES, np.float32))
    np.save(tmp_path / "Std.npy", np.ones(FEATURES, np.float32))
    mdm = MDM(
        None,
        str(tmp_path / "Mean.npy"),
        str(tmp_path / "Std.npy"),
        clip="syncsde:tiny-clip",
        clip_dim=64,
        latent_dim=32,
        ff_size=64,
        num_layers=1,
        num_heads=2,
    )
    emb = mdm.encode_prompts(["a person walks", ""])
    assert emb.shape == (2, 64) and torch.count_nonzero(emb[1]) == 0 and torch.count_nonzero(emb[0]) > 0
    task = LongMotion(mdm, SyncSDE(5.0), segment_frames=40, overlap=10, num_inference_steps=3, progress=False)
    out = task.run([record(["a person walks", "a person jumps"])])[0]
    assert out.arrays["joints"].shape == (70, 22, 3) and out.arrays["features"].shape == (70, FEATURES)
    assert "not SMPL joint rotations" in out.meta["rotations"] and b"Frames: 70" in out.files["motion.bvh"]


def synthetic_smpl(path, rng):
    """A synthetic SMPL model file (random shapes, real sizes) whose regressed rest joints are a plausible skeleton."""
    import pickle

    from syncsde.motion.skeleton import T_POSE

    V, J = 6890, 24
    kintree = np.array(
        [[4294967295, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21], list(range(J))]
    )
    rest = np.zeros((J, 3))
    for k in range(1, 22):
        rest[k] = rest[kintree[0, k]] + T_POSE[k] * rng.uniform(0.9, 1.1)
    rest[22], rest[23] = rest[20] + [0.08, 0, 0], rest[21] - [0.08, 0, 0]
    regressor = np.zeros((J, V))
    regressor[np.arange(J), np.arange(J)] = 1.0  # joint k = vertex k
    v_template = rng.normal(size=(V, 3)) * 0.3
    v_template[:J] = rest
    weights = rng.random((V, J))
    model = {
        "v_template": v_template,
        "shapedirs": rng.normal(size=(V, 3, 10)) * 1e-3,
        "posedirs": rng.normal(size=(V, 3, 207)) * 1e-4,
        "J_regressor": regressor,
        "kintree_table": kintree,
        "weights": weights / weights.sum(1, keepdims=True),
        "f": rng.integers(0, V, (13776, 3)).astype(np.int64),
    }
    path.write_bytes(pickle.dumps(model))
    return rest[:22]


def test_smpl_parameters_from_joints_on_synthetic_body_model(tmp_path):
    """Joints made by the body model's own skeleton (smplx, known poses) are solved back to those poses: the AMASS
    arrays, posed again by smplx, give back the joints; the sequence walks along z by its translation."""
    import smplx

    from syncsde.motion.smpl import smpl_export

    rng = np.random.default_rng(0)
    synthetic_smpl(tmp_path / "SMPL_NEUTRAL.pkl", rng)
    model = smplx.SMPL(str(tmp_path / "SMPL_NEUTRAL.pkl"))
    T = 6
    pose = torch.tensor(rng.normal(size=(T, 69)) * 0.3, dtype=torch.float32)
    pose[:, 63:] = 0  # SMPL's hands (not among the 22 joints)
    orient, transl = torch.tensor(rng.normal(size=(T, 3)) * 0.5, dtype=torch.float32), torch.zeros(T, 3)
    transl[:, 2] = torch.arange(T) * 0.1
    with torch.no_grad():
        joints = model(global_orient=orient, body_pose=pose, transl=transl, betas=torch.zeros(T, 10)).joints[:, :22]
    amass, verts = smpl_export(joints.numpy(), str(tmp_path / "SMPL_NEUTRAL.pkl"), 20)
    assert amass["poses"].shape == (T, 72) and amass["trans"].shape == (T, 3) and amass["betas"].shape == (10,)
    assert str(amass["gender"]) == "neutral" and float(amass["mocap_framerate"]) == 20.0
    assert verts.shape == (T, 6890, 3) and np.isfinite(verts).all()
    with torch.no_grad():
        again = model(
            global_orient=torch.tensor(amass["poses"][:, :3], dtype=torch.float32),
            body_pose=torch.tensor(amass["poses"][:, 3:], dtype=torch.float32),
            transl=torch.tensor(amass["trans"], dtype=torch.float32),
            betas=torch.zeros(T, 10),
        ).joints[:, :22]
    torch.testing.assert_close(again, joints, atol=1e-4, rtol=0)


def test_axis_angle_at_and_near_180_degrees():
    """roma's conversions: an exact half turn is not a zero rotation (the old hand-written conversion gave
    diag(−1, 1, −1) → 0), and angles just below π keep their axis and angle."""
    import roma

    half = roma.rotmat_to_rotvec(torch.diag(torch.tensor([-1.0, 1.0, -1.0], dtype=torch.float64)))
    torch.testing.assert_close(half.abs(), torch.tensor([0.0, math.pi, 0.0], dtype=torch.float64))
    axes = torch.nn.functional.normalize(torch.randn(50, 3, dtype=torch.float64), dim=-1)
    for angle in (math.pi, math.pi - 1e-4, math.pi - 1e-7):
        R = roma.rotvec_to_rotmat(axes * angle)
        back = roma.rotmat_to_rotvec(R)
        torch.testing.assert_close(roma.rotvec_to_rotmat(back), R, atol=1e-9, rtol=0)
        torch.testing.assert_close(back.norm(dim=-1), torch.full((50,), angle, dtype=torch.float64), atol=1e-7, rtol=0)
        # the axis is recovered up to the sign ambiguity of a half turn
        assert ((back / back.norm(dim=-1, keepdim=True) * axes).sum(-1).abs() > 1 - 1e-6).all()


def test_inverse_kinematics_recovers_twist_free_rotations():
    """A rigid skeleton moved by rotations without twist about the bones (any rotation at pelvis and spine3, which
    have several children; a swing about an axis ⊥ the bone elsewhere; none at the leaves), as the procedural
    motions are: solving from the positions gives back every rotation, and the positions."""
    import roma

    from syncsde.motion.skeleton import CHILDREN, OFFSETS, forward_kinematics, solve_rotations

    g = torch.Generator().manual_seed(3)
    T, off = 40, torch.tensor(OFFSETS)
    rot = torch.eye(3, dtype=torch.float64).repeat(T, 22, 1, 1)
    for k, kids in enumerate(CHILDREN):
        if len(kids) > 1:
            rot[:, k] = roma.random_rotmat(T, generator=g, dtype=torch.float64)
        elif kids:
            axis = torch.linalg.cross(off[kids[0]].expand(T, 3), torch.randn(T, 3, generator=g, dtype=torch.float64))
            angle = torch.rand(T, 1, generator=g, dtype=torch.float64) * 6 - 3  # up to ±172°
            rot[:, k] = roma.rotvec_to_rotmat(torch.nn.functional.normalize(axis, dim=-1) * angle)
    joints = forward_kinematics(rot, off, torch.tensor([0.0, 0.9, 0.0]))
    local = solve_rotations(joints, off)
    torch.testing.assert_close(local, rot, atol=1e-9, rtol=0)
    torch.testing.assert_close(forward_kinematics(local, off, joints[:, 0]), joints, atol=1e-10, rtol=0)


def test_bvh_reread_by_an_independent_parser_gives_back_the_joints(tmp_path):
    """bvhio (PyPI) reads our BVH and computes the world positions itself: they are the joints, to the file's
    precision, for a rigid skeleton; the reported error bounds the rest."""
    bvhio = pytest.importorskip("bvhio", reason="the test extra installs bvhio, an independent BVH reader")
    from syncsde.motion.bvh import motion_bvh
    from syncsde.motion.humanml import JOINT_NAMES

    clip = action_clip("run", 30, np.random.default_rng(5))
    text, error = motion_bvh(clip, 20)
    assert error["max"] < 1e-9  # rigid: exact
    (tmp_path / "m.bvh").write_text(text)
    root = bvhio.readAsHierarchy(str(tmp_path / "m.bvh"))
    names = [j.Name for j, _, _ in root.layout()]
    assert set(JOINT_NAMES) <= set(names)
    for f in (0, 13, 29):
        root.loadPose(f)
        world = {j.Name: np.array(j.PositionWorld) for j, _, _ in root.layout()}
        got = np.stack([world[n] for n in JOINT_NAMES])
        np.testing.assert_allclose(got, clip[f], atol=1e-4)
    assert "Frame Time: 0.050000" in text


def test_motion_exports_through_the_task(motion_model, tmp_path):
    """The task writes the BVH for any backbone and states where its rotations come from; with a body model it also
    writes the AMASS-style parameters."""
    from syncsde.tasks import LongMotion

    synthetic_smpl(tmp_path / "SMPL_NEUTRAL.pkl", np.random.default_rng(1))
    task = LongMotion(
        motion_model, SyncSDE(5.0), num_inference_steps=4, smpl_model=str(tmp_path / "SMPL_NEUTRAL.pkl"), progress=False
    )
    out = task.run([record(["a person walks forward", "a person waves"])])[0]
    assert out.files["motion.bvh"].startswith(b"HIERARCHY") and b"Frames: 210" in out.files["motion.bvh"]
    assert "positions only" in out.meta["rotations"]
    assert 0 < out.meta["bvh_error_m"]["mean"] <= out.meta["bvh_error_m"]["max"]  # 4 steps: bones far from rigid
    amass = np.load(__import__("io").BytesIO(out.files["smpl.npz"]))
    assert amass["poses"].shape == (210, 72) and out.arrays["smpl"].shape == (210, 6890, 3)
    assert "smpl" not in out.meta
    plain = LongMotion(motion_model, SyncSDE(5.0), num_inference_steps=2, progress=False)
    out = plain.run([record(["a person walks forward"])])[0]
    assert "smpl.npz" not in out.files and out.meta["smpl"].startswith("not exported")


def test_cli_writes_amass_parameters_with_a_body_model(tmp_path, monkeypatch):
    """The embedded motion config with a (synthetic) body model: the CLI writes the AMASS-style file beside the
    joints, and its poses put the model's joints on the generated bone directions."""
    import json
    from pathlib import Path

    import smplx

    from syncsde.cli import main

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    synthetic_smpl(tmp_path / "SMPL_NEUTRAL.pkl", np.random.default_rng(2))
    out = tmp_path / "m"
    main(
        [
            "predict",
            "--config",
            "configs/tiny/motion.yaml",
            "--output_dir",
            str(out),
            "--model.init_args.num_inference_steps",
            "5",
            "--model.init_args.smpl_model",
            str(tmp_path / "SMPL_NEUTRAL.pkl"),
            "--trainer.enable_progress_bar",
            "false",
        ]
    )
    side = json.loads((out / "00000.json").read_text())
    assert {"smpl.npz", "smpl", "motion.bvh", "joints"} <= set(side["files"]) and "smpl" not in side
    amass = np.load(out / side["files"]["smpl.npz"])
    joints = np.load(out / side["files"]["joints"])
    T = len(joints)
    assert amass["poses"].shape == (T, 72) and float(amass["mocap_framerate"]) == 20.0
    model = smplx.SMPL(str(tmp_path / "SMPL_NEUTRAL.pkl"))
    with torch.no_grad():
        posed = (
            model(
                global_orient=torch.tensor(amass["poses"][:, :3], dtype=torch.float32),
                body_pose=torch.tensor(amass["poses"][:, 3:], dtype=torch.float32),
                transl=torch.tensor(amass["trans"], dtype=torch.float32),
                betas=torch.zeros(T, 10),
            )
            .joints[:, :22]
            .numpy()
        )
    np.testing.assert_allclose(posed[:, 0], joints[:, 0], atol=1e-4)  # the pelvis follows the motion
    from syncsde.motion.humanml import PARENTS

    for k in (4, 7, 18, 20):  # knee, ankle, elbow, wrist (one child each): the bone points the same way
        a, b = posed[:, k] - posed[:, PARENTS[k]], joints[:, k] - joints[:, PARENTS[k]]
        cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
        assert cos.min() > 0.999
