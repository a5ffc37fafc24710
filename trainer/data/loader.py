"""The streaming loader: a store → batches on the device (docs/loader.md).

    loader = Loader(store, LoaderConfig(kind="video", batch_size=128, max_len=150))
    for batch in loader:            # one epoch from the current position
        ...                         # batch: VideoBatch of tensors on config.device
    loader.state_dict()             # {"epoch", "batch", ...}: resume exactly here

Per epoch (`plan`): the samples of the chosen folds in a shuffled order of part-chunk
groups with a shuffle buffer (training) or in store order (evaluation), padded to whole
global batches and dealt to DDP ranks (trainer/data/sampling.py). Batch b of a rank is
filled by loader thread `b % threads` with numba gathers (nogil) into host slot
`b % slots`; the consumer takes batches in order. On CUDA the slots are pinned and each
batch is copied with `non_blocking=True` on a side stream, `batches_ahead` batches
ahead, fenced by an event that the compute stream waits on; a slot is refilled only
after its copy completed. On CPU the yielded tensors are views of the slot, valid
until the next batch is requested (as FFCV's).
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ingest.store import Store
from ingest.store.segments import (
    DROP_FIRST_SEGMENTS,
    DROP_LAST_SEGMENTS,
    SEGMENT_FRAMES,
)
from trainer.data import gather as G
from trainer.data.batches import BATCH_TYPES, KINDS, PACKED, SPECS, HostSlot, unpack_bits
from trainer.data.index import StoreIndex
from trainer.data.sampling import (
    SALT_CONTEXT,
    SALT_FRAMES,
    SALT_SUBSET,
    epoch_order,
    partition,
    sample_keys,
    stream_key,
)
from trainer.errors import TrainerError

MAX_FRAMES = 300  # the dataset's longest video (frames at 1/s): the buffers' L when Lm = ∞


class LoaderError(TrainerError):
    """A store or a configuration that cannot give the batches asked for."""


@dataclass(frozen=True)
class LoaderConfig:
    """What to load. `max_len` is Lm (None = whole videos, paper Table 1 "∞")."""

    kind: str = "video"  # one of KINDS
    batch_size: int = 128
    max_len: int | None = 150
    pad_to_max_len: bool = False  # pad to Lm instead of the batch's longest video
    train: bool = True  # shuffle and sample at random; False: store order, evenly spaced
    folds: tuple[int, ...] | None = None  # folds to read; None: all
    seed: int = 0
    threads: int = 2
    batches_ahead: int = 2
    group_size: int = 64  # consecutive samples of a part read together (epoch order)
    shuffle_buffer: int = 4096
    skip_unlabelled: bool = True  # video kind: leave out videos with no segment class
    drop_last: bool = False  # drop the remainder instead of padding with flagged repeats
    with_context: bool = False  # candidates: also the videos' contexts (aware models)
    max_videos: int | None = None  # at most N videos: a fixed subset (`_limit_videos`)
    world_size: int = 1
    rank: int = 0
    device: str = "cpu"

    def check(self) -> None:
        if self.kind not in KINDS:
            raise LoaderError(f"unknown batch kind {self.kind!r}; kinds: {', '.join(KINDS)}")
        if self.max_len is not None and self.max_len < 1:
            raise LoaderError(f"max length Lm must be at least 1 (or None for whole videos), "
                              f"got {self.max_len}")
        if self.max_videos is not None and self.max_videos < 1:
            raise LoaderError(f"at most N videos: N must be at least 1, got {self.max_videos}")
        if self.batch_size < 1 or self.threads < 1 or self.batches_ahead < 1:
            raise LoaderError("batch size, threads and batches ahead must be at least 1")
        if not 0 <= self.rank < self.world_size:
            raise LoaderError(f"rank {self.rank} is not in 0..{self.world_size - 1}")

    @property
    def frames_cap(self) -> int:
        return MAX_FRAMES if self.max_len is None else self.max_len


def context_span(n_frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frames `[lo, hi)` of a video's context (paper §3.9): the video without its first 6
    and last 2 segments; a video too short to keep any frame keeps them all."""
    n = np.asarray(n_frames, np.int64)
    n_seg = -(-n // SEGMENT_FRAMES)
    lo = np.full_like(n, DROP_FIRST_SEGMENTS * SEGMENT_FRAMES)
    hi = np.minimum(n, (n_seg - DROP_LAST_SEGMENTS) * SEGMENT_FRAMES)
    short = hi <= lo
    return np.where(short, 0, lo), np.where(short, n, hi)


@dataclass
class _Plan:
    """One epoch of one rank: `rows (n_batches, B)` sample ids, `valid` flags; candidate
    plans have `bounds (n_batches + 1,)` into `rows` instead (batches of whole videos)."""

    rows: np.ndarray
    valid: np.ndarray
    bounds: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows) if self.bounds is None else len(self.bounds) - 1

    def batch(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        if self.bounds is None:
            return self.rows[b], self.valid[b]
        a, z = self.bounds[b], self.bounds[b + 1]
        return self.rows[a:z], self.valid[a:z]


class Loader:
    """Batches of one kind from a store (see the module docstring)."""

    def __init__(self, store: Store | StoreIndex | str | Path, config: LoaderConfig):
        config.check()
        self.config = config
        self.index = store if isinstance(store, StoreIndex) else StoreIndex.build(store)
        self.device = torch.device(config.device)
        self.samples = self._samples()
        if config.kind in ("segment", "aware"):  # read once here, not first in a loader thread
            self.index.windows, self.index.negatives  # noqa: B018 - cached on first access
        self.epoch, self.position = 0, 0
        self._plan_cache: tuple[int, _Plan] | None = None
        pin = self.device.type == "cuda"
        capacity = {"B": config.batch_size, "L": config.frames_cap, "V": config.batch_size}
        self._slot_capacity = capacity
        self._n_slots = config.threads + config.batches_ahead + 1
        self._slots = [HostSlot(config.kind, capacity, pin, skip=self._unused_fields())
                       for _ in range(self._n_slots)]
        self._stream = torch.cuda.Stream(self.device) if pin else None

    # ------------------------------------------------------------ what an epoch holds
    def _unused_fields(self) -> tuple[str, ...]:
        if self.config.kind == "candidates" and not self.config.with_context:
            return ("context", "context_mask", "context_rows")
        return ()

    def _where(self) -> str:
        folds = self.config.folds
        return str(self.index.store.path) + ("" if folds is None else f" (folds {list(folds)})")

    def _video_filter(self) -> np.ndarray:
        ix, folds = self.index, self.config.folds
        keep = np.ones(ix.n_videos, bool) if folds is None else np.isin(ix.fold, folds)
        if folds is not None and not keep.any():
            raise LoaderError(f"{self.index.store.path}: no video in folds {list(folds)} "
                              f"(the store's folds: {sorted(set(ix.fold.tolist()))})")
        return keep

    def _samples(self) -> np.ndarray:
        """Sample ids in store order: video rows, segment rows or candidate rows."""
        ix, kind = self.index, self.config.kind
        keep = self._video_filter()
        if kind == "video":
            keep &= ix.n_frames > 0
            if self.config.skip_unlabelled:
                keep &= ix.labelled_videos()
            out = np.nonzero(keep)[0]
            what = "labelled videos" if self.config.skip_unlabelled else "videos with frames"
        elif kind in ("segment", "aware"):
            out = np.nonzero(ix.seg_usable & keep[ix.seg_video])[0]
            what = ("rated segments (segment batches need a store of frame-level shards "
                    "with segment ratings, such as validate)")
        else:
            out = np.arange(len(ix.cand_video))
            what = "candidate segments (videos of more than 40 frames)"
        if len(out) == 0:
            raise LoaderError(f"{self._where()}: no {what}")
        if kind != "candidates":
            out = self._limit_videos(out, out if kind == "video" else ix.seg_video[out])
        return out.astype(np.int64)

    def _limit_videos(self, samples: np.ndarray, videos: np.ndarray) -> np.ndarray:
        """The samples `(n,)` of at most `max_videos` of their `videos (n,)`: the videos of
        smallest key under a fixed stream (not the run's seed), so the subset is the same
        for every run, rank and epoch of a store (bounded evaluation, docs/training.md)."""
        limit = self.config.max_videos
        unique = np.unique(videos)
        if limit is None or len(unique) <= limit:
            return samples
        keys = sample_keys(stream_key(0, 0, SALT_SUBSET), unique)
        chosen = unique[np.argsort(keys, kind="stable")[:limit]]
        return samples[np.isin(videos, chosen)]

    def _sample_parts(self) -> np.ndarray:
        ix = self.index
        if self.config.kind == "video":
            return ix.video_part[self.samples]
        return ix.seg_part[self.samples]

    def plan(self, epoch: int) -> _Plan:
        """The batches of `epoch` for this rank (cached for the current epoch)."""
        if self._plan_cache is not None and self._plan_cache[0] == epoch:
            return self._plan_cache[1]
        c = self.config
        if c.kind == "candidates":
            plan = self._candidate_plan()
        else:
            order = self.samples
            if c.train:
                order = epoch_order(self.samples, self._sample_parts(), c.seed, epoch,
                                    c.group_size, c.shuffle_buffer)
            rows, valid = partition(order, c.batch_size, c.world_size, c.rank, c.drop_last)
            if len(rows) == 0:
                raise LoaderError(f"{self._where()}: {len(order)} samples, fewer than one "
                                  f"global batch of {c.batch_size * c.world_size} with drop_last")
            plan = _Plan(rows, valid)
        self._plan_cache = (epoch, plan)
        return plan

    def _candidate_plan(self) -> _Plan:
        """Batches of whole videos (at most B candidates, at least one video) in store order,
        the same whatever the world size; rank r takes a contiguous run of them holding
        about N / W candidates (so W ranks compute exactly the batches one process does)."""
        c, video = self.config, self.index.cand_video
        starts = np.nonzero(np.concatenate([[True], video[1:] != video[:-1]]))[0]
        ends = np.append(starts[1:], len(video))
        bounds, a = [0], 0  # start of each batch, then the end of the last
        for s, e in zip(starts.tolist(), ends.tolist()):
            if e - a > c.batch_size and s > a:  # this video does not fit: next batch
                a = s
                bounds.append(a)
            while e - a > c.batch_size:  # a video of more candidates than B (B < 53)
                a += c.batch_size
                bounds.append(a)
        if len(video):
            bounds.append(len(video))
        bounds = np.asarray(bounds, np.int64)
        cuts = np.searchsorted(bounds, np.arange(c.world_size + 1) * len(video) / c.world_size)
        cuts[-1] = len(bounds) - 1
        mine = bounds[cuts[c.rank]:cuts[c.rank + 1] + 1]
        rows = np.arange(len(video), dtype=np.int64)
        return _Plan(rows, np.ones(len(video), bool), mine)

    def __len__(self) -> int:
        """Batches per epoch for this rank."""
        return len(self.plan(self.epoch))

    # ------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """The position of the next batch: {"epoch", "batch"} plus the config it holds for."""
        return {"epoch": self.epoch, "batch": self.position, "config": asdict(self.config)}

    def load_state_dict(self, state: dict) -> None:
        mine = asdict(self.config)
        theirs = state.get("config", {})
        for key in ("kind", "seed", "batch_size", "world_size", "folds", "train"):  # any rank
            if key in theirs and _norm(theirs[key]) != _norm(mine[key]):
                raise LoaderError(f"loader state is for {key} = {theirs[key]}, "
                                  f"this loader has {mine[key]}")
        self.epoch, self.position = int(state["epoch"]), int(state["batch"])

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.position = epoch, 0

    # ------------------------------------------------------------ iteration
    def __iter__(self):
        """The rest of the current epoch; afterwards the position moves to the next epoch."""
        plan = self.plan(self.epoch)
        yield from self._run(plan, self.position)
        self.epoch, self.position = self.epoch + 1, 0

    def forever(self):
        """Batches across epochs without end (step-based training loops)."""
        while True:
            yield from self

    def _run(self, plan: _Plan, start: int):
        n = len(plan)
        if start >= n:
            return
        cond = threading.Condition()
        state = {"released": start - 1, "ready": {}, "stop": False, "error": None}
        epoch = self.epoch

        def worker(t: int) -> None:
            try:
                for b in range(start + t, n, self.config.threads):
                    with cond:
                        cond.wait_for(lambda b=b: state["stop"] or b - self._n_slots <= state["released"])
                        if state["stop"]:
                            return
                    dims = self._fill(self._slots[b % self._n_slots], plan, b, epoch)
                    with cond:
                        state["ready"][b % self._n_slots] = (b, dims)
                        cond.notify_all()
            except BaseException as err:  # noqa: BLE001 - handed to the consumer
                with cond:
                    state["error"] = err
                    cond.notify_all()

        def host_batch(b: int) -> dict:
            with cond:
                cond.wait_for(lambda: state["error"] is not None
                              or state["ready"].get(b % self._n_slots, (-1,))[0] == b)
                if state["error"] is not None:
                    raise state["error"]
                return state["ready"][b % self._n_slots][1]

        def release(b: int) -> None:
            with cond:
                state["released"] = b
                cond.notify_all()

        threads = [threading.Thread(target=worker, args=(t,), daemon=True, name=f"loader-{t}")
                   for t in range(min(self.config.threads, n - start))]
        for th in threads:
            th.start()
        issued: deque = deque()  # CUDA: (b, batch, event) copies in flight
        try:
            for b in range(start, n):
                if self._stream is None:
                    batch = self._to_tensors(self._slots[b % self._n_slots], host_batch(b))
                    self.position = b + 1
                    yield batch
                    release(b)
                    continue
                while len(issued) < self.config.batches_ahead and (
                        not issued or issued[-1][0] + 1 < n):
                    nb = issued[-1][0] + 1 if issued else b
                    issued.append((nb, *self._copy(self._slots[nb % self._n_slots],
                                                   host_batch(nb))))
                b0, batch, event = issued.popleft()
                torch.cuda.current_stream(self.device).wait_event(event)
                for f in vars(batch).values():
                    if isinstance(f, torch.Tensor):
                        f.record_stream(torch.cuda.current_stream(self.device))
                event.synchronize()  # the host slot's bytes are on the device: refill it
                release(b0)
                self.position = b0 + 1
                yield batch
        finally:
            with cond:
                state["stop"] = True
                cond.notify_all()
            for th in threads:
                th.join()

    # ------------------------------------------------------------ to tensors / device
    def _to_tensors(self, slot: HostSlot, dims: dict) -> object:
        """CPU: tensors over the slot's buffers, packed fields over the slot's unpacked
        copies (the loader thread's numba unpack: torch's bit ops on these small CPU tensors
        wake its intra-op thread pool, ~100x the unpack itself on a few cores shared with
        the loader threads; numpy's unpack allocates per batch: benchmarks/RESULTS.md
        `## loader`)."""
        out = {}
        for name in SPECS[self.config.kind]:
            if name in slot.buffers:
                view = slot.unpacked_view(name, dims) if name in PACKED else slot.view(name, dims)
                out[name] = torch.from_numpy(view)
        return BATCH_TYPES[self.config.kind](**out)

    def _copy(self, slot: HostSlot, dims: dict):
        """CUDA: copy the slot to the device on the side stream; (batch, event)."""
        with torch.cuda.stream(self._stream):
            out = {}
            for name in SPECS[self.config.kind]:
                if name in slot.buffers:
                    t = torch.from_numpy(slot.view(name, dims)).to(self.device, non_blocking=True)
                    out[name] = unpack_bits(t) if name in PACKED else t
            event = torch.cuda.Event()
            event.record(self._stream)
        return BATCH_TYPES[self.config.kind](**out), event

    # ------------------------------------------------------------ fills (loader threads)
    def _fill(self, slot: HostSlot, plan: _Plan, b: int, epoch: int) -> dict:
        rows, valid = plan.batch(b)
        dims = getattr(self, f"_fill_{self.config.kind}")(slot, rows, valid, epoch)
        for name in slot.unpacked:  # CPU slots: unpacked here, in the loader thread
            G.unpack_bits_kernel(slot.view(name, dims), slot.unpacked_view(name, dims))
        return dims

    def _frames_into(self, slot, prefix, video, lo, hi, keys, dims, even):
        ix, f = self.index, self.index.frames
        part, offset = ix.video_part[video], ix.frame_offset[video]
        with f.reading(lambda: (part, offset + lo, offset + hi - 1)):
            G.gather_frames_kernel(
                f.addr, f.file_base, f.shard_rows, part, offset, lo, hi, keys,
                self.config.frames_cap, even, slot.view(prefix, dims),
                slot.view(f"{prefix}_mask" if prefix == "context" else "mask", dims),
                np.empty(len(video), np.int64))

    def _padded_len(self, lengths: np.ndarray) -> int:
        c = self.config
        if c.pad_to_max_len:
            return c.frames_cap
        return max(1, int(np.minimum(lengths, c.frames_cap).max()))

    def _rows_and_valid(self, slot, dims, rows, valid):
        slot.view("rows", dims)[:] = rows
        slot.view("valid", dims)[:] = valid

    def _fill_video(self, slot, rows, valid, epoch) -> dict:
        ix = self.index
        n = ix.n_frames[rows]
        dims = {"B": len(rows), "L": self._padded_len(n)}
        keys = sample_keys(stream_key(self.config.seed, epoch, SALT_FRAMES), rows)
        self._frames_into(slot, "frames", rows, np.zeros_like(n), n, keys, dims,
                          not self.config.train)
        G.pack_classes_kernel(ix.label_offsets, ix.label_classes, rows, slot.view("labels", dims))
        self._rows_and_valid(slot, dims, rows, valid)
        return dims

    def _fill_segment(self, slot, rows, valid, epoch, dims=None) -> dict:
        ix = self.index
        dims = dims or {"B": len(rows)}
        w = ix.windows
        with w.reading(lambda: (ix.seg_part[rows], ix.seg_window[rows], ix.seg_window[rows])):
            G.fill_segment_kernel(w.addr, w.file_base, w.shard_rows, ix.seg_part, ix.seg_window,
                                  ix.seg_class, ix.seg_score, ix.seg_video, ix.negatives, rows,
                                  slot.view("windows", dims).reshape(len(rows), -1),
                                  slot.view("class_index", dims), slot.view("score", dims),
                                  slot.view("negatives", dims))
        self._rows_and_valid(slot, dims, rows, valid)
        return dims

    def _fill_aware(self, slot, rows, valid, epoch) -> dict:
        video = self.index.seg_video[rows]
        lo, hi = context_span(self.index.n_frames[video])
        dims = {"B": len(rows), "L": self._padded_len(hi - lo)}
        self._fill_segment(slot, rows, valid, epoch, dims)
        keys = sample_keys(stream_key(self.config.seed, epoch, SALT_CONTEXT), rows)
        self._frames_into(slot, "context", video, lo, hi, keys, dims, not self.config.train)
        return dims

    def _fill_candidates(self, slot, rows, valid, epoch) -> dict:
        ix = self.index
        video = ix.cand_video[rows]
        first = np.concatenate([[True], video[1:] != video[:-1]])
        videos = video[first]
        dims = {"B": len(rows), "V": len(videos), "L": 1}
        f = ix.frames
        part, offset = ix.video_part[video], ix.frame_offset[video]
        lo, hi = ix.cand_lo[rows], ix.cand_hi[rows]
        with f.reading(lambda: (part, offset + lo, offset + hi - 1)):
            G.gather_windows_kernel(f.addr, f.file_base, f.shard_rows, part, offset, lo, hi,
                                    ix.cand_pad_left[rows], slot.view("windows", dims))
        slot.view("video_slot", dims)[:] = np.cumsum(first) - 1
        self._rows_and_valid(slot, dims, rows, valid)
        if self.config.with_context:
            lo, hi = context_span(ix.n_frames[videos])
            dims["L"] = self._padded_len(hi - lo)
            self._frames_into(slot, "context", videos, lo, hi, np.zeros(len(videos), np.uint64),
                              dims, even=True)  # prediction: the evaluation rule
            slot.view("context_rows", dims)[:] = videos
        return dims


def _norm(value):
    return list(value) if isinstance(value, tuple) else value


def eval_config(config: LoaderConfig, **changes) -> LoaderConfig:
    """The evaluation twin of a training config: store order, evenly spaced frames, all
    samples (padding flagged)."""
    return replace(config, train=False, drop_last=False, **changes)
