"""Mesh texturing: loading and UVs, camera conventions, rasterized G-buffers, projection and bake, the couplings
(incremental maps against the previous implementation, the official inverse projection, mask and γ re-derived), the
task end to end and its paper preset."""

from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from syncsde.errors import InputError
from syncsde.mesh.cameras import PAPER_VIEWS, Camera
from syncsde.mesh.io import load_mesh
from syncsde.mesh.raster import rasterize
from syncsde.mesh.texture import bake, cosine_weight, render, texel_index, voronoi_fill

ROOT = Path(__file__).resolve().parents[1]
TOL = dict(atol=1e-6, rtol=1e-6)


@pytest.fixture(scope="module")
def sphere(tmp_path_factory):
    path = tmp_path_factory.mktemp("mesh") / "sphere.obj"
    trimesh.creation.icosphere(subdivisions=3, radius=3.0).export(path)  # no UVs: xatlas unwraps it
    return load_mesh(path)


def test_load_normalises_and_unwraps(sphere):
    assert abs(float(sphere.vertices.norm(dim=1).max()) - 1) < 1e-5  # unit max radius
    assert sphere.vertices.mean(0).abs().max() < 0.05
    assert (
        sphere.uvs.shape == (len(sphere.vertices), 2) and 0 <= float(sphere.uvs.min()) and float(sphere.uvs.max()) <= 1
    )


def test_load_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_mesh(tmp_path / "none.obj")
    (tmp_path / "bad.ply").write_bytes(b"ply\nformat nonsense\n")
    with pytest.raises(InputError, match="cannot read mesh|has no faces"):
        load_mesh(tmp_path / "bad.ply")
    (tmp_path / "points.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    with pytest.raises(InputError, match="has no faces"):
        load_mesh(tmp_path / "points.obj")


def test_camera_conventions():
    cam = Camera(0, 0, distance=2.0, fov=60)
    assert torch.allclose(cam.eye, torch.tensor([0.0, 0.0, 2.0]))  # azimuth 0 = front, on +z
    px = cam.project(torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.5, 0.0], [0.5, 0.0, 0.0]]), 100)
    f = float(0.5 / (2 * np.tan(np.radians(30))))
    torch.testing.assert_close(px[0], torch.tensor([50.0, 50.0]))
    torch.testing.assert_close(px[1], torch.tensor([50 * (1 - f), 50.0]))  # up is up
    torch.testing.assert_close(px[2], torch.tensor([50.0, 50 * (1 + f)]))  # +x is to the right, seen from the front
    assert torch.allclose(Camera(0, 90).eye, torch.tensor([2.0, 0.0, 0.0]), atol=1e-6)
    assert len(PAPER_VIEWS) == 10 and PAPER_VIEWS[0] == (0, -180)


def test_rasterized_vertex_lands_on_expected_pixel(sphere):
    cam = Camera(0, 0, distance=3.0, fov=60)
    (g,) = rasterize(sphere, [cam], 64)
    front = int(torch.argmax(sphere.vertices[:, 2]))  # the vertex nearest the camera
    r, c = cam.project(sphere.vertices[front : front + 1], 64)[0].long().tolist()
    assert g.mask[r, c] and int(g.face[r, c]) >= 0
    faces = torch.nonzero((sphere.faces == front).any(1)).flatten().tolist()
    near = g.face[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2].flatten().tolist()
    assert set(near) & set(faces)  # a face around that vertex is drawn there
    torch.testing.assert_close(g.depth[r, c], torch.tensor(2.0), atol=0.05, rtol=0)  # distance 3 − radius 1
    assert not g.mask[0, 0] and int(g.face[0, 0]) == -1


