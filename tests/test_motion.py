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
