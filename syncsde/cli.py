"""The ``syncsde`` command.

    syncsde predict --config configs/wide.yaml [--output_dir DIR] [--overwrite true] [--trainer.devices 2 ...]
    syncsde fit --config configs/tiny/train_ldm.yaml
    syncsde predict --config configs/tiny/wide.yaml --method syncmvd
    syncsde methods [--task wide_image] [--markdown]
    syncsde evaluate DIR            (and every other command of an installed plug-in package)

``predict`` and ``fit`` are LightningCLI subcommands; ``methods`` lists the registered methods
(:mod:`syncsde.registry`); other subcommands are plug-ins (entry-point group ``syncsde.commands``: ``evaluate``
recomputes the metrics of an output folder, ``compare`` runs every method on one config). Every subcommand takes
``--threads N`` (torch threads per process) and ``--verbose true`` (library logs, loading bars and warnings, which are
off by default). Mistakes in the configuration or the inputs end the command with one line, ``syncsde: error: ...``, that
names the option and the fix, before any model weights are read where possible.

Start-up: ``syncsde --help`` is answered without importing Lightning; everything heavy is imported where needed.
"""

from __future__ import annotations

import argparse
import errno
import re
import sys
from pathlib import Path

from syncsde.console import DESCRIPTION, _said, quiet

__all__ = ["main", "quiet"]

SUBCOMMANDS = {
    "predict": "run a task into an output folder (syncsde predict --config configs/tiny/wide.yaml [--method NAME])",
    "fit": "run a training recipe (syncsde fit --config configs/tiny/train_ldm.yaml)",
    "methods": "list the methods by short name, and the tasks each applies to (syncsde methods --task wide_image)",
}


TYPED: list[str] = []  # the arguments of the running command, as the user typed them (for the error's option form)


def main(args=None) -> None:
    argv = list(sys.argv[1:] if args is None else args)
    TYPED[:] = argv
    _said.clear()  # every warning is said once per run
    quiet(not _flag(argv, "--verbose"))
    try:
        if not argv or argv[0] in ("-h", "--help"):
            top_parser().print_help()
        elif argv[0] == "methods":
            methods_command(argv[1:])
        elif argv[0] in ("predict", "fit") or argv[0].startswith("-"):
            from syncsde.lightning_cli import run

            run(argv)
        else:
            from syncsde import registry

            plugins = registry.names("command")
            if registry.key(argv[0]) not in plugins:
                raise registry.InputError(
                    f"no subcommand {argv[0]!r}; choose one of {', '.join([*SUBCOMMANDS, *plugins])} (`syncsde "
                    "--help` says what each does)"
                )
            registry.get("command", argv[0])(argv[1:])
    except Exception as e:  # noqa: BLE001 (every known mistake becomes one line; anything else is re-raised)
        message = one_line(e)
        if message is None:
            raise
        fail(as_typed(message))


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
    from syncsde.registry import names

    p = argparse.ArgumentParser(prog="syncsde", description=DESCRIPTION)
    sub = p.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
    for name, text in SUBCOMMANDS.items():
        sub.add_parser(name, help=text)
    for name in names("command"):  # plug-ins: their help is theirs (`syncsde NAME --help`), not imported here
        sub.add_parser(name, help=f"a plug-in command: `syncsde {name} --help`")
    return p


def _flag(argv: list[str], name: str) -> bool:
    """A boolean option's value from the raw arguments (needed before parsing: it sets how much libraries say)."""
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1].lower() in ("true", "1", "yes")
        if a.startswith(name + "="):
            return a.split("=", 1)[1].lower() in ("true", "1", "yes")
    return False


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
    option = "--" + ".".join(keys) if keys else None
    if reason is None:
        return lines[-1] if lines else text
    if m := re.match(r"Option '([^']+)' is not accepted", reason):
        owner = classes[-1] if classes else "this class"
        top = keys[0] if keys else "model"
        name = f"{option}.{m[1]}" if option else f"--{m[1]}"
        return f"{name} is not an option of {owner}; `syncsde predict --{top}.help {owner}` lists them"
    if m := re.match(r"Expected a typing\.Literal\[(.*)\]", reason):
        reason = f"got {given if given is not None else 'another value'}; choose one of {m[1]}"
        if "'on'" in m[1] or "'off'" in m[1]:
            reason += " (YAML reads on, off, yes and no as true or false: quote them, mode: 'on')"
    if m := re.match(r"(?:Expected a <class '(\w+)'>|Not of type (\w+))[.:]", reason):
        wanted = TYPE_WORDS.get(m[1] or m[2], m[1] or m[2])
        got = re.search(r"Got value: (.*)", reason)
        reason = f"got {given if given is not None else got[1] if got else 'a value of the wrong type'}; give {wanted}"
    if reason.startswith(("No module named", "module ")) or "not accessible" in reason:
        reason = f"cannot import {given or 'the class'} ({reason}); give an importable class path"
    configured = config_value(keys) if option else None
    default = signature_default(classes[-1], keys[-1]) if option and classes else None
    if configured is not None and str(configured) != given:  # the value the config gives, which this one replaced
        hint = f" (the config's value is {configured})"
    else:
        hint = f" (the default is {default})" if default is not None else ""
    return f"{option}: {reason}{hint}" if option else reason


