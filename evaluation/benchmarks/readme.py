"""README and documentation figures and tables come from the scripts that measured them, never from hand edits.

A measuring script calls :func:`write_result` with a markdown table (and optionally the raw numbers); it lands in
``notebooks/results/<name>.md`` (+ ``<name>.json``). The README and the pages of the documentation site
(``syncsde/docs/*.md``, :func:`pages`) show it between two markers::

    <!-- results:<name> -->
    ...the file's contents, copied here by this module...
    <!-- /results:<name> -->

A block name may appear in several files. Results files are written for the README, at the repository root: in a
page elsewhere (``syncsde/docs/``) their relative links are rewritten to point from that page to the same files
(``notebooks/figures/x.png`` becomes ``../../notebooks/figures/x.png``), so they resolve on GitHub as in the README.

``python -m syncsde.evaluation.benchmarks.readme`` copies every results file into its blocks; ``--check`` only reports
blocks that differ (the test suite runs the check, so a README or page edited by hand, or a stale block, fails CI).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable

from syncsde.io import atomic_write

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "notebooks" / "results"
README = ROOT / "README.md"
DOCS = ROOT / "syncsde" / "docs"  # the documentation site's pages (mkdocs.yml's docs_dir)
BLOCK = re.compile(r"(<!-- results:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /results:(?P=name) -->)", re.S)
# a markdown link or image target that is a relative path: not a URL (scheme:), an anchor (#...) or an absolute path
LINK = re.compile(r"(\]\()(?![A-Za-z][\w+.-]*:|#|/)([^)\s#]+)")


def write_result(name: str, markdown: str, data: dict | None = None, update_readme: bool = True) -> Path:
    """Save one measured figure/table as ``notebooks/results/<name>.md`` (and ``.json``), then refresh the README and
    the documentation pages."""
    path = atomic_write(RESULTS / f"{name}.md", lambda p: p.write_text(markdown.rstrip("\n") + "\n"))
    if data is not None:
        atomic_write(RESULTS / f"{name}.json", lambda p: p.write_text(json.dumps(data, indent=2, default=str) + "\n"))
    if update_readme and README.is_file():
        sync_readme()
    return path


def render(text: str, results: Path = RESULTS) -> tuple[str, list[str]]:
    """The README text (or a page's) with every block replaced by its results file, and the names of blocks without
    one. The results go in as written, for the README; :func:`relink` adapts them to a page elsewhere."""
    missing = []

    def fill(m: re.Match) -> str:
        source = results / f"{m['name']}.md"
        if not source.is_file():
            missing.append(m["name"])
            return m.group(0)
        return m.group(1) + source.read_text() + m.group(4)

    return BLOCK.sub(fill, text), missing


def pages() -> list[Path]:
    """The files whose blocks are filled: the README and every page of the documentation site."""
    return [README, *sorted(DOCS.glob("*.md"))]


def relink(text: str, page: Path, skip: Iterable[str] = ()) -> str:
    """``text`` (filled by :func:`render` for the README) with the relative links inside its blocks pointing from
    ``page`` to the same files; the blocks named in ``skip`` (left as they were: no results file) are kept as is."""
    root = README.parent
    if page.parent.resolve() == root.resolve():
        return text

    def target(m: re.Match) -> str:
        return m[1] + Path(os.path.relpath(root / m[2], page.parent)).as_posix()

    def block(m: re.Match) -> str:
        return m.group(0) if m["name"] in skip else m.group(1) + LINK.sub(target, m["body"]) + m.group(4)

    return BLOCK.sub(block, text)


@contextmanager
def readme_lock():
    """One README update at a time (``.readme.lock`` beside it): two measuring scripts that finish together would
    each read the README, fill their own block and write it back, and the later write would drop the other's block.
    The lock covers the documentation pages too."""
    with open(README.parent / ".readme.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes, or by the system if the process dies
        yield


def sync_readme(check: bool = False) -> list[str]:
    """Copy results into the blocks of the README and of every documentation page (or, with ``check``, only
    compare). Returns the names of blocks that were stale (or have no results file), in any of those files."""
    stale: set[str] = set()
    with readme_lock():
        for page in pages():
            if not page.is_file():
                continue
            text = page.read_text()
            new, missing = render(text)
            new = relink(new, page, missing)
            stale |= {m["name"] for m in BLOCK.finditer(new) if m.group(0) not in text} | set(missing)
            if not check and new != text:
                atomic_write(page, lambda p, new=new: p.write_text(new))
    return sorted(stale)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(
        description="Copy notebooks/results/*.md into the result blocks of the README and of syncsde/docs/*.md."
    )
    ap.add_argument("--check", action="store_true", help="only report stale blocks (exit 1 if any)")
    args = ap.parse_args(argv)
    stale = sync_readme(check=args.check)
    if stale:
        verb = "stale or without a results file" if args.check else "updated (or without a results file)"
        print(f"README/docs blocks {verb}: {', '.join(stale)}", file=sys.stderr)
        sys.exit(1 if args.check else 0)


if __name__ == "__main__":
    main()