def test_bake_of_render_is_identity_on_seen_texels(sphere):
    cams = [Camera(e, a, distance=2.5) for e, a in PAPER_VIEWS]
    gbs = rasterize(sphere, cams, 96)
    tex = torch.rand(3, 64, 64)
    views = [render(tex, g) for g in gbs]
    weights = [cosine_weight(g, c.eye, 1.0) for g, c in zip(gbs, cams)]
    baked, wsum = bake(views, gbs, weights, (64, 64))
    seen = wsum > 0
    assert seen.float().mean() > 0.2
    torch.testing.assert_close(baked[:, seen], tex[:, seen])
    assert torch.count_nonzero(baked[:, ~seen]) == 0  # unseen texels stay 0 (no fill while sampling)
    const = torch.full((3, 64, 64), 0.3)
    cb, cw = bake([render(const, g) for g in gbs], gbs, weights, (64, 64))
    torch.testing.assert_close(cb[:, cw > 0], torch.full_like(cb[:, cw > 0], 0.3))


def test_cosine_weight_faces_the_camera(sphere):
    cam = Camera(0, 0, distance=3.0)
    (g,) = rasterize(sphere, [cam], 64)
    w = cosine_weight(g, cam.eye, 1.0)
    assert float(w[32, 32]) > 0.95 and float(w[g.mask].min()) >= 0 and float(w[~g.mask].abs().max()) == 0
    assert torch.equal(cosine_weight(g, cam.eye, 0.0)[g.mask], torch.ones(int(g.mask.sum())))  # e used literally


def test_voronoi_fill_equals_brute_force_nearest_seed():
    rng = np.random.default_rng(0)
    seen = torch.tensor(rng.random((24, 31)) < 0.05)
    tex = torch.rand(2, 24, 31)
    filled = voronoi_fill(tex, seen)
    seeds = torch.nonzero(seen).float()
    grid = torch.stack(torch.meshgrid(torch.arange(24.0), torch.arange(31.0), indexing="ij"), -1).view(-1, 2)
    d = torch.cdist(grid, seeds)
    best = d.min(1).values
    for p in range(grid.shape[0]):
        r, c = int(grid[p, 0]), int(grid[p, 1])
        candidates = seeds[(d[p] - best[p]).abs() < 1e-6].long()  # ties: any nearest seed is correct
        assert any(torch.equal(filled[:, r, c], tex[:, s[0], s[1]]) for s in candidates)
    assert torch.equal(filled[:, seen], tex[:, seen])


@pytest.fixture(scope="module")
def tiny_cn(tiny_sd_dir, tmp_path_factory):
    from syncsde.backbones import StableDiffusionControlNet
    from syncsde.testing import save_tiny_controlnet

    return StableDiffusionControlNet(
        str(tiny_sd_dir), str(save_tiny_controlnet(tmp_path_factory.mktemp("cn") / "cn", tiny_sd_dir))
    )


def mesh_task(backbone, strategy, **kw):
    from syncsde.tasks import MeshTexturing

    kw = {
        "view_size": 64,
        "latent_texture_size": 32,
        "rgb_texture_size": 64,
        "num_inference_steps": 4,
        "guidance_scale": 7.5,
        "turntable_frames": 3,
        "progress": False,
        **kw,
    }
    return MeshTexturing(backbone, strategy, **kw)


REC = {"mesh": "configs/assets/ball.obj", "prompt": "a blue ball", "sample_id": 0, "seed": 0}


def _geometry_of(latent, texture):
    """The ball seen from the paper's 10 cameras with views of ``latent``² and a texture of ``texture``²."""
    from syncsde.tasks.mesh import Geometry

    cameras = [Camera(e, a) for e, a in PAPER_VIEWS]
    return Geometry(load_mesh("configs/assets/ball.obj"), cameras, latent, latent, texture)


class PreviousMeshCoupling:
    """The mesh coupling and canonical texture as implemented before the incremental maps (kept as the reference):
    every coupling rebuilt the full-texture splat bake of all earlier views at every step."""

    def __init__(self, geo):
        self.geo, self.T = geo, geo.texture_size
        self.weights = [cosine_weight(g, c.eye, 1.0) for g, c in zip(geo.latent, geo.cameras)]

    def covered(self, i):
        seen = torch.zeros(self.T * self.T, dtype=torch.bool)
        for j in range(i):
            g = self.geo.latent[j]
            seen[texel_index(g.uv, self.T, self.T)[g.mask & (self.weights[j] > 0)]] = True
        g = self.geo.latent[i]
        return (g.mask & seen[texel_index(g.uv, self.T, self.T)]).float()

    def joint_render(self, earlier, i):
        tex, _ = bake(list(earlier), self.geo.latent[:i], self.weights[:i], (self.T, self.T))
        return render(tex, self.geo.latent[i])

    def aggregate(self, x):
        tex, w = bake(list(x), self.geo.latent, self.weights, (self.T, self.T))
        return voronoi_fill(tex, w > 0)

    def forward_onto(self, z, x):
        return torch.stack([render(z, g, x[i]) for i, g in enumerate(self.geo.latent)])


