"""MAP@K with the semantics of the challenge's `segment_eval_inference.py`.

Per class: cut the submitted list to K, drop the entries that are not rated for
that class, then AP = Σ_k precision@k · rel(k) over the remaining positions k,
divided by N_c, the number of positive rated segments of the class. MAP is the
mean of AP over the classes with at least one positive (a class with positives
but no submitted row scores 0). A rating is positive when its score > 0.5
(truth scores are 0.0 or 1.0).

Two implementations of the same numbers:

- `evaluate_submission` (what `predict evaluate` runs) streams the file: for each
  valid row, `score_hashed`, a numba kernel, takes the FNV-1a 64 hash of each of
  the first K entries (computed by the validator's row pass, or by `hash_entries`
  for a row that went the slow way), looks the (entry, class) pair up in an
  open-addressing table of the rated pairs (`TruthIndex`; a key match is confirmed
  by comparing the bytes) and accumulates the class's AP sum; nothing of the
  submission is kept beyond the few lines in flight;
- `truth_by_class` + `mean_average_precision` on `read_submission`'s dict of
  Python strings: the plain-Python twin the tests compare it with (about 70 bytes
  of Python objects per entry: 7 GB for a full-size file).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from ingest.errors import IngestError
from ingest.jit import njit
from ingest.vocab import segment_class_ids
from predict.submission import (
    FNV_OFFSET,
    Problems,
    SubmissionError,
    entry_blob,
    entry_expr,
    fnv_step,
    iter_submission,
    string_blob,
)
from predict.topk import DEFAULT_K

POSITIVE_SCORE = 0.5  # a rated segment is positive above this score


@dataclass(frozen=True)
class ClassTruth:
    """The ratings of one class: `rated` maps `videoid:start` → 1 (positive) or 0."""

    rated: dict
    n_positive: int


def truth_by_class(truth: pl.DataFrame) -> dict[int, ClassTruth]:
    """{vocabulary class id: ClassTruth} from a truth table (ingest.truth.read_truth).

    A (segment, class) rated twice keeps its last rating.
    """
    keyed = truth.select(
        pl.col("class_index"),
        entry_expr().alias("entry"),
        (pl.col("score") > POSITIVE_SCORE).cast(pl.Int8).alias("rel"),
    )
    ids = segment_class_ids()
    out = {}
    for (ci,), part in keyed.partition_by("class_index", as_dict=True).items():
        if not 0 <= ci < len(ids):
            continue
        rated = dict(zip(part["entry"].to_list(), part["rel"].to_list()))
        out[int(ids[ci])] = ClassTruth(rated, sum(rated.values()))
    return out


def average_precision(rel: np.ndarray, n_positive: int) -> float:
    """AP of a ranked relevance vector rel (m,) {0,1} of rated entries, over n_positive."""
    if n_positive == 0:
        return 0.0
    rel = np.asarray(rel, np.float64)
    precision = np.cumsum(rel) / np.arange(1, rel.size + 1)
    return float(np.sum(precision * rel) / n_positive)


def class_ap(entries: list, truth: ClassTruth, k: int) -> float:
    """AP@k of one class's ranked `videoid:start` entries."""
    get = truth.rated.get
    rel = np.fromiter((r for r in map(get, entries[:k]) if r is not None), np.int8)
    return average_precision(rel, truth.n_positive)


@dataclass(frozen=True)
class MapResult:
    """MAP@k over `classes` classes with a positive; `per_class` {class id: AP}."""

    map: float
    k: int
    classes: int
    per_class: dict

    def to_json(self) -> dict:
        return {"map": self.map, "k": self.k, "classes": self.classes,
                "per_class": {str(c): ap for c, ap in sorted(self.per_class.items())}}


def mean_average_precision(submission: dict, truth: dict[int, ClassTruth], k: int) -> MapResult:
    """MAP@k of {class id: entries} against `truth_by_class` output."""
    per_class = {
        cid: class_ap(submission.get(cid, []), t, k)
        for cid, t in truth.items() if t.n_positive > 0
    }
    value = float(np.mean(list(per_class.values()))) if per_class else 0.0
    return MapResult(value, k, len(per_class), per_class)


class EvaluationError(IngestError):
    """The truth cannot score this submission (no positives, or another split's videos)."""


VIDEO_TAG = 0xFFFF  # the "class" of the video-id table's keys


