"""The numbers of a λ sweep for plots (notebooks/analysis.ipynb's ``lambda.png``): each metric as mean and spread,
read from the folders' ``metrics.json`` (the table shows KID as the text "mean ± std"), against 1/λ as a number."""

from __future__ import annotations

import json
from pathlib import Path


def metric(folder: str | Path, name: str) -> tuple[float, float] | None:
    """(value, std) of metric ``name`` in the folder's metrics.json (std 0 for a metric without a spread); None when
    the folder has no such available metric."""
    path = Path(folder) / "metrics.json"
    if not path.is_file():
        return None
    r = json.loads(path.read_text())["metrics"].get(name)
    if not isinstance(r, dict) or not r.get("available"):
        return None
    return float(r["value"]), float(r.get("std", 0.0))


def lambda_series(rows: list[dict], name: str) -> dict[str, list[tuple[float, float, float]]]:
    """For each method among ``rows`` (:func:`syncsde.evaluation.table.table`'s) that swept 1/λ: the points
    (1/λ, value, std) of metric ``name``, sorted by 1/λ as a number."""
    series: dict[str, list[tuple[float, float, float]]] = {}
    for row in rows:
        if "inv_lambda" not in row or (m := metric(row["folder"], name)) is None:
            continue
        series.setdefault(str(row.get("method", "?")), []).append((float(row["inv_lambda"]), *m))
    return {method: sorted(points) for method, points in sorted(series.items())}