def official_bake(geo, x, views, exponent=1.0, fill=True):
    """The official inverse projection (BASELINES.md §4.3 steps 1–3), re-derived over whole textures: per-view
    texel means in the gradient form 2Σ/(2n + 1e−8), Voronoi-filled (the cosine means too, if ``fill``), weighted by
    V_j c_j^e, divided by Σ V_j c_j^e + 1e−8 (no final fill)."""
    from syncsde.mesh.projection import visible_texels

    T = geo.texture_size
    visible = visible_texels(geo.mesh, geo.cameras, T)
    total, baked = torch.zeros(T * T), torch.zeros(x.shape[1], T * T)
    for j in views:
        g = geo.latent[j]
        texel = texel_index(g.uv, T, T)[g.mask]
        grad = torch.zeros(T * T).index_add_(0, texel, torch.full((len(texel),), 2.0))
        seen = (grad > 0).view(T, T)
        mean = torch.zeros(x.shape[1], T * T).index_add_(1, texel, 2 * x[j][:, g.mask]) / (grad + 1e-8)
        cos = torch.zeros(T * T).index_add_(0, texel, 2 * cosine_weight(g, geo.cameras[j].eye, 1.0)[g.mask])
        cos = cos / (grad + 1e-8)
        mean = voronoi_fill(mean.view(-1, T, T), seen).flatten(1)
        if fill:
            cos = voronoi_fill(cos.view(1, T, T), seen).flatten()
        w = visible[j].float() * cos**exponent
        total, baked = total + w, baked + mean * w
    return (baked / (total + 1e-8)).view(-1, T, T), total


@pytest.mark.parametrize("latent,texture", [(8, 32), (16, 256)])  # texels about as many as pixels, and far more
def test_incremental_coupling_equals_previous_implementation(latent, texture, monkeypatch):
    from syncsde.tasks.mesh import MeshCanonical

    monkeypatch.chdir(ROOT)
    geo = _geometry_of(latent, texture)
    old = PreviousMeshCoupling(geo)
    x = torch.randn(10, 4, latent, latent, generator=torch.Generator().manual_seed(0))
    for i, (f, covered) in enumerate(geo.couplings("splat", "cpu"), start=1):
        torch.testing.assert_close(f(x[:i].flatten(2)).view(4, latent, latent), old.joint_render(x[:i], i), **TOL)
        assert torch.equal(covered.view(latent, latent), old.covered(i))
    canon = MeshCanonical([geo], 4, "splat", "cpu")
    z = canon.aggregate(x[None])
    torch.testing.assert_close(canon.forward(z)[0], old.forward_onto(old.aggregate(x), 0 * x), **TOL)
    torch.testing.assert_close(canon.forward_onto(z, x[None])[0], old.forward_onto(old.aggregate(x), x), **TOL)


