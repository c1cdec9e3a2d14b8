"""Per-view G-buffers from a real rasterizer: moderngl on EGL (Mesa llvmpipe on a CPU, the driver on NVIDIA GPUs).

For each camera: the UV coordinates, face id, view-space depth and world normal of the nearest surface at every
pixel, and the coverage mask (back faces culled, one face per pixel, no anti-aliasing). :func:`rasterize_uv` draws
the mesh in texture space instead: the face under every texel centre.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from syncsde.errors import InputError
from syncsde.mesh.cameras import Camera
from syncsde.mesh.io import TexturedMesh

VERTEX = """
#version 330
uniform mat4 mvp;
uniform mat4 mv;
in vec3 in_pos;
in vec2 in_uv;
in vec3 in_normal;
out vec2 v_uv;
out vec3 v_normal;
out vec3 v_world;
out float v_depth;
void main() {
    gl_Position = mvp * vec4(in_pos, 1.0);
    v_uv = in_uv;
    v_normal = in_normal;
    v_world = in_pos;
    v_depth = -(mv * vec4(in_pos, 1.0)).z;
}
"""
FRAGMENT = """
#version 330
in vec2 v_uv;
in vec3 v_normal;
in vec3 v_world;
in float v_depth;
layout(location = 0) out vec4 out_uv_depth;
layout(location = 1) out vec4 out_normal;
layout(location = 2) out int out_face;
layout(location = 3) out vec4 out_world;
void main() {
    out_uv_depth = vec4(v_uv, v_depth, 1.0);
    out_normal = vec4(normalize(v_normal), 1.0);
    out_face = gl_PrimitiveID;
    out_world = vec4(v_world, 1.0);
}
"""


@dataclass
class GBuffer:
    """One view: uv (H, W, 2), face (H, W) long (−1 = background), depth (H, W), normal (H, W, 3), world position
    (H, W, 3), mask (H, W) bool."""

    uv: Tensor
    face: Tensor
    depth: Tensor
    normal: Tensor
    world: Tensor
    mask: Tensor


@lru_cache(maxsize=1)
def context():
    import moderngl

    try:
        return moderngl.create_context(standalone=True, backend="egl")
    except Exception as e:  # noqa: BLE001
        raise InputError(
            f"no headless OpenGL (EGL) context ({e}); install Mesa's EGL (Debian: libegl1 libegl-mesa0 "
            "libgl1-mesa-dri) or an NVIDIA driver"
        ) from None


def rasterize(mesh: TexturedMesh, cameras: list[Camera], size: int) -> list[GBuffer]:
    ctx = context()
    prog = ctx.program(vertex_shader=VERTEX, fragment_shader=FRAGMENT)
    data = torch.cat([mesh.vertices, mesh.uvs, mesh.normals], 1).numpy().astype("f4")
    vbo = ctx.buffer(data.tobytes())
    ibo = ctx.buffer(mesh.faces.numpy().astype("i4").tobytes())
    vao = ctx.vertex_array(prog, [(vbo, "3f 2f 3f", "in_pos", "in_uv", "in_normal")], index_buffer=ibo)
    uvd, nrm = ctx.texture((size, size), 4, dtype="f4"), ctx.texture((size, size), 4, dtype="f4")
    face = ctx.texture((size, size), 1, dtype="i4")
    world = ctx.texture((size, size), 4, dtype="f4")
    fbo = ctx.framebuffer([uvd, nrm, face, world], ctx.depth_renderbuffer((size, size)))
    out = []
    try:
        for cam in cameras:
            view, proj = cam.view_matrix(), cam.projection_matrix()
            prog["mvp"].write((proj @ view).T.contiguous().numpy().astype("f4").tobytes())
            prog["mv"].write(view.T.contiguous().numpy().astype("f4").tobytes())
            fbo.use()
            fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
            face.write(np.full((size, size), -1, dtype="i4").tobytes())
            ctx.enable(ctx.DEPTH_TEST | ctx.CULL_FACE)
            vao.render()
            a = np.frombuffer(uvd.read(), dtype="f4").reshape(size, size, 4)[::-1]
            n = np.frombuffer(nrm.read(), dtype="f4").reshape(size, size, 4)[::-1]
            fid = np.frombuffer(face.read(), dtype="i4").reshape(size, size)[::-1]
            w = np.frombuffer(world.read(), dtype="f4").reshape(size, size, 4)[::-1]
            mask = a[..., 3] > 0.5
            out.append(
                GBuffer(
                    torch.tensor(a[..., :2].copy()),
                    torch.tensor(np.where(mask, fid, -1).astype(np.int64)),
                    torch.tensor(a[..., 2].copy()),
                    torch.tensor(n[..., :3].copy()),
                    torch.tensor(w[..., :3].copy()),
                    torch.tensor(mask),
                )
            )
    finally:
        for obj in (vao, vbo, ibo, fbo, uvd, nrm, face, world, prog):
            obj.release()
    return out


UV_VERTEX = """
#version 330
in vec2 in_uv;
void main() {
    gl_Position = vec4(2.0 * in_uv - 1.0, 0.0, 1.0);
}
"""
UV_FRAGMENT = """
#version 330
out int out_face;
void main() {
    out_face = gl_PrimitiveID;
}
"""


def rasterize_uv(mesh: TexturedMesh, size: int) -> Tensor:
    """The face drawn at each texel centre of a ``size``² texture (flat, row-major, −1 where no face), under the
    texel convention of :mod:`syncsde.mesh.texture` (row 0 at v = 1); where UV charts overlap, the face drawn last."""
    ctx = context()
    prog = ctx.program(vertex_shader=UV_VERTEX, fragment_shader=UV_FRAGMENT)
    vbo = ctx.buffer(mesh.uvs.numpy().astype("f4").tobytes())
    ibo = ctx.buffer(mesh.faces.numpy().astype("i4").tobytes())
    vao = ctx.vertex_array(prog, [(vbo, "2f", "in_uv")], index_buffer=ibo)
    face = ctx.texture((size, size), 1, dtype="i4")
    fbo = ctx.framebuffer([face])
    try:
        fbo.use()
        face.write(np.full((size, size), -1, dtype="i4").tobytes())
        ctx.disable(ctx.DEPTH_TEST | ctx.CULL_FACE)
        vao.render()
        fid = np.frombuffer(face.read(), dtype="i4").reshape(size, size)[::-1]
    finally:
        for obj in (vao, vbo, ibo, fbo, face, prog):
            obj.release()
    return torch.tensor(fid.astype(np.int64)).flatten()
