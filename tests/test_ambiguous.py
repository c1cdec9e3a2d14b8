"""Ambiguous images on tiny DeepFloyd IF pipelines (SYNCSDE.md §6.4)."""

import pytest
import torch

from syncsde.backbones import DeepFloydIF, GaussianBackbone
from syncsde.backbones.upscaler import IFUpscaler
from syncsde.coupling import coupling_residuals
from syncsde.strategies import Independent, SyncSDE
from syncsde.tasks import AmbiguousImage
from syncsde.testing import save_tiny_if, save_tiny_if_upscaler
from syncsde.views import get_view


@pytest.fixture(scope="module")
def tiny_if(tmp_path_factory):
    root = tmp_path_factory.mktemp("if")
    return str(save_tiny_if(root / "stage1")), str(save_tiny_if_upscaler(root / "stage2"))


BATCH = [{"prompt": "an oil painting of a horse", "prompt2": "an oil painting of a village", "sample_id": 0, "seed": 0}]


def test_coupling_is_view_of_trajectory_1_with_unit_weight(tiny_if):
    task = AmbiguousImage(DeepFloydIF(tiny_if[0]), SyncSDE(5.0), view="rotate_cw", progress=False)
    (c,) = task.problem(BATCH).couplings
    assert (c.target, c.source, c.weight) == (1, 0, None)  # W = 1 on the whole image
    x = torch.randn(1, 2, 3, 16, 16)
    assert torch.equal(c.pulled_toward(x), get_view("rotate_cw").view(x[:, 0]))


def test_learned_variance_dropped_and_if_scheduler_applied(tiny_if):
    b = DeepFloydIF(tiny_if[0])
    assert (
        b.learned_variance
        and b(torch.randn(2, 3, 16, 16), torch.tensor([10, 10]), b.encode_prompts(["a", "b"])).shape[1] == 3
    )
    step = AmbiguousImage(b, progress=False).schedule().steps[0]
    assert step.threshold == (0.95, 1.5) and step.clip_sample == 1.0


@pytest.mark.parametrize("view", ["rotate_cw", "skew", "square_hinge"])
def test_sync_brings_x2_toward_view_of_x1(view):
    # the exact Gaussian denoiser (a random tiny IF saturates x̂₀ under its thresholding, hiding any coupling)
    b = GaussianBackbone(channels=3, sample_size=16, scale_factor=1)
    gaps = {}
    for name, strat in (("sync", SyncSDE(5.0)), ("free", Independent())):
        task = AmbiguousImage(b, strat, view=view, num_inference_steps=10, progress=False)
        gaps[name] = coupling_residuals(task.trajectories(BATCH), task.problem(BATCH).couplings).abs().mean()
    assert gaps["sync"] < 0.5 * gaps["free"]


def test_outputs_with_stage_two(tiny_if):
    up = IFUpscaler(tiny_if[1], num_inference_steps=3)
    task = AmbiguousImage(
        DeepFloydIF(tiny_if[0]),
        SyncSDE(5.0),
        view="rotate_cw",
        upscaler=up,
        num_inference_steps=4,
        animation_frames=6,
        progress=False,
    )
    out = task.run(BATCH)[0]
    r1, r2 = out.extras["reading1"], out.extras["reading2"]
    assert r2.shape == (3, 64, 64) and out.image.shape == (3, 64, 128)
    assert torch.equal(get_view("rotate_cw").view(r1), r2)  # prompt-1 image = V⁻¹(x^2)
    frames = out.animations["animation"]
    assert torch.equal(frames[0], r1) and torch.equal(frames[5], r2) and len(frames) == 2 * 6 + 2 * 8
    assert out.meta["upscaler"] == tiny_if[1] and out.meta["view"] == "rotate_cw"


# -- N views (3 or 4 prompts), negate, jigsaw, permutation files -------------------------------------------------

from syncsde.errors import InputError  # noqa: E402
from syncsde.strategies import SyncTweedies, VisualAnagrams  # noqa: E402