def test_incremental_coupling_gives_the_same_samples(tiny_cn, monkeypatch):
    """Whole runs (SyncSDE, and SyncMVD's canonical averaging) with the previous implementation's couplings patched
    in give the same views to 1e-6 of their scale (the summation order differs: float32 rounding, carried through
    the network)."""
    from syncsde.coupling import Canonical, Coupling, SyncProblem
    from syncsde.strategies import SyncSDE, SyncTweedies

    monkeypatch.chdir(ROOT)

    def previous_problem(batch):
        old = PreviousMeshCoupling(batch[0]["geometry"])

        class Previous(Canonical):
            shape = (4, old.T, old.T)

            def aggregate(self, x):
                return old.aggregate(x[0])[None]

            def forward_onto(self, z, x):
                return old.forward_onto(z[0], x[0])[None]

        couplings = [
            Coupling(i, tuple(range(i)), lambda e, i=i: old.joint_render(e[0], i)[None], old.covered(i)[None, None])
            for i in range(1, 10)
        ]
        return SyncProblem(10, couplings, canonical=Previous())

    options = dict(bake="splat", multiview_attention=False, num_inference_steps=5)
    for strategy in (SyncSDE(1.0, sync_t_min=0), SyncTweedies(case=5)):
        new, previous = mesh_task(tiny_cn, strategy, **options), mesh_task(tiny_cn, strategy, **options)
        previous.problem = previous_problem
        x, x_previous = new.trajectories([REC]), previous.trajectories([REC])
        assert float((x - x_previous).abs().max()) <= 1e-6 * float(x.abs().max())


