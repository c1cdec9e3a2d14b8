"""The README's result blocks are exactly what the measuring scripts wrote (syncsde.evaluation.benchmarks.readme)."""

import threading

from syncsde.evaluation.benchmarks import readme
from syncsde.evaluation.benchmarks.readme import README, render, sync_readme


def test_readme_blocks_match_their_results_files():
    assert sync_readme(check=True) == [], "run `python -m syncsde.evaluation.benchmarks.readme` after a benchmark"


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
    monkeypatch.setattr(readme, "render", lambda text: render(text, tmp_path / "results"))
    with readme.readme_lock():
        update = threading.Thread(target=sync_readme)
        update.start()
        update.join(1.0)
        assert update.is_alive() and "old" in (tmp_path / "README.md").read_text()  # waits for the lock
    update.join(10)
    assert not update.is_alive() and "new" in (tmp_path / "README.md").read_text()