@dataclass(frozen=True)
class TruthIndex:
    """The rated (segment, class) pairs of a truth table, for `score_row`.

    pairs: (keys (T,) uint64, slot (T,) int64, cls (P,) int64, blob uint8,
    offsets (P+1,) int64, bits (B,) uint64): an open-addressing table (T a power of
    two >= 2P; key 0 is an empty slot) over the P distinct pairs, whose
    `videoid:start` bytes are blob[offsets[p]:offsets[p+1]], and a one-bit-per-key
    filter of 64 B >= 16 P bits (in L2: most entries of a submission are not rated); rel (P,) int8 1 for a positive rating;
    videos: the same kind of table over the distinct video ids (cls all VIDEO_TAG);
    n_positive (C,) int64 per class index.
    """

    pairs: tuple
    rel: np.ndarray
    videos: tuple
    n_positive: np.ndarray

    @property
    def n_rated(self) -> int:
        return len(self.rel)


def rated_pairs(truth: pl.DataFrame) -> pl.DataFrame:
    """The distinct rated (segment, class) rows of a truth table (ingest.truth.read_truth):
    a (segment, class) rated twice keeps its last rating; class indices outside 0..999 are
    ignored. What `truth_index` and `predict blend` score against."""
    n_cls = len(segment_class_ids())
    return (truth.filter(pl.col("class_index").is_between(0, n_cls - 1))
            .unique(["video_id", "start_time", "class_index"], keep="last", maintain_order=True))


def truth_index(truth: pl.DataFrame) -> TruthIndex:
    """`TruthIndex` of a truth table (ingest.truth.read_truth), over its `rated_pairs`."""
    n_cls = len(segment_class_ids())
    rated = rated_pairs(truth)
    cls = rated["class_index"].cast(pl.Int64).to_numpy()
    rel = (rated["score"] > POSITIVE_SCORE).cast(pl.Int8).to_numpy()
    videos = rated["video_id"].unique(maintain_order=True)
    return TruthIndex(
        pairs=_string_table(entry_blob(rated), cls),
        rel=rel,
        videos=_string_table(string_blob(videos), np.full(len(videos), VIDEO_TAG, np.int64)),
        n_positive=np.bincount(cls[rel == 1], minlength=n_cls).astype(np.int64),
    )


def _string_table(blob_offsets, cls: np.ndarray) -> tuple:
    blob, offsets = blob_offsets
    size = 1 << max(4, (2 * len(cls)).bit_length())
    keys = np.zeros(size, np.uint64)
    slot = np.zeros(size, np.int64)
    # one bit per key in 16+ bits per string: most absent keys are told apart in L2
    bits = np.zeros(max(1, 1 << max(0, (16 * len(cls)).bit_length() - 6)), np.uint64)
    fill_table(blob, offsets, cls, keys, slot, bits)
    return keys, slot, cls, blob, offsets, bits


@njit(inline="always")
def _mix(h, c):
    """splitmix64's finaliser of an FNV hash and a class: the table key (never 0)."""
    z = h + np.uint64(c + 1) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return (z ^ (z >> np.uint64(31))) | np.uint64(1)


@njit
def fill_table(blob, offsets, cls, keys, slot, bits):
    """Insert string i (blob[offsets[i]:offsets[i+1]]) with class cls[i] into the
    open-addressing table (keys, slot) (linear probing; keys[s] == 0: empty), and
    set bit `_filter_bit(key)` of the filter `bits`."""
    mask = keys.shape[0] - 1
    for i in range(cls.shape[0]):
        h = FNV_OFFSET
        for j in range(offsets[i], offsets[i + 1]):
            h = fnv_step(h, blob[j])
        key = _mix(h, cls[i])
        bit = _filter_bit(key, bits)
        bits[bit >> 6] |= np.uint64(1) << np.uint64(bit & 63)
        s = np.int64(key & np.uint64(mask))
        while keys[s] != 0:
            s = (s + 1) & mask
        keys[s] = key
        slot[s] = i


@njit(inline="always")
def _filter_bit(key, bits):
    """The filter bit of a key: its high bits (the table index uses the low ones)."""
    return np.int64(key >> np.uint64(32)) & (bits.shape[0] * 64 - 1)


@njit(inline="always")
def _find(table, key, c, row, a, b):
    """Index of the string row[a:b] with class c in `table` (see `_string_table`), or -1."""
    keys, slot, cls, blob, offsets, bits = table
    bit = _filter_bit(key, bits)
    if not (bits[bit >> 6] >> np.uint64(bit & 63)) & np.uint64(1):
        return -1
    mask = keys.shape[0] - 1
    s = np.int64(key & np.uint64(mask))
    while keys[s] != 0:
        if keys[s] == key:
            i = slot[s]
            o = offsets[i]
            if cls[i] == c and offsets[i + 1] - o == b - a:
                same = True
                for j in range(b - a):
                    if blob[o + j] != row[a + j]:
                        same = False
                        break
                if same:
                    return i
        s = (s + 1) & mask
    return -1


