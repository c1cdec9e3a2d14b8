"""Evaluation: feature networks, metric callbacks (torchmetrics), metric tables; and the tools that run tasks
to measure them: the embedded model's card (:mod:`evaluation.quality`) and the benchmarks
(:mod:`evaluation.benchmarks`)."""

from evaluation.metrics import Metrics

__all__ = ["Metrics"]
