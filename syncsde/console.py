"""What every command shares and that must cost nothing to import: the help texts, and how much libraries say."""

from __future__ import annotations

import os
import sys

DESCRIPTION = (
    "syncsde: diffusion synchronization (SyncSDE and baselines). `syncsde SUBCOMMAND --help` lists a subcommand's "
    "options."
)
THREADS_HELP = (
    "torch threads per process (default: OMP_NUM_THREADS if set, else the CPU cores this process may use, "
    "shared among the processes of a CPU run); outputs are bitwise reproducible for a given thread count"
)
VERBOSE_HELP = "show library logs, per-component loading bars and library warnings"

_said: set = set()  # the keys of the warnings said in this run (``syncsde`` clears it when a command starts)


def warn_once(key, message: str) -> None:
    """One line on stderr, ``syncsde: warning: message``, the first time ``key`` is warned about in a run."""
    if key not in _said:
        _said.add(key)
        print(f"syncsde: warning: {message}", file=sys.stderr)


def quiet(on: bool = True) -> None:
    """Libraries say only warnings and errors, and show no loading bars (``--verbose true`` undoes it). Environment
    variables reach the libraries not imported yet and the processes a run launches."""
    import logging
    import warnings

    level = logging.WARNING if on else logging.INFO
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(level)
    env = {"TRANSFORMERS_VERBOSITY": "error", "DIFFUSERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    for key, value in env.items():
        if on:
            os.environ[key] = value
        elif os.environ.get(key) == value:
            del os.environ[key]
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

        (disable_progress_bars if on else enable_progress_bars)()
    for name in ("transformers", "diffusers"):  # already imported: their settings no longer read the environment
        if name in sys.modules:
            library = sys.modules[name].utils.logging
            library.set_verbosity(logging.ERROR if on else logging.WARNING)
            (library.disable_progress_bar if on else library.enable_progress_bar)()
    if on:  # library deprecation notices; syncsde's own warnings (e.g. an unstable 1/λ) stay
        for category in (DeprecationWarning, FutureWarning):
            warnings.filterwarnings("ignore", category=category)
        warnings.filterwarnings(
            "ignore", module=r"(lightning|pytorch_lightning|torch|torchmetrics|diffusers|transformers)\b"
        )
