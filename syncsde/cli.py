"""The ``syncsde`` command.

    syncsde predict --config configs/wide.yaml [--output_dir DIR] [--overwrite true] [--trainer.devices 2 ...]
    syncsde fit --config configs/tiny/train_ldm.yaml
    syncsde evaluate DIR

``predict`` and ``fit`` are LightningCLI subcommands; ``evaluate`` recomputes the metrics of an existing output
folder with the options of its config's ``syncsde.evaluation.Metrics`` callback. Every subcommand takes ``--threads N``
(torch threads per process) and ``--verbose true`` (library logs, loading bars and warnings, which are off by
default). Mistakes in the configuration or the inputs end the command with one line, ``syncsde: error: ...``, that
names the option and the fix, before any model weights are read where possible.

Start-up: ``syncsde --help`` is answered without importing Lightning; everything heavy is imported where needed.
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import sys
from pathlib import Path

SUBCOMMANDS = {
    "predict": "run a task into an output folder (syncsde predict --config configs/tiny/wide.yaml)",
    "fit": "run a training recipe (syncsde fit --config configs/tiny/train_ldm.yaml)",
    "evaluate": "recompute the metrics of an existing output folder (syncsde evaluate outputs/tiny/wide)",
}
THREADS_HELP = (
    "torch threads per process (default: OMP_NUM_THREADS if set, else the CPU cores this process may use, "
    "shared among the processes of a CPU run); outputs are bitwise reproducible for a given thread count"
)
VERBOSE_HELP = "show library logs, per-component loading bars and library warnings"


def main(args=None) -> None:
    argv = list(sys.argv[1:] if args is None else args)
    quiet(not _flag(argv, "--verbose"))
    try:
        if not argv or argv[0] in ("-h", "--help"):
            top_parser().print_help()
        elif argv[0] == "evaluate":
            evaluate_command(argv[1:])
        else:
            from syncsde.lightning_cli import run

            run(argv if args is not None else None)
    except Exception as e:  # noqa: BLE001 (every known mistake becomes one line; anything else is re-raised)
        message = one_line(e)
        if message is None:
            raise
        fail(message)


def fail(message) -> None:
    print(f"syncsde: error: {message}", file=sys.stderr)
    sys.exit(2)


def one_line(e: BaseException) -> str | None:
    """The one-line message for a mistake the user can fix, or None for a bug (then the traceback is wanted)."""
    from syncsde.errors import SyncSDEError

    if isinstance(e, SyncSDEError):
        return str(e)
    if SyncSDEError.last is not None and str(SyncSDEError.last) in str(e):
        return str(SyncSDEError.last)  # jsonargparse wraps errors raised while instantiating the config's classes
    if isinstance(e, argparse.ArgumentError):
        return parser_error(str(e))
    if isinstance(e, OSError) and e.filename is not None:
        where = Path(e.filename)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            return (
                f"no space left on the device of {where.parent} (writing {where.name}); free space and rerun the "
                "same command: finished samples are kept and only the missing ones are made"
            )
        return f"cannot write {where} ({e.strerror}); choose a writable --output_dir"
    return None


# -- top level: answered without Lightning ---------------------------------------------------------------------
def top_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="syncsde",
        description="syncsde: diffusion synchronization (SyncSDE and baselines). "
        "`syncsde SUBCOMMAND --help` lists a subcommand's options.",
    )
    sub = p.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
    for name, text in SUBCOMMANDS.items():
        sub.add_parser(name, help=text)
    return p


def _flag(argv: list[str], name: str) -> bool:
    """A boolean option's value from the raw arguments (needed before parsing: it sets how much libraries say)."""
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1].lower() in ("true", "1", "yes")
        if a.startswith(name + "="):
            return a.split("=", 1)[1].lower() in ("true", "1", "yes")
    return False


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


TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "PositiveInt": "a positive integer",
    "NonNegativeInt": "an integer >= 0",
    "PositiveFloat": "a number > 0",
    "NonNegativeFloat": "a number >= 0",
    "ClosedUnitInterval": "a number between 0 and 1",
    "OpenUnitInterval": "a number strictly between 0 and 1",
}


