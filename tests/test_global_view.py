"""Global coherence (issue 30, SYNCSDE.md §4.2): the exact global-mode model and SyncSDE's global view — exactness,
limits, fixed points, and one scene on a canvas many windows wide where the local couplings make a montage."""

import pytest
import torch

from syncsde.backbones import GaussianBackbone, GaussianMixtureBackbone
from syncsde.coupling import SyncProblem
from syncsde.errors import InputError
from syncsde.evaluation.benchmarks import global_coherence as gc
from syncsde.strategies import SyncSDE
from syncsde.strategies.syncsde import PRESETS
from syncsde.tasks import SpherePanorama, WideImage

PROFILES = [[0.5, 0.5, -0.5, -0.5], [0.5, 0.5, 0.5, -0.5], [-0.2, 0.1, 0.0, 0.3]]


def score_eps(model: GaussianMixtureBackbone, x: torch.Tensor, t: int) -> torch.Tensor:
    """−σ_t ∇ log p(x_t), the mixture's density written out and differentiated by autograd (per image)."""
    ab = model.alphas_cumprod[t].double()
    a, s = ab.sqrt(), (1 - ab).sqrt()
    v = a**2 * model.std**2 + s**2
    x = x.double().requires_grad_(True)
    mu = model.means.double()[:, None, None, :, None]  # (K, 1, 1, rows, 1)
    logp = -((x[None] - a * mu) ** 2).flatten(2).sum(-1) / (2 * v) + model.log_weights.double()[:, None]
    (grad,) = torch.autograd.grad(torch.logsumexp(logp, 0).sum(), x)
    return -s * grad


@pytest.mark.parametrize("means", [PROFILES, [-0.5, 0.5, 1.5]])
def test_mixture_denoiser_is_the_exact_score(means):
    model = GaussianMixtureBackbone(means, weights=[1.0, 2.0, 3.0], channels=2, sample_size=4, std=0.4)
    x = torch.randn(3, 2, 4, 4)
    for t in (999, 500, 100, 5):
        eps = model(x, torch.full((3,), t), None)
        torch.testing.assert_close(eps.double(), score_eps(model, x, t), rtol=1e-4, atol=1e-5)


def test_one_level_is_the_gaussian_model_and_clean_samples_are_classified():
    twin = GaussianMixtureBackbone([0.3, 0.3], channels=1, sample_size=4, std=0.5)
    plain = GaussianBackbone(channels=1, sample_size=4, mean=0.3, std=0.5)
    x, t = torch.randn(2, 1, 4, 4), torch.tensor([700, 20])
    torch.testing.assert_close(twin(x, t, None), plain(x, t, None))
    model = GaussianMixtureBackbone(PROFILES[:2], channels=1, sample_size=4, std=0.2)
    clean = model.means[[1, 0, 1]].view(3, 1, 4, 1) + 0.2 * torch.randn(3, 1, 4, 4)
    assert model.classify(clean).tolist() == [1, 0, 1]
    with pytest.raises(InputError, match="profiles have 4 rows"):
        model(torch.zeros(1, 1, 8, 4), torch.tensor([10]), None)
    with pytest.raises(InputError, match="two or more components"):
        GaussianMixtureBackbone([[0.0, 1.0]], sample_size=2)


def tiny_task(strategy, **kw):
    backbone = GaussianMixtureBackbone([-0.5, 0.5], channels=1, sample_size=8, std=0.5)
    options = dict(height=8, width=24, stride=2, num_inference_steps=8, guidance_scale=1.0, progress=False)
    return WideImage(backbone, strategy, **{**options, **kw})


