"""The decoder fingerprints the whole source file while decoding it (no second read)."""
import google_crc32c
import numpy as np

from ingest.codec.decode import ShardDecoder
from ingest.codec.encode import encode_video
from ingest.codec.tfrecord import write_tfrecord
from tests.ingest.videos import random_video


def test_source_crc_equals_crc_of_file_bytes_for_any_chunking(tmp_path):
    path = tmp_path / "s.tfrecord"
    rng = np.random.default_rng(0)
    write_tfrecord(path, [encode_video(random_video(rng, i)) for i in range(30)])
    expected = f"{google_crc32c.value(path.read_bytes()):08x}"
    dec = ShardDecoder()
    for chunk_bytes in (1 << 12, 1 << 16, 1 << 30):
        n = sum(c.n_videos for c in dec.iter_chunks(path, chunk_bytes=chunk_bytes))
        assert n == 30 and dec.source_crc32c == expected


def test_source_crc_of_empty_file(tmp_path):
    path = tmp_path / "empty.tfrecord"
    path.write_bytes(b"")
    dec = ShardDecoder()
    assert list(dec.iter_chunks(path)) == []
    assert dec.source_crc32c == "00000000"

