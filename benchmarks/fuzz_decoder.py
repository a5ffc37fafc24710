"""Fuzz campaign of the shard decoder (`make fuzz`; figures in benchmarks/RESULTS.md `## fuzz`).

Runs `--records` mutated records through `ingest.codec.decode.ShardDecoder` twice, the same
records each time: once with numba's bounds checking on (`NUMBA_BOUNDSCHECK=1`, kernels
compiled afresh into a cache directory of their own: with the project's on-disk cache,
numba would load the unchecked kernels and silently check nothing) and once as shipped.
Every batch runs in a subprocess of its own with a timeout, so that a crash (a signal, an
exception other than `ShardError`, an IndexError from a bounds check) or a hang is seen and
its input kept (`--keep`); reports records/s, the distinct error reasons with their
counts, crashes and hangs (0 expected), and how often a sample of files agreed with the
plain-Python twin decoder (tests/ingest/pydecode.py).

Three families of mutated records (each record mutated at least once):

- proto-struct: a valid frame-level SequenceExample or video-level Example built as a
  message tree and serialised with 1-3 mutations at random places of the tree: fields
  reordered, duplicated, dropped; unknown fields (every wire type, 3, 4, 6, 7 included);
  deep nesting (an unknown field nesting up to 20,000 messages); known fields with the
  wrong wire type; length prefixes too long, too short, huge (2**31, 2**32 + 5, 2**63,
  2**64 - 1) or overlong (non-minimal varints); truncated messages; map keys swapped for
  other known keys, or bytes made invalid UTF-8 or cut; repeated scalars packed, unpacked
  or mixed, with 11-byte varints, a packed float length not a multiple of 4, a value cut
  short, negative values, the other list type, or tens of thousands of values.
  Framed with valid CRCs, so the protobuf walk sees every mutation.
- proto-bytes: byte-level mutations of a valid record's bytes (bit flips, byte sets,
  inserts, deletes, truncations, an 11-byte varint, a huge length at a random place),
  framed with valid CRCs.
- framing: one mutation of a small valid file's framing (bit flips anywhere, truncation,
  the length field rewritten with a matching length CRC (0, off by one, huge), the
  length or data CRC changed, bytes inserted or deleted).

The protobuf families go 128 records to a file, decoded with `on_error="skip-record"` (a
malformed record is skipped and its reason counted; a fatal error, a valid record of the
other kind, sends the file's records through one at a time); framing mutations one file
each, decoded in both error modes. Chunk sizes vary (64 KB to 4 MB) so records cross
block and chunk boundaries and the output buffers grow.

    .venv/bin/python benchmarks/fuzz_decoder.py                      # the campaign, 1,000,000
    .venv/bin/python benchmarks/fuzz_decoder.py --records 3000 --modes shipped --json  # smoke
"""
from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ingest.codec.encode import I32, I64, LEN, VARINT, field, varint
from ingest.codec.tfrecord import FOOTER_BYTES, HEADER_BYTES, frame_record, masked_crc

MODES = ("boundscheck", "shipped")
FAMILIES = ("proto-struct", "proto-bytes", "framing")
SHARE = {"proto-struct": 0.45, "proto-bytes": 0.40, "framing": 0.15}  # of the records
RECORDS_PER_FILE = 128
POOL_SIZE = 256  # valid records per batch, each mutated many times over
WARM_UP_SEED = 2**31 - 1  # the small batch that loads (or compiles) the kernels first
TWIN_EVERY = 40  # one file in this many is also decoded by the plain-Python twin
CHUNK_BYTES = (64 << 10, 256 << 10, 1 << 20, 4 << 20)
KEYS = (b"id", b"labels", b"segment_labels", b"segment_start_times", b"segment_end_times",
        b"segment_scores", b"mean_rgb", b"mean_audio", b"rgb", b"audio")
HUGE = (2**31, 2**32 + 5, 2**63, 2**64 - 1)


# ---------------------------------------------------------------- valid records as trees
# A message is a list of fields (number, wire type, value); a value is bytes (a LEN
# payload), a list (a nested message), or ("ints", array) / ("floats", array): the body
# of an Int64List / FloatList (its repeated field 1). Decisions use Python's `random`
# (a tenth of the cost of a numpy Generator call); arrays come from numpy.

def _bytes_feature(values) -> list:
    return [(1, LEN, [(1, LEN, v) for v in values])]


def _int_feature(values) -> list:
    return [(3, LEN, ("ints", np.asarray(values, np.int64)))]


def _float_feature(values) -> list:
    return [(2, LEN, ("floats", np.asarray(values, np.float32)))]


