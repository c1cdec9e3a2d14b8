"""README figures and tables come from the scripts that measured them, never from hand edits.

A measuring script calls :func:`write_result` with a markdown table (and optionally the raw numbers); it lands in
``notebooks/results/<name>.md`` (+ ``<name>.json``). The README shows it between two markers::

    <!-- results:<name> -->
    ...the file's contents, copied here by this module...
    <!-- /results:<name> -->

``python -m syncsde.evaluation.benchmarks.readme`` copies every results file into its block; ``--check`` only reports blocks
that differ (the test suite runs the check, so a README edited by hand, or a stale block, fails CI).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import re
import sys
from contextlib import contextmanager
from pathlib import Path

from syncsde.io import atomic_write

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "notebooks" / "results"
README = ROOT / "README.md"
BLOCK = re.compile(r"(<!-- results:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /results:(?P=name) -->)", re.S)


def write_result(name: str, markdown: str, data: dict | None = None, update_readme: bool = True) -> Path:
    """Save one measured figure/table as ``notebooks/results/<name>.md`` (and ``.json``), then refresh the README."""
    path = atomic_write(RESULTS / f"{name}.md", lambda p: p.write_text(markdown.rstrip("\n") + "\n"))
    if data is not None:
        atomic_write(RESULTS / f"{name}.json", lambda p: p.write_text(json.dumps(data, indent=2, default=str) + "\n"))
    if update_readme and README.is_file():
        sync_readme()
    return path


def render(text: str, results: Path = RESULTS) -> tuple[str, list[str]]:
    """The README text with every block replaced by its results file, and the names of blocks without one."""
    missing = []

    def fill(m: re.Match) -> str:
        source = results / f"{m['name']}.md"
        if not source.is_file():
            missing.append(m["name"])
            return m.group(0)
        return m.group(1) + source.read_text() + m.group(4)

    return BLOCK.sub(fill, text), missing


@contextmanager
def readme_lock():
    """One README update at a time (``.readme.lock`` beside it): two measuring scripts that finish together would
    each read the README, fill their own block and write it back, and the later write would drop the other's block."""
    with open(README.parent / ".readme.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes, or by the system if the process dies
        yield


def sync_readme(check: bool = False) -> list[str]:
    """Copy results into the README's blocks (or, with ``check``, only compare). Returns the names of blocks that
    were stale (or have no results file)."""
    with readme_lock():
        text = README.read_text()
        new, missing = render(text)
        stale = [m["name"] for m in BLOCK.finditer(new) if m.group(0) not in text]
        if not check and new != text:
            atomic_write(README, lambda p: p.write_text(new))
    return sorted(set(stale) | set(missing))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Copy notebooks/results/*.md into the README's result blocks.")
    ap.add_argument("--check", action="store_true", help="only report stale blocks (exit 1 if any)")
    args = ap.parse_args(argv)
    stale = sync_readme(check=args.check)
    if stale:
        verb = "stale or without a results file" if args.check else "updated (or without a results file)"
        print(f"README blocks {verb}: {', '.join(stale)}", file=sys.stderr)
        sys.exit(1 if args.check else 0)


if __name__ == "__main__":
    main()
