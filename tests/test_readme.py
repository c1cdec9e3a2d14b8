"""The README's result blocks are exactly what the measuring scripts wrote (evaluation.benchmarks.readme)."""

from evaluation.benchmarks.readme import README, render, sync_readme


def test_readme_blocks_match_their_results_files():
    assert sync_readme(check=True) == [], "run `python -m evaluation.benchmarks.readme` after a benchmark"


def test_render_fills_blocks_and_reports_missing(tmp_path):
    (tmp_path / "speed.md").write_text("| a |\n|---|\n| 1 |\n")
    text = "x\n<!-- results:speed -->\nold\n<!-- /results:speed -->\ny\n<!-- results:gone -->\n<!-- /results:gone -->\n"
    new, missing = render(text, tmp_path)
    assert "| 1 |" in new and "old" not in new and missing == ["gone"]
    assert render(new, tmp_path)[0] == new  # idempotent
    assert README.is_file()
