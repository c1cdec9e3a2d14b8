"""Mesh loading (OBJ, GLB/GLTF, PLY through trimesh), normalisation, and UVs (kept when valid, else xatlas).

Files come as they are made:
- **up axis**: the renderer works y-up (glTF's convention); ``up_axis="z"`` turns a z-up file (CAD, Blender's OBJ
  export without axis conversion) up, as Blender's glTF exporter does: (x, y, z) ↦ (x, z, −y).
- **UV origin**: ``flip_uv`` flips v (v ↦ 1 − v) for files whose UVs count from the top of the image.
- **several materials or geometries** (an OBJ with several ``usemtl``, a GLB of several primitives or nodes): their
  UVs index different images and may overlap, so one texture cannot be painted through them. They are merged — node
  transforms applied — into one mesh with one new shared UV atlas (xatlas); ``merge_parts=False`` refuses them with
  an error that says what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from syncsde.errors import InputError

UpAxis = Literal["y", "z"]


@dataclass
class TexturedMesh:
    """Vertices (V, 3) float32, faces (F, 3) int64, per-vertex UVs (V, 2) in [0, 1] (v up), vertex normals (V, 3);
    ``uv_source`` says where the UVs come from (for the sidecar)."""

    vertices: torch.Tensor
    faces: torch.Tensor
    uvs: torch.Tensor
    normals: torch.Tensor
    uv_source: str = "file"


def load_mesh(
    path: str | Path, keep_uv: bool = True, up_axis: UpAxis = "y", flip_uv: bool = False, merge_parts: bool = True
) -> TexturedMesh:
    """Load, turn ``up_axis`` to +y, centre at the vertex mean and scale to unit max radius (SyncTweedies'
    convention), and make UVs (module docstring)."""
    import trimesh

    path = Path(path)
    if not path.is_file():
        raise InputError(f"mesh file '{path}' does not exist; give an OBJ, GLB/GLTF or PLY file")
    if up_axis not in ("y", "z"):
        raise InputError(f"up_axis must be 'y' or 'z', got '{up_axis}'")
    try:
        loaded = trimesh.load(path, process=False)
    except Exception as e:  # noqa: BLE001 (trimesh raises many types for bad files)
        raise InputError(
            f"cannot read mesh '{path}' ({type(e).__name__}: {str(e)[:80]}); give a valid OBJ/GLB/PLY"
        ) from None
    parts = loaded.dump(concatenate=False) if isinstance(loaded, trimesh.Scene) else [loaded]
    parts = [p for p in parts if isinstance(p, trimesh.Trimesh) and len(p.faces)]
    if not parts:
        raise InputError(f"mesh '{path}' has no faces; give a triangle mesh (OBJ, GLB/GLTF or PLY)")
    if len(parts) > 1 and not merge_parts:
        raise InputError(
            f"mesh '{path}' has {len(parts)} materials or geometries; set merge_parts true (they are merged with one "
            "new shared UV atlas) or join them in your 3D tool into one mesh with one material and non-overlapping UVs"
        )
    v = np.concatenate([np.asarray(p.vertices, dtype=np.float64) for p in parts])
    starts = np.cumsum([0] + [len(p.vertices) for p in parts[:-1]])
    f = np.concatenate([np.asarray(p.faces, dtype=np.int64) + s for p, s in zip(parts, starts)])
    if up_axis == "z":
        v = np.stack([v[:, 0], v[:, 2], -v[:, 1]], axis=1)
    v = v - v.mean(0)
    v = v / np.linalg.norm(v, axis=1).max()
    uv = getattr(parts[0].visual, "uv", None) if keep_uv and len(parts) == 1 else None
    source = "file"
    if uv is not None and flip_uv:
        uv = np.stack([uv[:, 0], 1 - uv[:, 1]], axis=1)
        source = "file, v flipped"
    if uv is None or len(uv) != len(v) or not np.isfinite(uv).all() or uv.min() < -1e-6 or uv.max() > 1 + 1e-6:
        v, f, uv = unwrap(v, f, path)
        source = f"xatlas ({len(parts)} parts merged)" if len(parts) > 1 else "xatlas"
    mesh = trimesh.Trimesh(v, f, process=False)
    return TexturedMesh(
        torch.tensor(v, dtype=torch.float32),
        torch.tensor(f),
        torch.tensor(np.clip(uv, 0, 1), dtype=torch.float32),
        torch.tensor(np.asarray(mesh.vertex_normals), dtype=torch.float32),
        source,
    )


def unwrap(v: np.ndarray, f: np.ndarray, name="mesh"):
    """xatlas UV atlas: vertices are split along seams (``vmapping``), so the UV is per (new) vertex."""
    import xatlas

    try:
        vmapping, indices, uvs = xatlas.parametrize(v.astype(np.float32), f.astype(np.uint32))
    except Exception as e:  # noqa: BLE001
        raise InputError(f"mesh '{name}' cannot be unwrapped by xatlas ({e}); repair it or give one with UVs") from None
    if len(indices) == 0:
        raise InputError(f"mesh '{name}' cannot be unwrapped by xatlas (empty atlas); repair it or give one with UVs")
    return v[vmapping], indices.astype(np.int64), uvs.astype(np.float64)
