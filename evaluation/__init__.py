"""Evaluation: feature networks, metric callbacks (torchmetrics), metric tables; and the tools that run tasks
to measure them: the embedded model's card (:mod:`syncsde.evaluation.quality`) and the benchmarks
(:mod:`syncsde.evaluation.benchmarks`)."""

from syncsde.evaluation.metrics import Metrics

__all__ = ["Metrics"]
