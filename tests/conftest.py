"""Suite-wide fixtures and markers. GPU tests skip where CUDA is absent."""
from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # predict-only environments
        has_cuda = False
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def real_dir() -> Path:
    """The three real video-level shards and TensorFlow's expectations for them."""
    return DATA / "real"
