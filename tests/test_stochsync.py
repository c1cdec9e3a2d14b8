"""StochSync (BASELINES.md §12): its SyncTweedies limit, the multi-step x̂₀ by hand, the public code's loop re-derived
on an exact Gaussian denoiser, and the command line on the sphere, mesh and wide-image tasks."""

import json
from pathlib import Path

import pytest
import torch

from syncsde.backbones import GaussianBackbone
from syncsde.coupling import Denoise
from syncsde.errors import InputError
from syncsde.sampler import per_sample_randn, sample_generator
from syncsde.schedule import Step
from syncsde.strategies import StochSync, SyncTweedies
from syncsde.tasks import SpherePanorama, WideImage

ROOT = Path(__file__).resolve().parents[1]
BATCH = [{"prompt": "a wide river", "sample_id": 0, "seed": 0}]


class CleanEnd(GaussianBackbone):
    """The Gaussian denoiser with DDIM's last step ending at ᾱ = 1 (``set_alpha_to_one``), where StochSync's last
    step (the clean fused x̂₀) and DDIM's coincide."""

    def scheduler_config(self):
        return {**super().scheduler_config(), "set_alpha_to_one": True}


def wide(strategy, backbone=None, steps=6):
    backbone = backbone or GaussianBackbone(channels=4, sample_size=8, scale_factor=1)
    return WideImage(backbone, strategy, height=8, width=32, stride=4, num_inference_steps=steps, guidance_scale=1.0,
                     progress=False)  # fmt: skip


@pytest.mark.parametrize("task", ["wide", "sphere"])
def test_no_stochasticity_one_step_x0_and_all_views_is_synctweedies_case_2(task):
    backbone = CleanEnd(channels=4, sample_size=8, scale_factor=1)

    def run(strategy):
        if task == "wide":
            return wide(strategy, backbone).trajectories(BATCH)
        sphere = SpherePanorama(backbone, strategy, views="cubes", fov=90.0, height=32, num_inference_steps=5,
                                guidance_scale=1.0, prompt_prefix="", progress=False)  # fmt: skip
        return sphere.trajectories(BATCH)

    limit = run(StochSync(stochasticity=0.0, ode_steps=0, groups="all"))
    assert torch.equal(limit, run(SyncTweedies(case=2)))
    assert not torch.allclose(run(StochSync(stochasticity=0.5, ode_steps=0, groups="all")), limit)


