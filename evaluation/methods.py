"""The docs' methods table, generated from the registry (never edited by hand):

    python -m syncsde.evaluation.methods

writes ``syncsde methods --markdown`` as ``notebooks/results/methods.md`` and into the README's and the docs' block
``<!-- results:methods -->`` (:func:`syncsde.evaluation.benchmarks.readme.write_result`); the test suite checks that it
is current.
"""

from __future__ import annotations

from syncsde.cli import methods_table
from syncsde.evaluation.benchmarks.readme import write_result


def main() -> None:
    path = write_result("methods", methods_table(markdown=True))
    print(f"wrote {path} and the blocks 'methods'")


if __name__ == "__main__":
    main()