def _map(entries) -> list:
    return [(1, LEN, [(1, LEN, k), (2, LEN, v)]) for k, v in entries]


def random_record(r: random.Random, rng, noise: np.ndarray) -> list:
    """A valid record tree: frame-level (0-4 frames) or, one time in three, video-level."""
    vid = "".join(chr(r.randrange(0x20, 0x3000)) for _ in range(r.randrange(12)))
    ctx = [(b"id", _bytes_feature([vid.encode("utf-8", "surrogatepass")]))]
    if r.random() < 0.8:
        ctx.append((b"labels", _int_feature(rng.integers(0, 3862, r.randrange(8)))))
    ns = r.randrange(5) if r.random() < 0.6 else 0
    if ns:
        ctx.append((b"segment_labels", _int_feature(rng.integers(0, 3862, ns))))
        ctx.append((b"segment_start_times", _int_feature(rng.integers(0, 60, ns) * 5)))
        ctx.append((b"segment_scores", _float_feature(rng.integers(0, 2, ns))))
        if r.random() < 0.5:
            ctx.append((b"segment_end_times", _int_feature(rng.integers(1, 61, ns) * 5)))
    if r.random() < 0.3:  # video-level Example
        ctx.append((b"mean_rgb", _float_feature(rng.standard_normal(1024))))
        ctx.append((b"mean_audio", _float_feature(rng.standard_normal(128))))
        return [(1, LEN, _map(ctx))]
    n = r.randrange(5)
    at = r.randrange(len(noise) - 1152 * 4)
    rgb = [bytes(noise[at + 1152 * i : at + 1152 * i + 1024]) for i in range(n)]
    audio = [bytes(noise[at + 1152 * i + 1024 : at + 1152 * (i + 1)]) for i in range(n)]
    lists = _map([(b"rgb", [(1, LEN, _bytes_feature([x])) for x in rgb]),
                  (b"audio", [(1, LEN, _bytes_feature([x])) for x in audio])])
    return [(1, LEN, _map(ctx)), (2, LEN, lists)]


# ---------------------------------------------------------------- encodings, valid and not

def overlong(value: int, r: random.Random) -> bytes:
    """A valid but non-minimal varint of `value` (continuation bytes of zeros appended)."""
    raw = bytearray(varint(value))
    pad = r.randrange(1, max(2, 11 - len(raw)))
    raw[-1] |= 0x80
    return bytes(raw) + b"\x80" * (pad - 1) + b"\x00"


def length_prefix(n: int, r: random.Random, mutate: bool) -> bytes:
    """The length prefix of a LEN field; mutated: off by a little, huge, overlong, 11 bytes."""
    if not mutate:
        return varint(n)
    how = r.randrange(4)
    if how == 0:
        return varint(max(0, n + r.choice([-2, -1, 1, 2, 100])))
    if how == 1:
        return varint(r.choice(HUGE))
    if how == 2:
        return overlong(n, r)
    return b"\xff" * 10 + b"\x01"  # an 11-byte varint


def unknown_field(r: random.Random) -> bytes:
    """A field of a number no message here uses, of any wire type (3, 4, 6, 7 invalid)."""
    number = r.choice([3, 4, 7, 15, 16, 2047, 2**29 - 1])
    wire = r.randrange(8)
    key = varint((number << 3) | wire)
    if wire == VARINT:
        return key + varint(r.getrandbits(63))
    if wire == LEN:
        return key + varint(3) + b"abc"
    if wire == I64:
        return key + bytes(8)
    if wire == I32:
        return key + bytes(4)
    return key + bytes(r.randrange(6))


@functools.cache
def deep_nesting(depth: int) -> bytes:
    """An unknown LEN field nesting `depth` messages: each level's key and length prefix,
    outermost first (the lengths computed inside out, so building it costs O(depth))."""
    key = varint((15 << 3) | LEN)
    prefixes, inner = [], 0
    for _ in range(depth):
        prefix = key + varint(inner)
        prefixes.append(prefix)
        inner += len(prefix)
    return b"".join(reversed(prefixes))


def varints(values: np.ndarray, key: int | None = None) -> bytes:
    """The varints of int64 `values` back to back (negative ones take ten bytes), each
    preceded by the one-byte `key` if given: a packed body, or unpacked fields. Vectorised:
    a list of 60,000 values costs what a few Python calls do."""
    u = np.asarray(values, np.int64).view(np.uint64)
    size = np.ones(len(u), np.int64)
    rest = u >> np.uint64(7)
    while rest.any():
        size += rest > 0
        rest >>= np.uint64(7)
    lead = 0 if key is None else 1
    ends = np.cumsum(size + lead)
    out = np.empty(int(ends[-1]) if len(u) else 0, np.uint8)
    starts = ends - size
    if key is not None:
        out[starts - 1] = key
    for j in range(int(size.max()) if len(u) else 0):
        has = size > j
        more = (size[has] > j + 1).astype(np.uint8) << 7
        low = (u[has] >> np.uint64(7 * j)) & np.uint64(0x7F)
        out[starts[has] + j] = low.astype(np.uint8) | more
    return out.tobytes()