# options whose value is a class (``class_path`` + ``init_args``): where jsonargparse's long form says init_args
CLASS_OPTIONS = {"model", "data", "backbone", "strategy", "captioner", "upscaler", "callbacks"}
OPTION = re.compile(r"(?<![\w.])(--)?((?:model|data|trainer)(?:\.\w+)+)")


def as_typed(message: str) -> str:
    """``message`` with its options in the form the user typed: the short form (``--model.backbone.model``) in which
    every message is written, or jsonargparse's long form (``--model.init_args.backbone.init_args.model``) for a user
    who writes that."""
    if not any(".init_args." in a for a in TYPED):
        return message

    def long(m: re.Match) -> str:
        parts = m[2].split(".")
        out = [p for i, part in enumerate(parts) for p in ([part, "init_args"] if part in CLASS_OPTIONS and
               i + 1 < len(parts) and parts[i + 1] not in ("init_args", "help", "class_path") else [part])]
        return (m[1] or "") + ".".join(out)

    return OPTION.sub(long, message)


def signature_default(class_path: str, param: str):
    """The default of ``param`` in the class's signature, or in its bases' for the options it passes on."""
    import importlib
    import inspect

    try:
        module, name = class_path.rsplit(".", 1)
        cls = getattr(importlib.import_module(module), name)
        p = next((q for c in cls.__mro__ if (q := inspect.signature(c).parameters.get(param)) is not None), None)
    except (ImportError, AttributeError, ValueError, TypeError):
        return None
    if p is None or p.default is inspect.Parameter.empty or p.default is None:
        return None
    return p.default


def config_value(keys: list[str]):
    """The value that the config files of the running command (``--config``, as typed; the last one wins) give the
    option ``keys`` (short or long form), or None."""
    import yaml

    value = None
    for i, a in enumerate(TYPED):
        if a in ("--config", "-c") and i + 1 < len(TYPED):
            path = TYPED[i + 1]
        elif a.startswith("--config="):
            path = a.split("=", 1)[1]
        else:
            continue
        try:
            node = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError):
            continue
        for k in keys:
            if isinstance(node, dict) and k not in node:
                node = node.get("init_args")
            if not isinstance(node, dict) or k not in node:
                break
            node = node[k]
        else:
            value = node if not isinstance(node, dict) else value
    return value


# -- methods --------------------------------------------------------------------------------------------------
def methods_command(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="syncsde methods", description="The registered methods (syncsde.registry).")
    p.add_argument("--task", default=None, help="only the methods that apply to this task (e.g. wide_image)")
    p.add_argument("--markdown", action="store_true", help="a markdown table (the docs' methods table)")
    args = p.parse_args(argv)
    print(methods_table(args.task, markdown=args.markdown))


def methods_table(task: str | None = None, markdown: bool = False) -> str:
    """Every registered method: its ``--method`` switch, what it is, and the tasks it applies to."""
    from syncsde import registry

    tasks = registry.task_classes()
    if task is not None and registry.key(task) not in tasks:
        raise registry.InputError(f"no task named {task!r}; choose one of {', '.join(tasks)}")
    rows = []
    for name in registry.names("method"):
        m = registry.get("method", name)
        applies = [t for t, cls in tasks.items() if cls.provides and m.applies_to(cls)]
        if task is not None and registry.key(task) not in applies:
            continue
        rows.append((f"--method {name}", m.summary, ", ".join(applies)))
    if markdown:
        lines = ["| switch | method | tasks |", "|---|---|---|"] + [f"| `{a}` | {b} | {c} |" for a, b, c in rows]
        return "\n".join(lines)
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{a:<{width}}  {b}\n{'':<{width}}  tasks: {c}" for a, b, c in rows)


if __name__ == "__main__":
    main()
