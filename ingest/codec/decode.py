"""The numba decoder of YouTube-8M TFRecord shards into columnar buffers.

A shard is read 8 MB at a time into one reused buffer (`readinto`), its framing
and both CRCs are checked in `ingest.tfrecord.scan_records`, and one numba call
(`decode_records`, nogil) walks the protobuf wire format of all the records of
the block, copying frames straight into preallocated output buffers. See
docs/codec.md for the accepted encodings, the kind rule and the error policy.

    dec = ShardDecoder(on_error="fail")        # or "skip-record"
    for chunk in dec.iter_chunks(path):        # views into reused buffers
        ...
    shard = decode_shard(path)                 # arrays owned by the result
"""
from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from types import SimpleNamespace

import numpy as np

from ingest.codec import wire
from ingest.codec.crc_combine import fold_records
from ingest.codec.encode import frame_prefix
from ingest.codec.tfrecord import scan_records
from ingest.codec.video import AUDIO_BYTES, FRAME_BYTES, RGB_BYTES, DecodedShard
from ingest.codec.wire import (
    I32,
    LEN,
    OK,
    VARINT,
    copy_bytes,
    read_key,
    read_len,
    read_varint,
    skip_field,
)
from ingest.errors import ShardError
from ingest.jit import njit

DEFAULT_CHUNK_BYTES = 128 << 20  # bytes of shard per yielded chunk (bounds the output memory)
# Read / CRC / decode step: a few MB stay in cache between the three passes over them
# (measured on the 800 MB benchmark: ~2x faster than whole 100 MB shards at once).
BLOCK_BYTES = 8 << 20
ON_ERROR = ("fail", "skip-record")
FLOAT_BYTES = 4

# Keys of the context / Example features map and of the feature_lists map.
CTX_KEYS = ("id", "labels", "segment_labels", "segment_start_times", "segment_end_times",
            "segment_scores", "mean_rgb", "mean_audio")
K_ID, K_LABELS, K_SEG_LABELS, K_SEG_START, K_SEG_END, K_SEG_SCORES, K_MEAN_RGB, K_MEAN_AUDIO = (
    range(len(CTX_KEYS)))
LIST_KEYS = ("rgb", "audio")
L_RGB, L_AUDIO = 0, 1
IN_LIST = -2  # err[5] of an error inside the feature list named by err[4] (L_RGB / L_AUDIO)

KIND_NONE, KIND_FRAME, KIND_VIDEO = 0, 1, 2
KIND_NAMES = {KIND_NONE: "frame", KIND_FRAME: "frame", KIND_VIDEO: "video"}

# Counter slots of `decode_records` (committed after each record).
C_VIDEOS, C_FRAMES, C_ID_BYTES, C_LABELS, C_SEGMENTS, C_KIND = range(6)
N_COUNTERS = 6
# Output buffers that can run out of space (err[2] of an OUT_OF_SPACE return).
B_FRAMES, B_ID_BYTES, B_LABELS, B_SEGMENTS = 1, 2, 3, 4


