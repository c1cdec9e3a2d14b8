"""Schedule math against diffusers' own schedulers and independent computations (SYNCSDE.md §9.1, 9.2, 9.6)."""

import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from syncsde import schedule as S
from syncsde.testing import IF_SCHEDULER, SD_SCHEDULER

torch.manual_seed(0)
X = torch.randn(2, 4, 8, 8, dtype=torch.float64)
EPS = torch.randn(2, 4, 8, 8, dtype=torch.float64)
# DeepFloyd IF's hub scheduler config (a DDPM config: no set_alpha_to_one, so DDIM built from it uses ᾱ_final = 1)
IF_LIKE = IF_SCHEDULER


def test_sd_schedule_timesteps_and_T():
    sch = S.Schedule.from_config(SD_SCHEDULER, 50)
    ts = [s.t for s in sch]
    assert ts[:3] == [981, 961, 941] and ts[-1] == 1 and len(ts) == 50
    assert all(s.T == 981 for s in sch)
    ac = DDIMScheduler(**SD_SCHEDULER).alphas_cumprod
    assert sch.steps[-1].abar_prev == pytest.approx(float(ac[0]))  # set_alpha_to_one=False: final = ᾱ_0
    assert sch.steps[0].abar_prev == pytest.approx(float(ac[961]))


