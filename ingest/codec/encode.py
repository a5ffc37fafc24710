"""Protobuf encoding of YouTube-8M records, written by hand (no TensorFlow).

The messages are `tf.train.Example` and `tf.train.SequenceExample`:

    Example         { Features features = 1; }
    SequenceExample { Features context = 1; FeatureLists feature_lists = 2; }
    Features        { map<string, Feature> feature = 1; }        entry {key = 1; value = 2}
    FeatureLists    { map<string, FeatureList> feature_list = 1; } entry {key = 1; value = 2}
    FeatureList     { repeated Feature feature = 1; }
    Feature         { oneof { BytesList bytes_list = 1; FloatList float_list = 2;
                              Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }   FloatList { repeated float value = 1; }
    Int64List { repeated int64 value = 1; }

The low-level helpers (`varint`, `field`) are public so that tests can build
unusual but valid encodings (unpacked scalars, reordered or unknown fields).
"""
from __future__ import annotations

import numpy as np

from ingest.codec.video import Video

VARINT, I64, LEN, I32 = 0, 1, 2, 5  # protobuf wire types


def varint(value: int) -> bytes:
    """Base-128 varint; negative int64 values take ten bytes (two's complement)."""
    value = int(value) & ((1 << 64) - 1)  # int(): numpy integers would overflow the mask
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(number: int, wire: int, payload: bytes | int) -> bytes:
    """One field: key, then the payload (a varint value, fixed bytes, or length-delimited)."""
    key = varint((number << 3) | wire)
    if wire == VARINT:
        return key + varint(int(payload))
    if wire == LEN:
        return key + varint(len(payload)) + bytes(payload)
    return key + bytes(payload)


def int64_list(values, packed: bool = True) -> bytes:
    """Feature{int64_list = Int64List{value...}}."""
    values = [int(v) for v in values]
    if packed:
        body = field(1, LEN, b"".join(varint(v) for v in values)) if values else b""
    else:
        body = b"".join(field(1, VARINT, v) for v in values)
    return field(3, LEN, body)


def float_list(values, packed: bool = True) -> bytes:
    """Feature{float_list = FloatList{value...}} (little-endian float32)."""
    arr = np.asarray(values, dtype="<f4")
    if packed:
        body = field(1, LEN, arr.tobytes()) if arr.size else b""
    else:
        body = b"".join(field(1, I32, x.tobytes()) for x in arr)
    return field(2, LEN, body)


def bytes_list(values) -> bytes:
    """Feature{bytes_list = BytesList{value...}}."""
    return field(1, LEN, b"".join(field(1, LEN, bytes(v)) for v in values))


def map_entry(key: str, value: bytes) -> bytes:
    """One entry of a protobuf map<string, message>: {key = 1; value = 2}."""
    return field(1, LEN, key.encode()) + field(2, LEN, value)


def features(entries: list[tuple[str, bytes]]) -> bytes:
    """Features{feature map} from (key, encoded Feature) pairs, in the given order."""
    return b"".join(field(1, LEN, map_entry(k, v)) for k, v in entries)


def _context_entries(v: Video, packed: bool) -> list[tuple[str, bytes]]:
    entries = [("id", bytes_list([v.id.encode()]))]
    if v.labels is not None:
        entries.append(("labels", int64_list(v.labels, packed)))
    if v.segment_labels is not None:
        entries.append(("segment_labels", int64_list(v.segment_labels, packed)))
    if v.segment_start_times is not None:
        entries.append(("segment_start_times", int64_list(v.segment_start_times, packed)))
    if v.segment_end_times is not None:
        entries.append(("segment_end_times", int64_list(v.segment_end_times, packed)))
    if v.segment_scores is not None:
        entries.append(("segment_scores", float_list(v.segment_scores, packed)))
    return entries


def frame_prefix(width: int) -> bytes:
    """The bytes that precede a `width`-byte row in its FeatureList entry:
    FeatureList.feature key+length, Feature.bytes_list key+length, BytesList.value key+length
    (`field(1, LEN, bytes_list([row]))` minus the row; the decoder's fast path matches it)."""
    value = field(1, LEN, b"\0" * width)  # BytesList.value = row
    feature = field(1, LEN, field(1, LEN, value))  # FeatureList.feature{bytes_list{...}}
    return feature[: len(feature) - width]


def frame_feature_list(frames: np.ndarray) -> bytes:
    """FeatureList{feature: one Feature{bytes_list{value: row}} per row} of (n, width) uint8.

    Every row has the same width, so every feature has the same prefix (`frame_prefix`):
    the whole list is one (n, prefix + width) array filled by two vectorised copies,
    not n Python calls.
    """
    frames = np.asarray(frames, dtype=np.uint8)
    n, width = frames.shape
    if n == 0:
        return b""
    prefix = np.frombuffer(frame_prefix(width), np.uint8)
    out = np.empty((n, len(prefix) + width), np.uint8)
    out[:, : len(prefix)] = prefix
    out[:, len(prefix):] = frames
    return out.tobytes()


def encode_sequence_example(v: Video, packed: bool = True) -> bytes:
    """Serialise a frame-level video as `tf.train.SequenceExample` bytes."""
    context = features(_context_entries(v, packed))
    lists = b"".join(field(1, LEN, map_entry(key, frame_feature_list(frames)))
                     for key, frames in (("rgb", v.rgb), ("audio", v.audio)))
    return field(1, LEN, context) + field(2, LEN, lists)


def encode_example(v: Video, packed: bool = True) -> bytes:
    """Serialise a video-level record as `tf.train.Example` bytes."""
    entries = _context_entries(v, packed)  # a fresh list
    entries.append(("mean_rgb", float_list(v.mean_rgb, packed)))
    entries.append(("mean_audio", float_list(v.mean_audio, packed)))
    return field(1, LEN, features(entries))


def encode_video(v: Video, packed: bool = True) -> bytes:
    """`encode_sequence_example` for frame-level videos, `encode_example` otherwise."""
    return encode_sequence_example(v, packed) if v.is_frame_level else encode_example(v, packed)
