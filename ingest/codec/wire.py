"""Protobuf wire-format primitives for the numba decoder (ingest/codec/decode.py).

Every reader (`read_*`, `skip_field`) takes the record buffer `buf` (1-D uint8) and
an exclusive end `end` and never reads at or past it: numba does not bounds-check, so
these checks are the only thing between malformed bytes and an out-of-bounds read.
`copy_bytes` checks nothing: its callers have checked both ranges.
A negative position returned by a reader is an error code (`-code`); the codes
and their messages are listed in `MESSAGES`.
"""
from __future__ import annotations

import numpy as np

from ingest.codec.encode import I32, I64, LEN, VARINT  # protobuf wire types, defined once
from ingest.jit import JIT_ENABLED, njit

MAX_VARINT_BYTES = 10  # a 64-bit varint takes at most ten bytes

# Error codes (positive; a reader returns the negated code as its position).
OK = 0
TRUNC_VARINT = 1
VARINT_OVERFLOW = 2
LEN_PAST_END = 3
FIXED_PAST_END = 4
BAD_WIRE = 5
FIELD_ZERO = 6
BAD_TYPE = 7
ID_COUNT = 8
RGB_SIZE = 9
AUDIO_SIZE = 10
FRAME_MISMATCH = 11
SEG_MISMATCH = 12
MEAN_SIZE = 13
MIXED_KIND = 14
PACKED_FLOAT_LEN = 16
MEAN_MISSING = 17
FRAME_VALUES = 18
ID_UTF8 = 19
OUT_OF_SPACE = 100  # not an error: an output buffer must grow (decode.py retries)

MESSAGES = {
    TRUNC_VARINT: "varint runs past the end of its message",
    VARINT_OVERFLOW: "varint longer than 64 bits",
    LEN_PAST_END: "length-delimited field runs past the end of its message",
    FIXED_PAST_END: "fixed-width field runs past the end of its message",
    BAD_WIRE: "invalid or unsupported wire type (groups and types 6, 7)",
    FIELD_ZERO: "field number 0",
    BAD_TYPE: "feature '{key}' has the wrong type",
    ID_UTF8: "feature 'id' is not valid UTF-8",
    ID_COUNT: "feature 'id' must hold exactly one bytes value, found {a}",
    RGB_SIZE: "rgb frame of {a} bytes, expected 1024",
    AUDIO_SIZE: "audio frame of {a} bytes, expected 128",
    FRAME_MISMATCH: "{a} rgb frames but {b} audio frames",
    SEG_MISMATCH: "segment fields of unequal lengths "
    "(labels, start_times, scores, end_times: {a}, {b}, {c}, {d})",
    MEAN_SIZE: "feature '{key}' holds {a} floats, expected {b}",
    MIXED_KIND: "a {kind} record in a {shard_kind} shard (a shard must not mix the two)",
    PACKED_FLOAT_LEN: "packed float list whose length is not a multiple of 4",
    MEAN_MISSING: "video-level record lacks '{key}'",
    FRAME_VALUES: "a frame of feature list '{list}' must hold exactly one bytes value, found {a}",
}

U64_MAX = np.uint64(0xFFFFFFFFFFFFFFFF)


@njit
def read_varint(buf, pos, end):
    """Base-128 varint at `pos` -> (uint64 value, position after it | -error code)."""
    if pos < end and buf[pos] < 0x80:  # fast path: keys and small lengths are one byte
        return np.uint64(buf[pos]), pos + 1
    result = np.uint64(0)
    shift = np.uint64(0)
    for i in range(MAX_VARINT_BYTES):
        if pos >= end:
            return result, -TRUNC_VARINT
        b = buf[pos]
        pos += 1
        if i == MAX_VARINT_BYTES - 1 and b > 1:  # bits beyond 64, or an 11th byte
            return result, -VARINT_OVERFLOW
        result |= np.uint64(b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += np.uint64(7)
    return result, -VARINT_OVERFLOW


@njit
def read_key(buf, pos, end):
    """Field key at `pos` -> (field number, wire type, position | -error code)."""
    v, pos = read_varint(buf, pos, end)
    if pos < 0:
        return 0, 0, pos
    number = np.int64(v >> np.uint64(3))
    if number == 0:
        return 0, 0, -FIELD_ZERO
    return number, np.int64(v & np.uint64(7)), pos


@njit
def read_len(buf, pos, end):
    """Length prefix at `pos` -> (length, start of payload | -error code); payload fits in end."""
    v, pos = read_varint(buf, pos, end)
    if pos < 0:
        return 0, pos
    if v > np.uint64(end - pos):
        return 0, -LEN_PAST_END
    return np.int64(v), pos


@njit
def skip_field(buf, pos, end, wire):
    """Position after the payload of a field of `wire` type starting at `pos` (| -code)."""
    if wire == VARINT:
        _, pos = read_varint(buf, pos, end)
        return pos
    if wire == LEN:
        n, pos = read_len(buf, pos, end)
        if pos < 0:
            return pos
        return pos + n
    if wire == I64 or wire == I32:
        n = 8 if wire == I64 else 4
        if n > end - pos:
            return -FIXED_PAST_END
        return pos + n
    return -BAD_WIRE


if JIT_ENABLED:
    from numba.core import cgutils, types
    from numba.extending import intrinsic

    @intrinsic
    def _memcpy(typingctx, dst, dst_off, src, src_off, n):
        """LLVM's memcpy between the data of two C-contiguous arrays, at element offsets."""
        sig = types.void(dst, types.intp, src, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            d, do, s, so, nn = args
            darr = context.make_array(signature.args[0])(context, builder, d)
            sarr = context.make_array(signature.args[2])(context, builder, s)
            cgutils.raw_memcpy(builder, builder.gep(darr.data, [do]),
                               builder.gep(sarr.data, [so]), nn, 1)
            return context.get_dummy_value()

        return sig, codegen

    @njit
    def copy_bytes(dst, dst_off, src, src_off, n):
        """dst.flat[dst_off:dst_off + n] = src[src_off:src_off + n] for uint8 arrays, as one
        memcpy (numba's slice assignment runs a byte loop at a quarter of the speed).
        The caller has checked both ranges."""
        _memcpy(dst, dst_off, src, src_off, n)

else:

    def copy_bytes(dst, dst_off, src, src_off, n):
        """The plain-numpy form of the compiled `copy_bytes` (YT8M_NO_JIT=1)."""
        dst.reshape(-1)[dst_off : dst_off + n] = src[src_off : src_off + n]
