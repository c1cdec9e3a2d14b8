"""Mesh loading (OBJ, GLB/GLTF, PLY through trimesh), normalisation, and UVs (kept when valid, else xatlas)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from syncsde.errors import InputError


@dataclass
class TexturedMesh:
    """Vertices (V, 3) float32, faces (F, 3) int64, per-vertex UVs (V, 2) in [0, 1] (v up), vertex normals (V, 3)."""

    vertices: torch.Tensor
    faces: torch.Tensor
    uvs: torch.Tensor
    normals: torch.Tensor


def load_mesh(path: str | Path, keep_uv: bool = True) -> TexturedMesh:
    """Load, centre at the vertex mean and scale to unit max radius (SyncTweedies' convention), and make UVs."""
    import trimesh

    path = Path(path)
    if not path.is_file():
        raise InputError(f"mesh file '{path}' does not exist; give an OBJ, GLB/GLTF or PLY file")
    try:
        loaded = trimesh.load(path, force="mesh", process=False)
    except Exception as e:  # noqa: BLE001 (trimesh raises many types for bad files)
        raise InputError(
            f"cannot read mesh '{path}' ({type(e).__name__}: {str(e)[:80]}); give a valid OBJ/GLB/PLY"
        ) from None
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0:
        raise InputError(f"mesh '{path}' has no faces; give a triangle mesh (OBJ, GLB/GLTF or PLY)")
    v = np.asarray(loaded.vertices, dtype=np.float64)
    v = v - v.mean(0)
    v = v / np.linalg.norm(v, axis=1).max()
    f = np.asarray(loaded.faces, dtype=np.int64)
    uv = getattr(loaded.visual, "uv", None) if keep_uv else None
    if uv is None or len(uv) != len(v) or not np.isfinite(uv).all() or uv.min() < -1e-6 or uv.max() > 1 + 1e-6:
        v, f, uv = unwrap(v, f, path)
    mesh = trimesh.Trimesh(v, f, process=False)
    return TexturedMesh(
        torch.tensor(v, dtype=torch.float32),
        torch.tensor(f),
        torch.tensor(np.clip(uv, 0, 1), dtype=torch.float32),
        torch.tensor(np.asarray(mesh.vertex_normals), dtype=torch.float32),
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