def floats_unpacked(values: np.ndarray) -> bytes:
    """FloatList values as unpacked fields: key 0x0d and four little-endian bytes each."""
    rows = np.empty((len(values), 5), np.uint8)
    rows[:, 0] = (1 << 3) | I32
    rows[:, 1:] = np.asarray(values, "<f4").view(np.uint8).reshape(-1, 4)
    return rows.tobytes()


def scalars(kind: str, values: np.ndarray, r: random.Random, mutate: bool) -> bytes:
    """An Int64List / FloatList body: packed, unpacked or mixed; mutated: tens of thousands
    of values, an 11-byte varint, a packed float length not a multiple of 4, a negative
    value, or the other list type (a bad type for the key)."""
    if mutate:
        how = r.randrange(4)
        if how == 0:  # the output buffers grow
            base = values if len(values) else np.zeros(1, values.dtype)
            values = base[np.arange(r.randrange(10_000, 60_000)) % len(base)]
        elif how == 1 and kind == "ints":
            return field(1, LEN, b"\xff" * 10 + b"\x01")
        elif how == 1:
            return field(1, LEN, values.astype("<f4").tobytes() + b"\x00")
        elif how == 2 and kind == "ints" and len(values):
            values = values.copy()
            values[r.randrange(len(values))] = -r.randrange(1, 2**62)
        elif how == 2:  # an unpacked value cut short
            return scalars(kind, values, r, False) + bytes([(1 << 3) | I32, 0, 0])
        else:
            other = "floats" if kind == "ints" else "ints"
            return scalars(other, values.astype(np.float32 if kind == "ints" else np.int64),
                           r, False)
    style = r.randrange(3)  # packed, unpacked, mixed
    split = len(values) if style == 0 else 0 if style == 1 else r.randrange(len(values) + 1)
    head, tail = values[:split], values[split:]
    if kind == "ints":
        packed = field(1, LEN, varints(head)) if len(head) else b""
        return packed + varints(tail, key=(1 << 3) | VARINT)
    packed = field(1, LEN, head.astype("<f4").tobytes()) if len(head) else b""
    return packed + floats_unpacked(tail)


# ---------------------------------------------------------------- serialise with mutations

