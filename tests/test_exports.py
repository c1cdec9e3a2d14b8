"""Outputs people take into their tools: MP4 animations, GLB/OBJ meshes as viewers read them, meshes as files come
(up axis, UV origin, several materials), and every export written by the CLI on the embedded configs."""

import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from syncsde.cli import main
from syncsde.errors import InputError
from syncsde.io import save_mp4
from syncsde.mesh.io import load_mesh

ROOT = Path(__file__).resolve().parents[1]
iio = pytest.importorskip("imageio.v3", reason="the video extra (imageio, imageio-ffmpeg) is in the test extra")


def test_mp4_frames_enlarged_padded_and_faithful(tmp_path):
    """Small frames are enlarged by a whole factor and padded to the codec's 16-px blocks; colours survive H.264."""
    frames = [torch.zeros(3, 20, 30) + torch.tensor([1.0, 0.5, 0.0])[:, None, None] * (k / 4) for k in range(5)]
    save_mp4(tmp_path / "a.mp4", frames, fps=10)
    video = iio.imread(tmp_path / "a.mp4")
    assert video.shape == (5, 192, 272, 3)  # × ceil(256 / 30) = 9: 180×270, padded to multiples of 16
    np.testing.assert_allclose(video[4, 5:170, 5:260].mean((0, 1)), [255, 128, 0], atol=6)
    assert not list(tmp_path.glob(".*tmp"))


def test_writer_mp4_beside_gif_or_gif_only(tmp_path, monkeypatch):
    from syncsde.task import SampleOutput
    from syncsde.writer import SampleWriter

    out = SampleOutput(
        0, torch.rand(3, 8, 8), {"fps": 20}, animations={"anim": [torch.rand(3, 8, 8) for _ in range(3)]}
    )
    w = SampleWriter(tmp_path / "v")
    w.write_sample(out)
    side = json.loads((tmp_path / "v/00000.json").read_text())
    assert side["files"]["anim"] == "00000_anim.gif" and side["files"]["anim_mp4"] == "00000_anim.mp4"
    assert len(iio.imread(tmp_path / "v/00000_anim.mp4")) == 3
    from PIL import Image

    assert Image.open(tmp_path / "v/00000_anim.gif").info["duration"] == 50  # the sample's 20 fps
    w = SampleWriter(tmp_path / "g")
    w.video = False  # as without the extra
    with pytest.warns(UserWarning, match=r"GIF only; MP4 needs imageio-ffmpeg"):
        w.write_sample(out)
    assert not (tmp_path / "g/00000_anim.mp4").exists() and (tmp_path / "g/00000_anim.gif").exists()


# -- meshes as files come ------------------------------------------------------------------------------------------


def write_obj(path, v, f, uv=None, material=None):
    lines = [f"v {a:.6f} {b:.6f} {c:.6f}" for a, b, c in v]
    if uv is not None:
        lines += [f"vt {a:.6f} {b:.6f}" for a, b in uv]
        lines += ["f " + " ".join(f"{i + 1}/{i + 1}" for i in face) for face in f]
    else:
        lines += ["f " + " ".join(str(i + 1) for i in face) for face in f]
    path.write_text("\n".join(lines) + "\n")


def tetra():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1.5]], dtype=np.float64)
    f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    uv = np.array([[0.1, 0.1], [0.9, 0.1], [0.1, 0.8], [0.5, 0.5]])
    return v, f, uv


def test_up_axis_and_flip_uv(tmp_path):
    v, f, uv = tetra()
    write_obj(tmp_path / "y.obj", v, f, uv)
    z_up = np.stack([v[:, 0], -v[:, 2], v[:, 1]], 1)  # the same shape stored z-up
    write_obj(tmp_path / "z.obj", z_up, f, uv)
    y, z = load_mesh(tmp_path / "y.obj"), load_mesh(tmp_path / "z.obj", up_axis="z")
    torch.testing.assert_close(z.vertices, y.vertices, atol=1e-6, rtol=0)
    assert not torch.allclose(load_mesh(tmp_path / "z.obj").vertices, y.vertices, atol=1e-3)
    flipped = load_mesh(tmp_path / "y.obj", flip_uv=True)
    torch.testing.assert_close(flipped.uvs[:, 1], 1 - y.uvs[:, 1])
    assert y.uv_source == "file" and flipped.uv_source == "file, v flipped"
    with pytest.raises(InputError, match="up_axis"):
        load_mesh(tmp_path / "y.obj", up_axis="w")