def test_multistep_x0_is_the_public_ddim_loop_by_hand():
    """ode_steps 5 at t = 600: the grid linspace(999, 0, 5) = 999, 749, 499, 249, 0 gives 600 → 499 → 249 → 0, the
    first move with the given ε, then one network call at 499 and one at 249, ending at the state at t = 0."""
    model = GaussianBackbone(channels=2, sample_size=4, scale_factor=1).double()
    ac = model.alphas_cumprod.double()
    calls = []

    def eps(x, step, trajectories):
        calls.append((step.t, list(trajectories)))
        return model(x.flatten(0, 1), torch.full((x.shape[0] * x.shape[1],), step.t), None).view_as(x)

    x = torch.randn(1, 2, 2, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    step = Step(3, 600, 500, float(ac[600]), float(ac[500]), 981)
    e = model(x.flatten(0, 1), torch.full((2,), 600), None).view_as(x)
    ours = StochSync(ode_steps=5).ode_x0(x, e, step, Denoise(eps, lambda t: float(ac[int(t)])), [3, 7])
    assert calls == [(499, [3, 7]), (249, [3, 7])]

    def move(x, e, t, t_next):  # the public move_step: Tweedie at t, then DDIM (η = 0) to t_next with the same ε
        x0 = (x - (1 - ac[t]).sqrt() * e) / ac[t].sqrt()
        return ac[t_next].sqrt() * x0 + (1 - ac[t_next]).sqrt() * e

    hand, e_hand = x, e
    for t, t_next in [(600, 499), (499, 249), (249, 0)]:
        if t != 600:
            e_hand = model(hand.flatten(0, 1), torch.full((2,), t), None).view_as(hand)
        hand = move(hand, e_hand, t, t_next)
    torch.testing.assert_close(ours, hand, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(ours, step.x0(x, e), atol=1e-3)  # more than Tweedie's one-step x̂₀
    calls.clear()
    torch.testing.assert_close(StochSync(ode_steps=0).ode_x0(x, e, step, None, [3, 7]), step.x0(x, e))
    assert calls == []


def public_stochsync(backbone, x_T, noises, ts, groups, ode_steps, tile, stride, width):
    """The public code's loop (stochsync/general_trainer.py with use_ode, recon in the working space, the closed-form
    bake of stochsync/model/panorama.py), on the wide-image geometry: windows are crops of a latent canvas z. Step k
    renders the views of group k mod G, noises them to t_k (step 0: the warm-up's pure noise), solves the ODE to 0
    (prior ``ddim_loop``: move_step over t_k, linspace(999, 0, ode_steps) below t_k, 0) and writes their mean into z
    where they reach (``img_new / (img_cnt + 1e-6)``, z kept elsewhere)."""
    ac = backbone.alphas_cumprod
    context = backbone.encode_prompts([""])
    C, H = x_T.shape[2], x_T.shape[3]
    z = torch.zeros(1, C, H, width)
    for k, t in enumerate(ts):
        views = groups[k % len(groups)]
        if k == 0:
            latent = x_T[0, views]
        else:
            render = torch.stack([z[0, :, :, v * stride : v * stride + tile] for v in views])
            latent = ac[t].sqrt() * render + (1 - ac[t]).sqrt() * noises[k - 1][0, views]
        grid = torch.linspace(999, 0, ode_steps, dtype=torch.long)
        times = [t] + [int(g) for g in grid if 0 < g < t] + [0]
        for t_cur, t_next in zip(times[:-1], times[1:]):
            e = backbone(latent, torch.full((len(views),), t_cur), context.expand(len(views), -1))
            x0 = (latent - (1 - ac[t_cur]) ** 0.5 * e) / ac[t_cur] ** 0.5
            latent = ac[t_next] ** 0.5 * x0 + (1 - ac[t_next]) ** 0.5 * e
        new, count = torch.zeros_like(z), torch.zeros_like(z)
        for v, target in zip(views, latent):
            new[0, :, :, v * stride : v * stride + tile] += target
            count[0, :, :, v * stride : v * stride + tile] += 1
        new = new / (count + 1e-6)
        new[count == 0] = z[count == 0]
        z = new
    return torch.stack([z[0, :, :, v * stride : v * stride + tile] for v in range(x_T.shape[1])])[None]


def test_equals_the_public_loop_on_an_exact_denoiser():
    backbone = GaussianBackbone(channels=4, sample_size=8, scale_factor=1)
    strategy = StochSync(ode_steps=6)
    task = wide(strategy, backbone, steps=5)
    ours = task.trajectories(BATCH)
    assert strategy._groups == [[0, 2, 4, 6], [1, 3, 5]]  # windows 8 wide at stride 4: every other one
    g = sample_generator(0, 0)  # the sample's noise, in the sampler's order: x_T, then one draw per step
    x_T = task.initial_noise(BATCH, [g])
    noises = [per_sample_randn(x_T.shape[1:], [g]) for _ in range(5)]
    ts = [s.t for s in task.schedule().steps]
    public = public_stochsync(backbone, x_T, noises, ts, strategy._groups, 6, 8, 4, 32)
    torch.testing.assert_close(ours, public, rtol=1e-4, atol=1e-4)
    other = public_stochsync(backbone, x_T, noises, ts, strategy._groups, 7, 8, 4, 32)
    assert not torch.allclose(ours, other, rtol=1e-4, atol=1e-4)  # the comparison can fail


def test_bad_settings_say_which_option():
    with pytest.raises(InputError, match="--model.strategy.stochasticity 1.5"):
        StochSync(stochasticity=1.5)
    with pytest.raises(InputError, match="choose disjoint or all"):
        StochSync(groups="some")
    with pytest.raises(InputError, match="use parallel: samples"):
        WideImage(GaussianBackbone(sample_size=8, scale_factor=1), StochSync(), height=8, width=32, stride=4,
                  parallel="windows")  # fmt: skip


ONE_RECORD = {
    "sphere": ["--data.init_args.prompts", '["a sunny day"]'],
    "wide": ["--data.init_args.prompts", '["a sunny day"]'],
    "mesh": ["--data.init_args.records", '[{"mesh": "configs/assets/ball.obj", "prompt": "a sunny day"}]'],
}


@pytest.mark.parametrize("config", list(ONE_RECORD))
def test_predict_on_the_tiny_configs(config, tmp_path, monkeypatch):
    from syncsde.cli import main

    monkeypatch.chdir(ROOT)
    main(["predict", "--config", f"configs/tiny/{config}.yaml", "--method", "stochsync", "--output_dir", str(tmp_path),
          "--model.num_inference_steps", "2", "--model.strategy.ode_steps", "4", "--trainer.enable_progress_bar",
          "false", "--trainer.callbacks", "[]", *ONE_RECORD[config]])  # fmt: skip
    side = json.loads((tmp_path / "00000.json").read_text())
    assert side["method"] == "stochsync" and side["ode_steps"] == 4 and side["stochasticity"] == 1.0
    assert side["steps"] == 2
    if config == "sphere":
        assert side["num_views"] == 12 and side["fov"] == 90.0  # the method's two cube maps
    if config == "mesh":
        assert side["multiview_attention"] is False


def test_compare_runs_stochsync(tmp_path, monkeypatch):
    from syncsde.evaluation.compare import main

    monkeypatch.chdir(ROOT)
    summary = main(["--config", "configs/tiny/sphere.yaml", "--methods", "stochsync", "--output_dir", str(tmp_path),
                    "--model.num_inference_steps", "2", "--model.strategy.ode_steps", "3",
                    "--trainer.enable_progress_bar", "false", *ONE_RECORD["sphere"]])  # fmt: skip
    assert list(summary["methods"]) == ["stochsync"] and summary["methods"]["stochsync"]["num_samples"] == 1
    assert json.loads((tmp_path / "stochsync" / "00000.json").read_text())["method"] == "stochsync"
