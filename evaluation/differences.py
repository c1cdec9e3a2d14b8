"""The documentation page "Differences from the official code" (``syncsde/docs/differences.md``), assembled from
``syncsde/docs/differences_<task>.md``.

Each file holds one task's differences (``all`` for those every task shares): a markdown table with the columns of
:data:`HEADER` (a file of bare rows gets the header added), with any text around it, or text alone where there is
nothing to list; a title line of its own (``# ...``) gives way to the section's heading. One file per task lets tasks
developed apart each keep their own rows.

    python -m syncsde.evaluation.differences

joins the files in :data:`ORDER` under one heading per task and writes the result with
:func:`syncsde.evaluation.benchmarks.readme.write_result` (``notebooks/results/differences.md``, then the page's block
``<!-- results:differences -->``); the test suite checks that the block is current.
"""

from __future__ import annotations

from pathlib import Path

import syncsde.docs
from syncsde.evaluation.benchmarks.readme import write_result

DOCS = Path(syncsde.docs.__file__).parent  # the differences_<task>.md files ship with the package's docs
RESULT = "differences"
HEADER = (
    "| difference | official code | syncsde default | official setting | why syncsde's default |\n"
    "|---|---|---|---|---|\n"
)
ORDER = ("all", "wide", "mask_t2i", "edit", "ambiguous", "mesh", "motion")
TITLES = {
    "all": "All tasks",
    "wide": "Wide images (SYNCSDE.md §6.3)",
    "mask_t2i": "Mask-based text-to-image (§6.1)",
    "edit": "Real-image editing (§6.2)",
    "ambiguous": "Ambiguous images (§6.4)",
    "mesh": "Mesh texturing (§6.5)",
    "motion": "Long-horizon motion (§6.6)",
}


def _rank(path: Path) -> tuple[int, str]:
    task = path.stem.removeprefix("differences_")
    return (ORDER.index(task) if task in ORDER else len(ORDER), task)


def section(path: Path) -> str:
    """One task's part: a heading and the file's contents (its title line dropped, the header added to bare rows)."""
    task = path.stem.removeprefix("differences_")
    body = path.read_text().strip()
    if body.startswith("#"):
        body = body.partition("\n")[2].strip()
    second = (body.splitlines() + [""])[1]
    if body.startswith("|") and not (second.startswith("|") and set(second) <= set("|-: ")):
        body = HEADER + body
    return f"### {TITLES.get(task, task)}\n\n{body}\n"


def table() -> str:
    """The whole section body, every ``differences_*.md`` in task order."""
    return "\n".join(section(p) for p in sorted(DOCS.glob("differences_*.md"), key=_rank))


def main() -> None:
    path = write_result(RESULT, table())
    print(f"wrote {path} and the block '{RESULT}' of the docs page differences.md")


if __name__ == "__main__":
    main()