def test_the_task_adds_one_global_trajectory_after_the_windows():
    batch = [{"prompt": "", "sample_id": 3, "seed": 1}]
    local, glob = tiny_task(SyncSDE(20.0, preset="canonical")), tiny_task(SyncSDE(20.0, preset="global"))
    gens = lambda: [torch.Generator().manual_seed(5)]  # noqa: E731
    x_local, x_glob = local.initial_noise(batch, gens()), glob.initial_noise(batch, gens())
    assert x_glob.shape[1] == local.n + 1 and torch.equal(x_glob[:, : local.n], x_local)  # the windows' noise kept
    assert glob.problem(batch).num_trajectories == local.n + 1 and glob.problem(batch).global_view.index == local.n
    assert glob.assemble_latent(glob.trajectories(batch)).shape == (1, 1, 8, 24)
    assert glob.describe()["global_trajectory"] is True and "global_trajectory" not in local.describe()
    # ρ = 0 is no global view at all: the canonical preset's run, bit for bit
    off = tiny_task(SyncSDE(20.0, preset="global", global_view=0.0))
    assert torch.equal(off.trajectories(batch), local.trajectories(batch))
    with pytest.raises(InputError, match="global_view.*parallel: samples"):
        tiny_task(SyncSDE(20.0, preset="global"), parallel="windows")


def test_consistent_global_view_is_a_fixed_point():
    """When the global view's x̂₀ is the windows' consensus at the native size, the fusion changes nothing: the
    windows take the plain step and the local coupling, and the global view its plain step."""
    task = tiny_task(SyncSDE(20.0, preset="global", global_schedule="constant"))
    problem, step = task.problem([{}]), task.schedule().steps[3]
    n, view = task.n, task.problem([{}]).global_view
    x, eps = torch.randn(2, n + 1, 1, 8, 8), torch.randn(2, n + 1, 1, 8, 8)
    low = view.down(problem.canonical.aggregate(step.x0(x[:, :n], eps[:, :n])))
    eps[:, n] = (x[:, n] - step.abar_t**0.5 * low) / (1 - step.abar_t) ** 0.5  # x̂₀ of the global view = low
    out = task.strategy.step(x, eps, step, problem)
    local = SyncSDE(20.0, preset="canonical").step(x[:, :n], eps[:, :n], step, SyncProblem(n, (), problem.canonical))
    torch.testing.assert_close(out[:, :n], local)
    torch.testing.assert_close(out[:, n], step.update(x[:, n], low, eps[:, n]))
    # away from it, the windows' consensus moves toward the global view's low band (ρ = 1: onto it, to the
    # accuracy of D∘U on the coarse grid)
    eps[:, n] = torch.randn_like(eps[:, n])
    out = task.strategy.step(x, eps, step, problem)
    moved = problem.canonical.aggregate(step.x0(out[:, :n], eps[:, :n]))
    before = problem.canonical.aggregate(step.x0(x[:, :n], eps[:, :n]))
    target = step.x0(x[:, n], eps[:, n])
    assert (view.down(moved) - target).norm() < 0.5 * (view.down(before) - target).norm()


def test_fade_schedule_and_options():
    step = tiny_task(SyncSDE(20.0)).schedule().steps[2]
    assert SyncSDE(20.0, preset="global", global_view=0.5).global_share(step) == pytest.approx(0.5 * step.t / step.T)
    assert SyncSDE(20.0, preset="global", global_schedule="constant").global_share(step) == 1.0
    assert SyncSDE(5.0).faithful and not SyncSDE(5.0, preset="global").faithful
    assert PRESETS["paper"]["global_view"] == 0 and "global_view" not in SyncSDE(5.0).describe()
    assert SyncSDE(5.0, preset="global").needs() == {"canonical", "global_view"}
    with pytest.raises(InputError, match="--model.strategy.global_view 2"):
        SyncSDE(5.0, global_view=2)
    with pytest.raises(InputError, match="--model.strategy.global_schedule 'linear'"):
        SyncSDE(5.0, global_schedule="linear")


def test_one_mode_across_a_canvas_many_windows_wide():
    """The exact global-mode model on a canvas of 21 windows in a row: the whole-canvas ideal is in one mode; the
    local couplings make a montage of modes; the global view makes one scene."""
    c = gc.CANVASES["wide"]
    backbone = GaussianMixtureBackbone(c["means"], channels=1, sample_size=8, std=0.5)
    rates = {}
    for name in ("canonical", "global"):
        z = gc.run_task(gc.exact_task(backbone, SyncSDE(20.0, preset=name), c["size"], c["stride"], 20), 16, 0)
        rates[name] = float(gc.single_mode(backbone, z, 8, c["stride"]).float().mean())
    ideal = gc.whole_canvas(backbone, c["size"], 16, 0, 20)
    assert float(gc.single_mode(backbone, ideal, 8, c["stride"]).float().mean()) > 0.9
    assert rates["canonical"] < 0.2 and rates["global"] > 0.8


