"""The method reference the code cites ships inside the package, and every citation resolves to one of its headings;
the README is a front page whose links resolve, and the documentation site builds without a warning."""

import fnmatch
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "syncsde" / "docs"
CITED = [*(ROOT / d for d in ("syncsde", "tasks", "evaluation")), ROOT / "README.md"]
REFERENCE = {"SYNCSDE.md", "BASELINES.md", "ARCHITECTURE.md"}  # the reference itself; every other page cites it
# "SYNCSDE.md §6.3", "SYNCSDE.md §6.3, §6.6", "BASELINES.md §4.2–4.3", "SYNCSDE.md §2–§4 and BASELINES.md §1"
CITATION = re.compile(r"(SYNCSDE|BASELINES)\.md((?:\s*(?:,|and|–|-)?\s*§?\d+(?:\.\d+)*)+)")


def sources():
    for place in CITED:
        files = [place] if place.is_file() else [*place.rglob("*.py"), *place.rglob("*.md")]
        yield from (f for f in files if DOCS not in f.parents)
    # the pages of the documentation site (and the differences files they are assembled from)
    yield from (f for f in sorted(DOCS.glob("*.md")) if f.name not in REFERENCE)


def headings(name: str) -> set[str]:
    text = (DOCS / name).read_text()
    return {m[1] for m in re.finditer(r"^#{2,4} (\d+(?:\.\d+)*)\.? ", text, re.M)}


def test_every_citation_resolves_to_a_heading_of_the_shipped_docs():
    known = {doc: headings(f"{doc}.md") for doc in ("SYNCSDE", "BASELINES")}
    assert {"3", "3.1", "6.3", "6.6", "9"} <= known["SYNCSDE"] and {"0", "1.2", "2.1", "4.3", "7"} <= known["BASELINES"]
    count, unresolved = 0, []
    for f in sources():
        for m in CITATION.finditer(f.read_text()):
            for section in re.findall(r"\d+(?:\.\d+)*", m[2]):
                count += 1
                if section not in known[m[1]]:
                    unresolved.append(f"{f.relative_to(ROOT)}: {m[1]}.md §{section}")
    assert count > 40, "the citations were not found"
    assert not unresolved, unresolved


def test_no_citation_of_files_outside_the_repository():
    for f in sources():
        text = f.read_text()
        assert "shared/spec" not in text and "shared/ARCHITECTURE" not in text, f
        if "ARCHITECTURE.md" in text:
            assert (DOCS / "ARCHITECTURE.md").is_file()


def test_docs_are_package_data():
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["syncsde"]
    for doc in ("SYNCSDE.md", "BASELINES.md", "ARCHITECTURE.md"):
        assert any(fnmatch.fnmatch(f"docs/{doc}", p) for p in patterns), doc


def test_docs_keep_the_reference_numbers():
    text = (DOCS / "SYNCSDE.md").read_text()
    for needle in ("c_t = γ_t · (1/λ) · (t/T)", "T = 981", "1/λ = 5", "16j", "min(k, 12)", "t > 200", "120 + 90(K−1)"):
        assert needle in text, needle
    text = (DOCS / "BASELINES.md").read_text()
    for needle in ("| **2** |", "n_W = (W/8−64)//8+1", "r = 3H/8", "e = 6·i/S", "c_i = max(cos(π·i/(1.5(S−1))), 0)"):
        assert needle in text, needle


def test_the_core_never_imports_tasks():
    """ARCHITECTURE.md: tasks build on syncsde/, never the other way (the tools that run tasks live in evaluation/)."""
    code = (
        "import importlib, pkgutil, sys, syncsde\n"
        "names = [m.name for m in pkgutil.walk_packages(syncsde.__path__, 'syncsde.')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "    assert 'tasks' not in sys.modules, name\n"
        "print(len(names))"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert int(r.stdout.split()[-1]) > 40  # every module was imported


# -- the README, a front page, and the documentation site ----------------------------------------------------------

LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def test_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines: move the detail into a page of syncsde/docs/"


def test_every_relative_link_of_the_readme_points_to_a_file():
    text = (ROOT / "README.md").read_text()
    targets = [t for t in LINK.findall(text) if not re.match(r"[a-z][\w+.-]*:|#", t)]
    assert len(targets) > 10, "the links were not found"
    missing = [t for t in targets if not (ROOT / t.split("#")[0]).exists()]
    assert not missing, missing


def test_the_new_pages_cite_the_reference():
    """The pages are in the citation scan above (a page citing "SYNCSDE.md §4.1" must find that heading)."""
    scanned = set(sources())
    assert DOCS / "methods.md" in scanned and DOCS / "SYNCSDE.md" not in scanned
    assert CITATION.search((DOCS / "methods.md").read_text())


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="mkdocs not installed (pip install -e .[docs])")
def test_the_documentation_site_builds_without_warnings(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "WARNING" not in r.stderr, r.stderr[-3000:]
    site = tmp_path / "site"
    assert (site / "index.html").is_file() and (site / "methods" / "index.html").is_file()
    assert (site / "notebooks" / "figures" / "tiny_wide_methods.png").is_file()  # the figures joined the site
