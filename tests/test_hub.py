"""Hub ids: every id that configs/ and the code's defaults name is in syncsde.hub.IDS, every listed id is used, and
no withdrawn id remains anywhere in the repository."""

import ast
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from syncsde import hub
from syncsde.errors import ModelNotFoundError

ROOT = Path(__file__).resolve().parents[1]
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def config_ids() -> dict[str, list[str]]:
    """Hub-id-like values in configs/ (not local folders such as outputs/NAME or configs/assets) -> files."""
    found: dict[str, list[str]] = {}

    def walk(node, where):
        if isinstance(node, dict):
            for v in node.values():
                walk(v, where)
        elif isinstance(node, list):
            for v in node:
                walk(v, where)
        elif isinstance(node, str) and HUB_ID.match(node) and node.split("/")[0] not in ("outputs", "configs"):
            found.setdefault(node, []).append(where)

    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        walk(yaml.safe_load(path.read_text()), str(path.relative_to(ROOT)))
    return found


def default_ids() -> dict[str, list[str]]:
    """String defaults of every function in the installed packages' sources that look like hub ids -> where."""
    found: dict[str, list[str]] = {}
    for package in ("syncsde", "tasks", "evaluation"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.arguments):
                    for d in [*node.defaults, *node.kw_defaults]:
                        if isinstance(d, ast.Constant) and isinstance(d.value, str) and HUB_ID.match(d.value):
                            found.setdefault(d.value, []).append(f"{path.relative_to(ROOT)}:{d.lineno}")
    return found


def test_config_and_default_ids_are_listed():
    for what, ids in (("configs/", config_ids()), ("a code default", default_ids())):
        unknown = {i: where for i, where in ids.items() if i not in hub.IDS}
        assert not unknown, f"ids in {what} not in syncsde/hub.py IDS: {unknown}"


def test_every_listed_id_is_used():
    used = config_ids().keys() | default_ids().keys()
    assert set(hub.IDS) - used == set(), "syncsde/hub.py lists ids nothing uses"
    assert not set(hub.IDS) & set(hub.WITHDRAWN)


def test_no_withdrawn_id_remains():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    allowed = {"syncsde/hub.py", "tests/test_hub.py"}
    hits = []
    for name in files:
        path = ROOT / name
        if name in allowed or not path.is_file() or path.suffix not in (".py", ".yaml", ".md", ".json", ".toml", ".ipynb"):
            continue
        text = path.read_text(errors="replace")
        hits += [f"{name}: {old}" for old in hub.WITHDRAWN if old in text]
    assert not hits


@pytest.mark.parametrize("old", sorted(hub.WITHDRAWN))
def test_withdrawn_id_is_refused_in_one_line_naming_the_successor(old, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from syncsde.backbones.diffusers import resolve_model, resolve_single

    for resolve in (resolve_model, lambda m: resolve_single(m, "--model.backbone.controlnet")):
        with pytest.raises(ModelNotFoundError, match="withdrawn") as e:
            resolve(old)
        assert hub.WITHDRAWN[old] in str(e.value) and "\n" not in str(e.value)