def test_the_sphere_gets_a_global_view_of_its_canvas():
    backbone = GaussianBackbone(channels=1, sample_size=8, scale_factor=1)
    task = SpherePanorama(
        backbone,
        SyncSDE(20.0, preset="global"),
        height=16,
        num_inference_steps=2,
        viewer_size=8,
        prompt_prefix="",
        progress=False,
    )
    view = task.problem([{}]).global_view
    assert view.index == 20 and view.size == (8, 8) and view.canvas == (64, 128)
    out = task.generate(["a sunny day"])[0]
    assert out.image.shape == (3, 16, 32) and task.describe()["global_trajectory"] is True


def test_tasks_without_a_global_view_refuse_it_in_one_line():
    from syncsde.tasks import PromptedWideImage

    backbone = GaussianBackbone(channels=1, sample_size=8, scale_factor=1)
    with pytest.raises(InputError, match="needs a task that provides .*global"):
        PromptedWideImage(backbone, SyncSDE(20.0, preset="global"), height=8, width=16, stride=4)


def test_letterbox_band_keeps_the_canvas_aspect():
    from syncsde.coupling import GlobalView

    assert GlobalView(3, (8, 8), (8, 24)).band("letterbox") == (2, 0, 3, 8)  # 1:3, one factor 3, centred
    assert GlobalView(3, (8, 8), (8, 24)).band("isotropic") == (0, 0, 8, 8)  # squashed: the whole frame
    assert GlobalView(3, (8, 8), (8, 24)).fitted() == (3, 8)
    assert GlobalView(3, (8, 8), (64, 128)).band("letterbox") == (2, 0, 4, 8)  # the sphere's 1:2 canvas
    assert GlobalView(3, (8, 8), (48, 8)).band("letterbox") == (0, 3, 8, 1)  # tall: pillarbox, at least 1 column
    assert GlobalView(3, (8, 8), (16, 16)).band("letterbox") == GlobalView(3, (8, 8), (16, 16)).band() == (0, 0, 8, 8)
    assert GlobalView(3, (8, 8), (8, 24)).isotropy() == pytest.approx(1 / 3)
    assert GlobalView(3, (8, 8), (64, 128)).isotropy() == 0.5 and GlobalView(3, (8, 8), (16, 16)).isotropy() == 1
    with pytest.raises(InputError, match="--model.strategy.global_fit 'crop'"):
        SyncSDE(5.0, global_fit="crop")
    assert SyncSDE(5.0, preset="global", global_fit="letterbox").describe()["global_fit"] == "letterbox"
    assert "global_fit" not in SyncSDE(5.0, preset="global").describe() and SyncSDE(5.0, global_fit="squash").faithful


def test_letterbox_is_the_squash_on_a_square_canvas_and_nothing_without_a_global_view():
    """A canvas of the frame's aspect fits it with one scale factor: letterbox and squash are one run, bit for bit
    (on the exact model's 2-D canvas, then its single-mode result holds); ρ = 0 is the canonical preset."""
    batch = [{"prompt": "", "sample_id": i, "seed": 2} for i in range(2)]
    square = dict(height=16, width=16, stride=4, vertical_stride=4)
    runs = {
        fit: tiny_task(SyncSDE(20.0, preset="global", global_fit=fit), **square).trajectories(batch)
        for fit in ("squash", "scaled", "profile", "isotropic", "letterbox")
    }
    assert all(torch.equal(runs["squash"], run) for run in runs.values())
    off = tiny_task(SyncSDE(20.0, preset="global", global_view=0.0, global_fit="letterbox"))
    assert torch.equal(off.trajectories(batch), tiny_task(SyncSDE(20.0, preset="canonical")).trajectories(batch))
    squash = tiny_task(SyncSDE(20.0, preset="global")).trajectories(batch)
    for fit in ("profile", "isotropic", "letterbox"):
        assert not torch.equal(tiny_task(SyncSDE(20.0, preset="global", global_fit=fit)).trajectories(batch), squash)
    # scaled, on a 1:3 canvas: the squash with a third of the share
    scaled = tiny_task(SyncSDE(20.0, preset="global", global_fit="scaled")).trajectories(batch)
    third = tiny_task(SyncSDE(20.0, preset="global", global_view=1 / 3)).trajectories(batch)
    torch.testing.assert_close(scaled, third)
    assert (scaled - squash).abs().max() > 1e-2


