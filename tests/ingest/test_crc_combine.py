"""The file CRC folded from the records' CRCs equals google_crc32c over the bytes."""
import google_crc32c
import numpy as np

from ingest.codec.crc_combine import combine, fold_records, update_bytes
from ingest.codec.encode import encode_video
from ingest.codec.tfrecord import scan_records, write_tfrecord
from tests.ingest.videos import random_video


def test_combine_and_update_against_google_crc32c_on_random_bytes():
    rng = np.random.default_rng(0)
    for _ in range(300):
        a = rng.integers(0, 256, rng.integers(0, 200), dtype=np.uint8).tobytes()
        b = rng.integers(0, 256, rng.integers(0, 70_000), dtype=np.uint8)
        crc_a, crc_b = google_crc32c.value(a), google_crc32c.value(b.tobytes())
        assert int(combine(crc_a, crc_b, len(b))) == google_crc32c.value(a + b.tobytes())
        seed = int(rng.integers(0, 2**32))
        lo = int(rng.integers(0, len(b) + 1))
        want = google_crc32c.extend(seed, b[lo:].tobytes())
        assert int(update_bytes(seed, b, lo, len(b))) == want


def test_fold_records_gives_the_whole_file_crc(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "s.tfrecord"
    write_tfrecord(path, [encode_video(random_video(rng, i)) for i in range(25)])
    raw = path.read_bytes()
    buf = np.frombuffer(raw, np.uint8)
    spans = scan_records(buf, len(raw), path=str(path), file_offset=0, first_record=0,
                         file_size=len(raw))
    assert spans.consumed == len(raw) and len(spans.heads) == 25
    got = fold_records(0, buf, spans.heads, spans.all_lengths, spans.data_crcs)
    assert int(got) == google_crc32c.value(raw)
    # in two pieces, the second continuing the first's CRC
    h = int(spans.heads[10])
    first = fold_records(0, buf, spans.heads[:10], spans.all_lengths[:10], spans.data_crcs[:10])
    assert int(first) == google_crc32c.value(raw[:h])
    rest = fold_records(first, buf, spans.heads[10:], spans.all_lengths[10:], spans.data_crcs[10:])
    assert int(rest) == google_crc32c.value(raw)


def test_source_crc_of_a_file_with_a_skipped_corrupt_record(tmp_path):
    from ingest.codec.decode import ShardDecoder

    rng = np.random.default_rng(2)
    path = tmp_path / "s.tfrecord"
    write_tfrecord(path, [encode_video(random_video(rng, i, n_frames=5)) for i in range(6)])
    raw = bytearray(path.read_bytes())
    spans = scan_records(np.frombuffer(bytes(raw), np.uint8), len(raw), path=str(path),
                         file_offset=0, first_record=0, file_size=len(raw))
    raw[int(spans.heads[2]) + 12 + 100] ^= 0xFF  # inside record 2's data: its data CRC fails
    path.write_bytes(bytes(raw))
    dec = ShardDecoder(on_error="skip-record")
    chunks = list(dec.iter_chunks(path, chunk_bytes=1 << 12))
    assert sum(len(c.skipped) for c in chunks) == 1
    assert dec.source_crc32c == f"{google_crc32c.value(bytes(raw)):08x}"
