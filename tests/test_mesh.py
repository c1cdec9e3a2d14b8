"""Mesh groundwork (issue 7): loading and UVs, camera conventions, rasterized G-buffers, projection and bake."""

import numpy as np
import pytest
import torch
import trimesh

from syncsde.errors import InputError
from syncsde.mesh.cameras import PAPER_VIEWS, Camera
from syncsde.mesh.io import load_mesh
from syncsde.mesh.raster import rasterize
from syncsde.mesh.texture import bake, cosine_weight, render, voronoi_fill


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
    from tasks import MeshTexturing

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


def test_coupling_mask_grows_as_views_are_added(tiny_cn, monkeypatch):
    from pathlib import Path

    from syncsde.strategies import SyncSDE

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    task = mesh_task(tiny_cn, SyncSDE(5.0, sync_t_min=200))
    geo = task.geometry(REC)
    assert geo.coverage[0].sum() == 0  # view 0 is free
    for i in (5, 9):
        fewer, more = geo.covered(i, range(i // 2)), geo.covered(i, range(i))
        assert torch.all(more >= fewer) and more.sum() > fewer.sum()
    assert torch.equal(geo.coverage[1], geo.covered(1, [0]))  # M_1 = what view 0 saw
    problem = task.problem(task.prepare([REC]))
    assert [(c.target, c.source) for c in problem.couplings] == [(i, tuple(range(i))) for i in range(1, 10)]
    x = torch.randn(1, 10, 4, 8, 8)
    assert torch.equal(problem.couplings[0].pulled_toward(x)[0], geo.joint_render(x[0, :1], 1))


def test_full_task_on_tiny_controlnet_and_exports_reload(tiny_cn, tmp_path, monkeypatch):
    from pathlib import Path

    from syncsde.strategies import Independent, SyncSDE
    from syncsde.writer import SampleWriter

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    sync = mesh_task(tiny_cn, SyncSDE(5.0, sync_t_min=0))
    x_sync = sync.trajectories([REC])
    assert tiny_cn.control.shape == (10, 3, 64, 64) and float(tiny_cn.control.max()) <= 1  # depth per view
    x_free = mesh_task(tiny_cn, Independent()).trajectories([REC])
    torch.testing.assert_close(x_sync[:, 0], x_free[:, 0])  # view 0 never corrected
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
    from tasks.mesh import depth_image

    (g,) = rasterize(sphere, [Camera(0, 0, distance=3.0)], 64)
    sharp, blurred = depth_image(g, blur_sigma=0), depth_image(g)
    assert (
        sharp.shape == (3, 64, 64)
        and float(sharp.max()) == pytest.approx(1.0)
        and float(sharp[:, ~g.mask].abs().max()) == 0
    )
    assert float(sharp[0][g.mask].min()) == pytest.approx(0.1)
    assert float(blurred[0, 32, 32]) > 0.9 and 0 < float(blurred[0][~g.mask].max()) < 0.5  # soft silhouette
    torch.testing.assert_close(blurred.sum(), sharp.sum(), rtol=0.05, atol=1.0)  # a normalised kernel
