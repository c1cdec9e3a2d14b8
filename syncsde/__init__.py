"""syncsde: diffusion synchronization (SyncSDE and baselines) as a Lightning framework."""

__version__ = "0.1.0"