class Serializer:
    """Serialises a record tree, mutating the nodes whose visit numbers (depth first, from
    1) are in `targets`. Subtrees without a target are serialised once and then taken
    from `cache` (shared by every mutation of the same tree), so a mutated record costs
    its path from the root to the mutated nodes, not its whole tree."""

    def __init__(self, r: random.Random, targets: set[int], cache: dict):
        self.r, self.targets, self.cache, self.visit = r, targets, cache, 0

    def size(self, node) -> int:
        """Nodes in the subtree of `node` (a message counts 1, and each field's value)."""
        key = ("size", id(node))
        if key not in self.cache:
            self.cache[key] = 1 + sum(self.size(v) for _, _, v in node) \
                if isinstance(node, list) else 1
        return self.cache[key]

    def _untouched(self, node) -> bool:
        """Whether no target lies in `node`'s subtree; if so, the visits skip over it."""
        n = self.size(node)
        if any(self.visit < t <= self.visit + n for t in self.targets):
            return False
        self.visit += n
        return True

    def clean(self, node) -> bytes:
        """The payload of an unmutated node (memoised per node)."""
        key = id(node)
        if key not in self.cache:
            if isinstance(node, list):
                self.cache[key] = b"".join(self.clean_field(*f) for f in node)
            elif isinstance(node, tuple):
                self.cache[key] = scalars(node[0], node[1], self.r, False)
            else:
                self.cache[key] = node
        return self.cache[key]

    def clean_field(self, num: int, wire: int, value) -> bytes:
        """Key, length and payload of an unmutated field (memoised per value)."""
        key = ("field", num, wire, id(value))
        if key not in self.cache:
            payload = self.clean(value)
            self.cache[key] = varint((num << 3) | wire) + varint(len(payload)) + payload
        return self.cache[key]

    def message(self, fields: list) -> bytes:
        """A message's payload, mutated where a target falls in its subtree."""
        return self.clean(fields) if self._untouched(fields) else self._walk(fields)

    def _walk(self, fields: list) -> bytes:
        self.visit += 1
        if self.visit not in self.targets:
            return b"".join(self._field(f, False) for f in fields)
        r = self.r
        fields = list(fields)
        extra, truncate, bad_len = b"", False, -1
        how = r.randrange(8) if fields else 2
        i = r.randrange(len(fields)) if fields else 0
        if how == 0 and len(fields) > 1:  # two fields swap places
            j = (i + r.randrange(1, len(fields))) % len(fields)
            fields[i], fields[j] = fields[j], fields[i]
        elif how == 1:
            fields.insert(r.randrange(len(fields) + 1), fields[i])  # protobuf merges them
        elif how == 2 and fields:
            del fields[i]
        elif how == 3:
            extra = deep_nesting(r.choice([10, 100, 1000, 20000]))
        elif how == 4:  # a known field with the wrong wire type
            fields[i] = (fields[i][0], r.choice([VARINT, I64, I32]), r.getrandbits(40))
        elif how == 5:
            bad_len = i
        elif how == 6:
            truncate = True
        else:
            extra = unknown_field(r)
        parts = [self._field(f, k == bad_len) for k, f in enumerate(fields)]
        if extra:
            parts.insert(r.randrange(len(parts) + 1), extra)
        out = b"".join(parts)
        return out[: r.randrange(len(out))] if truncate and out else out

    def _field(self, f, bad_len: bool) -> bytes:
        num, wire, value = f
        if isinstance(value, int):  # a wire-type mutation: varint or fixed-width bytes
            tail = varint(value) if wire == VARINT else \
                value.to_bytes(8, "little")[: 4 if wire == I32 else 8]
            return varint((num << 3) | wire) + tail
        untouched = self._untouched(value)
        if untouched and not bad_len:
            return self.clean_field(num, wire, value)
        if untouched:
            payload = self.clean(value)
        elif isinstance(value, list):
            payload = self._walk(value)
        else:  # a mutated leaf
            self.visit += 1
            payload = scalars(*value, self.r, True) if isinstance(value, tuple) \
                else self._bytes(value)
        return varint((num << 3) | LEN) + length_prefix(len(payload), self.r, bad_len) + payload

    def _bytes(self, value: bytes) -> bytes:
        """A mutated bytes leaf: another known key, invalid UTF-8, or other bytes."""
        how = self.r.randrange(3)
        if how == 0:
            return self.r.choice(KEYS)
        if how == 1:
            return b"\xff\xc0" + value
        cut = value[: self.r.randrange(len(value) + 1)] + b"\x00" * self.r.randrange(3)
        return cut if cut != value else value + b"\x00"


def proto_struct(r: random.Random, tree: list, cache: dict) -> bytes:
    """The tree serialised with 1-3 mutations at random nodes."""
    ser = Serializer(r, set(), cache)
    n = ser.size(tree)
    ser.targets = {r.randrange(1, n + 1) for _ in range(r.randrange(1, 4))}
    return ser.message(tree)


def proto_bytes(r: random.Random, data: bytes) -> bytes:
    """1-3 byte-level mutations of a record's bytes."""
    for _ in range(r.randrange(1, 4)):
        how = r.randrange(7)
        pos = r.randrange(max(len(data), 1))
        if how == 0 and data:
            data = data[:pos] + bytes([data[pos] ^ (1 << r.randrange(8))]) + data[pos + 1:]
        elif how == 1 and data:
            data = data[:pos] + bytes([r.randrange(256)]) + data[pos + 1:]
        elif how == 2:
            data = data[:pos] + bytes([r.randrange(256)]) + data[pos:]
        elif how == 3 and data:
            data = data[:pos] + data[pos + 1:]
        elif how == 4:
            data = data[:pos]
        elif how == 5:
            data = data[:pos] + b"\xff" * 10 + b"\x01" + data[pos:]
        else:
            data = data[:pos] + varint(r.choice(HUGE)) + data[pos + 1:]
    return data


def framing(r: random.Random, records: list[bytes]) -> bytes:
    """A small file of valid records with one mutation of its framing."""
    raw = bytearray(b"".join(frame_record(x) for x in records))
    starts = np.cumsum([0] + [len(x) + HEADER_BYTES + FOOTER_BYTES for x in records])
    k = r.randrange(len(records))
    at = int(starts[k])
    how = r.randrange(7)
    if how == 0:
        raw[r.randrange(len(raw))] ^= 1 << r.randrange(8)
    elif how == 1:
        raw = raw[: r.randrange(len(raw))]
    elif how == 2:  # a wrong length with a matching length CRC: the header passes its check
        n = len(records[k])
        length = r.choice([0, max(n - 1, 0), n + 1, n + 5, *HUGE[:3]]).to_bytes(8, "little")
        raw[at : at + HEADER_BYTES] = length + masked_crc(length).to_bytes(4, "little")
    elif how == 3:
        raw[at + 8 + r.randrange(4)] ^= 0xFF  # the length's CRC
    elif how == 4:
        raw[int(starts[k + 1]) - 1 - r.randrange(4)] ^= 0xFF  # the data's CRC
    elif how == 5:
        pos = r.randrange(len(raw) + 1)
        raw[pos:pos] = r.randbytes(r.randrange(1, 5))
    else:
        pos = r.randrange(len(raw))
        del raw[pos : pos + r.randrange(1, 5)]
    return bytes(raw)


