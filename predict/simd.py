"""The low-level primitives of the predict kernels, as numba intrinsics with Python twins.

`prefetch_write` (a write hint for the top-k appends) and `store_u64` (an
unaligned 8-byte store for the submission writer) are one LLVM instruction each;
the main one is the top-k scan's compare-and-compress:

`compress_hits(vals, row, col, lanes, floors, tag, out, n)` looks at the `lanes`
(<= 32) scores `vals[row, col:col + lanes]` against `floors[col:col + lanes]`,
and appends one packed uint32 per score at or above its floor to `out[n:]`:

    bits  0..13  the score, clamped to 16,383 (a score above 9999 stays above it)
    bits 14..18  the lane j (the class is col + j)
    bits 19..30  `tag` (12 bits: the caller's row-in-tile and group-in-chunk)
    bit  31      "look closer": the score equals its floor or is above 9999

It returns the new n. Under numba it is an LLVM intrinsic: a masked vector load,
an unsigned compare to a 32-bit mask, `llvm.experimental.vector.compress` in
registers and a full-width store (so `out` needs 32 spare slots past n), and a
popcount; no branch per score. On AVX-512 this is vpcmpuw / vpcompressd; other
x86 targets get LLVM's generic lowering of the same IR. With `YT8M_NO_JIT=1` the
plain Python twin below runs instead (the tests compare both).
"""
from __future__ import annotations

import numpy as np

from ingest.jit import JIT_ENABLED
from predict.predictions import QUANT_SCALE

LANES = 32  # scores per compare: 32 uint16 = one 512-bit vector
VALUE_BITS = 14  # 9999 < 2**14; clamped scores keep "above 9999" detectable
VALUE_MASK = (1 << VALUE_BITS) - 1
LANE_SHIFT = VALUE_BITS
TAG_SHIFT = VALUE_BITS + 5  # 5 bits of lane: 32 lanes
TAG_BITS = 12  # bits of the caller's tag
CLOSER_BIT = 31  # set on a hit at its floor (a tie key decides) or above 9999 (invalid)
assert TAG_SHIFT + TAG_BITS == CLOSER_BIT


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


def _compress_hits_intrinsic():
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic

    i1, i16, i32, i64 = ir.IntType(1), ir.IntType(16), ir.IntType(32), ir.IntType(64)
    v16, v32 = ir.VectorType(i16, LANES), ir.VectorType(i32, LANES)
    m32 = ir.VectorType(i1, LANES)
    half, m16 = ir.VectorType(i32, LANES // 2), ir.VectorType(i1, LANES // 2)
    ptr_t = ir.PointerType()

    def splat(builder, scalar, vty, n_lanes):
        vec = builder.insert_element(ir.Constant(vty, ir.Undefined), scalar, ir.Constant(i32, 0))
        zeros = ir.Constant(ir.VectorType(i32, n_lanes), [0] * n_lanes)
        return builder.shuffle_vector(vec, ir.Constant(vty, ir.Undefined), zeros)

    @intrinsic
    def compress_hits(typingctx, vals_t, row_t, col_t, lanes_t, floors_t, tag_t, out_t, n_t):
        sig = types.intp(vals_t, row_t, col_t, lanes_t, floors_t, tag_t, out_t, n_t)

        def codegen(context, builder, signature, args):
            sa = signature.args

            def at(a, *ix):  # args[a][args[i] for i in ix], an opaque pointer
                p = _element_pointer(context, builder, sa[a], args[a], [args[i] for i in ix],
                                     [sa[i] for i in ix])
                return builder.bitcast(p, ptr_t)

            lanes, tag, n = (context.cast(builder, args[i], signature.args[i], types.intp)
                             for i in (3, 5, 7))
            mod = builder.module
            load = _declare(mod, "llvm.masked.load.v32i16.p0",
                           ir.FunctionType(v16, [ptr_t, i32, m32, v16]))
            compress = _declare(mod, "llvm.experimental.vector.compress.v16i32",
                               ir.FunctionType(half, [half, m16, half]))
            # lanes < 32: only the first `lanes` scores exist (no read past a row's end)
            lanes32 = builder.trunc(lanes, i32)
            full = builder.icmp_unsigned(">=", lanes32, ir.Constant(i32, LANES))
            low = builder.sub(builder.shl(ir.Constant(i32, 1), lanes32), ir.Constant(i32, 1))
            in_row = builder.bitcast(builder.select(full, ir.Constant(i32, -1), low), m32)
            zero16 = ir.Constant(v16, [0] * LANES)
            score = builder.call(load, [at(0, 1, 2), ir.Constant(i32, 2), in_row, zero16])
            floor = builder.call(load, [at(4, 2), ir.Constant(i32, 2), in_row, zero16])
            hit = builder.and_(builder.icmp_unsigned(">=", score, floor), in_row)
            clamped = builder.select(
                builder.icmp_unsigned(">", score, ir.Constant(v16, [VALUE_MASK] * LANES)),
                ir.Constant(v16, [VALUE_MASK] * LANES), score)
            tag_bits = builder.shl(builder.trunc(tag, i32), ir.Constant(i32, TAG_SHIFT))
            closer = builder.or_(
                builder.icmp_unsigned("==", score, floor),
                builder.icmp_unsigned(">", score, ir.Constant(v16, [QUANT_SCALE] * LANES)))
            closer = builder.shl(builder.zext(closer, v32), ir.Constant(v32, [CLOSER_BIT] * LANES))
            packed = builder.or_(
                builder.or_(builder.zext(clamped, v32),
                            ir.Constant(v32, [j << LANE_SHIFT for j in range(LANES)])),
                builder.or_(splat(builder, tag_bits, v32, LANES), closer))
            bits = builder.bitcast(hit, i32)
            for h in range(2):  # two 16-lane halves (a 32-lane compress does not lower)
                sel = ir.Constant(ir.VectorType(i32, LANES // 2), list(range(16 * h, 16 * h + 16)))
                part = builder.shuffle_vector(packed, ir.Constant(v32, ir.Undefined), sel)
                mpart = builder.shuffle_vector(hit, ir.Constant(m32, ir.Undefined), sel)
                part = builder.call(compress, [part, mpart, ir.Constant(half, ir.Undefined)])
                out_at = _element_pointer(context, builder, sa[6], args[6], [n], [types.intp])
                builder.store(part, builder.bitcast(out_at, half.as_pointer()), align=4)
                count = builder.and_(builder.lshr(bits, ir.Constant(i32, 16 * h)),
                                     ir.Constant(i32, 0xFFFF))
                n = builder.add(n, builder.zext(builder.ctpop(count), i64))
            return n

        return sig, codegen

    return compress_hits


compress_hits = _compress_hits_intrinsic() if JIT_ENABLED else compress_hits_py


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
