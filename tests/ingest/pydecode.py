"""A plain-Python twin of the numba decoder (ingest/codec/decode.py): the tests' oracle.

Written independently of the numba kernels, straight from the protobuf rules
in docs/codec.md: it parses record bytes into `Video` objects (one level of
the message at a time, only where the decoder looks), so that
`DecodedShard.from_videos(decode_file(path).videos)` must equal what
`ingest.codec.decode` produces, and a file is rejected by one iff by the other.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

import google_crc32c
import numpy as np

from ingest.codec.video import Video

VARINT, I64, LEN, I32 = 0, 1, 2, 5
BYTES_LIST, FLOAT_LIST, INT64_LIST = 1, 2, 3


class Bad(Exception):
    """Malformed record bytes (the twin of a decoder error code)."""


class Fatal(Exception):
    """A framing error or a shard mixing kinds: not skippable."""


def read_varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    value = 0
    for i in range(10):
        if pos >= end:
            raise Bad("truncated varint")
        b = data[pos]
        pos += 1
        if i == 9 and b > 1:
            raise Bad("varint overflow")
        value |= (b & 0x7F) << (7 * i)
        if b < 0x80:
            return value, pos
    raise Bad("varint overflow")


def fields(data: bytes, start: int = 0, end: int | None = None) -> list[tuple[int, int, object]]:
    """One level of a message: (field number, wire type, int | (start, end) span)."""
    end = len(data) if end is None else end
    out, pos = [], start
    while pos < end:
        key, pos = read_varint(data, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise Bad("field 0")
        if wire == VARINT:
            value, pos = read_varint(data, pos, end)
        elif wire == LEN:
            n, pos = read_varint(data, pos, end)
            if n > end - pos:
                raise Bad("length past end")
            value, pos = (pos, pos + n), pos + n
        elif wire in (I64, I32):
            n = 8 if wire == I64 else 4
            if n > end - pos:
                raise Bad("fixed past end")
            value, pos = (pos, pos + n), pos + n
        else:
            raise Bad("bad wire type")
        out.append((number, wire, value))
    return out


def string_map(data: bytes, span: tuple[int, int], into: dict[bytes, tuple[int, int]]) -> None:
    """Entries of a map<string, message>: the last entry of a key wins."""
    for number, wire, entry in fields(data, *span):
        if number != 1 or wire != LEN:
            continue
        key, value = None, (entry[1], entry[1])
        for n2, w2, v2 in fields(data, *entry):
            if n2 == 1 and w2 == LEN:
                key = data[v2[0] : v2[1]]
            elif n2 == 2 and w2 == LEN:
                value = v2
        if key is not None:
            into[key] = value


def lists(data: bytes, span: tuple[int, int], kind: int) -> list[tuple[int, int]]:
    """The spans of the `kind` lists of a Feature; another kind is an error."""
    out = []
    for number, wire, value in fields(data, *span):
        if number in (BYTES_LIST, FLOAT_LIST, INT64_LIST) and wire == LEN:
            if number != kind:
                raise Bad("wrong feature type")
            out.append(value)
    return out


def int64s(data: bytes, span: tuple[int, int]) -> list[int]:
    out = []
    for lst in lists(data, span, INT64_LIST):
        for number, wire, value in fields(data, *lst):
            if number == 1 and wire == VARINT:
                out.append(value)
            elif number == 1 and wire == LEN:
                pos = value[0]
                while pos < value[1]:
                    v, pos = read_varint(data, pos, value[1])
                    out.append(v)
    return [v - (1 << 64) if v >= 1 << 63 else v for v in out]


def floats(data: bytes, span: tuple[int, int]) -> np.ndarray:
    raw = []
    for lst in lists(data, span, FLOAT_LIST):
        for number, wire, value in fields(data, *lst):
            if number == 1 and wire in (I32, LEN):
                if wire == LEN and (value[1] - value[0]) % 4:
                    raise Bad("packed floats not a multiple of 4")
                raw.append(data[value[0] : value[1]])
    return np.frombuffer(b"".join(raw), "<f4").astype(np.float32)


def byte_values(data: bytes, span: tuple[int, int]) -> list[bytes]:
    out = []
    for lst in lists(data, span, BYTES_LIST):
        for number, wire, value in fields(data, *lst):
            if number == 1 and wire == LEN:
                out.append(data[value[0] : value[1]])
    return out


def frame_list(data: bytes, span: tuple[int, int], width: int) -> list[bytes]:
    out = []
    for number, wire, value in fields(data, *span):
        if number == 1 and wire == LEN:
            values = byte_values(data, value)
            if len(values) != 1 or len(values[0]) != width:
                raise Bad("bad frame")
            out.append(values[0])
    return out


def decode_record(data: bytes) -> Video:
    """One Example / SequenceExample -> Video (raises Bad)."""
    ctx: dict[bytes, tuple[int, int]] = {}
    fls: dict[bytes, tuple[int, int]] = {}
    fl_error = None
    for number, wire, value in fields(data):
        if number == 1 and wire == LEN:
            string_map(data, value, ctx)
        elif number == 2 and wire == LEN and fl_error is None:
            try:
                string_map(data, value, fls)
            except Bad as err:
                fl_error = err
    video_level = b"mean_rgb" in ctx or b"mean_audio" in ctx
    if not video_level and fl_error is not None:
        raise fl_error
    if b"id" not in ctx:
        raise Bad("no id")
    ids = byte_values(data, ctx[b"id"])
    if len(ids) != 1:
        raise Bad("id count")
    try:
        vid = Video(ids[0].decode())
    except UnicodeDecodeError:
        raise Bad("id not utf-8") from None
    if b"labels" in ctx:
        vid.labels = np.array(int64s(data, ctx[b"labels"]), np.int64)
    seg = {k: int64s(data, ctx[k]) for k in (b"segment_labels", b"segment_start_times",
                                             b"segment_end_times") if k in ctx}
    scores = floats(data, ctx[b"segment_scores"]) if b"segment_scores" in ctx else []
    n = len(seg.get(b"segment_labels", []))
    lengths = [len(seg.get(b"segment_start_times", [])), len(scores)]
    if b"segment_end_times" in ctx:
        lengths.append(len(seg[b"segment_end_times"]))
    if any(m != n for m in lengths):
        raise Bad("segment lengths")
    if n:
        vid.segment_labels = np.array(seg[b"segment_labels"], np.int64)
        vid.segment_start_times = np.array(seg[b"segment_start_times"], np.int64)
        if b"segment_end_times" in ctx:
            vid.segment_end_times = np.array(seg[b"segment_end_times"], np.int64)
        vid.segment_scores = np.asarray(scores, np.float32)
    if video_level:
        for key, attr, width in ((b"mean_rgb", "mean_rgb", 1024), (b"mean_audio", "mean_audio", 128)):
            if key not in ctx:
                raise Bad(f"no {attr}")
            vals = floats(data, ctx[key])
            if len(vals) != width:
                raise Bad(f"{attr} size")
            setattr(vid, attr, vals)
        return vid
    rgb = frame_list(data, fls[b"rgb"], 1024) if b"rgb" in fls else []
    audio = frame_list(data, fls[b"audio"], 128) if b"audio" in fls else []
    if len(rgb) != len(audio):
        raise Bad("frame counts")
    vid.rgb = np.frombuffer(b"".join(rgb), np.uint8).reshape(len(rgb), 1024)
    vid.audio = np.frombuffer(b"".join(audio), np.uint8).reshape(len(audio), 128)
    return vid


def _masked(data: bytes) -> int:
    crc = google_crc32c.value(bytes(data))
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


@dataclass
class PyShard:
    videos: list[Video] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    skipped: list[tuple[int, int]] = field(default_factory=list)  # (record, offset)


def decode_file(path, skip: bool = False) -> PyShard:
    """Frame and decode a whole file; raises Fatal or (without `skip`) Bad."""
    with open(path, "rb") as f:
        raw = f.read()
    out, pos, rec, kind = PyShard(), 0, 0, None
    while pos < len(raw):
        try:
            length = _frame(raw, pos)
        except Fatal as err:
            err.record = rec
            raise
        data = raw[pos + 12 : pos + 12 + length]
        try:
            if _masked(data) != struct.unpack_from("<I", raw, pos + 12 + length)[0]:
                raise Bad("data crc")
            vid = decode_record(data)
            vkind = "frame" if vid.is_frame_level else "video"
            if kind is not None and vkind != kind:
                raise Fatal("mixed kinds")
            kind = vkind
            out.videos.append(vid)
            out.offsets.append(pos)
        except Bad as err:
            if not skip:
                err.record = rec
                raise
            out.skipped.append((rec, pos))
        except Fatal as err:  # mixed kinds
            err.record = rec
            raise
        pos += 16 + length
        rec += 1
    return out


def _frame(raw: bytes, pos: int) -> int:
    """The data length of the record whose header is at `pos` (raises Fatal)."""
    if len(raw) - pos < 12:
        raise Fatal("truncated header")
    (length,), (crc,) = struct.unpack_from("<Q", raw, pos), struct.unpack_from("<I", raw, pos + 8)
    if _masked(raw[pos : pos + 8]) != crc:
        raise Fatal("length crc")
    if pos + 16 + length > len(raw):
        raise Fatal("truncated record")
    return length


SHARD_ARRAYS = ("frame_offsets", "frames", "has_labels", "label_offsets", "labels",
                "segment_offsets", "segment_labels", "segment_start_times",
                "segment_end_times", "segment_scores", "mean_rgb", "mean_audio")


def assert_same_shard(got, want) -> None:
    """Every column of two DecodedShards equal, dtypes and shapes included
    (record offsets are compared where `want` knows them, i.e. not -1)."""
    assert got.kind == want.kind
    assert got.ids == want.ids
    for name in SHARD_ARRAYS:
        a, b = getattr(got, name), getattr(want, name)
        assert a.dtype == b.dtype and a.shape == b.shape, (name, a.dtype, b.dtype, a.shape, b.shape)
        np.testing.assert_array_equal(a, b, err_msg=name)
    if (want.record_offsets >= 0).all():
        np.testing.assert_array_equal(got.record_offsets, want.record_offsets)