def test_several_materials_or_geometries_merged_into_one_atlas(tmp_path):
    """Two materials with overlapping UVs (and a GLB of two nodes with transforms) become one mesh whose new UV atlas
    has no overlap; refusing them instead gives one line that says what to do."""
    import trimesh

    v, f, uv = tetra()
    lines = ["mtllib m.mtl"]
    for k, name in enumerate(("red", "blue")):
        lines += [f"v {a + 3 * k:.6f} {b:.6f} {c:.6f}" for a, b, c in v]
        lines += [f"vt {a:.6f} {b:.6f}" for a, b in uv]  # same UVs: they overlap
        lines += [f"usemtl {name}"] + ["f " + " ".join(f"{i + 1 + 4 * k}/{i + 1 + 4 * k}" for i in face) for face in f]
    (tmp_path / "m.mtl").write_text("newmtl red\nKd 1 0 0\nnewmtl blue\nKd 0 0 1\n")
    (tmp_path / "two.obj").write_text("\n".join(lines) + "\n")
    m = load_mesh(tmp_path / "two.obj")
    assert m.uv_source == "xatlas (2 parts merged)" and m.faces.shape == (8, 3)
    assert _uv_cover(m.uvs.numpy(), m.faces.numpy()).max() == 1  # one atlas, no texel shared by two faces
    assert _uv_cover(np.concatenate([uv, uv]), np.concatenate([f, f + 4])).max() > 1  # the file UVs overlap
    with pytest.raises(InputError, match="2 materials or geometries; set merge_parts true"):
        load_mesh(tmp_path / "two.obj", merge_parts=False)

    scene = trimesh.Scene()
    part = trimesh.Trimesh(v, f, process=False)
    scene.add_geometry(part, node_name="a", transform=trimesh.transformations.translation_matrix([5, 0, 0]))
    scene.add_geometry(part, node_name="b")
    (tmp_path / "two.glb").write_bytes(scene.export(file_type="glb"))
    g = load_mesh(tmp_path / "two.glb")
    assert g.faces.shape == (8, 3) and g.uv_source.startswith("xatlas (2 parts")
    span = g.vertices[:, 0].max() - g.vertices[:, 0].min()
    assert span > 1.5  # the node transform was applied: the parts sit 5 units apart, then scaled to unit radius


def _uv_cover(uv: np.ndarray, faces: np.ndarray, n: int = 256) -> np.ndarray:
    """How many UV triangles contain each point of an n×n grid (strictly inside)."""
    g = (np.stack(np.meshgrid(np.arange(n), np.arange(n)), -1).reshape(-1, 2) + 0.5) / n
    count = np.zeros(len(g), dtype=int)
    for a, b, c in uv[faces]:
        d = (b[1] - c[1]) * (a[0] - c[0]) + (c[0] - b[0]) * (a[1] - c[1])
        l1 = ((b[1] - c[1]) * (g[:, 0] - c[0]) + (c[0] - b[0]) * (g[:, 1] - c[1])) / d
        l2 = ((c[1] - a[1]) * (g[:, 0] - c[0]) + (a[0] - c[0]) * (g[:, 1] - c[1])) / d
        count += (l1 > 1e-9) & (l2 > 1e-9) & (1 - l1 - l2 > 1e-9)
    return count