def test_projection_bake_is_the_official_inverse_projection(monkeypatch):
    from syncsde.mesh.projection import ViewSamples, project_bake, visible_texels
    from syncsde.tasks.mesh import MeshCanonical

    monkeypatch.chdir(ROOT)
    geo = _geometry_of(16, 128)
    x = torch.randn(10, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    for i, (f, covered) in enumerate(geo.couplings("projection", "cpu"), start=1):
        z, total = official_bake(geo, x, range(i))
        torch.testing.assert_close(f(x[:i].flatten(2)).view(4, 16, 16), render(z, geo.latent[i]), **TOL)
        g = geo.latent[i]
        assert torch.equal(covered.view(16, 16), (g.mask & (total[texel_index(g.uv, 128, 128)] > 0)).float())
    # SyncMVD's canonical texture: the bake of all views, filled where no view has weight
    z, total = official_bake(geo, x, range(10))
    z = voronoi_fill(z, (total > 0).view(128, 128))
    canon = MeshCanonical([geo], 4, "projection", "cpu")
    torch.testing.assert_close(
        canon.forward(canon.aggregate(x[None]))[0], PreviousMeshCoupling(geo).forward_onto(z, 0 * x)
    )
    # the final RGB bake: the same inverse projection with unfilled cosines, exponent 6
    samples = [ViewSamples.of(g, c.eye, 128) for g, c in zip(geo.latent, geo.cameras)]
    colours = torch.rand(10, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    tex, w = project_bake(colours.flatten(2), samples, visible_texels(geo.mesh, geo.cameras, 128), 6.0, 128)
    ref, ref_w = official_bake(geo, colours, range(10), exponent=6.0, fill=False)
    torch.testing.assert_close(tex.view(3, 128, 128), ref, **TOL)
    torch.testing.assert_close(w, ref_w, **TOL)


def test_projection_couples_most_of_a_view_where_splat_does_not(monkeypatch):
    monkeypatch.chdir(ROOT)
    geo = _geometry_of(24, 512)  # 21 texels per view pixel, like 1536² from 96² views
    mask = torch.stack([g.mask.flatten() for g in geo.latent[1:]]).float().sum(1)
    splat = torch.stack([c for _, c in geo.couplings("splat", "cpu")]).sum(1) / mask
    projection = torch.stack([c for _, c in geo.couplings("projection", "cpu")]).sum(1) / mask
    assert float(splat.max()) < 0.2 and float(projection.min()) > 0.5


@pytest.mark.parametrize("bake_name", ["projection", "splat"])
def test_official_mask_is_the_value_test_on_the_render(tiny_cn, bake_name, monkeypatch):
    from syncsde.coupling import coupling_residuals
    from syncsde.strategies import SyncSDE

    monkeypatch.chdir(ROOT)
    task = mesh_task(tiny_cn, SyncSDE(5.0), bake=bake_name, coupling_mask="value_test")
    problem = task.problem(task.prepare([REC]))
    x = torch.randn(1, 10, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    x[:, :5, 0] = 1.0  # renders of texels seen only by these views read exactly 1 in channel 0: outside the mask
    residuals = coupling_residuals(x, problem.couplings)
    excluded = 0
    for c in problem.couplings:
        r = c.map(x[:, : c.target])  # render_i of the bake of the earlier views
        mask = ((r[:, 0] != 0) & (r[:, 0] != 1)).to(torch.uint8)[:, None]  # the official arithmetic
        assert torch.equal(residuals[:, c.target], mask * (x[:, c.target] - r))
        excluded += int(((r[:, 0] == 1) & task.geometry(REC).latent[c.target].mask).sum())
    assert excluded > 0  # the "== 1" branch was exercised
    assert torch.equal(residuals[:, 0], torch.zeros_like(x[:, 0]))


def test_coupling_structure_and_coverage(tiny_cn, monkeypatch):
    from syncsde.strategies import SyncSDE

    monkeypatch.chdir(ROOT)
    task = mesh_task(tiny_cn, SyncSDE(5.0, sync_t_min=200))
    problem = task.problem(task.prepare([REC]))
    assert [(c.target, c.source) for c in problem.couplings] == [(i, tuple(range(i))) for i in range(1, 10)]
    geo = task.geometry(REC)
    for c in problem.couplings:
        mask = geo.latent[c.target].mask.float()
        assert c.weight.shape == (1, 1, 8, 8) and torch.all(c.weight[0, 0] <= mask) and c.weight.sum() > 0
    x = torch.randn(1, 10, 4, 8, 8)
    f, _ = geo.couplings(task.bake, "cpu")[0]
    assert torch.equal(problem.couplings[0].pulled_toward(x)[0], f(x[0, :1].flatten(2)).view(4, 8, 8))


def test_paper_defaults_and_official_gamma(tiny_cn, monkeypatch):
    from diffusers import DDPMScheduler

    from syncsde.strategies import SyncSDE

    monkeypatch.chdir(ROOT)
    task = mesh_task(tiny_cn, SyncSDE(5.0, sync_t_min=200), num_inference_steps=30)
    assert task.T == 1000 and task.multiview_attention and task.bake == "projection"
    strategy = SyncSDE(5.0)
    paper = task.schedule()
    abar = DDPMScheduler.from_config(tiny_cn.scheduler_config()).alphas_cumprod.double()
    for step in paper:  # c_t = γ_t (1/λ)(t/1000), γ_t with ᾱ at t − 1000 // 30 (DDIM formula, also under DDPM)
        prev = abar[step.t - 33] if step.t >= 33 else torch.tensor(1.0, dtype=torch.float64)
        g = float((prev / abar[step.t]).sqrt() - ((1 - prev) / (1 - abar[step.t])).sqrt())
        assert strategy.coefficient(step) == pytest.approx(g * 5.0 * step.t / 1000, rel=1e-12)
    ten = mesh_task(tiny_cn, strategy, num_inference_steps=10, gamma_steps=30).schedule()
    for step in ten:  # the official code keeps t' = t − 33 for γ_t at any step count; the update uses t − 100
        prev = abar[step.t - 33] if step.t >= 33 else torch.tensor(1.0, dtype=torch.float64)
        assert step.t_prev == step.t - 100 and step.abar_prev == pytest.approx(
            float(abar[step.t - 100]) if step.t >= 100 else 1.0
        )
        assert step.gamma == pytest.approx(
            float((prev / abar[step.t]).sqrt() - ((1 - prev) / (1 - abar[step.t])).sqrt())
        )
    assert [s.gamma for s in mesh_task(tiny_cn, strategy, num_inference_steps=30, gamma_steps=30).schedule()] == [
        s.gamma for s in paper
    ]  # the same at the paper's 30 steps


def test_view_prompts_are_the_official_strings(tiny_cn, monkeypatch):
    monkeypatch.chdir(ROOT)
    task = mesh_task(tiny_cn, None, prompt_prefix="Best quality, extremely detailed ", negative_prompt="blurry.")
    prompts = task.trajectory_prompts([REC])[0]
    for (e, a), (pos, neg) in zip(PAPER_VIEWS, prompts):
        azim = a + 360 if a < 0 else a  # the official code's camera poses, then its azim_prompt / azim_neg_prompt
        azim = azim - 360 if azim > 180 else azim
        side = "top" if e > 30 else "front" if -30 <= azim <= 30 else "back" if azim <= -120 or azim >= 120 else "side"
        opposite = "" if -30 < azim < 30 else "front"
        assert pos == f"Best quality, extremely detailed a blue ball, {side} view."
        assert neg == "blurry." + f", {opposite} view."


def test_nothing_moves_to_the_device_during_a_step(tiny_cn, monkeypatch):
    """Couplings, masks and the canonical maps are on the task's device from the start of the batch: running the
    mesh's couplings and canonical maps on a ``meta`` device touches only meta tensors and copies nothing."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    from syncsde.coupling import coupling_residuals
    from syncsde.strategies import SyncSDE
    from syncsde.tasks.mesh import MeshTexturing

    class Devices(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.devices, self.copies = set(), 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.devices |= {t.device.type for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
            self.copies += func is torch.ops.aten._to_copy.default
            return func(*args, **(kwargs or {}))

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(MeshTexturing, "device", property(lambda self: torch.device("meta")))
    for mask in ("coverage", "value_test"):
        task = mesh_task(tiny_cn, SyncSDE(5.0), coupling_mask=mask)
        problem = task.problem(task.prepare([REC]))
        problem.canonical.aggregate(torch.zeros(1, 10, 4, 8, 8, device="meta"))  # built on first use, then kept
        x = torch.zeros(1, 10, 4, 8, 8, device="meta")
        with Devices() as seen:
            coupling_residuals(x, problem.couplings)
            problem.canonical.forward_onto(problem.canonical.aggregate(x), x)
        assert seen.devices == {"meta"} and seen.copies == 0


def test_full_task_on_tiny_controlnet_and_exports_reload(tiny_cn, tmp_path, monkeypatch):
    from pathlib import Path

    from syncsde.strategies import Independent, SyncSDE
    from syncsde.writer import SampleWriter

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    sync = mesh_task(tiny_cn, SyncSDE(5.0, sync_t_min=0))
    x_sync = sync.trajectories([REC])
    assert tiny_cn.control.shape == (10, 3, 64, 64) and float(tiny_cn.control.max()) <= 1  # depth per view
    alone = dict(multiview_attention=False)  # the attention exchanges information between views in the network
    x_free = mesh_task(tiny_cn, Independent(), **alone).trajectories([REC])
    torch.testing.assert_close(
        mesh_task(tiny_cn, SyncSDE(5.0, sync_t_min=0), **alone).trajectories([REC])[:, 0], x_free[:, 0]
    )  # view 0 never corrected
    assert not torch.allclose(x_sync[:, 1:], x_free[:, 1:])
    out = sync.run([REC])[0]
    assert out.image.shape == (3, 64, 64) and out.extras["views"].shape == (3, 128, 320)
    SampleWriter(tmp_path).write_sample(out)
    glb = trimesh.load(tmp_path / "00000" / "mesh.glb", force="mesh")
    assert len(glb.faces) == len(sync.geometry(REC).mesh.faces)
    assert np.asarray(glb.visual.material.baseColorTexture).shape[:2] == (64, 64)
    obj = trimesh.load(tmp_path / "00000" / "mesh.obj", force="mesh")
    assert obj.visual.uv is not None and np.asarray(obj.visual.material.image).shape[:2] == (64, 64)


def test_syncmvd_baseline_runs(tiny_cn, monkeypatch):
    from pathlib import Path

    from syncsde.strategies import SyncTweedies

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    task = mesh_task(tiny_cn, SyncTweedies(case=5, sync_t_min=200))
    x = task.trajectories([REC])
    assert torch.isfinite(x).all()


def test_multiview_attention_neighbours_and_self_only_equals_standard(tiny_sd_dir):
    from diffusers import UNet2DConditionModel

    from syncsde.mesh.attention import MultiViewAttention, install, neighbours

    nbrs, front = neighbours(PAPER_VIEWS)
    assert front == 4 and nbrs[4] == [3, 4, 5] and nbrs[0] == [7, 0, 1]  # ring of the 8 elevation-0 views
    assert nbrs[8] == [4, 8] and nbrs[9] == [0, 9]  # elevated views: their nearest ring view and themselves
    unet = UNet2DConditionModel.from_pretrained(tiny_sd_dir, subfolder="unet").eval()
    x, t, ctx = torch.randn(2 * 10, 4, 8, 8), torch.full((20,), 500), torch.randn(20, 77, 32)
    with torch.no_grad():
        ref = unet(x, t, encoder_hidden_states=ctx).sample
        state = {"t": 0}
        unet.set_attn_processor(
            {
                n: MultiViewAttention([[i] for i in range(10)], 4, state) if n.endswith("attn1.processor") else p
                for n, p in unet.attn_processors.items()
            }
        )
        torch.testing.assert_close(unet(x, t, encoder_hidden_states=ctx).sample, ref, atol=1e-5, rtol=1e-4)
        unet.set_attn_processor({n: p for n, p in unet.attn_processors.items()})
    unet2 = UNet2DConditionModel.from_pretrained(tiny_sd_dir, subfolder="unet").eval()
    remove = install(unet2, PAPER_VIEWS)
    with torch.no_grad():
        mixed = unet2(x, torch.full((20,), 900), encoder_hidden_states=ctx).sample
    remove()
    with torch.no_grad():
        plain = unet2(x, torch.full((20,), 900), encoder_hidden_states=ctx).sample
    assert not torch.allclose(mixed, plain)  # views exchange information
    assert all(type(p).__name__ != "MultiViewAttention" for p in unet2.attn_processors.values())  # restored


def test_mesh_task_with_multiview_attention(tiny_cn, monkeypatch):
    from pathlib import Path

    from syncsde.strategies import SyncTweedies

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    task = mesh_task(tiny_cn, SyncTweedies(case=5, sync_t_min=200), multiview_attention=True)
    assert torch.isfinite(task.trajectories([REC])).all()


def test_depth_condition(sphere):
    from syncsde.tasks.mesh import depth_image

    (g,) = rasterize(sphere, [Camera(0, 0, distance=3.0)], 64)
    sharp, blurred = depth_image(g, blur_sigma=0), depth_image(g)
    assert (
        sharp.shape == (3, 64, 64)
        and float(sharp.max()) == pytest.approx(1.0)
        and float(sharp[:, ~g.mask].abs().max()) == 0
    )
    assert float(sharp[0][g.mask].min()) == 0  # the farthest point, like the background (official)
    assert float(blurred[0, 32, 32]) > 0.9 and 0 < float(blurred[0][~g.mask].max()) < 0.5  # soft silhouette
    torch.testing.assert_close(blurred.sum(), sharp.sum(), rtol=0.05, atol=1.0)  # a normalised kernel


def test_depth_condition_is_the_official_arithmetic(sphere):
    """Re-derived: the official normalised inverse depth (background at depth 100, min over the object, max over the
    image, clamped to [0, 1]), then torchvision's Gaussian blur (kernel 5, σ 2, reflected borders) — here scipy's,
    on a view the sphere fills to its borders."""
    from scipy.ndimage import gaussian_filter

    from syncsde.tasks.mesh import depth_image

    (g,) = rasterize(sphere, [Camera(0, 0, distance=1.6)], 48)
    assert g.mask[0].any() and g.mask[:, 0].any()
    mask, z = g.mask.double().numpy(), g.depth.double().numpy()
    inv = 1 / (z * mask + 100 * (1 - mask))
    lo, hi = (inv * mask + 100 * (1 - mask)).min(), inv.max()
    official = gaussian_filter(np.clip((inv - lo) / (hi - lo), 0, 1), sigma=2, mode="mirror", truncate=1.0)
    ours = depth_image(g)
    assert torch.equal(ours[0], ours[2])
    np.testing.assert_allclose(ours[0].numpy(), official, atol=1e-5)


def test_paper_preset_runs_on_the_embedded_model(tmp_path, monkeypatch):
    """configs/paper/mesh.yaml with the embedded backbone and sizes of configs/tiny/mesh.yaml (whatever model that
    config names) runs end to end, and its sidecars record the official switches."""
    import json

    import yaml

    from syncsde.cli import main

    monkeypatch.chdir(ROOT)
    paper = yaml.safe_load((ROOT / "configs/paper/mesh.yaml").read_text())
    tiny = yaml.safe_load((ROOT / "configs/tiny/mesh.yaml").read_text())
    keep = ("backbone", "view_size", "latent_texture_size", "rgb_texture_size", "prompt_prefix", "view_suffix")
    paper["model"]["init_args"].update({k: tiny["model"]["init_args"][k] for k in keep})
    paper["model"]["init_args"].update(num_inference_steps=3, turntable_frames=2)
    paper["trainer"] = tiny["trainer"]
    paper["data"]["init_args"]["records"] = tiny["data"]["init_args"]["records"][:1]
    config = tmp_path / "paper_tiny_mesh.yaml"
    config.write_text(yaml.safe_dump(paper))
    out = tmp_path / "out"
    main(["predict", "--config", str(config), "--output_dir", str(out), "--trainer.enable_progress_bar", "false"])
    sidecar = json.loads(next(out.glob("00000*.json")).read_text())
    assert (sidecar["coupling_mask"], sidecar["gamma_steps"], sidecar["T"]) == ("value_test", 30, 1000)
    assert sidecar["bake"] == "projection" and sidecar["multiview_attention"] is True
    assert sidecar["sampler_dtype"] == "float16"
    assert (out / "00000.png").exists() and (out / "00000" / "mesh.glb").exists()


def test_uv_raster_agrees_with_the_views(sphere):
    """The face rasterized under a texel centre is the face a view shows where that texel is read (up to texels that
    straddle a face edge), and V_j covers the texels view j reads."""
    from syncsde.mesh.projection import visible_texels
    from syncsde.mesh.raster import rasterize_uv

    cams = [Camera(0, 0, distance=3.0), Camera(30, 180, distance=3.0)]
    visible = visible_texels(sphere, cams, 512)
    for j, g in enumerate(rasterize(sphere, cams, 96)):
        texel = texel_index(g.uv, 512, 512)[g.mask]
        assert (rasterize_uv(sphere, 512)[texel] == g.face[g.mask]).float().mean() > 0.9
        assert visible[j, texel].float().mean() > 0.99


def test_final_texture_fills_every_texel_no_view_saw():
    """configs/assets/ball.obj under the paper's cameras, every view white: every texel inside the UV charts is
    white in the texture and its exports, and the texels the views saw keep the bake's values. Before, texels seen
    only at grazing angles (bake weight ~1e-10) were darkened toward black by the bake's +1e-8 and, counted as seen,
    seeded the Voronoi fill of the bottom cap: 5% of the atlas black."""
    import io

    from PIL import Image

    from syncsde.mesh.projection import ViewSamples, project_bake
    from syncsde.mesh.raster import rasterize_uv
    from syncsde.tasks.mesh import SEEN_WEIGHT, _geometry, exports

    size = 256
    geo = _geometry(str(ROOT / "configs/assets/ball.obj"), (True, "y", False, True), tuple(PAPER_VIEWS), 2.0, 60.0,
                    32, size, size)  # fmt: skip
    views = torch.ones(len(PAPER_VIEWS), 3, size, size)
    tex = geo.texture(views, "projection", 6.0, size)
    charts = rasterize_uv(geo.mesh, size).view(size, size) >= 0
    assert charts.float().mean() > 0.3
    assert tex[:, charts].min() > 0.99
    baked, weight = project_bake(views.flatten(2), [ViewSamples.of(g, c.eye, size) for g, c in
                                                    zip(geo.pixel, geo.cameras)], geo.visible(size), 6.0, size)
    seen = (weight > SEEN_WEIGHT).view(size, size)
    assert seen.any() and torch.equal(tex[:, seen], baked.view(3, size, size)[:, seen].clamp(0, 1))
    png = np.asarray(Image.open(io.BytesIO(exports(geo.mesh, tex)["material_0.png"])).convert("RGB"))
    assert png[charts.numpy()].min() >= 252