class Pool:
    """The valid records a batch mutates: trees, their serialisation caches, their bytes."""

    def __init__(self, r: random.Random, rng, size: int):
        noise = rng.integers(0, 256, 1 << 16, dtype=np.uint8)
        self.trees = [random_record(r, rng, noise) for _ in range(size)]
        self.caches = [{} for _ in self.trees]
        self.valid = [Serializer(r, set(), c).message(t)
                      for t, c in zip(self.trees, self.caches)]
        self.video_level = [len(t) == 1 for t in self.trees]
        self.by_kind = {k: [i for i, v in enumerate(self.video_level) if v == k]
                        for k in (False, True)}


# ---------------------------------------------------------------- one batch (a subprocess)

# Numbers that are part of a reason's wording, not of the case (kept by `normalise`).
FIXED_NUMBERS = ("UTF-8", "CRC-32C", "64 bits", "types 6, 7", "12-byte", "first 12 bytes",
                 "of 12 bytes)", "multiple of 4", "expected 1024", "expected 128",
                 "field number 0")


@functools.cache
def normalise(reason: str) -> str:
    """An error reason with the numbers of the case replaced by N (so reasons can be
    counted): "rgb frame of 517 bytes, expected 1024" -> "rgb frame of N bytes, expected 1024"."""
    for i, phrase in enumerate(FIXED_NUMBERS):  # a private-use character stands in
        reason = reason.replace(phrase, chr(0xE000 + i))
    reason = re.sub(r"-?\d+", "N", reason)
    for i, phrase in enumerate(FIXED_NUMBERS):
        reason = reason.replace(chr(0xE000 + i), phrase)
    return reason


