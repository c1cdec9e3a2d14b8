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
    from tasks import LongMotion

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
    from tasks import LongMotion

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
    from tasks import LongMotion

    with pytest.raises(InputError, match="knows no action in 'a person juggles'"):
        label("a person juggles")
    with pytest.raises(InputError, match="smpl_model .* not found"):  # checked when the task is made, before sampling
        LongMotion(motion_model, SyncSDE(5.0), num_inference_steps=2, smpl_model=str(tmp_path / "nope"), progress=False)


def test_mdm_task_end_to_end_with_tiny_clip(tmp_path):
    """A random MDM (official layout, small) with the embedded tiny CLIP as text encoder: the whole task runs, the
    empty prompt is MDM's zero (masked) condition, and features become joints via the HumanML3D statistics."""
    from syncsde.motion.mdm import MDM
    from tasks import LongMotion

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


def test_smpl_export_on_synthetic_body_model(tmp_path):
    """smplx poses a synthetic SMPL model (random shapes, real sizes) from 263-dim features."""
    import pickle

    from syncsde.motion.smpl import smpl_params, smpl_sequence

    rng = np.random.default_rng(0)
    V, J = 6890, 24
    kintree = np.array(
        [[4294967295, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21], list(range(J))]
    )
    weights = rng.random((V, J))
    model = {
        "v_template": rng.normal(size=(V, 3)) * 0.3,
        "shapedirs": rng.normal(size=(V, 3, 10)) * 1e-3,
        "posedirs": rng.normal(size=(V, 3, 207)) * 1e-4,
        "J_regressor": np.full((J, V), 1.0 / V),
        "kintree_table": kintree,
        "weights": weights / weights.sum(1, keepdims=True),
        "f": rng.integers(0, V, (13776, 3)).astype(np.int64),
    }
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(pickle.dumps(model))
    feats = torch.zeros(5, FEATURES)
    feats[:, 67:193] = torch.tensor([1.0, 0, 0, 0, 1, 0]).repeat(21)  # identity 6D rotations
    feats[:, 2], feats[:, 3] = 0.1, 0.9
    params = smpl_params(feats)
    assert params["body_pose"].abs().max() < 1e-3 and params["transl"].shape == (5, 3)

    class Plain:
        normalizer = None

    verts = smpl_sequence(Plain(), feats.T[:, None, :], str(path))
    assert verts.shape == (5, V, 3) and np.isfinite(verts).all()
    np.testing.assert_allclose(verts[1] - verts[0], np.tile([0, 0, 0.1], (V, 1)), atol=1e-5)  # walks 0.1 along z
    with pytest.raises(InputError, match="joint rotations"):
        smpl_params(torch.zeros(5, 67))
