"""One LightningModule per synchronization task (ARCHITECTURE.md): predict_step = couplings -> sample -> assemble.

Each task is imported on first use (``tasks.WideImage`` imports only ``tasks.wide_image``), so a run pays only for
the task it runs.
"""

import importlib

_MODULES = {
    "AmbiguousImage": "tasks.ambiguous",
    "ImageEdit": "tasks.edit",
    "LongMotion": "tasks.motion",
    "MaskTextToImage": "tasks.mask_t2i",
    "MeshTexturing": "tasks.mesh",
    "RegionTextToImage": "tasks.regions",
    "SpherePanorama": "tasks.sphere",
    "TextToImage": "tasks.text_to_image",
    "WideImage": "tasks.wide_image",
}
__all__ = list(_MODULES)


def __getattr__(name: str):
    if name in _MODULES:
        return getattr(importlib.import_module(_MODULES[name]), name)
    raise AttributeError(f"module 'tasks' has no attribute {name!r}")
