"""The loader's gathers: rows of the store's mapped files straight into batch buffers.

Each kernel (numba, `nogil`, so loader threads run them in parallel) writes into a
caller's preallocated, C-contiguous buffer and has a plain numpy twin (`*_numpy`)
that the tests compare it with. `addr`, `file_base`, `shard_rows` are those of an
`ArrayFiles` (trainer/data/index.py): row r of part p is row `r % shard_rows[p]` of file
`f = file_base[p] + r // shard_rows[p]`, mapped at address `addr[f]` (the caller has
mapped every file the call reads: `ArrayFiles.reading`).
"""
from __future__ import annotations

import ctypes

import numpy as np

from ingest.jit import JIT_ENABLED, njit
from trainer.data.sampling import select_even, select_even_numpy, select_random, select_random_numpy

NO_LIMIT = 1 << 30  # max_len of "whole videos" (paper Table 1: ∞)

if JIT_ENABLED:
    from llvmlite import ir
    from numba.core import cgutils, types
    from numba.extending import intrinsic

    @intrinsic
    def _memcpy_from(typingctx, dst, dst_off, src, n):
        """LLVM's memcpy of n bytes from address `src` into a C-contiguous uint8 array at
        element offset `dst_off`."""
        sig = types.void(dst, types.intp, types.int64, types.intp)

        def codegen(context, builder, signature, args):
            d, do, sa, nn = args
            darr = context.make_array(signature.args[0])(context, builder, d)
            sp = builder.inttoptr(sa, ir.IntType(8).as_pointer())
            cgutils.raw_memcpy(builder, builder.gep(darr.data, [do]), sp, nn, 1)
            return context.get_dummy_value()

        return sig, codegen

    @njit(inline="always")
    def copy_from(dst, dst_off, src, n):
        """dst.flat[dst_off:dst_off + n] = the n bytes at address `src` (a mapped file's),
        as one memcpy. The caller has checked both ranges."""
        _memcpy_from(dst, dst_off, src, n)

else:

    def copy_from(dst, dst_off, src, n):
        """The plain form of the compiled `copy_from` (YT8M_NO_JIT=1)."""
        ctypes.memmove(dst.ctypes.data + int(dst_off), int(src), int(n))