def score_row(row, k, c, want_video, pairs, rel, videos):
    """One class's row of a valid submission: (AP sum, rated entries, video seen).

    row: the `Segments` bytes as uint8 (entries `videoid:start` separated by single
    spaces, already validated); c: the class index. `hash_entries`, then
    `score_hashed` (see there).
    """
    hashes = np.empty(row.shape[0] // 4 + 1, np.uint64)  # an entry takes >= 4 bytes
    ends = np.empty(len(hashes), np.int64)
    n = hash_entries(row, hashes, ends)
    return score_hashed(row, hashes[:n], ends[:n], k, c, want_video, pairs, rel, videos)


@njit
def hash_entries(row, hashes, ends):
    """Entry count of a valid row, each entry's FNV-1a 64 hash in hashes and its end
    offset in ends (as `submission.count_entries` records them, without the checks)."""
    n, i, size = 0, 0, row.shape[0]
    while i < size:
        h = FNV_OFFSET
        while i < size and row[i] != 32:  # " "
            h = fnv_step(h, row[i])
            i += 1
        hashes[n] = h
        ends[n] = i
        n += 1
        i += 1
    return n


@njit
def score_hashed(row, hashes, ends, k, c, want_video, pairs, rel, videos):
    """(AP sum, rated entries, video seen) of a valid row whose entries' hashes and
    ends (n,) are known (from the validator's row pass, or `hash_entries`).

    Over the first k entries, those rated for class c in `pairs` count, in order:
    AP sum = Σ precision@m · rel over them (divide by the class's positives for its
    AP). With want_video, the third value is 1 when some entry's video id is in
    `videos` (the ids are hashed and looked up only until one is found).
    """
    m, hits, seen, a = 0, 0, 0, 0
    ap = 0.0
    for j in range(min(k, hashes.shape[0])):
        b = ends[j]
        if want_video and seen == 0:
            h, i = FNV_OFFSET, a
            while row[i] != 58:  # ":"
                h = fnv_step(h, row[i])
                i += 1
            seen = int(_find(videos, _mix(h, VIDEO_TAG), VIDEO_TAG, row, a, i) >= 0)
        p = _find(pairs, _mix(hashes[j], c), c, row, a, b)
        if p >= 0:
            m += 1
            if rel[p]:
                hits += 1
                ap += hits / m
        a = b + 1
    return ap, m, seen


@dataclass(frozen=True)
class Evaluation:
    """`evaluate_submission`'s result: the MAP and what the pass saw."""

    result: MapResult
    rated_entries: int  # submitted entries (within k) rated for their class
    video_overlap: bool  # some submitted video id is in the truth


def evaluate_submission(path, truth: TruthIndex, k: int, progress: bool | None = None
                        ) -> Evaluation:
    """MAP@k of the submission file `path`, streamed (see the module docstring).

    The file is validated on the way (`iter_submission`, entries counted against
    max(k, DEFAULT_K): the challenge allows 100,000 per class, MAP@k cuts them);
    `SubmissionError` at the first problem. Memory: the truth tables and a few lines.
    """
    ids = segment_class_ids()
    index_of = {int(c): i for i, c in enumerate(ids)}
    ap_sum = np.zeros(len(ids))
    seen = [truth.n_rated == 0]  # stop looking up video ids once one is found

    def work(cid: int, segs: bytes, hashed):  # in `iter_submission`'s worker threads
        row = np.frombuffer(segs, np.uint8)
        if hashed is None:  # the row went the slow way: hash its entries now
            return score_row(row, k, index_of[cid], not seen[0], truth.pairs, truth.rel,
                             truth.videos)
        return score_hashed(row, *hashed, k, index_of[cid], not seen[0], truth.pairs,
                            truth.rel, truth.videos)

    problems = Problems(stop_after=1)
    rated = 0
    for cid, (ap, m, video) in iter_submission(path, max(k, DEFAULT_K), problems, work=work,
                                               progress=progress, desc="evaluate"):
        ap_sum[index_of[cid]] = ap
        rated += m
        seen[0] = seen[0] or bool(video)
    if problems:
        raise SubmissionError(problems.summary(path))
    scored = np.flatnonzero(truth.n_positive)
    per_class = {int(ids[i]): float(ap_sum[i] / truth.n_positive[i]) for i in scored}
    value = float(np.mean(list(per_class.values()))) if per_class else 0.0
    return Evaluation(MapResult(value, k, len(per_class), per_class), rated,
                      seen[0] and truth.n_rated > 0)
