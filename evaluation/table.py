"""Collect output folders into one table (sweeps over λ or methods):

    python -m syncsde.evaluation.table outputs/sweep/* [--csv table.csv]

One row per folder: task, method and its parameters (from the sidecars), number of samples, mean seconds per
sample, and every metric of the folder's ``metrics.json`` (written by ``syncsde.evaluation.Metrics``); a metric with a spread
(KID: mean and standard deviation over its subsets) is shown as "mean ± std". Folders without samples are skipped.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from syncsde.strategies import description_keys


def folder_row(folder: str | Path) -> dict:
    folder = Path(folder)
    manifest = folder / "manifest.json"
    if not manifest.exists():
        raise FileNotFoundError(f"{folder} has no manifest.json: is it a `syncsde predict` output folder?")
    samples = json.loads(manifest.read_text())["samples"]
    first = samples[0] if samples else {}
    row = {
        "folder": str(folder),
        **{k: first[k] for k in ("task", *description_keys(first.get("method", ""))) if k in first},
        "num_samples": len(samples),
        "seconds": round(sum(s.get("seconds", 0) for s in samples) / max(len(samples), 1), 4),
    }
    metrics = folder / "metrics.json"
    if metrics.exists():
        for name, r in json.loads(metrics.read_text())["metrics"].items():
            if isinstance(r, dict) and r.get("available"):
                row[name] = f"{r['value']:.3g} ± {r['std']:.2g}" if "std" in r else round(r["value"], 6)
    return row


def table(folders) -> list[dict]:
    """One row per folder that holds samples; the others (a sweep's ``analysis`` folder, a file) are skipped with one
    line on stderr each."""
    rows = []
    for f in folders:
        manifest = Path(f) / "manifest.json"
        if not manifest.is_file() or not json.loads(manifest.read_text()).get("samples"):
            print(f"table: skipping {f}: it holds no samples (no manifest.json listing any)", file=sys.stderr)
            continue
        rows.append(folder_row(f))
    return rows


def to_markdown(rows: list[dict]) -> str:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--csv", default=None)
    args = ap.parse_args(argv)
    rows = table(args.folders)
    print(to_markdown(rows))
    if args.csv:
        cols = list(dict.fromkeys(k for r in rows for k in r))
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            w.writerows(rows)
        print(f"wrote {args.csv}", file=sys.stderr)
    return rows


if __name__ == "__main__":
    main()