def read_row(addr, file_base, shard_rows, part, r, width) -> np.ndarray:
    """Row r of part `part`, `(width,)` uint8, a view of the mapped file (numpy; the twins)."""
    s = int(shard_rows[part])
    f = int(file_base[part] + r // s)
    assert addr[f] != 0, f"file {f} is not mapped"
    ptr = ctypes.cast(int(addr[f]) + int(r % s) * width, ctypes.POINTER(ctypes.c_uint8))
    return np.ctypeslib.as_array(ptr, (width,))


@njit(inline="always")
def _zero(dst, a, b):
    """dst[a:b] = 0 for a 1-D uint8 array (a loop over a view vectorises)."""
    part = dst[a:b]
    for j in range(len(part)):
        part[j] = 0


@njit(inline="always")
def _copy_row(addr, file_base, shard_rows, part, r, dst, d0, width):
    """dst[d0:d0 + width] = row r of part `part`."""
    s = shard_rows[part]
    copy_from(dst, d0, addr[file_base[part] + r // s] + (r % s) * width, width)


@njit
def gather_frames_kernel(addr, file_base, shard_rows, part, offset, lo, hi, keys, max_len,
                         even, out, mask, lengths):
    """Video frames, sampled, into a padded batch.

    For row i: the frames `[lo[i], hi[i])` of a video whose first frame is row
    `offset[i]` of part `part[i]`; `count = min(max_len, hi - lo)` of them are taken
    (`even`: evenly spaced, else at random without replacement with `keys[i]`), in
    temporal order, into `out[i, :count]`; `out[i, count:]` is zeroed.
    out: (B, L, F) uint8 with L >= every count; mask: (B, L) bool; lengths: (B,) int64.
    """
    n_rows, length, width = out.shape
    dst = out.reshape(-1)
    pick = np.empty(length, np.int64)
    for i in range(n_rows):
        n = hi[i] - lo[i]
        count = min(max_len, n)
        if even:
            select_even(n, count, pick)
        else:
            select_random(n, count, keys[i], pick)
        base = offset[i] + lo[i]
        d0 = i * length * width
        s = shard_rows[part[i]]
        k = base // s  # a video's frames lie in one or two files: look each up once
        src = addr[file_base[part[i]] + k]
        for j in range(count):
            r = base + pick[j]
            if r // s != k:
                k = r // s
                src = addr[file_base[part[i]] + k]
            copy_from(dst, d0 + j * width, src + (r - k * s) * width, width)
            mask[i, j] = True
        for j in range(count, length):
            mask[i, j] = False
        _zero(dst, d0 + count * width, d0 + length * width)
        lengths[i] = count


def gather_frames_numpy(addr, file_base, shard_rows, part, offset, lo, hi, keys, max_len,
                        even, out, mask, lengths):
    """Plain numpy twin of `gather_frames_kernel`."""
    out[:] = 0
    mask[:] = False
    for i in range(out.shape[0]):
        n = int(hi[i] - lo[i])
        count = min(max_len, n)
        pick = select_even_numpy(n, count) if even else select_random_numpy(n, count, keys[i])
        for j, t in enumerate(pick):
            out[i, j] = read_row(addr, file_base, shard_rows, part[i], offset[i] + lo[i] + t,
                                 out.shape[2])
        mask[i, :count] = True
        lengths[i] = count


def gather_rows_numpy(addr, file_base, shard_rows, part, row, out):
    """out[i] = row `row[i]` of part `part[i]` (numpy; the windows of `fill_segment_numpy`).
    out: (B, width) uint8."""
    for i in range(out.shape[0]):
        out[i] = read_row(addr, file_base, shard_rows, part[i], row[i], out.shape[1])


@njit
def gather_windows_kernel(addr, file_base, shard_rows, part, offset, lo, hi, pad_left, out):
    """Expanded windows from frames: out[i, pad_left[i] + k] = frame lo[i] + k of the video
    (first frame `offset[i]` of part `part[i]`) for k < hi - lo; zero elsewhere.
    out: (B, 11, F) uint8."""
    n_rows, win, width = out.shape
    dst = out.reshape(-1)
    for i in range(n_rows):
        d0 = i * win * width
        a = d0 + pad_left[i] * width
        m = hi[i] - lo[i]
        _zero(dst, d0, a)
        for k in range(m):
            _copy_row(addr, file_base, shard_rows, part[i], offset[i] + lo[i] + k, dst,
                      a + k * width, width)
        _zero(dst, a + m * width, d0 + win * width)


def gather_windows_numpy(addr, file_base, shard_rows, part, offset, lo, hi, pad_left, out):
    """Plain numpy twin of `gather_windows_kernel`."""
    out[:] = 0
    for i in range(out.shape[0]):
        for k in range(int(hi[i] - lo[i])):
            out[i, pad_left[i] + k] = read_row(addr, file_base, shard_rows, part[i],
                                               offset[i] + lo[i] + k, out.shape[2])


@njit
def pack_classes_kernel(offsets, classes, rows, out):
    """Packed multi-hot labels: bit c of out[i] (little-endian bit order, as the store's
    negatives) set for every class c of row `rows[i]` in the CSR `(offsets, classes)`.
    out: (B, 125) uint8."""
    for i in range(out.shape[0]):
        out[i, :] = 0
        for j in range(offsets[rows[i]], offsets[rows[i] + 1]):
            c = classes[j]
            out[i, c >> 3] |= np.uint8(1 << (c & 7))


def pack_classes_numpy(offsets, classes, rows, out):
    """Plain numpy twin of `pack_classes_kernel`."""
    dense = np.zeros((out.shape[0], out.shape[1] * 8), bool)
    for i, r in enumerate(rows):
        dense[i, classes[offsets[r]:offsets[r + 1]]] = True
    out[:] = np.packbits(dense, axis=1, bitorder="little")


@njit
def fill_segment_kernel(addr, file_base, shard_rows, seg_part, seg_window, seg_class,
                        seg_score, seg_video, negatives, rows, windows, class_index, score,
                        packed):
    """A segment batch's fields for store rows `rows (B,)`, in one call (no per-field Python):
    windows (B, 11 * F) uint8 ← the rows' stored windows; class_index (B,) int64, score (B,)
    float32; packed (B, 125) uint8 ← the mined negatives of each row's video."""
    width = windows.shape[1]
    dst = windows.reshape(-1)
    for i in range(rows.shape[0]):
        r = rows[i]
        _copy_row(addr, file_base, shard_rows, seg_part[r], seg_window[r], dst, i * width, width)
        class_index[i] = seg_class[r]
        score[i] = seg_score[r]
        packed[i, :] = negatives[seg_video[r]]


def fill_segment_numpy(addr, file_base, shard_rows, seg_part, seg_window, seg_class,
                       seg_score, seg_video, negatives, rows, windows, class_index, score,
                       packed):
    """Plain numpy twin of `fill_segment_kernel`."""
    gather_rows_numpy(addr, file_base, shard_rows, seg_part[rows], seg_window[rows], windows)
    class_index[:] = seg_class[rows]
    score[:] = seg_score[rows]
    packed[:] = negatives[seg_video[rows]]


def _byte_bits() -> np.ndarray:
    """(256,) uint64 whose 8 bytes in memory are bits 0..7 of v (a bool row's bytes); the
    native view, so storing the word writes those bytes in that order on any machine."""
    bits = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1, bitorder="little")
    return np.ascontiguousarray(bits).view(np.uint64)[:, 0].copy()


BYTE_BITS = _byte_bits()


@njit
def unpack_bits_kernel(packed, out):
    """packed (B, nbytes) uint8, bit c of byte c >> 3 at position c & 7 (little-endian bit
    order, the store's) → out (B, C) bool, C ≤ 8 * nbytes, into the caller's buffer.
    A C-contiguous `out` with C a multiple of 8 (1000 classes) takes 8 bools per table
    lookup; any other shape goes bit by bit."""
    n, c = out.shape
    if c % 8 == 0 and out.flags.c_contiguous:
        words = out.reshape(-1).view(np.uint8).view(np.uint64)
        w = c // 8
        for i in range(n):
            for j in range(w):
                words[i * w + j] = BYTE_BITS[packed[i, j]]
        return
    for i in range(n):
        for k in range(c):
            out[i, k] = (packed[i, k >> 3] >> (k & 7)) & 1


def unpack_bits_numpy(packed, out):
    """Plain numpy twin of `unpack_bits_kernel`."""
    out[:] = np.unpackbits(packed, axis=1, count=out.shape[1], bitorder="little").astype(bool)
