"""One LightningModule per synchronization task (ARCHITECTURE.md): predict_step = couplings -> sample -> assemble.

The tasks are the installed package's entry points in the group ``syncsde.tasks`` (:mod:`syncsde.registry`): each is
imported on first use (``syncsde.tasks.WideImage`` imports only ``syncsde.tasks.wide_image``), so a run pays only for
the task it runs, and a new task is found without editing this file.
"""

import importlib
from importlib import metadata

_MODULES = {  # class name -> module, from the entry points ("module:Class")
    ep.value.partition(":")[2]: ep.value.partition(":")[0]
    for ep in metadata.entry_points(group="syncsde.tasks")
    if ep.value.startswith(__name__ + ".")
}
__all__ = sorted(_MODULES)


def __getattr__(name: str):
    if name in _MODULES:
        return getattr(importlib.import_module(_MODULES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
