"""`ingest synth`: synthetic YouTube-8M frame-level shards with a learnable planted signal.

Each shard is drawn from its own generator seeded by (seed, split, shard index), so
any shard can be reproduced alone; what the classes look like (the `World` of
`ingest.synth.world`) depends only on `world_seed`, so train, validate and test
shards drawn with different seeds share one world. Per video, in this order:
length, labels, events, frames, ratings. `train` records carry labels, `validate`
records labels and rated segments, `test` records neither; the ratings of test
videos go to `OUT_DIR/truth.parquet`. docs/synth.md describes every choice.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from tqdm import tqdm

from ingest.codec.encode import encode_sequence_example
from ingest.codec.tfrecord import write_tfrecord
from ingest.codec.video import FRAME_BYTES, RGB_BYTES, Video
from ingest.errors import IngestError
from ingest.jit import JIT_ENABLED
from ingest.outputs import folder_problem
from ingest.store.segments import DROP_FIRST_SEGMENTS, DROP_LAST_SEGMENTS, SEGMENT_FRAMES
from ingest.store.truth import TRUTH_SCHEMA
from ingest.synth.world import (
    NOISE_STD,
    World,
    make_world,
    noise_scale,
    render_frames,
    render_frames_np,
)
from ingest.vocab import N_SEGMENT_CLASSES, class_index_of_label, segment_class_ids

SPLITS = ("train", "validate", "test")
MAX_NOISE_STD = 2.0  # the features span [-2, 2]: more noise than that is saturation, not data
_SPLIT_CODE = {"train": 1, "validate": 2, "test": 3}  # enters the shard seed
_ID_PREFIX = {"train": "T", "validate": "V", "test": "X"}
# --short-ids: 4 characters as the real dataset's ids (e.g. "Ab3x"), the video's number in
# the call (shard · videos per shard + i) in base 62, offset per split so that the splits of
# one seed do not share ids. 62^4 = 14,776,336 ids: up to 4.9 M videos per split.
SHORT_ID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SHORT_ID_LENGTH = 4
_SHORT_ID_SPLIT = {"train": 0, "validate": 1, "test": 2}
_SHORT_ID_SPAN = len(SHORT_ID_ALPHABET) ** SHORT_ID_LENGTH // len(_SHORT_ID_SPLIT)

MAX_FRAMES = 300  # at most 300 one-second frames per video (dataset fact)
RATINGS_PER_VIDEO = 5  # ~5 rated segments per rated video (237,788 ratings in the real data)
POSITIVE_RATE = 132_442 / 237_788  # 55.7% of the real ratings are positive
END_TIMES_RATE = 0.5  # share of rated records that also carry segment_end_times
EVENT_RATE = 0.35  # chance that a labelled segment class has its event in a given segment
LABEL_COUNT_P = (0.30, 0.25, 0.20, 0.15, 0.10)  # P(1..5 labels per video)
# --edge-cases: shares of 1-frame, exactly 300-frame and short (< 8 segments) videos.
EDGE_ONE_FRAME, EDGE_FULL, EDGE_SHORT = 0.05, 0.05, 0.10
SHORT_MAX_FRAMES = 8 * SEGMENT_FRAMES - 1  # 39 frames: fewer than 8 segments

TRUTH_FILE = "truth.parquet"
# Without JIT the kernel is a per-value Python loop; its numpy twin gives the same bytes.
_render = render_frames if JIT_ENABLED else render_frames_np


@dataclass(frozen=True)
class SynthConfig:
    """What `ingest synth` writes. `split` is used by `write_synth`."""

    out_dir: str = "."
    split: str = "train"
    shards: int = 1
    videos_per_shard: int = 100
    seed: int = 0
    world_seed: int = 0  # fixes what classes look like; keep it equal across splits
    min_frames: int = 120
    max_frames: int = MAX_FRAMES
    edge_cases: bool = False  # mix in 1-frame, 300-frame and < 40-frame videos
    beyond_end_rate: float = 0.0  # validate: share of rated videos with a rating past the end
    classes: int = N_SEGMENT_CLASSES  # segment classes in use: the most popular N (docs/synth.md)
    noise_std: float = NOISE_STD  # frame noise per value (docs/synth.md, "Signal strength")
    short_ids: bool = False  # 4-character video ids, as the real dataset's (`short_id`)

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise IngestError(f"--split must be one of {', '.join(SPLITS)}, not {self.split!r}")
        if self.shards < 1 or self.videos_per_shard < 0:
            raise IngestError("--shards must be >= 1 and --videos-per-shard >= 0")
        if not 1 <= self.min_frames <= self.max_frames <= MAX_FRAMES:
            raise IngestError(f"need 1 <= --min-frames <= --max-frames <= {MAX_FRAMES}, "
                              f"got {self.min_frames}..{self.max_frames}")
        if not 0.0 <= self.beyond_end_rate <= 1.0:
            raise IngestError("--beyond-end-rate must be within [0, 1]")
        if self.seed < 0 or self.world_seed < 0:
            raise IngestError("seeds must be >= 0")
        if not 2 <= self.classes <= N_SEGMENT_CLASSES:
            raise IngestError(f"--classes must be within 2..{N_SEGMENT_CLASSES}")
        if not 0.0 <= self.noise_std <= MAX_NOISE_STD:
            raise IngestError(f"--noise-std must be within [0, {MAX_NOISE_STD}]")
        if self.short_ids and self.shards * self.videos_per_shard > _SHORT_ID_SPAN:
            raise IngestError(f"--short-ids: at most {_SHORT_ID_SPAN:,} videos per call, "
                              f"got {self.shards * self.videos_per_shard:,}")


@dataclass(frozen=True)
class Ratings:
    """The rated segments of one video (also drawn for test videos, which do not carry them)."""

    start_times: np.ndarray  # (r,) int64, multiples of 5
    labels: np.ndarray  # (r,) int64 vocabulary ids
    scores: np.ndarray  # (r,) float32, 1.0 / 0.0
    with_end_times: bool  # the record also carries segment_end_times = start + 5


def shard_name(split: str, index: int, shards: int) -> str:
    return f"{split}-{index:05d}-of-{shards:05d}.tfrecord"


def shard_rng(config: SynthConfig, split: str, shard_index: int) -> np.random.Generator:
    """The generator of one shard: a function of (seed, split, shard index) only."""
    return np.random.default_rng(
        np.random.SeedSequence([config.seed, _SPLIT_CODE[split], shard_index]))


def _draw_length(rng: np.random.Generator, config: SynthConfig) -> int:
    u = rng.random()
    if config.edge_cases:
        if u < EDGE_ONE_FRAME:
            return 1
        if u < EDGE_ONE_FRAME + EDGE_FULL:
            return MAX_FRAMES
        if u < EDGE_ONE_FRAME + EDGE_FULL + EDGE_SHORT:
            return int(rng.integers(2, SHORT_MAX_FRAMES + 1))
    return int(rng.integers(config.min_frames, config.max_frames + 1))


def popular_classes(world: World, n: int) -> np.ndarray:
    """(1000,) bool: the world's n most popular segment classes (by label frequency)."""
    weight = np.diff(world.segment_cdf, prepend=0.0)
    keep = np.zeros(len(weight), bool)
    keep[np.argsort(-weight, kind="stable")[:n]] = True
    return keep


