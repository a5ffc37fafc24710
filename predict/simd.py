"""The low-level primitives of the predict kernels, as numba intrinsics with Python twins.

`prefetch_write` (a write hint for the top-k appends) and `store_u64` (an
unaligned 8-byte store for the submission writer) are one LLVM instruction each;
the main one is the top-k scan's compare-and-compress:

`compress_hits(vals, row, col, lanes, floors, tag, out, n, path)` looks at the
`lanes` (<= 32) scores `vals[row, col:col + lanes]` against
`floors[col:col + lanes]`, and appends one packed uint32 per score at or above
its floor to `out[n:]`:

    bits  0..13  the score, clamped to 16,383 (a score above 9999 stays above it)
    bits 14..18  the lane j (the class is col + j)
    bits 19..30  `tag` (12 bits: the caller's row-in-tile and group-in-chunk)
    bit  31      "look closer": the score equals its floor or is above 9999

It returns the new n. Under numba it is an LLVM intrinsic, no branch per score:
a vector load of the 32 scores and floors (masked for a partial group), an
unsigned compare to a 32-bit mask, the packing in registers (as 16-bit halves,
interleaved), then one of three ways (`path`, an index into PATHS) to write the
hits out, each with full-width stores (`out` needs 32 spare slots past n):

- "compress": `llvm.experimental.vector.compress` on two 16-lane halves, a
  popcount each: on AVX-512 `vpcmpnltuw` / `vpcompressd`, and the masked load
  is one instruction, so a full group takes it too. Elsewhere LLVM lowers both
  lane by lane, with a branch per lane: top-k 7.5x a read pass on an AVX2
  machine (issue 22).
- "permute" (x86 with AVX2): per 8 lanes, the mask's byte picks a row of a
  256 x 8 table of lane indices (8 KB), `vpermd` moves the hits to the front,
  one 8-lane store, n += popcount of the byte.
- "scalar" (any target): per lane, store the packed value at out[n] and add
  its hit bit to n.

`compress_path()` names the path for the target numba compiles for (the host,
or NUMBA_CPU_NAME / NUMBA_CPU_FEATURES), found by compiling a probe with LLVM:
"compress" where the masked load and the compress become single instructions,
else "permute" where 8-lane integer vectors exist (AVX2), else "scalar";
`YT8M_COMPRESS=compress|permute|scalar` overrides it (a benchmark's or a test's
choice: every path is compiled into the kernels, so numba's cache is not
involved). With `YT8M_NO_JIT=1` the plain Python twin below runs instead,
whatever the path (the tests compare every path with it).

numba's on-disk cache keys a kernel on its own file: after editing an intrinsic
here, the cached kernels of predict/topk_kernels.py still hold the old code until
their file changes too (delete predict/__pycache__/*.nb[ic], or use a fresh
NUMBA_CACHE_DIR, before measuring or testing such an edit).
"""
from __future__ import annotations

import functools
import os
import re
import sys
from typing import NamedTuple

import numpy as np

from ingest.jit import JIT_ENABLED, njit
from predict.predictions import QUANT_SCALE

LANES = 32  # scores per compare: 32 uint16 = one 512-bit vector
VALUE_BITS = 14  # 9999 < 2**14; clamped scores keep "above 9999" detectable
VALUE_MASK = (1 << VALUE_BITS) - 1
LANE_SHIFT = VALUE_BITS
TAG_SHIFT = VALUE_BITS + 5  # 5 bits of lane: 32 lanes
TAG_BITS = 12  # bits of the caller's tag
CLOSER_BIT = 31  # set on a hit at its floor (a tie key decides) or above 9999 (invalid)
assert TAG_SHIFT + TAG_BITS == CLOSER_BIT
PATHS = ("compress", "permute", "scalar")  # compress_hits's ways of writing hits out
PATH_ENV = "YT8M_COMPRESS"  # forces one of PATHS (default: the target's, compress_path())