# options that only some classes take: where to find them
OPTION_HINTS = {
    key: "parallel: windows and window_batch are options of syncsde.tasks.WideImage and syncsde.tasks.MeshTexturing, whose "
    "trajectories are windows of one canvas or views of one object; other tasks split samples over processes"
    for key in ("parallel", "window_batch")
}

NOISE = ("Given value", "Subtypes:", "Errors:", "Does not validate", "Expected a <class 'NoneType'>")


def parser_error(text: str) -> str:
    """One line from jsonargparse's nested error report: the full option name, what was wrong, and the fix."""
    lines = [line.strip().lstrip("- ").strip() for line in text.splitlines() if line.strip()]
    keys, classes, reason, given = [], [], None, None
    for s in lines:
        m = re.match(r'Parser key "([^"]+)":', s)
        if m:
            keys.append(m[1])
        elif m := re.match(r"Problem with given class_path '([^']+)':", s):
            classes.append(m[1])
        elif m := re.search(r"val='(.*)'\)$", s):
            given = m[1]
        elif not s.startswith(NOISE):
            reason = s
    option = "--" + ".init_args.".join(keys) if keys else None
    if reason is None:
        return lines[-1] if lines else text
    if m := re.match(r"Option '([^']+)' is not accepted", reason):
        owner = classes[-1] if classes else "this class"
        top = keys[0] if keys else "model"
        name = f"{option}.init_args.{m[1]}" if option else f"--{m[1]}"
        hint = f" ({OPTION_HINTS[m[1]]})" if m[1] in OPTION_HINTS else ""
        return f"{name} is not an option of {owner}{hint}; `syncsde predict --{top}.help {owner}` lists them"
    if m := re.match(r"Expected a typing\.Literal\[(.*)\]", reason):
        reason = f"got {given if given is not None else 'another value'}; choose one of {m[1]}"
    if m := re.match(r"(?:Expected a <class '(\w+)'>|Not of type (\w+))[.:]", reason):
        wanted = TYPE_WORDS.get(m[1] or m[2], m[1] or m[2])
        got = re.search(r"Got value: (.*)", reason)
        reason = f"got {given if given is not None else got[1] if got else 'a value of the wrong type'}; give {wanted}"
    if reason.startswith(("No module named", "module ")) or "not accessible" in reason:
        reason = f"cannot import {given or 'the class'} ({reason}); give an importable class path"
    default = signature_default(classes[-1], keys[-1]) if option and classes else None
    hint = f" (the default is {default})" if default is not None else ""
    return f"{option}: {reason}{hint}" if option else reason


def signature_default(class_path: str, param: str):
    import importlib
    import inspect

    try:
        module, name = class_path.rsplit(".", 1)
        p = inspect.signature(getattr(importlib.import_module(module), name)).parameters.get(param)
    except (ImportError, AttributeError, ValueError):
        return None
    if p is None or p.default is inspect.Parameter.empty or p.default is None:
        return None
    return p.default


# -- evaluate --------------------------------------------------------------------------------------------------
def evaluate_command(argv: list[str]) -> None:
    p = argparse.ArgumentParser(
        prog="syncsde evaluate",
        description="Recompute metrics.json (and a metrics.csv row) for an existing output folder, over every sample "
        "of its manifest, with the options of the syncsde.evaluation.Metrics callback in the folder's config.yaml.",
    )
    p.add_argument("folder", help="a `syncsde predict` output folder")
    p.add_argument("--reference", default=None, help="override the callback's reference folder (FID/KID)")
    p.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    p.add_argument("--verbose", default="false", help=VERBOSE_HELP)
    args = p.parse_args(argv)
    from syncsde.evaluation.evaluate import evaluate_folder

    evaluate_folder(Path(args.folder), reference=args.reference, threads=args.threads)


if __name__ == "__main__":
    main()