def _draw_labels(rng: np.random.Generator, world: World, in_use: np.ndarray) -> np.ndarray:
    """(k,) int64 vocabulary ids, k in 1..5; the first is a segment class; no two partners;
    no segment class outside `in_use (1000,)` bool."""
    k = 1 + int(rng.choice(len(LABEL_COUNT_P), p=LABEL_COUNT_P))
    first = int(np.searchsorted(world.segment_cdf, rng.random(), side="right"))
    while not in_use[first]:  # the first label again, until it is a class in use
        first = int(np.searchsorted(world.segment_cdf, rng.random(), side="right"))
    labels = [int(segment_class_ids()[first])]
    cls_of = class_index_of_label()
    taken = {first}
    for _ in range(8 * k):  # bounded retries; frequent duplicates just shorten the list
        if len(labels) == k:
            break
        lab = int(np.searchsorted(world.vocab_cdf, rng.random(), side="right"))
        c = int(cls_of[lab])
        if lab in labels or (c >= 0 and (int(world.partner[c]) in taken or not in_use[c])):
            continue
        labels.append(lab)
        if c >= 0:
            taken.add(c)
    return np.array(labels, np.int64)


def _draw_events(rng: np.random.Generator, world: World, classes: np.ndarray, n_seg: int,
                 seg_add: np.ndarray) -> np.ndarray:
    """Event segments of each labelled segment class; fills seg_add[:n_seg] (n_seg, 1152).

    Returns (len(classes), n_seg) bool: class j has its event in segment s.
    """
    present = rng.random((len(classes), n_seg)) < EVENT_RATE
    seg_add[:n_seg] = 0.0
    for j, c in enumerate(classes):
        seg_add[:n_seg][present[j]] += world.pattern[c]
    return present