def _element_pointer(context, builder, aryty, ary, indices, index_types):
    """LLVM pointer to element `indices` of array `ary` (numba type `aryty`); each index is
    cast from its numba type to intp; no wraparound, no bounds check. Every intrinsic here
    addresses its arrays through this."""
    from numba import types
    from numba.core import cgutils

    arr = context.make_array(aryty)(context, builder, ary)
    idx = [context.cast(builder, i, t, types.intp) for i, t in zip(indices, index_types)]
    return cgutils.get_item_pointer2(
        context, builder, arr.data, cgutils.unpack_tuple(builder, arr.shape),
        cgutils.unpack_tuple(builder, arr.strides), aryty.layout, idx, wraparound=False)


def _declare(module, name, fnty):
    """The LLVM function `name` of `module`, declared once."""
    fn = module.globals.get(name)
    if fn is None:
        from llvmlite import ir

        fn = ir.Function(module, fnty, name=name)
    return fn


def compress_hits_py(vals, row, col, lanes, floors, tag, out, n):
    """Plain Python twin of `compress_hits` (same packing, same result)."""
    for j in range(lanes):
        v = int(vals[row, col + j])
        if v >= floors[col + j]:
            closer = v == floors[col + j] or v > QUANT_SCALE
            out[n] = (min(v, VALUE_MASK) | (j << LANE_SHIFT) | (int(tag) << TAG_SHIFT)
                      | (int(closer) << CLOSER_BIT))
            n += 1
    return n


class TargetIsa(NamedTuple):
    """What numba's compile target does with the compress's IR (`target_isa`)."""

    cpu: str  # LLVM's CPU name
    compress: bool  # masked 32 x uint16 load and 16-lane compress: one instruction each
    avx2: bool  # 8 x int32 vectors (vpermd)


_PROBE_IR = """
declare <32 x i16> @llvm.masked.load.v32i16.p0(ptr, i32, <32 x i1>, <32 x i16>)
declare <16 x i32> @llvm.experimental.vector.compress.v16i32(<16 x i32>, <16 x i1>, <16 x i32>)
define void @probe_compress(ptr %p, i32 %m, ptr %q) {
  %mask = bitcast i32 %m to <32 x i1>
  %x = call <32 x i16> @llvm.masked.load.v32i16.p0(ptr %p, i32 2, <32 x i1> %mask,
                                                   <32 x i16> zeroinitializer)
  %lo = shufflevector <32 x i16> %x, <32 x i16> poison, <16 x i32>
        <i32 0, i32 1, i32 2, i32 3, i32 4, i32 5, i32 6, i32 7,
         i32 8, i32 9, i32 10, i32 11, i32 12, i32 13, i32 14, i32 15>
  %w = zext <16 x i16> %lo to <16 x i32>
  %h = trunc i32 %m to i16
  %hm = bitcast i16 %h to <16 x i1>
  %c = call <16 x i32> @llvm.experimental.vector.compress.v16i32(<16 x i32> %w, <16 x i1> %hm,
                                                                 <16 x i32> undef)
  store <16 x i32> %c, ptr %q, align 4
  ret void
}
define void @probe_avx2(ptr %p, ptr %q) {
  %a = load <8 x i32>, ptr %p, align 4
  %b = load <8 x i32>, ptr %q, align 4
  %s = mul <8 x i32> %a, %b
  store <8 x i32> %s, ptr %q, align 4
  ret void
}
"""


@functools.cache
def target_isa() -> TargetIsa:
    """Compile `_PROBE_IR` for numba's target (its CPU name and features, as numba's own
    codegen takes them) and read the assembly: the truth about this LLVM and target."""
    import llvmlite.binding as ll
    from numba.core import config
    from numba.core.codegen import get_host_cpu_features, initialize_llvm

    initialize_llvm()
    cpu = config.CPU_NAME or ll.get_host_cpu_name()
    features = config.CPU_FEATURES if config.CPU_FEATURES is not None else get_host_cpu_features()
    triple = ll.get_process_triple()
    tm = ll.Target.from_triple(triple).create_target_machine(cpu=cpu, features=features, opt=2)
    asm = tm.emit_assembly(ll.parse_assembly(_PROBE_IR))
    head, _, tail = asm.partition("probe_avx2")
    one_op = "vpcompressd" in head and "vmovdqu16" in head
    return TargetIsa(cpu, one_op, re.search(r"vpmulld\s+.*%ymm", tail) is not None)