def test_letterbox_fuses_only_the_band_that_shows_the_canvas():
    """With the canvas letterboxed, the global view's x̂₀ equal to the windows' consensus on its band is a fixed point
    whatever the rest of the frame holds; the rest of the frame keeps the global's own x̂₀ whatever the windows do;
    the band moves toward the windows' consensus by 1 − ρ_t."""
    strategy = SyncSDE(20.0, preset="global", global_schedule="constant", global_view=0.75, global_fit="letterbox")
    task = tiny_task(strategy)  # 8×24 canvas, 8×8 frame: band rows 2..4
    problem, step = task.problem([{}]), task.schedule().steps[3]
    n, view, canon = task.n, problem.global_view, problem.canonical
    top, left, h, w = view.band("letterbox")
    x, eps = torch.randn(2, n + 1, 1, 8, 8), torch.randn(2, n + 1, 1, 8, 8)
    a, s = step.abar_t**0.5, (1 - step.abar_t) ** 0.5
    x0 = step.x0(x, eps)
    low = view.down(canon.aggregate(x0[:, :n]), (h, w))
    x0[:, n, ..., top : top + h, left : left + w] = low  # the global's band = the consensus; its margins random
    eps[:, n] = (x[:, n] - a * x0[:, n]) / s
    out = strategy.step(x, eps, step, problem)
    local = SyncSDE(20.0, preset="canonical").step(x[:, :n], eps[:, :n], step, SyncProblem(n, (), canon))
    torch.testing.assert_close(out[:, :n], local)
    torch.testing.assert_close(out[:, n], step.update(x[:, n], x0[:, n], eps[:, n]))
    # other windows: the global's margins are its own; its band is ρ·(its own) + (1 − ρ)·(the new consensus)
    eps2 = eps.clone()
    eps2[:, :n] = torch.randn_like(eps[:, :n])
    new = strategy.step(x, eps2, step, problem)
    fused = step.x0(x, eps2)[:, n].clone()
    low2 = view.down(canon.aggregate(step.x0(x[:, :n], eps2[:, :n])), (h, w))
    fused[..., top : top + h, left : left + w] = 0.75 * fused[..., top : top + h, left : left + w] + 0.25 * low2
    torch.testing.assert_close(new[:, n], step.update(x[:, n], fused, eps2[:, n]))


def test_isotropic_fuses_the_coarse_band_and_the_global_takes_the_consensus_above_it():
    """A global view that agrees with the windows' consensus on the coarse band (the canvas at the fitted size) leaves
    the windows' step unchanged whatever its finer detail; the global takes the consensus's detail."""
    strategy = SyncSDE(20.0, preset="global", global_schedule="constant", global_fit="isotropic")
    task = tiny_task(strategy)  # 8×24 canvas, 8×8 frame, coarse band 3×8: area bins rows [0, 3), [2, 6), [5, 8)
    problem, step = task.problem([{}]), task.schedule().steps[3]
    n, view, canon = task.n, problem.global_view, problem.canonical
    assert view.fitted() == (3, 8)
    x, eps = torch.randn(2, n + 1, 1, 8, 8), torch.randn(2, n + 1, 1, 8, 8)
    low = view.down(canon.aggregate(step.x0(x[:, :n], eps[:, :n])))
    detail = torch.tensor([1.0, -1, 0, 1, -1, 0, 1, -1])[:, None] * torch.randn(2, 1, 1, 8)  # zero on every bin
    assert view.down(detail, (3, 8)).abs().max() < 1e-6
    a, s = step.abar_t**0.5, (1 - step.abar_t) ** 0.5
    eps[:, n] = (x[:, n] - a * (low + detail)) / s
    out = strategy.step(x, eps, step, problem)
    local = SyncSDE(20.0, preset="canonical").step(x[:, :n], eps[:, :n], step, SyncProblem(n, (), canon))
    torch.testing.assert_close(out[:, :n], local)
    torch.testing.assert_close(out[:, n], step.update(x[:, n], low, eps[:, n]))
    squash = SyncSDE(20.0, preset="global", global_schedule="constant").step(x, eps, step, problem)
    assert (squash[:, :n] - local).abs().max() > 1e-3  # the squash takes the detail into the windows