def _name_table(names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    raw = [n.encode() for n in names]
    offs = np.cumsum([0] + [len(r) for r in raw]).astype(np.int64)
    return np.frombuffer(b"".join(raw), np.uint8).copy(), offs


CTX_NAMES, CTX_NAME_OFF = _name_table(CTX_KEYS)
LIST_NAMES, LIST_NAME_OFF = _name_table(LIST_KEYS)


# ---------------------------------------------------------------- numba kernels


@njit
def match_key(buf, a, b, names, name_off):
    """Index of `buf[a:b]` in the name table, or -1."""
    n = b - a
    for k in range(name_off.shape[0] - 1):
        s = name_off[k]
        if name_off[k + 1] - s != n:
            continue
        same = True
        for j in range(n):
            if buf[a + j] != names[s + j]:
                same = False
                break
        if same:
            return k
    return -1


@njit
def walk_map(buf, a, b, names, name_off, span_a, span_b):
    """Record the value span of each known key of a `map<string, message>` in buf[a:b].

    Protobuf map semantics: the last entry of a key wins (so does TensorFlow).
    Returns OK or an error code.
    """
    pos = a
    while pos < b:
        fld, wt, pos = read_key(buf, pos, b)
        if pos < 0:
            return -pos
        if fld != 1 or wt != LEN:
            pos = skip_field(buf, pos, b, wt)
            if pos < 0:
                return -pos
            continue
        n, p = read_len(buf, pos, b)
        if p < 0:
            return -p
        q = p + n
        ka, kb, va, vb = -1, -1, q, q  # an absent value is the empty message
        while p < q:
            f2, w2, p = read_key(buf, p, q)
            if p < 0:
                return -p
            if (f2 == 1 or f2 == 2) and w2 == LEN:
                m, p = read_len(buf, p, q)
                if p < 0:
                    return -p
                if f2 == 1:
                    ka, kb = p, p + m
                else:
                    va, vb = p, p + m
                p += m
            else:
                p = skip_field(buf, p, q, w2)
                if p < 0:
                    return -p
        if ka >= 0:
            k = match_key(buf, ka, kb, names, name_off)
            if k >= 0:
                span_a[k] = va
                span_b[k] = vb
        pos = q
    return OK


@njit
def walk_record(buf, s, e, ctx_a, ctx_b, fl_a, fl_b):
    """Walk one Example / SequenceExample: spans of the known keys.

    Returns (status of the feature_lists walk, status). Field 1 (`features` /
    `context`) and field 2 (`feature_lists`) may repeat: protobuf merges them,
    later keys win. Field 2 is walked as feature lists, but a malformed one is
    only an error for a frame-level record (for an `Example` it is an unknown
    field: the real video-level shards carry an empty one).
    """
    ctx_a[:] = -1
    ctx_b[:] = -1
    fl_a[:] = -1
    fl_b[:] = -1
    fl_status = OK
    pos = s
    while pos < e:
        fld, wt, pos = read_key(buf, pos, e)
        if pos < 0:
            return fl_status, -pos
        if (fld == 1 or fld == 2) and wt == LEN:
            n, p = read_len(buf, pos, e)
            if p < 0:
                return fl_status, -p
            if fld == 1:
                st = walk_map(buf, p, p + n, CTX_NAMES, CTX_NAME_OFF, ctx_a, ctx_b)
                if st != OK:
                    return fl_status, st
            elif fl_status == OK:
                fl_status = walk_map(buf, p, p + n, LIST_NAMES, LIST_NAME_OFF, fl_a, fl_b)
            pos = p + n
        else:
            pos = skip_field(buf, pos, e, wt)
            if pos < 0:
                return fl_status, -pos
    return fl_status, OK


@njit
def next_list(buf, pos, b, want):
    """The next list of a Feature in buf[pos:b] (`want`: 1 bytes, 2 float, 3 int64).

    Returns (start, end, position after it, status); start = -1 when no list is
    left. A list of another kind is BAD_TYPE; unknown fields are skipped.
    """
    while pos < b:
        fld, wt, pos = read_key(buf, pos, b)
        if pos < 0:
            return -1, -1, pos, -pos
        if 1 <= fld <= 3 and wt == LEN:
            if fld != want:
                return -1, -1, pos, wire.BAD_TYPE
            n, p = read_len(buf, pos, b)
            if p < 0:
                return -1, -1, p, -p
            return p, p + n, p + n, OK
        pos = skip_field(buf, pos, b, wt)
        if pos < 0:
            return -1, -1, pos, -pos
    return -1, -1, pos, OK


@njit
def next_value(buf, p, q, wire_a, wire_b):
    """Skip to the next `value` (field 1) of wire type wire_a or wire_b in a list buf[p:q].

    Returns (its wire type, position of its payload); wire type -1 at the end
    of the list, or with a negative position (-error code). Other fields skip.
    """
    while p < q:
        fld, wt, p = read_key(buf, p, q)
        if p < 0:
            return -1, p
        if fld == 1 and (wt == wire_a or wt == wire_b):
            return wt, p
        p = skip_field(buf, p, q, wt)
        if p < 0:
            return -1, p
    return -1, p


@njit
def read_int64_feature(buf, a, b, out, o):
    """Values of an Int64List Feature in buf[a:b] -> out[o:] (as uint64 bits).

    Packed and unpacked values, repeated lists concatenate (protobuf merge).
    Returns (count, status); values past the end of `out` are counted, not stored.
    """
    cap = out.shape[0]
    count = 0
    pos = a
    while True:
        p, q, pos, st = next_list(buf, pos, b, 3)
        if st != OK or p < 0:
            return count, st
        while True:
            wt, p = next_value(buf, p, q, VARINT, LEN)
            if p < 0:
                return count, -p
            if wt < 0:
                break
            r = -1  # one unpacked value
            if wt == LEN:  # packed: varints up to r
                m, p = read_len(buf, p, q)
                if p < 0:
                    return count, -p
                r = p + m
            while p < r or r < 0:
                v, p = read_varint(buf, p, q if r < 0 else r)
                if p < 0:
                    return count, -p
                if o + count < cap:
                    out[o + count] = v
                count += 1
                if r < 0:
                    break


@njit
def read_float_feature(buf, a, b, out, o, cap):
    """Values of a FloatList Feature in buf[a:b] -> out[4*o:] as raw little-endian bytes.

    At most `cap` floats (counted from o) are stored. Returns (count, status).
    """
    count = 0
    pos = a
    while True:
        p, q, pos, st = next_list(buf, pos, b, 2)
        if st != OK or p < 0:
            return count, st
        while True:
            wt, p = next_value(buf, p, q, I32, LEN)
            if p < 0:
                return count, -p
            if wt < 0:
                break
            m = FLOAT_BYTES
            if wt == LEN:  # packed
                m, p = read_len(buf, p, q)
                if p < 0:
                    return count, -p
                if m % FLOAT_BYTES:
                    return count, wire.PACKED_FLOAT_LEN
            elif m > q - p:
                return count, wire.FIXED_PAST_END
            k = m // FLOAT_BYTES
            keep = min(k, max(cap - count, 0))
            copy_bytes(out, FLOAT_BYTES * (o + count), buf, p, FLOAT_BYTES * keep)
            count += k
            p += m


@njit
def read_bytes_feature(buf, a, b):
    """A BytesList Feature in buf[a:b] -> (count, last value start, last value end, status)."""
    count, va, vb = 0, a, a
    pos = a
    while True:
        p, q, pos, st = next_list(buf, pos, b, 1)
        if st != OK or p < 0:
            return count, va, vb, st
        while True:
            wt, p = next_value(buf, p, q, LEN, LEN)
            if p < 0:
                return count, va, vb, -p
            if wt < 0:
                break
            m, p = read_len(buf, p, q)
            if p < 0:
                return count, va, vb, -p
            count += 1
            va, vb = p, p + m
            p += m


def _frame_header(width: int) -> np.ndarray:
    """The bytes that precede a `width`-byte frame written the usual way (as TensorFlow
    and `ingest.codec.encode` write it), as an array for the numba kernels."""
    return np.frombuffer(frame_prefix(width), np.uint8).copy()


RGB_HEADER = _frame_header(RGB_BYTES)  # 9 bytes
AUDIO_HEADER = _frame_header(AUDIO_BYTES)  # 9 bytes


@njit
def copy_row(buf, va, frames, row, col0, width):
    """frames[row, col0:col0 + width] = buf[va:va + width] (frames C-contiguous)."""
    copy_bytes(frames, row * frames.shape[1] + col0, buf, va, width)


@njit
def has_header(buf, pos, b, header, width):
    """Whether buf[pos:] starts with `header` followed by `width` bytes before b."""
    h = header.shape[0]
    if b - pos < h + width:
        return False
    for j in range(h):
        if buf[pos + j] != header[j]:
            return False
    return True


@njit
def walk_frame_list(buf, a, b, frames, f0, col0, width, header, size_code):
    """A FeatureList of one-bytes-value Features -> frames[f0 + k, col0:col0 + width].

    Frames written the usual way (`header` + value) take a fast path; any
    other valid layout is walked field by field. Returns (frame count, status,
    detail); rows past the end of `frames` are counted, not stored.
    """
    cap = frames.shape[0]
    h = header.shape[0]
    count = 0
    pos = a
    while pos < b:
        row = f0 + count
        if has_header(buf, pos, b, header, width):
            if row < cap:
                copy_row(buf, pos + h, frames, row, col0, width)
            count += 1
            pos += h + width
            continue
        fld, wt, pos = read_key(buf, pos, b)
        if pos < 0:
            return count, -pos, 0
        if fld == 1 and wt == LEN:
            n, p = read_len(buf, pos, b)
            if p < 0:
                return count, -p, 0
            nv, va, vb, st = read_bytes_feature(buf, p, p + n)
            if st != OK:
                return count, st, 0
            if nv != 1:
                return count, wire.FRAME_VALUES, nv
            if vb - va != width:
                return count, size_code, vb - va
            if row < cap:
                copy_row(buf, va, frames, row, col0, width)
            count += 1
            pos = p + n
        else:
            pos = skip_field(buf, pos, b, wt)
            if pos < 0:
                return count, -pos, 0
    return count, OK, 0


@njit
def valid_utf8(buf, a, b):
    """Whether buf[a:b] is strict UTF-8 (as Python's `bytes.decode` accepts it)."""
    i = a
    while i < b:
        c = buf[i]
        if c < 0x80:
            i += 1
            continue
        lo, hi = 0x80, 0xBF
        if 0xC2 <= c <= 0xDF:
            n = 1
        elif c == 0xE0:
            n, lo = 2, 0xA0
        elif 0xE1 <= c <= 0xEC or c == 0xEE or c == 0xEF:
            n = 2
        elif c == 0xED:
            n, hi = 2, 0x9F
        elif c == 0xF0:
            n, lo = 3, 0x90
        elif 0xF1 <= c <= 0xF3:
            n = 3
        elif c == 0xF4:
            n, hi = 3, 0x8F
        else:
            return False
        if i + n >= b:
            return False
        if buf[i + 1] < lo or buf[i + 1] > hi:
            return False
        for j in range(2, n + 1):
            if buf[i + j] < 0x80 or buf[i + j] > 0xBF:
                return False
        i += n + 1
    return True


@njit
def _fail(err, code, i, a, b, c, d):
    err[0] = code
    err[1] = i
    err[2] = a
    err[3] = b
    err[4] = c
    err[5] = d
    return code


@njit
def decode_records(buf, starts, lengths, offsets, i0, frames, frame_off, id_bytes, id_off,
                   labels, label_off, has_labels, seg_labels, seg_start, seg_end, seg_scores,
                   seg_off, mean_rgb, mean_audio, record_off, cnt, err):
    """Decode records i0.. of a chunk (`buf[starts[i]:starts[i] + lengths[i]]`).

    Outputs (capacities from their shapes; V = videos so far = cnt[C_VIDEOS]):
    frames (Fcap, 1152) uint8; frame_off/id_off/label_off/seg_off (Vcap+1,) int64
    end offsets written at [v + 1]; id_bytes (Bcap,) uint8; labels/seg_labels/
    seg_start/seg_end (Lcap,)/(Scap,) uint64 (int64 bits); seg_scores (4*Scap,)
    uint8 (float32 bytes); has_labels (Vcap,) bool; mean_rgb (Vcap, 4096) and
    mean_audio (Vcap, 512) uint8 (float32 bytes); record_off (Vcap,) int64.
    `cnt` holds the committed counters (C_*), advanced only when a record is
    complete, so a failed record leaves no trace. Returns OK, an error code
    (err = [code, record index, details...]) or OUT_OF_SPACE (err[2] = buffer,
    err[3] = the size it needs).
    """
    n_ctx = CTX_NAME_OFF.shape[0] - 1
    ctx_a = np.empty(n_ctx, np.int64)
    ctx_b = np.empty(n_ctx, np.int64)
    fl_a = np.empty(2, np.int64)
    fl_b = np.empty(2, np.int64)
    for i in range(i0, starts.shape[0]):
        v, f, nb = cnt[C_VIDEOS], cnt[C_FRAMES], cnt[C_ID_BYTES]
        nl, ns = cnt[C_LABELS], cnt[C_SEGMENTS]
        s = starts[i]
        fl_status, st = walk_record(buf, s, s + lengths[i], ctx_a, ctx_b, fl_a, fl_b)
        if st != OK:
            return _fail(err, st, i, 0, 0, 0, -1)
        kind = KIND_VIDEO if ctx_a[K_MEAN_RGB] >= 0 or ctx_a[K_MEAN_AUDIO] >= 0 else KIND_FRAME
        if kind == KIND_FRAME and fl_status != OK:
            return _fail(err, fl_status, i, 0, 0, 0, -1)
        n_id, st = _read_id(buf, ctx_a, ctx_b, id_bytes, nb, err, i)
        if st != OK:
            return st
        # labels (absent in test records)
        n_lab = 0
        if ctx_a[K_LABELS] >= 0:
            n_lab, st = read_int64_feature(buf, ctx_a[K_LABELS], ctx_b[K_LABELS], labels, nl)
            if st != OK:
                return _fail(err, st, i, 0, 0, 0, K_LABELS)
            if nl + n_lab > labels.shape[0]:
                return _fail(err, wire.OUT_OF_SPACE, i, B_LABELS, nl + n_lab, 0, 0)
        # rated segments: equal lengths; end times optional
        st, n_seg = _read_segments(buf, ctx_a, ctx_b, seg_labels, seg_start, seg_end,
                                   seg_scores, ns, err, i)
        if st != OK:
            return st
        # features
        n_fr = 0
        if kind == KIND_VIDEO:
            st = _read_mean(buf, ctx_a, ctx_b, K_MEAN_RGB, mean_rgb[v], RGB_BYTES, err, i)
            if st != OK:
                return st
            st = _read_mean(buf, ctx_a, ctx_b, K_MEAN_AUDIO, mean_audio[v], AUDIO_BYTES, err, i)
            if st != OK:
                return st
        else:
            n_fr, st = _read_frames(buf, fl_a, fl_b, frames, f, err, i)
            if st != OK:
                return st
        # a whole, valid record of the other kind (a malformed one is an error of its own,
        # which skip-record may skip): never skipped, the shard is not what it claims
        if cnt[C_KIND] != KIND_NONE and kind != cnt[C_KIND]:
            return _fail(err, wire.MIXED_KIND, i, kind, cnt[C_KIND], 0, -1)
        # commit
        has_labels[v] = ctx_a[K_LABELS] >= 0
        record_off[v] = offsets[i]
        frame_off[v + 1] = f + n_fr
        id_off[v + 1] = nb + n_id
        label_off[v + 1] = nl + n_lab
        seg_off[v + 1] = ns + n_seg
        cnt[C_VIDEOS] = v + 1
        cnt[C_FRAMES] = f + n_fr
        cnt[C_ID_BYTES] = nb + n_id
        cnt[C_LABELS] = nl + n_lab
        cnt[C_SEGMENTS] = ns + n_seg
        cnt[C_KIND] = kind
    return OK


@njit
def _read_id(buf, ctx_a, ctx_b, id_bytes, nb, err, i):
    """`id` (exactly one UTF-8 bytes value) -> id_bytes[nb:]; returns (its length, status)."""
    if ctx_a[K_ID] < 0:
        return 0, _fail(err, wire.ID_COUNT, i, 0, 0, 0, -1)
    nv, va, vb, st = read_bytes_feature(buf, ctx_a[K_ID], ctx_b[K_ID])
    if st != OK:
        return 0, _fail(err, st, i, 0, 0, 0, K_ID)
    if nv != 1:
        return 0, _fail(err, wire.ID_COUNT, i, nv, 0, 0, -1)
    if not valid_utf8(buf, va, vb):
        return 0, _fail(err, wire.ID_UTF8, i, 0, 0, 0, -1)
    if nb + (vb - va) > id_bytes.shape[0]:
        return 0, _fail(err, wire.OUT_OF_SPACE, i, B_ID_BYTES, nb + (vb - va), 0, 0)
    copy_bytes(id_bytes, nb, buf, va, vb - va)
    return vb - va, OK


@njit
def _read_segments(buf, ctx_a, ctx_b, seg_labels, seg_start, seg_end, seg_scores, ns, err, i):
    """The four segment features of a record -> (status, n segments)."""
    cap = min(seg_labels.shape[0], seg_start.shape[0], seg_end.shape[0],
              seg_scores.shape[0] // FLOAT_BYTES) - ns
    counts = np.zeros(4, np.int64)
    keys = (K_SEG_LABELS, K_SEG_START, K_SEG_SCORES, K_SEG_END)
    for j in range(4):
        k = keys[j]
        if ctx_a[k] < 0:
            continue
        if k == K_SEG_SCORES:
            c, st = read_float_feature(buf, ctx_a[k], ctx_b[k], seg_scores, ns, max(cap, 0))
        elif k == K_SEG_LABELS:
            c, st = read_int64_feature(buf, ctx_a[k], ctx_b[k], seg_labels, ns)
        elif k == K_SEG_START:
            c, st = read_int64_feature(buf, ctx_a[k], ctx_b[k], seg_start, ns)
        else:
            c, st = read_int64_feature(buf, ctx_a[k], ctx_b[k], seg_end, ns)
        if st != OK:
            return _fail(err, st, i, 0, 0, 0, k), 0
        counts[j] = c
    n = counts[0]
    has_end = ctx_a[K_SEG_END] >= 0
    if counts[1] != n or counts[2] != n or (has_end and counts[3] != n):
        e = counts[3] if has_end else -1
        return _fail(err, wire.SEG_MISMATCH, i, counts[0], counts[1], counts[2], e), 0
    if n > cap:
        return _fail(err, wire.OUT_OF_SPACE, i, B_SEGMENTS, ns + n, 0, 0), 0
    if not has_end:
        seg_end[ns : ns + n] = wire.U64_MAX  # -1: the record has no end times
    return OK, n


@njit
def _read_mean(buf, ctx_a, ctx_b, k, row, want, err, i):
    """mean_rgb (1024 floats) or mean_audio (128 floats) of a video-level record."""
    if ctx_a[k] < 0:
        return _fail(err, wire.MEAN_MISSING, i, 0, 0, 0, k)
    c, st = read_float_feature(buf, ctx_a[k], ctx_b[k], row, 0, want)
    if st != OK:
        return _fail(err, st, i, 0, 0, 0, k)
    if c != want:
        return _fail(err, wire.MEAN_SIZE, i, c, want, 0, k)
    return OK


@njit
def _read_frames(buf, fl_a, fl_b, frames, f, err, i):
    """rgb and audio feature lists -> frames[f:f + n]; returns (n, status)."""
    n_rgb = 0
    n_audio = 0
    if fl_a[L_RGB] >= 0:
        n_rgb, st, d = walk_frame_list(buf, fl_a[L_RGB], fl_b[L_RGB], frames, f, 0, RGB_BYTES,
                                       RGB_HEADER, wire.RGB_SIZE)
        if st != OK:
            return 0, _fail(err, st, i, d, d, L_RGB, IN_LIST)
    if fl_a[L_AUDIO] >= 0:
        n_audio, st, d = walk_frame_list(buf, fl_a[L_AUDIO], fl_b[L_AUDIO], frames, f,
                                         RGB_BYTES, AUDIO_BYTES, AUDIO_HEADER, wire.AUDIO_SIZE)
        if st != OK:
            return 0, _fail(err, st, i, d, d, L_AUDIO, IN_LIST)
    if n_rgb != n_audio:
        return 0, _fail(err, wire.FRAME_MISMATCH, i, n_rgb, n_audio, 0, -1)
    if f + n_rgb > frames.shape[0]:
        return 0, _fail(err, wire.OUT_OF_SPACE, i, B_FRAMES, f + n_rgb, 0, 0)
    return n_rgb, OK


# ---------------------------------------------------------------- Python side


def describe(err: np.ndarray) -> str:
    """The one-line reason for an error returned by `decode_records` (its `err` array)."""
    code, _, a, b, c, d = (int(x) for x in err)
    text = wire.MESSAGES.get(code, f"error code {code}")
    in_list = d == IN_LIST and 0 <= c < len(LIST_KEYS)
    key = CTX_KEYS[d] if 0 <= d < len(CTX_KEYS) else LIST_KEYS[c] if in_list else "?"
    text = text.format(a=a, b=b, c=c, d=d, key=key,
                       list=LIST_KEYS[c] if 0 <= c < len(LIST_KEYS) else "?",
                       kind=KIND_NAMES.get(a, "?"), shard_kind=KIND_NAMES.get(b, "?"))
    if code < wire.BAD_TYPE and (0 <= d < len(CTX_KEYS) or in_list):
        text += f" (in feature{' list' if in_list else ''} '{key}')"
    return text


class _Outputs:
    """The decoder's output buffers: allocated once, grown (never shrunk) on demand,
    keeping the values of the records already committed to the current chunk."""

    PER_VIDEO_PLUS_ONE = ("frame_off", "id_off", "label_off", "seg_off")  # (V+1,) int64
    PER_VIDEO = ("has_labels", "record_off", "mean_rgb", "mean_audio")

    def __init__(self) -> None:
        self.frames = np.empty((0, FRAME_BYTES), np.uint8)
        self.id_bytes = np.empty(0, np.uint8)
        self.labels = np.empty(0, np.uint64)
        self.seg_labels = np.empty(0, np.uint64)
        self.seg_start = np.empty(0, np.uint64)
        self.seg_end = np.empty(0, np.uint64)
        self.seg_scores = np.empty(0, np.uint8)  # float32 bytes
        for name in self.PER_VIDEO_PLUS_ONE:
            setattr(self, name, np.zeros(1, np.int64))
        self.has_labels = np.empty(0, bool)
        self.record_off = np.empty(0, np.int64)
        self.mean_rgb = np.empty((0, RGB_BYTES * FLOAT_BYTES), np.uint8)
        self.mean_audio = np.empty((0, AUDIO_BYTES * FLOAT_BYTES), np.uint8)

    def ensure(self, cnt: np.ndarray, n_records: int, data_bytes: int) -> None:
        """Room for `n_records` more records holding `data_bytes` bytes of protobuf.

        A valid frame takes more than FRAME_BYTES of protobuf, so the frame buffer never
        runs out; the others get typical sizes and grow on OUT_OF_SPACE (`grow`)."""
        v = int(cnt[C_VIDEOS])
        self._fit(self.PER_VIDEO_PLUS_ONE, v + n_records + 1, v + 1)
        self._fit(self.PER_VIDEO, v + n_records, v)
        self._fit(("frames",), int(cnt[C_FRAMES]) + data_bytes // FRAME_BYTES + 1,
                  int(cnt[C_FRAMES]))
        self.grow(B_ID_BYTES, int(cnt[C_ID_BYTES]) + 16 * n_records, cnt)
        self.grow(B_LABELS, int(cnt[C_LABELS]) + 8 * n_records, cnt)
        self.grow(B_SEGMENTS, int(cnt[C_SEGMENTS]) + 8 * n_records, cnt)

    def grow(self, which: int, need: int, cnt: np.ndarray) -> None:
        """At least `need` entries in buffer `which` (a B_* code)."""
        if which == B_SEGMENTS:
            ns = int(cnt[C_SEGMENTS])
            self._fit(("seg_labels", "seg_start", "seg_end"), need, ns)
            self._fit(("seg_scores",), FLOAT_BYTES * need, FLOAT_BYTES * ns)
            return
        name, used = {B_FRAMES: ("frames", C_FRAMES), B_ID_BYTES: ("id_bytes", C_ID_BYTES),
                      B_LABELS: ("labels", C_LABELS)}[which]
        self._fit((name,), need, int(cnt[used]))

    def _fit(self, names: tuple[str, ...], n: int, keep: int) -> None:
        for name in names:
            old = getattr(self, name)
            if len(old) >= n:
                continue
            # headroom: untouched pages of np.empty cost no memory, and the next shard,
            # slightly larger, then reuses this buffer (touching new memory is slow)
            new = np.empty((max(n + n // 4, 2 * len(old)),) + old.shape[1:], old.dtype)
            new[:keep] = old[:keep]
            setattr(self, name, new)


class ShardDecoder:
    """Decodes shards into reused columnar buffers (see the module docstring).

    on_error="fail" raises `ShardError` at the first bad record; "skip-record"
    leaves out records whose data CRC fails or whose protobuf is malformed and
    lists them in `DecodedShard.skipped`. A corrupt length, a truncated file
    and a shard mixing frame- and video-level records always raise.
    """

    def __init__(self, on_error: str = "fail") -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, not {on_error!r}")
        self.on_error = on_error
        self.source_crc32c: str | None = None  # of the last file read to its end
        self._raw = np.empty(0, np.uint8)
        self._out = _Outputs()
        self._cnt = np.zeros(N_COUNTERS, np.int64)
        self._err = np.zeros(6, np.int64)

    def iter_chunks(self, path: str | os.PathLike,
                    chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[DecodedShard]:
        """Consecutive runs of whole records of `path`, about `chunk_bytes` of file each.

        The file is read, CRC-checked and decoded in blocks of BLOCK_BYTES (small
        enough to stay in the CPU cache between the three passes); a chunk gathers
        blocks until it holds at least `chunk_bytes` (a record larger than that gets a
        chunk of its own). Every chunk's arrays are views into this decoder's
        buffers, valid until the next iteration. Once the last chunk is out,
        `self.source_crc32c` holds the CRC-32C of the whole file (8 hex digits),
        so a caller needs no second read to fingerprint the source.
        """
        path = os.fspath(path)
        block = max(1, min(BLOCK_BYTES, chunk_bytes))
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            filled, file_off, record, used, limit = 0, 0, 0, 0, block
            skipped: list[tuple[int, int, str]] = []
            crc = 0  # CRC-32C of the whole file so far (of the records consumed)
            self.source_crc32c = None
            self._start_chunk(KIND_NONE, min(chunk_bytes, size) + block)
            while file_off < size:
                if len(self._raw) < limit:
                    self._grow_raw(limit, filled)
                got = _fill(f, self._raw, filled, limit)
                filled += got
                spans = scan_records(self._raw, filled, path=path, file_offset=file_off,
                                     first_record=record, file_size=size,
                                     skip_bad_crc=self.on_error == "skip-record")
                if spans.n_records == 0:  # the next record is larger than the buffer
                    if got == 0:
                        raise ShardError(path, record, file_off, "the file ended early "
                                         "(it shrank while being read)")
                    limit = spans.need
                    continue
                # the whole file's CRC-32C, from the records' own (no pass of its own)
                crc = int(fold_records(crc, self._raw, spans.heads, spans.all_lengths,
                                       spans.data_crcs))
                self._decode_block(path, spans, skipped)
                rest = filled - spans.consumed
                self._raw[:rest] = self._raw[spans.consumed : filled]
                filled, file_off, record = rest, file_off + spans.consumed, record + spans.n_records
                used, limit = used + spans.consumed, block
                if file_off >= size:
                    self.source_crc32c = f"{crc:08x}"
                if used >= chunk_bytes or file_off >= size:
                    yield self._views(path, sorted(skipped))
                    skipped, used = [], 0
                    self._start_chunk(int(self._cnt[C_KIND]),
                                      min(chunk_bytes, size - file_off) + block)
            self.source_crc32c = f"{crc:08x}"  # also for an empty file

    def warm_up(self) -> None:
        """Load (or compile, the first time) the numba kernel now rather than on the first shard."""
        self._start_chunk(KIND_NONE, 0)
        none = np.zeros(0, np.int64)
        self._call(SimpleNamespace(starts=none, lengths=none, offsets=none), 0)
        fold_records(0, self._raw, none, none, np.zeros(0, np.uint32))

    def decode(self, path: str | os.PathLike) -> DecodedShard:
        """The whole shard in one chunk (views into this decoder's buffers)."""
        size = os.path.getsize(path)
        chunks = list(self.iter_chunks(path, chunk_bytes=max(size, 1)))
        if not chunks:
            return DecodedShard.from_videos([], os.fspath(path))  # empty, frame-level
        assert len(chunks) == 1
        return chunks[0]

    def _grow_raw(self, n: int, keep: int) -> None:
        new = np.empty(n, np.uint8)
        new[:keep] = self._raw[:keep]
        self._raw = new

    def _start_chunk(self, kind: int, expected_bytes: int) -> None:
        """Reset the counters (the shard's kind carries over) and size the frame buffer."""
        self._cnt[:] = 0
        self._cnt[C_KIND] = kind
        self._out.ensure(self._cnt, 0, expected_bytes)

    def _decode_block(self, path: str, spans, skipped: list) -> None:
        """Decode the records of one block, appending to the current chunk."""
        out, cnt, err = self._out, self._cnt, self._err
        out.ensure(cnt, len(spans.starts), spans.consumed)
        skipped += [(r, off, "data CRC mismatch (corrupt record)") for r, off in spans.bad_crc]
        i = 0
        while True:
            st = self._call(spans, i)
            if st == OK:
                return
            i = int(err[1])
            if st == wire.OUT_OF_SPACE:
                out.grow(int(err[2]), int(err[3]), cnt)
                continue
            rec, off = int(spans.numbers[i]), int(spans.offsets[i])
            reason = describe(err)
            if self.on_error == "fail" or st == wire.MIXED_KIND:
                raise ShardError(path, rec, off, reason)
            skipped.append((rec, off, reason))
            i += 1

    def _call(self, spans, i0: int) -> int:
        o = self._out
        return decode_records(self._raw, spans.starts, spans.lengths, spans.offsets, i0,
                              o.frames, o.frame_off, o.id_bytes, o.id_off, o.labels,
                              o.label_off, o.has_labels, o.seg_labels, o.seg_start, o.seg_end,
                              o.seg_scores, o.seg_off, o.mean_rgb, o.mean_audio, o.record_off,
                              self._cnt, self._err)

    def _views(self, path: str, skipped: list) -> DecodedShard:
        o, cnt = self._out, self._cnt
        v, f, nl, ns = (int(cnt[k]) for k in (C_VIDEOS, C_FRAMES, C_LABELS, C_SEGMENTS))
        id_raw = o.id_bytes[: int(cnt[C_ID_BYTES])].tobytes()
        bounds = o.id_off[: v + 1].tolist()
        kind = KIND_NAMES[int(cnt[C_KIND])]
        shard = DecodedShard(
            path=path,
            kind=kind,
            ids=[id_raw[a:b].decode() for a, b in itertools.pairwise(bounds)],
            record_offsets=o.record_off[:v],
            frame_offsets=o.frame_off[: v + 1],
            frames=o.frames[:f],
            has_labels=o.has_labels[:v],
            label_offsets=o.label_off[: v + 1],
            labels=o.labels[:nl].view(np.int64),
            segment_offsets=o.seg_off[: v + 1],
            segment_labels=o.seg_labels[:ns].view(np.int64),
            segment_start_times=o.seg_start[:ns].view(np.int64),
            segment_end_times=o.seg_end[:ns].view(np.int64),
            segment_scores=o.seg_scores[: FLOAT_BYTES * ns].view("<f4"),
            skipped=skipped,
        )
        if kind == "video":
            shard.mean_rgb = o.mean_rgb[:v].view("<f4")
            shard.mean_audio = o.mean_audio[:v].view("<f4")
        return shard


def _fill(f, buf: np.ndarray, start: int, stop: int) -> int:
    """Read from `f` into buf[start:stop] until full or end of file; returns bytes read."""
    view = memoryview(buf)[start:stop]
    got = 0
    while got < len(view):
        n = f.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def decode_shard(path: str | os.PathLike, on_error: str = "fail") -> DecodedShard:
    """Decode a whole shard with a fresh decoder: the arrays belong to the result alone."""
    return ShardDecoder(on_error).decode(path)
