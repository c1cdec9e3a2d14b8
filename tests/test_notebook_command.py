"""The notebook command of the docs (syncsde/docs/evaluation.md) works as written: run by a shell from another folder,
with a relative SYNCSDE_FOLDERS, on what the `analysis` extra installs."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from syncsde.task import SampleOutput
from syncsde.writer import SampleWriter, write_manifest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "syncsde" / "docs" / "evaluation.md"  # the docs page with the notebook command (was the README's)


def readme_command() -> str:
    lines = [line for line in PAGE.read_text().splitlines() if line.startswith("SYNCSDE_FOLDERS=")]
    assert len(lines) == 1, lines
    return lines[0].strip()


def test_analysis_extra_provides_the_command():
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {re.split(r"[<>=\[ ]", d)[0] for d in extras["analysis"]}
    assert {"nbclient", "ipykernel", "matplotlib"} <= names  # jupyter execute, its kernel, the figures
    assert any(d.startswith("syncsde[analysis]") for d in extras["test"])  # CI installs the same


def test_readme_notebook_command_runs_from_the_working_directory(tmp_path):
    work = tmp_path / "work"
    (work / "notebooks").parent.mkdir()
    (work / "notebooks").symlink_to(ROOT / "notebooks")  # the command names notebooks/ relative to the repository
    for inv_lambda in (0.0, 5.0):
        folder = work / "outputs" / "sweep" / f"lambda_{inv_lambda:g}"
        writer = SampleWriter(folder)
        for i in range(2):
            meta = {"task": "wide_image", "method": "syncsde", "inv_lambda": inv_lambda, "prompt": "a sky", "seed": 0}
            image = torch.rand(3, 16, 48, generator=torch.Generator().manual_seed(i))
            writer.write_sample(SampleOutput(i, image, meta))
        write_manifest(folder)
        metrics = {"metrics": {"clip_score": {"available": True, "value": 20 + inv_lambda}}}
        (folder / "metrics.json").write_text(json.dumps(metrics))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("SYNCSDE_FOLDERS", None)
    r = subprocess.run(["bash", "-c", readme_command()], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    figures = work / "outputs" / "sweep" / "analysis"
    assert (figures / "samples.png").is_file() and (figures / "lambda.png").is_file()


def test_lambda_panel_plots_numbers_sorted_by_lambda(tmp_path):
    """The notebook's lambda.png reads each metric as numbers (KID's mean and spread, not the table's "mean ± std"
    text) against 1/λ sorted as a number: 0, 5, 20 (not 0, 20, 5)."""
    from syncsde.evaluation.sweep import lambda_series
    from syncsde.evaluation.table import table

    folders = []
    for lam in (20, 0, 5):
        folder = tmp_path / f"syncsde_{lam}"
        folder.mkdir()
        side = {"task": "wide_image", "method": "syncsde", "inv_lambda": float(lam), "seconds": 1.0}
        (folder / "manifest.json").write_text(json.dumps({"samples": [side]}))
        kid = {"available": True, "value": lam / 100, "std": 0.001}
        clip = {"available": True, "value": 30.0 - lam}
        (folder / "metrics.json").write_text(json.dumps({"metrics": {"kid": kid, "clip_score": clip}}))
        folders.append(folder)
    rows = table(sorted(str(f) for f in folders))  # sorted as the notebook globs: syncsde_0, syncsde_20, syncsde_5
    assert isinstance(rows[0]["kid"], str)  # the table's text
    assert lambda_series(rows, "kid") == {"syncsde": [(0.0, 0.0, 0.001), (5.0, 0.05, 0.001), (20.0, 0.2, 0.001)]}
    assert lambda_series(rows, "clip_score") == {"syncsde": [(0.0, 30.0, 0.0), (5.0, 25.0, 0.0), (20.0, 10.0, 0.0)]}
    assert lambda_series(rows, "fid") == {}
    cells = json.loads((ROOT / "notebooks" / "analysis.ipynb").read_text())["cells"]
    assert any("lambda_series(rows, name)" in "".join(c["source"]) for c in cells)