@functools.cache
def compress_path() -> str:
    """The compress path for numba's target, or YT8M_COMPRESS's (module docstring)."""
    forced = os.environ.get(PATH_ENV, "")
    if forced:
        if forced not in PATHS:
            raise ValueError(f"{PATH_ENV}={forced!r}: expected one of {', '.join(PATHS)}")
        return forced
    isa = target_isa()
    return "compress" if isa.compress else "permute" if isa.avx2 else "scalar"


def path_index(path: str | None = None) -> int:
    """The kernels' `path` argument: PATHS.index of `path` (default: `compress_path()`)."""
    return PATHS.index(path or compress_path())


def _permute_table() -> list[list[int]]:
    """Per 8-bit hit mask, the 8 vpermd indices that move its set lanes to the front, in
    order (the rest 0): 256 x 8 int32, 8 KB."""
    table = []
    for mask in range(256):
        lanes = [j for j in range(8) if mask >> j & 1]
        table.append(lanes + [0] * (8 - len(lanes)))
    return table


def _compress_intrinsics():
    """The three paths' intrinsics (same signature, same result: the module docstring)."""
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    i1, i8, i16, i32, i64 = (ir.IntType(w) for w in (1, 8, 16, 32, 64))
    v16, v32 = ir.VectorType(i16, LANES), ir.VectorType(i32, LANES)
    m32 = ir.VectorType(i1, LANES)
    ptr_t = ir.PointerType()

    def splat(builder, scalar, vty, n_lanes):
        vec = builder.insert_element(ir.Constant(vty, ir.Undefined), scalar, ir.Constant(i32, 0))
        zeros = ir.Constant(ir.VectorType(i32, n_lanes), [0] * n_lanes)
        return builder.shuffle_vector(vec, ir.Constant(vty, ir.Undefined), zeros)

    def lanes_of(builder, vec, vty, first, count):
        sel = ir.Constant(ir.VectorType(i32, count), list(range(first, first + count)))
        return builder.shuffle_vector(vec, ir.Constant(vty, ir.Undefined), sel)

    def load_scores(builder, score_at, floor_at, lanes32, masked_only):
        """(scores, floors, hit bits): the 32 scores and floors as <32 x i16>, and the
        i32 mask of the lanes that hit (score >= floor, lane < lanes). Masked loads (lanes
        past `lanes` read as 0), or, unless masked_only, plain loads and no mask for a full
        group (a masked 16-bit load is a branch per lane where the target has no such
        instruction: partial groups only)."""
        load = _declare(builder.module, "llvm.masked.load.v32i16.p0",
                        ir.FunctionType(v16, [ptr_t, i32, m32, v16]))
        zero16 = ir.Constant(v16, [0] * LANES)
        full = builder.icmp_unsigned(">=", lanes32, ir.Constant(i32, LANES))

        def hit_bits(score, floor):
            return builder.bitcast(builder.icmp_unsigned(">=", score, floor), i32)

        def masked():
            # lanes < 32: only the first `lanes` scores exist (no read past a row's end)
            low = builder.sub(builder.shl(ir.Constant(i32, 1), lanes32), ir.Constant(i32, 1))
            in_row = builder.select(full, ir.Constant(i32, -1), low)
            score, floor = (builder.call(load, [p, ir.Constant(i32, 2),
                                                builder.bitcast(in_row, m32), zero16])
                            for p in (score_at, floor_at))
            return score, floor, builder.and_(hit_bits(score, floor), in_row)

        if masked_only:
            return masked()
        with builder.if_else(full, likely=True) as (then, otherwise):
            with then:
                score, floor = (builder.load(builder.bitcast(p, v16.as_pointer()), align=2)
                                for p in (score_at, floor_at))
                plain = score, floor, hit_bits(score, floor)
                plain_block = builder.block
            with otherwise:
                part = masked()
                part_block = builder.block
        out = []
        for a, b in zip(plain, part):
            phi = builder.phi(a.type)
            phi.add_incoming(a, plain_block)
            phi.add_incoming(b, part_block)
            out.append(phi)
        return out

    def pack(builder, score, floor, tag):
        """<32 x i32>: every lane's packed value (module docstring), built as its low and
        high 16-bit halves (a 32-lane vector of 16-bit values is half the width of one of
        32-bit values), then interleaved."""
        def const(values):
            return ir.Constant(v16, values)

        clamped = builder.select(builder.icmp_unsigned(">", score, const([VALUE_MASK] * LANES)),
                                 const([VALUE_MASK] * LANES), score)
        closer = builder.or_(builder.icmp_unsigned("==", score, floor),
                             builder.icmp_unsigned(">", score, const([QUANT_SCALE] * LANES)))
        lo = builder.or_(clamped, const([(j << LANE_SHIFT) & 0xFFFF for j in range(LANES)]))
        tag_hi = builder.shl(builder.trunc(tag, i16), ir.Constant(i16, TAG_SHIFT - 16))
        hi = builder.or_(
            builder.or_(splat(builder, tag_hi, v16, LANES),
                        const([(j << LANE_SHIFT) >> 16 for j in range(LANES)])),
            builder.and_(builder.sext(closer, v16), const([1 << (CLOSER_BIT - 16)] * LANES)))
        first, second = (lo, hi) if sys.byteorder == "little" else (hi, lo)
        order = ir.Constant(ir.VectorType(i32, 2 * LANES),
                            [j // 2 + (j % 2) * LANES for j in range(2 * LANES)])
        return builder.bitcast(builder.shuffle_vector(first, second, order), v32)

    def write_compress(builder, out_at, packed, bits, n):
        half, m16 = ir.VectorType(i32, LANES // 2), ir.VectorType(i1, LANES // 2)
        compress = _declare(builder.module, "llvm.experimental.vector.compress.v16i32",
                            ir.FunctionType(half, [half, m16, half]))
        for h in range(2):  # two 16-lane halves (a 32-lane compress does not lower)
            count = builder.trunc(builder.lshr(bits, ir.Constant(i32, 16 * h)), i16)
            part = builder.call(compress, [lanes_of(builder, packed, v32, 16 * h, 16),
                                           builder.bitcast(count, m16),
                                           ir.Constant(half, ir.Undefined)])
            builder.store(part, builder.bitcast(out_at(n), half.as_pointer()), align=4)
            n = builder.add(n, builder.zext(builder.ctpop(count), i64))
        return n

    def write_permute(builder, out_at, packed, bits, n):
        v8 = ir.VectorType(i32, 8)
        permd = _declare(builder.module, "llvm.x86.avx2.permd", ir.FunctionType(v8, [v8, v8]))
        table = builder.module.globals.get("yt8m_permute_table")
        if table is None:
            rows = [ir.Constant(v8, row) for row in _permute_table()]
            table = cgutils.global_constant(builder.module, "yt8m_permute_table",
                                            ir.Constant(ir.ArrayType(v8, 256), rows))
        for h in range(LANES // 8):
            byte = builder.trunc(builder.lshr(bits, ir.Constant(i32, 8 * h)), i8)
            entry_at = builder.gep(table, [ir.Constant(i32, 0), builder.zext(byte, i32)])
            index = builder.load(entry_at, align=4)
            part = builder.call(permd, [lanes_of(builder, packed, v32, 8 * h, 8), index])
            builder.store(part, builder.bitcast(out_at(n), v8.as_pointer()), align=4)
            n = builder.add(n, builder.zext(builder.ctpop(byte), i64))
        return n

    def write_scalar(builder, out_at, packed, bits, n):
        for j in range(LANES):
            builder.store(builder.extract_element(packed, ir.Constant(i32, j)), out_at(n),
                          align=4)
            hit = builder.and_(builder.lshr(bits, ir.Constant(i32, j)), ir.Constant(i32, 1))
            n = builder.add(n, builder.zext(hit, i64))
        return n

    def writer(path):
        """The path's way of writing hits out (asked when compiling: the permute path
        compiles as the scalar one for a target without AVX2, which has no vpermd)."""
        if path == "compress":
            return write_compress
        return write_permute if path == "permute" and target_isa().avx2 else write_scalar

    def make(path):

        @intrinsic
        def compress_hits(typingctx, vals_t, row_t, col_t, lanes_t, floors_t, tag_t, out_t, n_t):
            sig = types.intp(vals_t, row_t, col_t, lanes_t, floors_t, tag_t, out_t, n_t)

            def codegen(context, builder, signature, args):
                sa = signature.args

                def at(a, *ix):  # args[a][args[i] for i in ix], an opaque pointer
                    p = _element_pointer(context, builder, sa[a], args[a],
                                         [args[i] for i in ix], [sa[i] for i in ix])
                    return builder.bitcast(p, ptr_t)

                def out_at(n):  # &out[n]
                    return _element_pointer(context, builder, sa[6], args[6], [n], [types.intp])

                lanes, tag, n = (context.cast(builder, args[i], sa[i], types.intp)
                                 for i in (3, 5, 7))
                score, floor, bits = load_scores(builder, at(0, 1, 2), at(4, 2),
                                                 builder.trunc(lanes, i32), path == "compress")
                packed = pack(builder, score, floor, tag)
                return writer(path)(builder, out_at, packed, bits, n)

            return sig, codegen

        return compress_hits

    return tuple(make(path) for path in PATHS)


def _compress_dispatch():
    compress, permute, scalar = _compress_intrinsics()

    @njit(inline="always")
    def compress_hits(vals, row, col, lanes, floors, tag, out, n, path):
        if path == 0:
            return compress(vals, row, col, lanes, floors, tag, out, n)
        if path == 1:
            return permute(vals, row, col, lanes, floors, tag, out, n)
        return scalar(vals, row, col, lanes, floors, tag, out, n)

    return compress_hits


def _compress_twin(vals, row, col, lanes, floors, tag, out, n, path):
    """`compress_hits` without numba: the Python twin, whatever the path."""
    return compress_hits_py(vals, row, col, lanes, floors, tag, out, n)


assert PATHS == ("compress", "permute", "scalar")  # the dispatch's indices
compress_hits = _compress_dispatch() if JIT_ENABLED else _compress_twin


def prefetch_write_py(arr, i, j):
    """Plain Python twin of `prefetch_write`: a hint, so nothing."""


def _prefetch_write_intrinsic():
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic

    i32 = ir.IntType(32)

    @intrinsic
    def prefetch_write(typingctx, arr_t, i_t, j_t):
        sig = types.void(arr_t, i_t, j_t)

        def codegen(context, builder, signature, args):
            sa = signature.args
            p = _element_pointer(context, builder, sa[0], args[0], args[1:3], sa[1:3])
            fn = _declare(builder.module, "llvm.prefetch.p0", ir.FunctionType(
                ir.VoidType(), [ir.PointerType(), i32, i32, i32]))
            builder.call(fn, [builder.bitcast(p, ir.PointerType()), ir.Constant(i32, 1),
                              ir.Constant(i32, 3), ir.Constant(i32, 1)])
            return context.get_dummy_value()

        return sig, codegen

    return prefetch_write


prefetch_write = _prefetch_write_intrinsic() if JIT_ENABLED else prefetch_write_py


def store_u64_py(buf, pos, value):
    """Plain Python twin of `store_u64`."""
    buf[pos:pos + 8] = np.frombuffer(np.uint64(value).tobytes(), np.uint8)


def _store_u64_intrinsic():
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic

    i64 = ir.IntType(64)

    @intrinsic
    def store_u64(typingctx, buf_t, pos_t, value_t):
        sig = types.void(buf_t, pos_t, types.uint64)

        def codegen(context, builder, signature, args):
            sa = signature.args
            p = _element_pointer(context, builder, sa[0], args[0], args[1:2], sa[1:2])
            builder.store(args[2], builder.bitcast(p, i64.as_pointer()), align=1)
            return context.get_dummy_value()

        return sig, codegen

    return store_u64


# buf[pos:pos + 8] = the 8 little-endian bytes of a uint64, one unaligned store
# (buf: a 1-D uint8 array with 8 bytes from pos; no bounds check).
store_u64 = _store_u64_intrinsic() if JIT_ENABLED else store_u64_py
