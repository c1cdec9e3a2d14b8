"""One LightningModule per synchronization task (ARCHITECTURE.md): predict_step = couplings -> sample -> assemble."""
from tasks.wide_image import WideImage

__all__ = ["WideImage"]
