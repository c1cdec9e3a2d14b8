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
