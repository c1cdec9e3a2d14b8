import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory):
    """A tiny random-weight Stable Diffusion pipeline (64 px images, 8x8 latents) saved in diffusers layout."""
    from syncsde.testing import save_tiny_sd

    return save_tiny_sd(tmp_path_factory.mktemp("tiny_sd") / "pipe")
