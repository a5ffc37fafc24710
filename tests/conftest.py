"""Suite-wide fixtures and markers. GPU tests skip where CUDA is absent."""
from __future__ import annotations

from pathlib import Path

import pytest

from ingest.store import Store
from ingest.store.convert import ConvertConfig, convert
from ingest.synth import SynthConfig, write_synth

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


# Small real stores (synthetic shards converted by ingest.store.convert, the same path as
# `ingest synth` + `ingest convert`), made once per test session.
def make_store(tmp: Path, split: str, shards: int, videos: int, seed: int = 11,
               **synth) -> Store:
    """`ingest synth` shards of `split` (SynthConfig options in `synth`), converted."""
    cfg = SynthConfig(out_dir=str(tmp / "shards"), split=split, shards=shards,
                      videos_per_shard=videos, seed=seed, **synth)
    sources = [str(p) for p in write_synth(cfg, progress=False) if p.suffix == ".tfrecord"]
    out = tmp / f"store-{split}"
    convert(ConvertConfig(sources=tuple(sources), out=str(out), progress=False))
    return Store(out)


@pytest.fixture(scope="session")
def validate_store(tmp_path_factory) -> Store:
    """3 validate shards × 24 videos (rated segments, mined negatives), edge-case lengths."""
    return make_store(tmp_path_factory.mktemp("validate"), "validate", 3, 24, edge_cases=True)


@pytest.fixture(scope="session")
def train_store(tmp_path_factory) -> Store:
    """2 train shards × 20 videos: labels, no ratings."""
    return make_store(tmp_path_factory.mktemp("train"), "train", 2, 20)


@pytest.fixture(scope="session")
def testset_store(tmp_path_factory) -> Store:
    """1 test shard × 16 videos: no labels, candidates only."""
    return make_store(tmp_path_factory.mktemp("test"), "test", 1, 16)