def test_glb_and_obj_open_with_their_texture(tmp_path):
    """Reloaded by trimesh and by pygltflib (where it installs): one material whose base colour is the texture
    (white factor, not metallic), UVs and image oriented as glTF viewers read them, and the OBJ's MTL names the PNG."""
    import trimesh

    from syncsde.tasks.mesh import exports

    mesh = load_mesh(ROOT / "configs/assets/ball.obj")
    tex = torch.zeros(3, 64, 64)
    tex[0] = torch.linspace(0, 1, 64)[None, :]  # red grows with u
    tex[1] = torch.linspace(1, 0, 64)[:, None]  # green grows with v (row 0 is the top, v = 1)
    files = exports(mesh, tex)
    scene = trimesh.load(io.BytesIO(files["mesh.glb"]), file_type="glb")
    (geom,) = scene.geometry.values()
    assert geom.visual.material.baseColorTexture.size == (64, 64)
    pygltflib = pytest.importorskip("pygltflib", reason="pygltflib (test extra) is the second glTF reader")
    g = pygltflib.GLTF2.load_from_bytes(files["mesh.glb"])
    pbr = g.materials[0].pbrMetallicRoughness
    assert pbr.baseColorFactor == [1.0, 1.0, 1.0, 1.0] and pbr.metallicFactor == 0.0
    assert pbr.baseColorTexture.index == 0 and g.textures[0].source == 0
    prim = g.meshes[0].primitives[0]
    uv = _accessor(g, prim.attributes.TEXCOORD_0)
    image = _image(g, 0)
    # glTF: (0, 0) is the image's top-left; the colour a viewer shows at each vertex is our texture's there
    px = np.clip((uv * [63, 63]).round().astype(int), 0, 63)
    shown = image[px[:, 1], px[:, 0]] / 255.0
    ours = mesh.uvs.numpy()
    np.testing.assert_allclose(shown[:, 0], ours[:, 0], atol=0.03)
    np.testing.assert_allclose(shown[:, 1], ours[:, 1], atol=0.03)
    assert len(uv) == len(mesh.vertices)
    assert b"map_Kd material_0.png" in files["material.mtl"] and b"mtllib material.mtl" in files["mesh.obj"]
    obj_dir = tmp_path / "obj"
    obj_dir.mkdir()
    for name, data in files.items():
        (obj_dir / name).write_bytes(data)
    obj = trimesh.load(obj_dir / "mesh.obj", process=False)
    assert obj.visual.material.image.size == (64, 64)


def _accessor(g, index) -> np.ndarray:
    acc = g.accessors[index]
    view = g.bufferViews[acc.bufferView]
    data = g.binary_blob()[view.byteOffset + (acc.byteOffset or 0) :]
    width = {"VEC2": 2, "VEC3": 3, "SCALAR": 1}[acc.type]
    return np.frombuffer(data, dtype=np.float32, count=acc.count * width).reshape(acc.count, width)


def _image(g, index) -> np.ndarray:
    from PIL import Image

    view = g.bufferViews[g.images[index].bufferView]
    data = g.binary_blob()[view.byteOffset : view.byteOffset + view.byteLength]
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64)


# -- every export from the CLI on the embedded configs -------------------------------------------------------------


def run_tiny(name, out, *extra):
    main(
        [
            "predict",
            "--config",
            f"configs/tiny/{name}.yaml",
            "--output_dir",
            str(out),
            "--model.init_args.num_inference_steps",
            "2",
            "--trainer.enable_progress_bar",
            "false",
            *extra,
        ]
    )
    return [
        json.loads((out / f"{s:05d}.json").read_text())
        for s in range(json.loads((out / "manifest.json").read_text())["num_samples"])
    ]


def test_cli_motion_exports(tmp_path, monkeypatch):
    import bvhio

    monkeypatch.chdir(ROOT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sides = run_tiny("motion", tmp_path / "m")
    for side in sides:
        files = side["files"]
        assert {"skeleton", "skeleton_mp4", "joints", "features", "motion.bvh"} <= set(files)
        joints = np.load(tmp_path / "m" / files["joints"])
        assert len(iio.imread(tmp_path / "m" / files["skeleton_mp4"])) == len(joints)
        root = bvhio.readAsHierarchy(str(tmp_path / "m" / files["motion.bvh"]))
        root.loadPose(len(joints) - 1)
        pelvis = np.array(root.PositionWorld)
        np.testing.assert_allclose(pelvis, joints[-1, 0], atol=1e-4)  # the root is carried exactly
        assert "positions only" in side["rotations"] and side["smpl"].startswith("not exported")


def test_cli_ambiguous_and_mesh_exports(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        amb = run_tiny("ambiguous", tmp_path / "a")
        mesh = run_tiny("mesh", tmp_path / "x", "--model.init_args.turntable_frames", "4")
    counts = [len([k for k in s["files"] if k.startswith("reading")]) for s in amb]
    assert counts == [2, 2, 3, 4]  # two pairs, then 3 and 4 views (negate, jigsaw, a permutation file)
    for s, n in zip(amb, counts):
        video = iio.imread(tmp_path / "a" / s["files"]["animation_mp4"])
        assert video.shape[1] >= 256 and len(video) == n * (24 + 8)  # each reading turns into the next, held
    for s in mesh:
        assert {"turntable", "turntable_mp4", "mesh.glb", "mesh.obj", "material.mtl"} <= set(s["files"])
        assert s["uv"] == "xatlas"
