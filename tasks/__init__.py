"""One LightningModule per synchronization task (ARCHITECTURE.md): predict_step = couplings -> sample -> assemble.

Each task is imported on first use (``syncsde.tasks.WideImage`` imports only ``syncsde.tasks.wide_image``), so a run pays only for
the task it runs.
"""

import importlib

_MODULES = {
    "AmbiguousImage": "syncsde.tasks.ambiguous",
    "ImageEdit": "syncsde.tasks.edit",
    "LongMotion": "syncsde.tasks.motion",
    "MaskTextToImage": "syncsde.tasks.mask_t2i",
    "MeshTexturing": "syncsde.tasks.mesh",
    "RegionTextToImage": "syncsde.tasks.regions",
    "SpherePanorama": "syncsde.tasks.sphere",
    "TextToImage": "syncsde.tasks.text_to_image",
    "WideImage": "syncsde.tasks.wide_image",
}
__all__ = list(_MODULES)


def __getattr__(name: str):
    if name in _MODULES:
        return getattr(importlib.import_module(_MODULES[name]), name)
    raise AttributeError(f"module 'tasks' has no attribute {name!r}")