class Batch:
    """Decodes one batch's files and counts outcomes; unexpected exceptions are crashes."""

    def __init__(self, seed: int, workdir: Path, keep: Path | None):
        from ingest.codec.decode import ShardDecoder

        self.seed, self.workdir, self.keep = seed, workdir, keep
        self.decoders = {m: ShardDecoder(on_error=m) for m in ("fail", "skip-record")}
        for d in self.decoders.values():
            d.warm_up()
        self.reasons: collections.Counter = collections.Counter()
        self.records = collections.Counter()  # per family
        self.ok = 0
        self.files = 0
        self.decode_cpu = 0.0  # CPU seconds inside the decoder (time.process_time: the
        self.decode_wall = 0.0  # figure that other jobs on the machine do not inflate)
        self.crashes: list[dict] = []
        self.twin_checks = 0
        self.twin_disagreements: list[dict] = []
        self.current = workdir / "current.tfrecord"  # the input being decoded (kept on a crash)

    def decode(self, raw: bytes, mode: str, chunk: int, family: str, n_records: int,
               twin: bool) -> None:
        from ingest.errors import ShardError

        self.current.write_bytes(raw)
        self.files += 1
        self.records[family] += n_records
        t0, c0 = time.perf_counter(), time.process_time()
        outcome = None
        try:
            skipped = []
            videos = 0
            for c in self.decoders[mode].iter_chunks(self.current, chunk_bytes=chunk):
                videos += c.n_videos
                skipped += [s[2] for s in c.skipped]
            self._clock(t0, c0)
            self.ok += videos
            self.reasons.update(normalise(r) for r in skipped)
            outcome = ("ok", videos, len(skipped))
        except ShardError as err:
            self._clock(t0, c0)
            self.reasons[normalise(err.reason)] += 1
            outcome = ("error", err.record)
            if mode == "skip-record" and family != "framing":  # a fatal error (mixed kinds):
                self._one_by_one(raw, chunk, family)  # every record still goes through
        except Exception as err:  # noqa: BLE001 - anything but ShardError is a crash
            self._crash(f"{type(err).__name__}: {err}", raw)
            return
        if twin:
            self._twin(raw, mode, outcome)

    def _clock(self, t0: float, c0: float) -> None:
        self.decode_wall += time.perf_counter() - t0
        self.decode_cpu += time.process_time() - c0

    def _one_by_one(self, raw: bytes, chunk: int, family: str) -> None:
        from ingest.codec.tfrecord import iter_records

        path = self.workdir / "whole.tfrecord"
        path.write_bytes(raw)
        for _, _, data in iter_records(path):
            self.records[family] -= 1  # counted again, one by one
            self.decode(frame_record(data), "fail", chunk, family, 1, twin=False)

    def _crash(self, what: str, raw: bytes) -> None:
        entry = {"seed": self.seed, "file": self.files, "what": what}
        if self.keep is not None:
            self.keep.mkdir(parents=True, exist_ok=True)
            kept = self.keep / f"crash-seed{self.seed}-file{self.files}.tfrecord"
            kept.write_bytes(raw)
            entry["input"] = str(kept)
        self.crashes.append(entry)

    def _twin(self, raw: bytes, mode: str, outcome) -> None:
        """The plain-Python twin decodes the same file: same outcome and content."""
        from ingest.codec.decode import decode_shard
        from ingest.codec.video import DecodedShard
        from ingest.errors import ShardError
        from tests.ingest import pydecode

        self.twin_checks += 1
        skip = mode == "skip-record"
        try:
            want = pydecode.decode_file(self.current, skip=skip)
        except (pydecode.Bad, pydecode.Fatal) as err:
            if outcome[0] != "error" or outcome[1] != getattr(err, "record", None):
                self.twin_disagreements.append({"seed": self.seed, "file": self.files,
                                                "ours": str(outcome), "twin": repr(err)})
            return
        try:
            got = decode_shard(self.current, on_error=mode)
            expected = DecodedShard.from_videos(want.videos)
            expected.record_offsets = np.array(want.offsets, np.int64)
            if want.videos:
                pydecode.assert_same_shard(got, expected)
            assert got.n_videos == len(want.videos)
            assert [s[:2] for s in got.skipped] == want.skipped
        except (AssertionError, ShardError) as err:
            self.twin_disagreements.append({"seed": self.seed, "file": self.files,
                                            "ours": str(outcome), "twin": str(err)[:300]})

    def result(self, seconds: float, cpu: float) -> dict:
        return {"seed": self.seed, "records": dict(self.records), "ok": self.ok,
                "files": self.files, "decode_cpu": self.decode_cpu,
                "decode_wall": self.decode_wall, "seconds": seconds, "cpu": cpu,
                "reasons": dict(self.reasons), "crashes": self.crashes,
                "twin_checks": self.twin_checks, "twin_disagreements": self.twin_disagreements}


def run_batch(seed: int, n_records: int, workdir: Path, keep: Path | None,
              out_of_bounds: bool = False) -> dict:
    """Generate and decode `n_records` mutated records (deterministic in `seed`).
    `out_of_bounds`: the decoder raises IndexError, as a bounds check would (a test)."""
    t0, c0 = time.perf_counter(), time.process_time()
    r = random.Random(seed)
    pool = Pool(r, np.random.default_rng(seed), POOL_SIZE)
    batch = Batch(seed, workdir, keep)
    if out_of_bounds:
        def raising(*_args, **_kwargs):
            raise IndexError("index is out of bounds")
            yield  # a generator, like iter_chunks

        for dec in batch.decoders.values():
            dec.iter_chunks = raising
    targets = {f: round(n_records * SHARE[f]) for f in FAMILIES}
    targets["proto-struct"] += n_records - sum(targets.values())
    files = 0
    for family in FAMILIES:
        done = 0
        while done < targets[family]:
            files += 1
            twin = files % TWIN_EVERY == 0
            chunk = r.choice(CHUNK_BYTES)
            kind = pool.by_kind[r.random() < 0.3] or pool.by_kind[False] or pool.by_kind[True]
            if family == "framing":
                records = [pool.valid[r.choice(kind)] for _ in range(r.randrange(1, 4))]
                mode = r.choice(("fail", "skip-record"))
                batch.decode(framing(r, records), mode, chunk, family, 1, twin)
                done += 1
                continue
            n = min(RECORDS_PER_FILE, targets[family] - done)
            out = []
            for _ in range(n):
                i = r.choice(kind)
                data = proto_struct(r, pool.trees[i], pool.caches[i]) \
                    if family == "proto-struct" else proto_bytes(r, pool.valid[i])
                out.append(frame_record(data))
            batch.decode(b"".join(out), "skip-record", chunk, family, n, twin)
            done += n
    return batch.result(time.perf_counter() - t0, time.process_time() - c0)


