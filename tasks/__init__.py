"""One LightningModule per synchronization task (ARCHITECTURE.md): predict_step = couplings -> sample -> assemble."""

from tasks.ambiguous import AmbiguousImage
from tasks.edit import ImageEdit
from tasks.mask_t2i import MaskTextToImage
from tasks.mesh import MeshTexturing
from tasks.motion import LongMotion
from tasks.regions import RegionTextToImage
from tasks.sphere import SpherePanorama
from tasks.text_to_image import TextToImage
from tasks.wide_image import WideImage

__all__ = [
    "AmbiguousImage",
    "ImageEdit",
    "LongMotion",
    "MaskTextToImage",
    "MeshTexturing",
    "RegionTextToImage",
    "SpherePanorama",
    "TextToImage",
    "WideImage",
]
