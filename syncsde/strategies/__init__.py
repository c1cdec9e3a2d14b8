"""Strategies: the only place where trajectories interact during sampling (ARCHITECTURE.md)."""

from syncsde.strategies.base import Independent, Strategy
from syncsde.strategies.syncsde import SyncSDE
from syncsde.strategies.synctweedies import MultiDiffusion, SyncTweedies, VisualAnagrams

__all__ = ["Strategy", "Independent", "SyncSDE", "SyncTweedies", "MultiDiffusion", "VisualAnagrams"]
