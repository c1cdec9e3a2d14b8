"""Meshes for texturing (SYNCSDE.md §6.5, BASELINES.md §4): loading and UVs, cameras, rasterized G-buffers,
projection of a UV texture into views and the inverse projection (bake)."""
