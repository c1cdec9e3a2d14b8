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