@pytest.mark.parametrize("config", [SD_SCHEDULER, IF_LIKE])
@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_ddim_step_matches_diffusers(config, eta):
    ref = DDIMScheduler.from_config(config)
    ref.set_timesteps(30)
    sch = S.Schedule.from_config(config, 30, "ddim", eta=eta)
    for step, t in zip(sch, ref.timesteps):
        noise = torch.randn_like(X)
        expected = ref.step(EPS * 3, t, X, eta=eta, variance_noise=noise).prev_sample  # large ε: clip/threshold act
        got = step.update(X, step.x0(X, EPS * 3), EPS * 3, noise)
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def test_ddpm_step_matches_diffusers():
    cfg = {**SD_SCHEDULER, "variance_type": "fixed_small"}
    cfg.pop("set_alpha_to_one")
    cfg.pop("steps_offset")
    ref = DDPMScheduler(**cfg)
    ref.set_timesteps(30)
    sch = S.Schedule.from_config(cfg, 30, "ddpm")
    assert [s.t for s in sch] == [int(t) for t in ref.timesteps]
    for step, t in zip(sch, ref.timesteps):
        expected = ref.step(EPS, t, X, generator=torch.Generator().manual_seed(3)).prev_sample
        noise = torch.randn(X.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        got = step.update(X, step.x0(X, EPS), EPS, noise if step.stochastic else None)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_tweedie_and_prediction_conversions_roundtrip():
    ab = 0.37
    x0 = S.tweedie_x0(X, EPS, ab)
    torch.testing.assert_close(math.sqrt(ab) * x0 + math.sqrt(1 - ab) * EPS, X)
    torch.testing.assert_close(S.eps_from_x0(X, x0, ab), EPS)
    v = math.sqrt(ab) * EPS - math.sqrt(1 - ab) * x0  # v = α ε − σ x0
    torch.testing.assert_close(S.to_epsilon(v, X, ab, "v_prediction"), EPS)
    with pytest.raises(ValueError, match="prediction type"):
        S.to_epsilon(v, X, ab, "flow")


@pytest.mark.parametrize("kind", ["ddim", "ddpm"])
@pytest.mark.parametrize("steps", [30, 50])
def test_gamma_positive_every_step(kind, steps):
    for config in (SD_SCHEDULER, IF_LIKE):
        for step in S.Schedule.from_config(config, steps, kind):
            assert step.gamma > 0, (kind, step.t)


def test_score_form_of_ddim():
    """x_{t−1} = √(ᾱ_prev/ᾱ_t) x_t + (1−ᾱ_t) γ_t s with s = −ε/σ_t (SYNCSDE.md §9.2)."""
    for step in S.Schedule.from_config(SD_SCHEDULER, 50):
        score = -EPS / step.sigma
        expected = math.sqrt(step.abar_prev / step.abar_t) * X + (1 - step.abar_t) * step.gamma * score
        torch.testing.assert_close(step.update(X, step.x0(X, EPS), EPS), expected)


def test_gamma_formula_independent():
    a, b = 0.2, 0.3
    assert float(S.gamma(a, b)) == pytest.approx(math.sqrt(b / a) - math.sqrt((1 - b) / (1 - a)))


def test_inv_lambda_schedule_linear():
    sch = S.Schedule.from_config(SD_SCHEDULER, 50)
    w = [S.inv_lambda_schedule(5.0, s.t, s.T) for s in sch]
    assert w[0] == 5.0 and w[-1] == pytest.approx(5.0 / 981)
    assert S.inv_lambda_schedule(1.0, 981, 1000) == pytest.approx(0.981)
    d = [a - b for a, b in zip(w, w[1:])]
    assert max(d) == pytest.approx(min(d))  # linear in t (equal timestep gaps)


def test_stochastic_step_requires_noise():
    step = S.Schedule.from_config(SD_SCHEDULER, 10, "ddim", eta=1.0).steps[0]
    with pytest.raises(ValueError, match="noise"):
        step.update(X, X, EPS)


def test_ddpm_learned_range_variance_matches_diffusers():
    ref = DDPMScheduler.from_config(IF_LIKE)
    ref.set_timesteps(20)
    sch = S.Schedule.from_config(IF_LIKE, 20, "ddpm")
    v = torch.rand_like(EPS) * 2 - 1
    for step, t in zip(sch, ref.timesteps):
        expected = ref.step(torch.cat([EPS, v], 1), t, X, generator=torch.Generator().manual_seed(3)).prev_sample
        noise = torch.randn(X.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        got = step.update(X, step.x0(X, EPS), EPS, noise if step.stochastic else None, variance=v)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


# -- model families: v-prediction, flow matching, refusals ----------------------------------------------------------
V_PRED = {**SD_SCHEDULER, "prediction_type": "v_prediction"}  # SD-2-768-v


def test_v_prediction_ddim_matches_diffusers():
    ref = DDIMScheduler.from_config(V_PRED)
    ref.set_timesteps(20)
    sch = S.Schedule.from_config(V_PRED, 20)
    assert sch.prediction == "v_prediction"
    for step, t in zip(sch, ref.timesteps):
        eps = S.to_epsilon(EPS, X, step.abar_t, sch.prediction)  # the network's v, converted as guided_eps does
        expected = ref.step(EPS, t, X).prev_sample
        torch.testing.assert_close(step.update(X, step.x0(X, eps), eps), expected, rtol=1e-6, atol=1e-6)


def test_beta_schedule_classes_give_the_ddim_schedule():
    """SD's PNDM and SDXL's Euler configs are sampled with DDIM built from the same β schedule (as the paper)."""
    ddim = S.Schedule.from_config(SD_SCHEDULER, 30)
    for name in ("PNDMScheduler", "EulerDiscreteScheduler", "DDIMScheduler"):
        assert S.Schedule.from_config({**SD_SCHEDULER, "_class_name": name}, 30) == ddim


FLOW_CONFIGS = {
    "sd3": ({"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0}, {}),
    "flux": (
        {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0, "use_dynamic_shifting": True},
        {"sigmas": np.linspace(1, 1 / 20, 20), "mu": 0.8},
    ),
}


@pytest.mark.parametrize("family", FLOW_CONFIGS)
def test_flow_step_is_diffusers_euler_step(family):
    """In VP coordinates x = x_σ/r the flow step is DDIM (η = 0); mapped back it is diffusers' Euler step, whether the
    update is given the network's v (plain step) or the ε = (x − α x̂₀)/σ_t of SyncTweedies' update."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    config, options = FLOW_CONFIGS[family]
    ref = FlowMatchEulerDiscreteScheduler.from_config(config)
    ref.set_timesteps(20, **options)
    sch = S.Schedule.from_config(config, 20, **options)
    assert sch.prediction == "flow" and len(sch) == 20
    assert sch.steps[0].T == 1000 and sch.steps[0].abar_t == 0 and sch.steps[-1].abar_prev == 1
    for k, (step, t) in enumerate(zip(sch, ref.timesteps)):
        sigma, sigma_next = float(ref.sigmas[k]), float(ref.sigmas[k + 1])
        assert step.t == float(t) and step.kind == "flow" and not step.stochastic
        r, r_next = math.hypot(1 - sigma, sigma), math.hypot(1 - sigma_next, sigma_next)
        assert step.abar_t == pytest.approx((1 - sigma) ** 2 / r**2)
        if k:  # (r'/r) γ_t = (σ − σ')/(σ(1 − σ)); γ = 0 at σ = 1
            assert r_next / r * step.gamma == pytest.approx((sigma - sigma_next) / (sigma * (1 - sigma)))
        else:
            assert sigma == 1 and step.gamma == 0
        expected = ref.step(EPS, t, X).prev_sample
        x0 = step.x0(X / r, EPS)
        torch.testing.assert_close(x0, X - sigma * EPS)
        torch.testing.assert_close(r_next * step.update(X / r, x0, EPS), expected)
        torch.testing.assert_close(r_next * step.update(X / r, x0, S.eps_from_x0(X / r, x0, step.abar_t)), expected)
        ref._step_index = None  # step() advanced it; t is found again next time


def test_unsupported_schedulers_and_predictions_are_refused():
    from syncsde.errors import InputError

    with pytest.raises(InputError, match="^m: scheduler EDMEulerScheduler is not supported"):
        S.Schedule.from_config({"_class_name": "EDMEulerScheduler"}, 10, model="m")
    with pytest.raises(InputError, match="FlowMatchHeunDiscreteScheduler is not supported"):
        S.Schedule.from_config({"_class_name": "FlowMatchHeunDiscreteScheduler"}, 10)
    with pytest.raises(InputError, match="prediction type 'flow_prediction' is not supported"):
        S.Schedule.from_config({**SD_SCHEDULER, "prediction_type": "flow_prediction"}, 10)
    zero_snr = {**V_PRED, "rescale_betas_zero_snr": True, "timestep_spacing": "trailing"}
    with pytest.raises(InputError, match="zero terminal SNR"):
        S.Schedule.from_config(zero_snr, 10)
    flow = FLOW_CONFIGS["sd3"][0]
    for kind, eta, expected in (("ddpm", 0.0, 1.0), ("ddim", 0.5, 0.5)):  # DDPM on a flow schedule: DDIM, η = 1
        steps = S.Schedule.from_config(flow, 10, kind, eta, model="m").steps
        assert all(s.kind == "flow" and s.eta == expected and s.stochastic for s in steps)
    with pytest.raises(InputError, match="stochastic_sampling is not supported"):
        S.Schedule.from_config({**flow, "stochastic_sampling": True}, 10)
