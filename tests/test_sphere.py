"""360×180 panoramas (syncsde.sphere, tasks/sphere.py)."""

import math

import numpy as np
import pytest
import torch

from syncsde.backbones import GaussianBackbone, StableDiffusion
from syncsde.coupling import coupling_residuals
from syncsde.errors import InputError
from syncsde.sphere import SPHERE_VIEWS, SYNCTWEEDIES_VIEWS, Sphere, cell_directions, forward_index, perspective
from syncsde.strategies import Independent, MultiDiffusion, SyncSDE, SyncTweedies
from syncsde.tasks import SpherePanorama


H, SIZE = 128, 16  # a 128×256 canvas and 16-px views: ~1.3 cells per view pixel at the view centre


@pytest.fixture(scope="module")
def sphere():
    return Sphere(SPHERE_VIEWS, 72.0, SIZE, H)


def test_projection_agrees_with_py360convert():
    """Our forward maps (pyequilib) against an independent library: every pixel within 2 pixels' angle."""
    py360convert = pytest.importorskip("py360convert", reason="the cross-check needs py360convert")
    d = cell_directions(H, 2 * H)
    cells = np.arange(H * 2 * H, dtype=np.float64).reshape(H, 2 * H, 1)
    pixel = 72.0 / SIZE
    for e, a in [(0, 0), (0, 90), (45, 30), (-45, -120), (90, 0), (-90, 0)]:
        ours = forward_index([(e, a)], 72.0, SIZE, H)[0]
        ref = py360convert.e2p(cells, 72.0, a, e, (SIZE, SIZE), mode="nearest")[..., 0].round().astype(np.int64)
        angle = torch.rad2deg(torch.acos((d[ours] * d[torch.from_numpy(ref.reshape(-1))]).sum(-1).clamp(-1, 1)))
        assert angle.max() < 2 * pixel and angle.median() < pixel, (e, a)


