"""The vectorised frame encoder is byte-identical to the per-row protobuf encoding."""
from __future__ import annotations

import numpy as np
import pytest

from ingest.codec.encode import (
    LEN,
    bytes_list,
    encode_sequence_example,
    features,
    field,
    frame_feature_list,
    map_entry,
)
from ingest.synth.shards import SynthConfig, synth_shard


def _per_row(frames: np.ndarray) -> bytes:
    """The reference: one Feature{bytes_list{row}} per row, built field by field."""
    return b"".join(field(1, LEN, bytes_list([row.tobytes()])) for row in frames)


def _reference_sequence_example(v) -> bytes:
    from ingest.codec.encode import _context_entries

    context = features(_context_entries(v, True))
    lists = b"".join(field(1, LEN, map_entry(k, _per_row(f)))
                     for k, f in (("rgb", v.rgb), ("audio", v.audio)))
    return field(1, LEN, context) + field(2, LEN, lists)


@pytest.mark.parametrize("width", [1, 2, 100, 125, 126, 127, 128, 1024, 16379, 16380, 20000])
@pytest.mark.parametrize("n", [0, 1, 7])
def test_frame_feature_list_matches_per_row(width, n):
    # widths around the 1- to 2-byte and 2- to 3-byte varint boundaries of the three lengths
    frames = np.random.default_rng(width + n).integers(0, 256, (n, width), dtype=np.uint8)
    assert frame_feature_list(frames) == _per_row(frames)


def test_non_contiguous_frames():
    x = np.random.default_rng(0).integers(0, 256, (9, 1152), dtype=np.uint8)
    assert frame_feature_list(x[:, 1024:]) == _per_row(np.ascontiguousarray(x[:, 1024:]))


def test_sequence_example_matches_reference():
    cfg = SynthConfig(split="validate", videos_per_shard=40, seed=2, edge_cases=True,
                      beyond_end_rate=0.2)
    for v in synth_shard(cfg, "validate", 0):
        assert encode_sequence_example(v) == _reference_sequence_example(v)