def nrec(prompts, views=None, i=0):
    r = {"prompts": prompts, "prompt": " | ".join(prompts), "sample_id": i, "seed": 0}
    return {**r, "views": views} if views else r


def test_n_view_couplings_are_joint_means_of_earlier_views():
    """Trajectory i is pulled toward V_i(mean_{j<i} V_j⁻¹(x^j)), one term per trajectory (SyncSDE's autoregressive
    factorisation; trajectory 0 free), recomputed here from the views by hand."""
    views = ["identity", "rotate_cw", "negate", "jigsaw"]
    b = GaussianBackbone(channels=3, sample_size=16, scale_factor=1)
    task = AmbiguousImage(b, SyncSDE(5.0), view=views, progress=False)
    problem = task.problem([nrec(["a", "b", "c", "d"])])
    assert [(c.target, c.source, c.weight) for c in problem.couplings] == [
        (1, 0, None),
        (2, (0, 1), None),
        (3, (0, 1, 2), None),
    ]
    V = [get_view(v) for v in views]
    x = torch.randn(2, 4, 3, 16, 16)
    for c in problem.couplings:
        i = c.target
        mean = sum(V[j].inverse_view(x[:, j]) for j in range(i)) / i
        torch.testing.assert_close(c.pulled_toward(x), V[i].view(mean), atol=1e-6, rtol=0)
    # the fixed point: all trajectories views of one image -> no correction
    z = torch.randn(2, 3, 16, 16)
    consistent = torch.stack([v.view(z) for v in V], dim=1)
    assert coupling_residuals(consistent, problem.couplings).abs().max() < 1e-6


@pytest.mark.parametrize("views", [["identity", "flip", "negate"], ["identity", "rotate_cw", "jigsaw", "skew"]])
def test_n_view_sync_brings_every_trajectory_toward_the_earlier_ones(views):
    b = GaussianBackbone(channels=3, sample_size=16, scale_factor=1)
    batch = [nrec([f"p{i}" for i in range(len(views))])]
    gaps = {}
    for name, strat in (("sync", SyncSDE(3.0)), ("free", Independent())):
        task = AmbiguousImage(b, strat, view=views, num_inference_steps=10, progress=False)
        r = coupling_residuals(task.trajectories(batch), task.problem(batch).couplings)
        gaps[name] = r.flatten(2).abs().mean(-1)[0, 1:]  # per coupled trajectory
    assert (gaps["sync"] < 0.5 * gaps["free"]).all()


@pytest.mark.parametrize("strategy", [SyncTweedies(case=2), VisualAnagrams()])
def test_baselines_with_three_views_keep_one_canonical_image(strategy):
    """Canonical averaging over N views: the instances end as exact views of one image, g∘f = id."""
    views = ["identity", "negate", "jigsaw"]
    b = GaussianBackbone(channels=3, sample_size=16, scale_factor=1)
    task = AmbiguousImage(b, strategy, view=views, init_from_canonical=True, num_inference_steps=5, progress=False)
    batch = [nrec(["a", "b", "c"])]
    x = task.trajectories(batch)
    canon = task.problem(batch).canonical
    torch.testing.assert_close(canon.forward(canon.aggregate(x)), x, atol=1e-5, rtol=1e-5)
    z = torch.randn(1, 3, 16, 16)
    torch.testing.assert_close(canon.aggregate(canon.forward(z)), z)


def test_negate_keeps_variance_channels_in_canonical_averaging():
    b = GaussianBackbone(channels=3, sample_size=8, scale_factor=1)
    canon = AmbiguousImage(b, view="negate").problem(BATCH).canonical
    var = torch.rand(1, 2, 3, 8, 8)
    torch.testing.assert_close(canon.aggregate_variance(var), var.mean(1))  # not (v0 − v1)/2
    eps = torch.randn(1, 2, 3, 8, 8)
    torch.testing.assert_close(canon.aggregate(eps), (eps[:, 0] - eps[:, 1]) / 2)