def test_profile_trusts_the_rows_fully_and_the_variation_along_them_by_the_isotropy():
    """A 1:3 canvas squashed along its columns: where the global view's x̂₀ differs from the windows' consensus by a
    profile (constant along the squashed axis, which the squash keeps exactly), ``profile`` is the squash at share ρ;
    where it differs by a variation with no profile, it is the squash at share ρ·ι = ρ/3."""
    task = tiny_task(SyncSDE(20.0, preset="global"))
    problem, step = task.problem([{}]), task.schedule().steps[3]
    n, view, canon = task.n, problem.global_view, problem.canonical
    assert view.squashed_axis() == -1 and view.isotropy() == pytest.approx(1 / 3)
    x, eps = torch.randn(2, n + 1, 1, 8, 8), torch.randn(2, n + 1, 1, 8, 8)
    low = view.down(canon.aggregate(step.x0(x[:, :n], eps[:, :n])))
    a, s = step.abar_t**0.5, (1 - step.abar_t) ** 0.5
    fit = lambda rho, fit: SyncSDE(  # noqa: E731
        20.0, preset="global", global_schedule="constant", global_view=rho, global_fit=fit
    ).step(x, eps, step, problem)
    rows = torch.randn(2, 1, 8, 1).expand(2, 1, 8, 8)  # a profile: constant along the columns
    eps[:, n] = (x[:, n] - a * (low + rows)) / s
    torch.testing.assert_close(fit(0.9, "profile"), fit(0.9, "squash"))
    wiggle = torch.randn(2, 1, 8, 8)
    eps[:, n] = (x[:, n] - a * (low + wiggle - wiggle.mean(-1, keepdim=True))) / s
    torch.testing.assert_close(fit(0.9, "profile"), fit(0.3, "squash"))
    assert (fit(0.9, "profile") - fit(0.9, "squash")).abs().max() > 1e-2


def test_sphere_views_take_the_prompt_of_their_direction():
    """View-dependent prompts: views looking up take the ``above`` prompt, down the ``below`` one, the rest (and the
    global view, which sees every direction) the record's; the prompts reach the network (another picture)."""
    from syncsde.backbones import StableDiffusion

    prompts = {"above": "{prompt}, the sky", "below": "snow"}
    kw = dict(views=[(90.0, 0.0), (30.0, 0.0), (0.0, 90.0), (-45.0, 0.0)], height=16, num_inference_steps=2)
    backbone = GaussianBackbone(channels=1, sample_size=8, scale_factor=1)
    task = SpherePanorama(backbone, SyncSDE(20.0, preset="global"), view_prompts=prompts, prompt_prefix="> ", **kw)
    assert task.trajectory_prompts([{"prompt": "a day"}]) == [
        ["> a day, the sky", "> a day, the sky", "> a day", "> snow", "> a day"]
    ]
    steep = SpherePanorama(backbone, SyncSDE(5.0), view_prompts=prompts, view_elevation=60, prompt_prefix="", **kw)
    assert [p for p in steep.trajectory_prompts([{"prompt": "x"}])[0]] == ["x, the sky", "x", "x", "x"]
    assert steep.describe()["view_prompts"] == prompts and "view_prompts" not in SpherePanorama(backbone).describe()
    with pytest.raises(InputError, match="--model.view_prompts \\['up'\\]"):
        SpherePanorama(backbone, view_prompts={"up": "sky"})
    with pytest.raises(InputError, match="--model.view_elevation 100"):
        SpherePanorama(backbone, view_elevation=100)
    tiny = StableDiffusion("syncsde:tiny-ldm")
    small = dict(views=[(90.0, 0.0), (0.0, 0.0)], height=32, canonical_height=32, num_inference_steps=2, viewer_size=8)
    plain, viewed = (
        SpherePanorama(tiny, SyncSDE(5.0), view_prompts=p, progress=False, **small).generate(["a sunny day"])[0].image
        for p in (None, {"above": "a night sky over snow"})
    )
    assert (plain - viewed).abs().max() > 1e-3