def boundscheck_active() -> bool:
    """Whether the decoder's kernels were compiled with bounds checks: `read_varint` told
    to read 4 bytes past the end of a 4-byte view (inside a larger array, so the shipped
    kernel's out-of-bounds read stays in memory it owns) raises IndexError only then."""
    from ingest.codec import wire

    backing = np.full(64, 0x80, np.uint8)
    try:
        wire.read_varint(backing[:4], 0, 8)
    except IndexError:
        return True
    return False


def worker_main(args) -> None:
    """One batch, in its own process: the JSON result on stdout's last line."""
    checked = boundscheck_active()
    if checked != (args.mode == "boundscheck"):
        print(f"mode {args.mode} but the kernels' bounds checks are "
              f"{'on' if checked else 'off'}", file=sys.stderr)
        sys.exit(3)
    if args.inject == "segfault":  # the harness's own tests: what a crash looks like
        os.kill(os.getpid(), signal.SIGSEGV)
    if args.inject == "hang":
        time.sleep(3600)
    result = run_batch(args.seed, args.records, Path(args.workdir),
                       Path(args.keep) if args.keep else None,
                       out_of_bounds=args.inject == "exception")
    result["mode"] = args.mode
    print(json.dumps(result))


# ---------------------------------------------------------------- the campaign (parent)

def mode_env(mode: str, cache: Path) -> dict:
    env = dict(os.environ)
    env.pop("YT8M_NO_JIT", None)
    env.pop("NUMBA_BOUNDSCHECK", None)
    if mode == "boundscheck":
        env["NUMBA_BOUNDSCHECK"] = "1"
        env["NUMBA_CACHE_DIR"] = str(cache)  # compiled afresh, with the checks
    return env


def run_one(mode: str, seed: int, n: int, args, env: dict, inject: str | None = None,
            timeout: float | None = None) -> dict:
    """One batch in a subprocess; a hang (past `timeout`, default `--timeout`) or a non-zero
    exit is reported, with the input being decoded at that moment kept in `--keep`."""
    workdir = Path(tempfile.mkdtemp(prefix="fuzz-", dir=args.tmp))
    cmd = [sys.executable, __file__, "--worker", "--mode", mode, "--seed", str(seed),
           "--records", str(n), "--workdir", str(workdir)]
    cmd += (["--keep", args.keep] if args.keep else []) + (["--inject", inject] if inject else [])
    t0 = time.perf_counter()
    try:
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                                  timeout=timeout or args.timeout, check=False)
        except subprocess.TimeoutExpired:  # the child has been killed
            return {"mode": mode, "seed": seed, "hang": True, "records": {},
                    "seconds": time.perf_counter() - t0,
                    "input": _keep_input(workdir, args.keep, f"hang-{mode}-seed{seed}")}
        if proc.returncode != 0:
            return {"mode": mode, "seed": seed, "records": {},
                    "seconds": time.perf_counter() - t0,
                    "crashes": [{"seed": seed, "what": f"exit status {proc.returncode}",
                                 "stderr": proc.stderr[-2000:],
                                 "input": _keep_input(workdir, args.keep,
                                                      f"crash-{mode}-seed{seed}")}]}
        return json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _keep_input(workdir: Path, keep: str | None, name: str) -> str | None:
    """Copy the input a dead or hung batch was decoding into `keep`; its new path."""
    current = workdir / "current.tfrecord"
    if keep is None or not current.exists():
        return None
    Path(keep).mkdir(parents=True, exist_ok=True)
    dest = Path(keep) / f"{name}.tfrecord"
    shutil.copyfile(current, dest)
    return str(dest)