def test_views_look_where_they_are_told(sphere):
    d = cell_directions(H, 2 * H)
    for i, (e, a) in enumerate(SPHERE_VIEWS):
        v = d[sphere.forward_index[i, (SIZE // 2) * SIZE + SIZE // 2]]
        assert abs(math.degrees(math.asin(v[1])) - e) < 72 / SIZE
        if abs(e) < 90:
            assert abs((math.degrees(math.atan2(v[0], v[2])) - a + 180) % 360 - 180) < 72 / SIZE


def test_coverage_and_round_trip(sphere):
    assert sphere.uncovered == 0  # the sphere views see the whole 360×180 sphere
    assert Sphere(SYNCTWEEDIES_VIEWS, 72.0, SIZE, H).uncovered > 0.4  # SyncTweedies' horizon ring leaves the caps
    for i in range(sphere.n):  # each pixel's cell is read back from that pixel: the bake of one view gives it back
        assert torch.equal(sphere.inverse(i)[sphere.forward_index[i]], torch.arange(SIZE * SIZE))
        assert sphere.footprint[i][sphere.forward_index[i]].all()


def test_constant_canvas_survives_view_then_bake(sphere):
    canon = sphere.canonical((3,))
    z = torch.full((2, 3, H, 2 * H), 0.3, dtype=torch.float64)
    x = canon.forward(z)
    assert x.shape == (2, sphere.n, 3, SIZE, SIZE)
    torch.testing.assert_close(canon.aggregate(x), z)
    torch.testing.assert_close(canon.forward(canon.aggregate(x)), x)
    assert torch.count_nonzero(coupling_residuals(x, sphere.couplings())) == 0  # a fixed point of the couplings


def test_couplings_are_joint_bake_renders_on_coverage(sphere):
    couplings = sphere.couplings()
    assert [c.target for c in couplings] == list(range(1, sphere.n))  # view 0 free, every other view coupled
    x = torch.randn(1, sphere.n, 2, SIZE, SIZE, dtype=torch.float64)
    canvas_of = {}
    for c in couplings:
        assert all(j < c.target for j in c.source)
        assert c.source == tuple(sphere.overlapping(c.target))  # only the views it overlaps: local exchanges
        assert torch.equal(c.weight.flatten().bool(), sphere.coverage(c.target, range(c.target)))
        # the map is the render into view i of the bake of views 0..i−1 (computed on the whole canvas here)
        earlier = list(range(c.target))
        canvas_of[c.target], _ = sphere.bake(x[:, earlier], views=earlier)
        render = canvas_of[c.target].flatten(-2)[..., sphere.forward_index[c.target]].unflatten(-1, (SIZE, SIZE))
        torch.testing.assert_close(c.pulled_toward(x) * c.weight, render * c.weight)
    # smooth content seen by every view is nearly consistent: the pull is small against independent views
    lat = torch.linspace(-1, 1, H, dtype=torch.float64)[:, None]
    smooth = torch.cos(3 * lat) * torch.sin(torch.linspace(0, 2 * math.pi, 2 * H, dtype=torch.float64))[None]
    views = sphere.canonical((1,)).forward(smooth[None, None])
    noise = torch.randn_like(views)
    assert coupling_residuals(views, couplings).abs().mean() < 0.1 * coupling_residuals(noise, couplings).abs().mean()


def test_output_bake_wraps_without_seam(sphere):
    """An image drawn on the sphere, viewed and baked back to an equirectangular image, has no seam at ±180°."""
    d = cell_directions(H, 2 * H).T.reshape(3, H, 2 * H).float()
    views = sphere.canonical((3,)).forward(d[None] * 0.5 + 0.5)
    for weights in (None, torch.ones(sphere.n, SIZE, SIZE)):
        pano, count = sphere.bake(views, weights=weights)
        assert (count > 0).all()
        seam = (pano[..., 0] - pano[..., -1]).abs().mean()
        inside = (pano[..., 1:] - pano[..., :-1]).abs().mean()
        assert seam < 2 * inside


@pytest.fixture(scope="module")
def tiny():
    return StableDiffusion("syncsde:tiny-ldm")


@pytest.mark.parametrize(
    "strategy",
    [SyncSDE(5.0), SyncSDE(5.0, preset="canonical"), SyncTweedies(), MultiDiffusion()],
    ids=["syncsde", "canonical", "synctweedies", "multidiffusion"],
)
def test_every_method_makes_a_panorama(tiny, strategy):
    task = SpherePanorama(
        tiny, strategy, height=64, num_inference_steps=3, viewer_size=32, prompt_prefix="", progress=False
    )
    out = task.generate(["a sunny day over grass"])[0]
    assert out.image.shape == (3, 64, 128) and torch.isfinite(out.image).all()
    assert out.extras["viewer"].shape == (3, 64, 128) and out.extras["views"].shape == (3, 64, 64 * 20)
    assert len(out.clip_pairs()) == 4 and out.meta["num_views"] == 20 and out.meta["uncovered"] == 0


def test_syncsde_pulls_views_together(tiny):
    batch = [{"prompt": "a night sky over snow", "sample_id": 0, "seed": 1}]
    kw = dict(height=64, num_inference_steps=8, prompt_prefix="", progress=False, views=SYNCTWEEDIES_VIEWS)
    sync = SpherePanorama(tiny, SyncSDE(5.0, preset="chain"), **kw)
    gaps = {
        name: float(coupling_residuals(t.trajectories(batch), sync._couplings).abs().mean())
        for name, t in (("sync", sync), ("free", SpherePanorama(tiny, Independent(), **kw)))
    }
    assert gaps["sync"] < 0.5 * gaps["free"]
    x_T = SpherePanorama(tiny, Independent(), init_from_canonical=True, **kw).initial_noise(batch, [torch.Generator()])
    assert x_T.shape == (1, 8, 4, 16, 16) and abs(float(x_T.std()) - 1) < 0.05


def test_depth_controlnet_sees_each_views_crop(tiny_sd_dir, tmp_path_factory):
    """SyncTweedies' setting: a depth ControlNet conditioned on each view's perspective crop of the depth picture."""
    from PIL import Image

    from syncsde.backbones import StableDiffusionControlNet
    from syncsde.testing import save_tiny_controlnet

    folder = tmp_path_factory.mktemp("sphere_cn")
    cn = StableDiffusionControlNet(str(tiny_sd_dir), str(save_tiny_controlnet(folder / "cn", tiny_sd_dir)))
    gen = torch.Generator().manual_seed(0)
    for p in cn.controlnet.parameters():  # a fresh ControlNet's zero convolutions would hide its input
        p.data += 0.05 * torch.randn(p.shape, generator=gen)
    pictures = {}
    for name, fn in {"ramp": lambda y, x: x * 4, "rings": lambda y, x: (y * 8) % 256}.items():
        y, x = np.mgrid[0:32, 0:64]
        pictures[name] = str(folder / f"{name}.png")
        Image.fromarray(fn(y, x).astype(np.uint8)).save(pictures[name])
    task = SpherePanorama(cn, SyncSDE(5.0), views="synctweedies", height=32, num_inference_steps=2, progress=False)
    outs = {}
    for name, path in pictures.items():
        batch = [{"prompt": "a room", "depth": path, "sample_id": 0, "seed": 0}]
        task.prepare(batch)
        assert cn.control.shape == (8, 3, 64, 64)
        crops = perspective(task.depth_picture(path), task.views, 72.0, 64, "bilinear")
        torch.testing.assert_close(cn.control, crops.clamp(0, 1))
        outs[name] = task.trajectories(batch)
    assert not torch.allclose(outs["ramp"], outs["rings"])  # the ControlNet sees the depth
    with pytest.raises(InputError, match="no 'depth'"):
        task.prepare([{"prompt": "a room", "sample_id": 0, "seed": 0}])
    plain = SpherePanorama(GaussianBackbone(sample_size=8), views="synctweedies", height=32)
    with pytest.raises(InputError, match="no ControlNet"):
        plain.prepare([{"prompt": "a room", "depth": pictures["ramp"], "sample_id": 0, "seed": 0}])


def test_bad_views_are_one_line_errors():
    for views, msg in [("cube", "views must be one of"), ([(120.0, 0.0)], "elevation")]:
        with pytest.raises(InputError, match=msg):
            SpherePanorama(GaussianBackbone(channels=3, sample_size=16), views=views)
