"""Evaluation: feature networks, metric callbacks (torchmetrics), metric tables."""

from evaluation.metrics import Metrics

__all__ = ["Metrics"]
