"""Packaging: the package list, one version, the licence, one import namespace, the entry points, and the layering of
the core (syncsde/ never imports the application layer, tasks/ and evaluation/, and its modules import one another
without a cycle).

Everything here reads files (pyproject.toml with tomllib, the sources with ast) or starts a fresh interpreter; nothing
loads a model. The entry-point tests read the *installed* metadata: after a change to pyproject.toml's entry points,
reinstall (``pip install -e .``) before they can pass.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import syncsde

if sys.version_info >= (3, 11):
    import tomllib
else:  # requires-python is 3.10: tomllib's predecessor
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
# the installed name of each top-level source folder (pyproject's [tool.setuptools.package-dir] for the last two)
FOLDERS = {"syncsde": "syncsde", "tasks": "syncsde.tasks", "evaluation": "syncsde.evaluation"}
CORE = ROOT / "syncsde"
# what the core must not import: the application layer, under its installed and its old top-level names
APPLICATION = ("syncsde.tasks", "syncsde.evaluation", "tasks", "evaluation")
# string literals of the core that would name the application layer (a class path, an import_module argument)
APPLICATION_PREFIXES = ("syncsde.tasks", "syncsde.evaluation", "tasks.", "evaluation.")


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


# -- the package list ----------------------------------------------------------------------------------------------
def _packages_on_disk() -> dict[str, str]:
    """Installed package name -> folder, for every folder under syncsde/, tasks/, evaluation/ with an __init__.py."""
    found = {}
    for folder, name in FOLDERS.items():
        for init in sorted((ROOT / folder).rglob("__init__.py")):
            if "__pycache__" in init.parts:
                continue
            parts = init.parent.relative_to(ROOT / folder).parts
            found[".".join((name, *parts))] = _rel(init.parent)
    return found


def test_package_dir_maps_the_application_folders():
    assert PYPROJECT["tool"]["setuptools"].get("package-dir") == {
        "syncsde.tasks": "tasks",
        "syncsde.evaluation": "evaluation",
    }


def test_every_package_folder_is_listed_and_every_listed_package_exists():
    listed = PYPROJECT["tool"]["setuptools"]["packages"]
    on_disk = _packages_on_disk()
    assert len(listed) == len(set(listed)), f"listed twice: {sorted(p for p in listed if listed.count(p) > 1)}"
    missing = {name: folder for name, folder in on_disk.items() if name not in listed}
    assert not missing, f"package folders not in pyproject's [tool.setuptools] packages (not installed): {missing}"
    gone = sorted(set(listed) - set(on_disk))
    assert not gone, f"listed in pyproject's [tool.setuptools] packages but no folder with an __init__.py: {gone}"


def test_no_python_folder_without_an_init():
    """A folder of .py files without __init__.py would be left out of the wheel silently."""
    orphans = sorted(
        _rel(d)
        for folder in FOLDERS
        for d in {p.parent for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts}
        if not (d / "__init__.py").exists()
    )
    assert not orphans, f"folders with .py files but no __init__.py (not packaged): {orphans}"


# -- one version ---------------------------------------------------------------------------------------------------
def test_version_is_written_once():
    project = PYPROJECT["project"]
    assert "version" in project.get("dynamic", []), 'pyproject [project] needs dynamic = ["version"]'
    assert "version" not in project, "pyproject [project] writes a version: it belongs in syncsde/__init__.py only"
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "syncsde.__version__"}
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert str(citation["version"]) == syncsde.__version__, "CITATION.cff's version is not syncsde.__version__"
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert f"## [{syncsde.__version__}]" in changelog, f"CHANGELOG.md has no section for {syncsde.__version__}"


def test_installed_version_is_the_source_version():
    assert importlib.metadata.version("syncsde") == syncsde.__version__, "stale install: pip install -e ."


# -- the licence ---------------------------------------------------------------------------------------------------
def test_licence_is_mit_everywhere():
    licence = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert licence.startswith("MIT License"), "LICENSE is not the MIT licence"
    assert "Permission is hereby granted, free of charge" in licence
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert citation["license"] == "MIT"
    declared = PYPROJECT["project"].get("license")
    assert declared is not None, 'pyproject [project] declares no licence (license = "MIT")'
    if isinstance(declared, dict):  # the older table form: {text = "MIT"} or {file = "LICENSE"}
        assert declared.get("text") == "MIT" or declared.get("file") == "LICENSE", declared
    else:  # PEP 639: an SPDX expression
        assert declared == "MIT", declared
    files = PYPROJECT["project"].get("license-files")
    if files is not None:
        assert "LICENSE" in files, files
    other = [c for c in PYPROJECT["project"].get("classifiers", []) if c.startswith("License ::") and "MIT" not in c]
    assert not other, f"classifiers name another licence: {other}"


def test_citation_names_the_paper():
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert citation["cff-version"] == "1.2.0"
    assert citation["title"] == "syncsde"
    paper = citation["preferred-citation"]
    assert paper["type"] == "conference-paper"
    assert paper["title"] == "SyncSDE: A Probabilistic Framework for Diffusion Synchronization"
    assert [(a["given-names"], a["family-names"]) for a in paper["authors"]] == [
        ("Hyunjun", "Lee"),
        ("Hyunsoo", "Lee"),
        ("Sookwan", "Han"),
    ]
    assert paper["year"] == 2025


# -- one import namespace ------------------------------------------------------------------------------------------
def test_one_import_namespace_outside_the_repository(tmp_path):
    """From a folder other than the repository (so that its root is not on sys.path), the application layer imports
    as syncsde.tasks / syncsde.evaluation only."""
    code = (
        "import sys\n"
        "import syncsde.tasks, syncsde.evaluation\n"
        "print(syncsde.tasks.__path__[0]); print(syncsde.evaluation.__path__[0])\n"
        "for name in ('tasks', 'evaluation'):\n"
        "    try:\n"
        "        __import__(name)\n"
        "    except ModuleNotFoundError as e:\n"
        "        assert e.name == name, e\n"
        "    else:\n"
        "        sys.exit(f'import {name} works: {sys.modules[name].__file__}')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:] or done.stdout
    tasks_dir, evaluation_dir = done.stdout.split()[-2:]
    assert Path(tasks_dir).name == "tasks" and Path(evaluation_dir).name == "evaluation", done.stdout


# -- entry points --------------------------------------------------------------------------------------------------
def _task_classes() -> dict[str, tuple[str, str]]:
    """task_name -> (module file, class) for every class of tasks/*.py that assigns ``task_name = "..."``."""
    found: dict[str, tuple[str, str]] = {}
    for path in sorted((ROOT / "tasks").glob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8"), filename=str(path)).body:
            if not isinstance(node, ast.ClassDef):
                continue
            for stmt in node.body:
                if isinstance(stmt, ast.Assign):
                    targets = stmt.targets
                elif isinstance(stmt, ast.AnnAssign):
                    targets = [stmt.target]
                else:
                    continue
                if not any(isinstance(t, ast.Name) and t.id == "task_name" for t in targets):
                    continue
                value = stmt.value
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    twice = f"task_name {value.value!r} twice: {found.get(value.value)}, {node.name}"
                    assert value.value not in found, twice
                    found[value.value] = (path.stem, node.name)
    return found


def test_tasks_are_found_in_the_sources():
    assert len(_task_classes()) >= 6, _task_classes()  # the paper's six at least


def test_task_entry_points_declared_in_pyproject():
    declared = PYPROJECT["project"]["entry-points"]["syncsde.tasks"]
    expected = {name: f"syncsde.tasks.{module}:{cls}" for name, (module, cls) in _task_classes().items()}
    assert declared == expected


def _installed(group: str) -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=group)}


def test_task_entry_points_installed():
    installed = _installed("syncsde.tasks")
    classes = _task_classes()
    missing = sorted(set(classes) - set(installed))
    assert not missing, f"tasks without an installed entry point (stale install? pip install -e .): {missing}"
    for name, (module, cls) in classes.items():
        ep = installed[name]
        assert ep.value == f"syncsde.tasks.{module}:{cls}", ep
        loaded = ep.load()
        assert loaded.__name__ == cls and loaded.__module__ == f"syncsde.tasks.{module}", loaded
        assert loaded.task_name == name
    # nothing of ours points at a task that is gone (other packages may add their own tasks)
    ours = {ep.name for ep in installed.values() if ep.dist is not None and ep.dist.name == "syncsde"}
    assert ours <= set(classes), f"syncsde.tasks entry points with no task in tasks/: {sorted(ours - set(classes))}"


def test_command_entry_points():
    declared = PYPROJECT["project"]["entry-points"]["syncsde.commands"]
    assert {"evaluate", "compare"} <= set(declared), declared
    for value in declared.values():
        assert value.startswith("syncsde.evaluation."), value
    installed = _installed("syncsde.commands")
    missing = sorted({"evaluate", "compare"} - set(installed))
    assert not missing, f"commands not installed (stale install? pip install -e .): {missing}"
    for name in ("evaluate", "compare"):
        assert installed[name].value == declared[name]
        assert callable(installed[name].load())


# -- layering: the core never names the application layer -----------------------------------------------------------
def _modules(folder: Path, package: str) -> dict[str, Path]:
    """Module name -> file for every .py under ``folder`` (a package's __init__.py is the package)."""
    out = {}
    for path in sorted(folder.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        parts = path.relative_to(folder).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join((package, *parts))] = path
    return out


CORE_MODULES = _modules(CORE, "syncsde")


def _absolute(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module of a ``from`` statement (relative ones resolved against ``module``)."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imported(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    """Every dotted name an import statement may load: ``import a.b`` -> a.b; ``from a import b`` -> a, a.b."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    source = _absolute(module, path, node)
    return [source] + [f"{source}.{alias.name}" for alias in node.names if alias.name != "*"]


def _is_application(name: str) -> bool:
    return any(name == top or name.startswith(top + ".") for top in APPLICATION)


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                ids.add(id(first.value))
    return ids


def test_core_never_names_the_application_layer():
    """No module of syncsde/ imports syncsde.tasks / syncsde.evaluation (or the old top-level tasks / evaluation),
    at module level or inside a function, nor names them in a string (a class path, an import_module argument).
    Docstrings may talk about them, and the entry-point group names of pyproject (``syncsde.tasks``, the group the
    registry reads) are contract names, not modules."""
    groups = set(PYPROJECT["project"].get("entry-points", {}))
    offenders = []
    for module, path in CORE_MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        docstrings = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                bad = [name for name in _imported(module, path, node) if _is_application(name)]
                if bad:
                    offenders.append(f"{_rel(path)}:{node.lineno}: imports {bad[0]}")
            elif (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
                and node.value.startswith(APPLICATION_PREFIXES)
                and node.value not in groups
            ):
                offenders.append(f"{_rel(path)}:{node.lineno}: names {node.value[:60]!r}")
    assert not offenders, "the core names the application layer:\n" + "\n".join(offenders)


# -- no import cycle among the core's modules ------------------------------------------------------------------------
def _module_level_imports(tree: ast.Module):
    """Import statements that run when the module is imported: the module body, into if/try/with/loops and class
    bodies, not into functions, and not under ``if TYPE_CHECKING:``."""

    def visit(statements):
        for stmt in statements:
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                yield stmt
            elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            elif isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test):
                yield from visit(stmt.orelse)
            else:
                for name in ("body", "orelse", "finalbody"):
                    yield from visit(getattr(stmt, name, []))
                for handler in getattr(stmt, "handlers", []):
                    yield from visit(handler.body)
                for case in getattr(stmt, "cases", []):
                    yield from visit(case.body)

    yield from visit(tree.body)


def _import_graph() -> dict[str, dict[str, int]]:
    """Module -> {core module it imports at module level: line}. A package a module lies in is no edge (it is being
    imported already when the module runs); ``from p import m`` of a submodule m is an edge to p.m (and to p)."""
    graph: dict[str, dict[str, int]] = {}
    for module, path in CORE_MODULES.items():
        edges = graph.setdefault(module, {})
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in _module_level_imports(tree):
            for name in _imported(module, path, node):
                parts = name.split(".")
                for i in range(1, len(parts) + 1):  # `import a.b.c` runs a, a.b and a.b.c
                    target = ".".join(parts[:i])
                    if target not in CORE_MODULES or target == module or module.startswith(target + "."):
                        continue
                    edges.setdefault(target, node.lineno)
    return graph


def _find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_import_graph_sees_the_core():
    graph = _import_graph()
    assert "syncsde.task" in graph and "syncsde.coupling" in graph["syncsde.task"], graph.get("syncsde.task")


def test_no_import_cycle_in_the_core():
    graph = _import_graph()
    cycle = _find_cycle(graph)
    if cycle:
        steps = [f"{a} imports {b} ({_rel(CORE_MODULES[a])}:{graph[a][b]})" for a, b in zip(cycle, cycle[1:])]
        pytest.fail("import cycle among the core's modules:\n" + "\n".join(steps))


def test_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b": 1}, "b": {}, "c": {"b": 1}}) is None


def test_every_shipped_tiny_config_runs_on_a_plain_install():
    """`pip install -e .` installs what every configs/tiny/*.yaml needs: the sphere's pyequilib, and imageio with its
    ffmpeg for the MP4s of the ambiguous, mesh and motion runs (they stopped, or warned, until an extra was added);
    nothing sends a user to an extra that no longer provides anything."""
    deps = {re.split(r"[<>=~!\[; ]", d)[0].lower() for d in PYPROJECT["project"]["dependencies"]}
    assert {"pyequilib", "imageio", "imageio-ffmpeg"} <= deps
    empty = [name for name, reqs in PYPROJECT["project"]["optional-dependencies"].items() if not reqs]
    assert {"video", "sphere"} <= set(empty)
    texts = [*ROOT.glob("syncsde/**/*.py"), *ROOT.glob("tasks/*.py"), *ROOT.glob("syncsde/docs/*.md"), ROOT / "README.md"]
    for path in texts:
        text = path.read_text(encoding="utf-8")
        for name in empty:
            assert f"[{name}]" not in text, (_rel(path), name)
