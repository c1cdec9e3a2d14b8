"""The result blocks of the README and of the documentation pages are exactly what the measuring scripts wrote
(syncsde.evaluation.benchmarks.readme)."""

import threading

from syncsde.evaluation.benchmarks import readme
from syncsde.evaluation.benchmarks.readme import DOCS, README, pages, relink, render, sync_readme


def test_readme_blocks_match_their_results_files():
    assert sync_readme(check=True) == [], "run `python -m syncsde.evaluation.benchmarks.readme` after a benchmark"


def test_the_docs_pages_are_checked_too():
    assert README in pages() and (DOCS / "index.md") in pages() and (DOCS / "methods.md") in pages()


def test_render_fills_blocks_and_reports_missing(tmp_path):
    (tmp_path / "speed.md").write_text("| a |\n|---|\n| 1 |\n")
    text = "x\n<!-- results:speed -->\nold\n<!-- /results:speed -->\ny\n<!-- results:gone -->\n<!-- /results:gone -->\n"
    new, missing = render(text, tmp_path)
    assert "| 1 |" in new and "old" not in new and missing == ["gone"]
    assert render(new, tmp_path)[0] == new  # idempotent
    assert README.is_file()


def test_readme_updates_wait_for_each_other(tmp_path, monkeypatch):
    """Two benchmarks finishing together: the second update waits for the first instead of writing over it."""
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "speed.md").write_text("new\n")
    (tmp_path / "README.md").write_text("<!-- results:speed -->\nold\n<!-- /results:speed -->\n")
    monkeypatch.setattr(readme, "README", tmp_path / "README.md")
    monkeypatch.setattr(readme, "DOCS", tmp_path / "docs")
    monkeypatch.setattr(readme, "render", lambda text: render(text, tmp_path / "results"))
    with readme.readme_lock():
        update = threading.Thread(target=sync_readme)
        update.start()
        update.join(1.0)
        assert update.is_alive() and "old" in (tmp_path / "README.md").read_text()  # waits for the lock
    update.join(10)
    assert not update.is_alive() and "new" in (tmp_path / "README.md").read_text()


def test_a_stale_block_in_a_docs_page_fails_the_check(tmp_path, monkeypatch):
    """A block may sit in the README and in any page of syncsde/docs/; each is checked and filled, and the links of
    a results file (written for the README, at the root) are rewritten to point from the page to the same files."""
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "speed.md").write_text("| a |\n|---|\n| 1 |\n\n![plot](notebooks/figures/speed.png)\n")
    docs = tmp_path / "syncsde" / "docs"
    docs.mkdir(parents=True)
    block = "<!-- results:speed -->\n{}<!-- /results:speed -->\n"
    (tmp_path / "README.md").write_text("# x\n")
    (docs / "speed.md").write_text("# Speed\n\n" + block.format("old\n"))
    monkeypatch.setattr(readme, "README", tmp_path / "README.md")
    monkeypatch.setattr(readme, "DOCS", docs)
    monkeypatch.setattr(readme, "render", lambda text: render(text, tmp_path / "results"))
    assert sync_readme(check=True) == ["speed"]
    assert "old" in (docs / "speed.md").read_text()  # a check writes nothing
    assert sync_readme() == ["speed"]
    text = (docs / "speed.md").read_text()
    assert "old" not in text and "| 1 |" in text and "](../../notebooks/figures/speed.png)" in text
    assert sync_readme(check=True) == []  # filled, and the rewritten links are what the check expects
    (tmp_path / "README.md").write_text(block.format("old\n"))  # the same block in the README: filled as written
    assert sync_readme() == ["speed"] and "](notebooks/figures/speed.png)" in (tmp_path / "README.md").read_text()
    assert sync_readme(check=True) == []


def test_relink_points_block_links_from_the_page_and_leaves_the_rest(tmp_path, monkeypatch):
    monkeypatch.setattr(readme, "README", tmp_path / "README.md")
    page = tmp_path / "syncsde" / "docs" / "p.md"
    text = (
        "[outside](notebooks/x.png)\n<!-- results:a -->\n![f](notebooks/figures/f.png) [s](syncsde/docs/SYNCSDE.md#3-x)"
        " [w](https://example.org/a.png) [h](#here)\n<!-- /results:a -->\n<!-- results:b -->\n[k](keep.md)\n"
        "<!-- /results:b -->\n"
    )
    new = relink(text, page, skip=["b"])
    assert new.startswith("[outside](notebooks/x.png)")  # the page's own text is the author's
    assert "![f](../../notebooks/figures/f.png) [s](SYNCSDE.md#3-x)" in new
    assert "(https://example.org/a.png)" in new and "(#here)" in new and "[k](keep.md)" in new
    assert relink(text, tmp_path / "README.md") == text