def ratable_segments(n_frames: int) -> np.ndarray:
    """Segment indices that may be rated: 6 .. n_frames // 5 - 3.

    Only whole segments, so this is a subset of the candidates 6 .. ceil(n / 5) - 3
    of `ingest.segments.candidates`.
    """
    last = n_frames // SEGMENT_FRAMES - DROP_LAST_SEGMENTS
    return np.arange(DROP_FIRST_SEGMENTS, last, dtype=np.int64)


def _draw_ratings(rng: np.random.Generator, classes: np.ndarray, present: np.ndarray,
                  n_frames: int, beyond_end_rate: float) -> Ratings | None:
    """About 5 rated segments of one labelled segment class, ~56% positive; None if none ratable."""
    ok = ratable_segments(n_frames)
    if len(classes) == 0 or len(ok) == 0:
        return None
    j = int(rng.integers(len(classes)))
    pos, neg = ok[present[j, ok]], ok[~present[j, ok]]
    m = min(RATINGS_PER_VIDEO, len(ok))
    n_pos = min(int(rng.binomial(m, POSITIVE_RATE)), len(pos))
    n_neg = min(m - n_pos, len(neg))
    n_pos = min(m - n_neg, len(pos))
    seg = np.concatenate([rng.choice(pos, n_pos, replace=False),
                          rng.choice(neg, n_neg, replace=False)])
    score = np.concatenate([np.ones(n_pos, np.float32), np.zeros(n_neg, np.float32)])
    if rng.random() < beyond_end_rate:  # like a few real records: a start past the end
        past = -(-n_frames // SEGMENT_FRAMES) + int(rng.integers(0, 10))
        seg = np.append(seg, past)
        score = np.append(score, np.float32(rng.random() < POSITIVE_RATE))
    order = np.argsort(seg, kind="stable")
    label = segment_class_ids()[classes[j]]
    return Ratings(start_times=seg[order] * SEGMENT_FRAMES,
                   labels=np.full(len(seg), label, np.int64),
                   scores=score[order].astype(np.float32),
                   with_end_times=bool(rng.random() < END_TIMES_RATE))


def _as_record(vid: str, split: str, labels: np.ndarray, frames: np.ndarray,
               ratings: Ratings | None) -> Video:
    v = Video(vid, rgb=frames[:, :RGB_BYTES], audio=frames[:, RGB_BYTES:])
    if split == "test":
        return v
    v.labels = labels
    if split == "validate" and ratings is not None:
        v.segment_labels = ratings.labels
        v.segment_start_times = ratings.start_times
        v.segment_scores = ratings.scores
        if ratings.with_end_times:
            v.segment_end_times = ratings.start_times + SEGMENT_FRAMES
    return v


def iter_shard(config: SynthConfig, split: str,
               shard_index: int) -> Iterator[tuple[Video, Ratings | None]]:
    """Yield (record as written for `split`, the video's ratings) for each video of a shard.

    Frames are fresh arrays per video; rgb and audio are views of one (n, 1152) array.
    """
    world = make_world(config.world_seed)
    rng = shard_rng(config, split, shard_index)
    seg_add = np.zeros((-(-MAX_FRAMES // SEGMENT_FRAMES), FRAME_BYTES), np.float32)
    cls_of = class_index_of_label()
    rate = config.beyond_end_rate if split == "validate" else 0.0
    in_use = popular_classes(world, config.classes)
    scale = noise_scale(config.noise_std)
    for i in range(config.videos_per_shard):
        n = _draw_length(rng, config)
        labels = _draw_labels(rng, world, in_use)
        classes = cls_of[labels]
        classes = classes[classes >= 0].astype(np.int64)
        n_seg = -(-n // SEGMENT_FRAMES)
        present = _draw_events(rng, world, classes, n_seg, seg_add)
        topic = world.topic[labels].sum(axis=0)
        noise = rng.integers(0, 256, size=(n, FRAME_BYTES, 2), dtype=np.uint8)
        frames = np.empty((n, FRAME_BYTES), np.uint8)
        _render(topic, seg_add[:n_seg], noise, scale, frames)
        ratings = _draw_ratings(rng, classes, present, n, rate)
        vid = video_id(config, split, shard_index, i)
        yield _as_record(vid, split, labels, frames, ratings), ratings


def video_id(config: SynthConfig, split: str, shard_index: int, i: int) -> str:
    """The id of video `i` of shard `shard_index`: `X0_00003_00017` (split, seed, shard,
    video), or with `short_ids` 4 characters unique within the call and its split."""
    if not config.short_ids:
        return f"{_ID_PREFIX[split]}{config.seed}_{shard_index:05d}_{i:05d}"
    return short_id(_SHORT_ID_SPLIT[split] * _SHORT_ID_SPAN
                    + shard_index * config.videos_per_shard + i)


def short_id(number: int) -> str:
    """`number` (0 ≤ n < 62^4) as 4 base-62 characters, most significant first."""
    chars = []
    for _ in range(SHORT_ID_LENGTH):
        number, digit = divmod(number, len(SHORT_ID_ALPHABET))
        chars.append(SHORT_ID_ALPHABET[digit])
    return "".join(reversed(chars))


def synth_shard(config: SynthConfig, split: str, shard_index: int) -> list[Video]:
    """The records of one shard, exactly as `write_synth` writes them."""
    return [v for v, _ in iter_shard(config, split, shard_index)]


def truth_table(rows: list[tuple[str, Ratings]]) -> pl.DataFrame:
    """Truth table (docs/formats.md, `ingest.truth.TRUTH_SCHEMA`) of (video id, ratings) pairs."""
    def cat(key: str, dtype) -> np.ndarray:
        arrs = [getattr(r, key) for _, r in rows]
        return np.concatenate(arrs).astype(dtype) if arrs else np.zeros(0, dtype)

    labels = cat("labels", np.int32)
    return pl.DataFrame({
        "video_id": [vid for vid, r in rows for _ in range(len(r.labels))],
        "start_time": cat("start_times", np.int32),
        "label": labels,
        "class_index": class_index_of_label()[labels].astype(np.int16),
        "score": cat("scores", np.float32),
    }, schema=TRUTH_SCHEMA)


def shard_truth(config: SynthConfig, shard_index: int) -> pl.DataFrame:
    """The truth table of one test shard (what `truth.parquet` holds for it)."""
    return truth_table([(v.id, r) for v, r in iter_shard(config, "test", shard_index)
                        if r is not None])


def _write_parquet_atomic(table: pl.DataFrame, path: Path) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        table.write_parquet(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def output_paths(config: SynthConfig) -> list[Path]:
    """The files `write_synth` writes for `config`: its shards, then `truth.parquet` (test)."""
    out = Path(config.out_dir)
    paths = [out / shard_name(config.split, k, config.shards) for k in range(config.shards)]
    return paths + ([out / TRUTH_FILE] if config.split == "test" else [])


def write_synth(config: SynthConfig, progress: bool = True,
                overwrite: bool = True) -> list[Path]:
    """Write `config.shards` shards of `config.split` into `config.out_dir`; returns the paths
    (`output_paths`).

    For `test`, also writes `truth.parquet` covering every shard written (last in the list).
    Each file is written to a temporary name and renamed when complete. With
    `overwrite=False` (`ingest synth` without `--overwrite`), IngestError naming the first
    of those files that exists already, before anything is written.
    """
    out = Path(config.out_dir)
    existing = [p for p in output_paths(config) if p.exists()]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more of the files to write)" if existing[1:] else ""
        raise IngestError(f"{existing[0]}: exists already{more}; give --overwrite to replace "
                          "them, or another OUT_DIR")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a read-only file system, a parent that is a file
        raise IngestError(f"{out}: cannot create the folder ({err.strerror or err}: "
                          f"{err.filename})") from None
    first = output_paths(config)[0]
    if (problem := folder_problem(first)) is not None:  # an existing read-only folder
        raise IngestError(f"{first}: {problem}")
    paths, truth = [], []
    bar = tqdm(total=config.shards * config.videos_per_shard, unit="video",
               desc=f"synth {config.split}", disable=not progress)

    def records(k: int) -> Iterator[bytes]:
        for v, r in iter_shard(config, config.split, k):
            if config.split == "test" and r is not None:
                truth.append((v.id, r))
            bar.update(1)
            yield encode_sequence_example(v)

    with bar:
        for k in range(config.shards):
            path = out / shard_name(config.split, k, config.shards)
            write_tfrecord(path, records(k))
            paths.append(path)
    if config.split == "test":
        path = out / TRUTH_FILE
        _write_parquet_atomic(truth_table(truth), path)
        paths.append(path)
    return paths
