"""The protobuf varint encoder against the wire format's definition."""
import numpy as np
import pytest

from ingest.codec.encode import varint


def _decode(b: bytes) -> int:
    value = sum((x & 0x7F) << (7 * i) for i, x in enumerate(b))
    assert all(x & 0x80 for x in b[:-1]) and not b[-1] & 0x80
    return value


@pytest.mark.parametrize("v", [0, 1, 127, 128, 300, 2**31, 2**63 - 1, -1, -(2**63)])
def test_varint_round_trip_python_and_numpy_ints(v):
    expected = v & (2**64 - 1)
    assert _decode(varint(v)) == expected
    assert varint(np.int64(v)) == varint(v)
    assert len(varint(v)) == max(1, -(-expected.bit_length() // 7))