def campaign(args) -> dict:
    per_batch = args.batch
    seeds = [args.seed * 1_000_003 + i for i in range(-(-args.records // per_batch))]
    sizes = [min(per_batch, args.records - i * per_batch) for i in range(len(seeds))]
    summary = {"records_asked": args.records, "modes": {}}
    with tempfile.TemporaryDirectory(prefix="fuzz-numba-cache-") as cache:
        for mode in args.modes:
            env = mode_env(mode, Path(cache))
            t0 = time.perf_counter()
            # compiles the kernels (boundscheck: afresh, ~30 s) outside the clock and the
            # batches' timeout; its records are not counted
            warm = run_one(mode, WARM_UP_SEED, 50, args, env, timeout=args.timeout + 900)
            compile_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            with ThreadPoolExecutor(args.jobs) as pool:
                k = len(seeds)
                results = list(pool.map(run_one, [mode] * k, seeds, sizes, [args] * k,
                                        [env] * k, [args.inject] * k))
            wall = time.perf_counter() - t0
            summary["modes"][mode] = aggregate(results, wall, compile_s, warm, args.jobs)
            print(report_mode(mode, summary["modes"][mode]), file=sys.stderr, flush=True)
    return summary


def aggregate(results: list[dict], wall: float, compile_s: float, warm: dict,
              jobs: int) -> dict:
    records = collections.Counter()
    reasons = collections.Counter()
    for r in results:
        records.update(r.get("records", {}))
        reasons.update(r.get("reasons", {}))
    n = sum(records.values())
    decode_cpu = sum(r.get("decode_cpu", 0.0) for r in results)
    decode_wall = sum(r.get("decode_wall", 0.0) for r in results)
    cpu = sum(r.get("cpu", 0.0) for r in results)
    return {
        "records": n, "by_family": dict(records),
        "decoded_ok": sum(r.get("ok", 0) for r in results),
        "files": sum(r.get("files", 0) for r in results),
        "batches": len(results), "jobs": jobs,
        "wall_s": round(wall, 1), "batch_cpu_s": round(cpu, 1),
        "decode_cpu_s": round(decode_cpu, 2), "decode_wall_s": round(decode_wall, 2),
        "records_per_s_decode": round(n / decode_cpu) if decode_cpu else 0,
        "records_per_cpu_s_campaign": round(n / cpu) if cpu else 0,
        "records_per_s_campaign": round(n / wall) if wall else 0,
        "warm_up_s": round(compile_s, 1),
        "crashes": [c for r in [warm, *results] for c in r.get("crashes", [])],
        "hangs": [{"seed": r["seed"], "input": r["input"]} for r in [warm, *results]
                  if r.get("hang")],
        "twin_checks": sum(r.get("twin_checks", 0) for r in results),
        "twin_disagreements": [d for r in results for d in r.get("twin_disagreements", [])],
        "reasons": dict(reasons.most_common()),
    }


def report_mode(mode: str, m: dict) -> str:
    families = ", ".join(f"{k} {v:,}" for k, v in m["by_family"].items())
    lines = [
        (f"== {mode}: {m['records']:,} mutated records ({families}) in {m['files']:,} files, "
         f"{m['decoded_ok']:,} decoded as valid"),
        (f"   {m['records_per_s_decode']:,} records per CPU second in the decoder "
         f"({m['decode_cpu_s']} CPU s, {m['decode_wall_s']} s wall); generation included "
         f"{m['records_per_cpu_s_campaign']:,} per CPU second, {m['records_per_s_campaign']:,}"
         f"/s wall ({m['jobs']} jobs, {m['wall_s']} s); warm-up {m['warm_up_s']} s"),
        (f"   crashes {len(m['crashes'])}, hangs {len(m['hangs'])}, twin checks "
         f"{m['twin_checks']:,} with {len(m['twin_disagreements'])} disagreements, "
         f"{len(m['reasons'])} distinct error reasons"),
    ]
    lines += [f"   CRASH {c}" for c in m["crashes"][:5]]
    lines += [f"   HANG {h}" for h in m["hangs"][:5]]
    lines += [f"   TWIN {d}" for d in m["twin_disagreements"][:5]]
    return "\n".join(lines)


def report_reasons(summary: dict) -> str:
    modes = list(summary["modes"])
    reasons = collections.Counter()
    for m in summary["modes"].values():
        reasons.update(m["reasons"])
    head = "| error reason (numbers as N) | " + " | ".join(modes) + " |"
    rows = [head, "| --- |" + " ---: |" * len(modes)]
    for reason, _ in reasons.most_common():
        rows.append(f"| {reason} | " + " | ".join(
            f"{summary['modes'][m]['reasons'].get(reason, 0):,}" for m in modes) + " |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000, help="mutated records per mode")
    ap.add_argument("--batch", type=int, default=25_000, help="records per subprocess")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                    help="batches at once (subprocesses)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds before a batch is "
                    "declared hung")
    ap.add_argument("--modes", type=lambda s: s.split(","), default=list(MODES),
                    help="comma-separated: boundscheck,shipped")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", help="directory for the inputs of crashes (none kept if unset)")
    ap.add_argument("--tmp", default="/dev/shm" if os.path.isdir("/dev/shm") else None,
                    help="where batch files are written (tmpfs by default)")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    ap.add_argument("--inject", choices=("segfault", "hang", "exception"),
                    help="make every batch (not the warm-up) fail this way: tests the harness")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker_main(args)
        return
    bad = [m for m in args.modes if m not in MODES]
    if bad:
        ap.error(f"unknown mode {bad[0]!r} (boundscheck, shipped)")
    summary = campaign(args)
    if args.json:
        print(json.dumps(summary))
    else:
        print(report_reasons(summary))
    failed = any(m["crashes"] or m["hangs"] or m["twin_disagreements"]
                 for m in summary["modes"].values())
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