def test_readings_outputs_and_record_views(tmp_path):
    """Each sample's own views (a permutation file among them) drive its couplings and readings; reading i is
    V_i(V_N⁻¹(x^N)) and the animation cycles through all readings."""
    import numpy as np

    np.save(tmp_path / "perm.npy", np.random.default_rng(1).permutation(16))
    b = GaussianBackbone(channels=3, sample_size=16, scale_factor=1)
    task = AmbiguousImage(b, SyncSDE(5.0), view="flip", num_inference_steps=3, animation_frames=4, progress=False)
    views = ["identity", "negate", str(tmp_path / "perm.npy")]
    out = task.run([nrec(["a", "b", "c"], views)])[0]
    V = [get_view(v) for v in views]
    r = [out.extras[f"reading{i}"] for i in (1, 2, 3)]
    assert out.image.shape == (3, 16, 48) and out.meta["views"] == views
    torch.testing.assert_close(r[1], 1 - r[0], atol=1e-6, rtol=0)  # negate in image space: 1 − x
    assert torch.equal(V[2].view(r[0]), r[2])
    frames = out.animations["animation"]
    assert len(frames) == 3 * (4 + 8) and torch.equal(frames[0], r[0]) and torch.equal(frames[3], r[1])
    assert torch.equal(frames[12 + 3], r[2]) and torch.equal(frames[24 + 3], r[0])
    with pytest.raises(InputError, match="3 prompts but 2 views"):
        task.run([nrec(["a", "b", "c"], ["identity", "flip"])])
    with pytest.raises(InputError, match="different numbers of prompts"):
        task.problem([nrec(["a", "b", "c"], views), {**BATCH[0], "sample_id": 1}])


def test_prompt_pair_data_takes_n_prompts_with_views(tmp_path):
    import json

    from syncsde.data import PromptPairDataModule

    (tmp_path / "r.jsonl").write_text(
        json.dumps({"prompt": "a", "prompt2": "b"})
        + "\n"
        + json.dumps({"prompts": ["a", "b", "c"], "views": ["identity", "negate", "p.npy"]})
        + "\n"
    )
    recs = PromptPairDataModule(records_file=str(tmp_path / "r.jsonl")).records()
    assert recs[0]["prompt"] == "a" and recs[1]["prompt"] == "a | b | c"
    assert recs[1]["views"][2] == str(tmp_path / "p.npy")  # relative to the JSONL file
    for bad, msg in (
        ({"prompt": "a"}, "needs prompt and prompt2"),
        ({"prompts": ["a"]}, "at least two"),
        ({"prompts": ["a", "b"], "views": ["flip"]}, "one view per prompt"),
    ):
        with pytest.raises(InputError, match=msg):
            PromptPairDataModule(records=[bad]).records()


# -- the official code's settings (README "Differences from the official code") ----------------------------------


def test_if_prompts_are_lowercased_and_stripped_as_in_ifs_pipeline(tiny_if):
    """The official code encodes prompts with IFPipeline.encode_prompt (clean_caption off: lower(), strip())."""
    from diffusers import IFPipeline

    b = DeepFloydIF(tiny_if[0])
    pipe = IFPipeline(
        tokenizer=b.tokenizer, text_encoder=b.text_encoder, unet=b.unet, scheduler=None, safety_checker=None,
        feature_extractor=None, watermarker=None, requires_safety_checker=False,
    )  # fmt: skip
    with torch.no_grad():
        reference = pipe.encode_prompt("An Oil Painting of a Horse ", do_classifier_free_guidance=False)[0]
    torch.testing.assert_close(b.encode_prompts(["An Oil Painting of a Horse "]), reference)


def test_stage2_scheduler_option_and_sidecar(tiny_if):
    up = IFUpscaler(tiny_if[1], num_inference_steps=2)
    with pytest.raises(InputError, match="stage2_scheduler"):
        AmbiguousImage(DeepFloydIF(tiny_if[0]), upscaler=up, stage2_scheduler="stage2", progress=False)
    task = AmbiguousImage(
        DeepFloydIF(tiny_if[0]), upscaler=up, stage2_scheduler="stage1", num_inference_steps=2, progress=False
    )
    assert task.describe()["stage2_scheduler"] == "stage1"
