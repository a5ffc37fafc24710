"""In-memory forms of YouTube-8M records.

`Video` is one record as a writer sees it (one object per video, used by
`ingest synth`, the tests and the benchmarks). `DecodedShard` is what the decoder
produces: a whole shard in columnar arrays (the arrays may be views into reused
buffers, so copy what must outlive the next decode). Both forms are documented in
docs/formats.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

RGB_BYTES = 1024  # bytes per frame of the `rgb` feature list (dataset fact)
AUDIO_BYTES = 128  # bytes per frame of the `audio` feature list (dataset fact)
FRAME_BYTES = RGB_BYTES + AUDIO_BYTES  # one stored frame: rgb ‖ audio


@dataclass
class Video:
    """One YouTube-8M record.

    Frame-level (`tf.train.SequenceExample`): `rgb` (n, 1024) uint8 and `audio`
    (n, 128) uint8; segment fields optional. Video-level (`tf.train.Example`):
    `mean_rgb` (1024,) float32 and `mean_audio` (128,) float32 instead of frames.
    A field that is None is absent from the record (test records have no `labels`).
    """

    id: str
    labels: np.ndarray | None = None  # (n_labels,) int64, 3862-vocabulary ids
    rgb: np.ndarray | None = None  # (n_frames, 1024) uint8
    audio: np.ndarray | None = None  # (n_frames, 128) uint8
    segment_labels: np.ndarray | None = None  # (n_seg,) int64
    segment_start_times: np.ndarray | None = None  # (n_seg,) int64, seconds
    segment_end_times: np.ndarray | None = None  # (n_seg,) int64, seconds
    segment_scores: np.ndarray | None = None  # (n_seg,) float32, 0.0 or 1.0
    mean_rgb: np.ndarray | None = None  # (1024,) float32
    mean_audio: np.ndarray | None = None  # (128,) float32

    @property
    def is_frame_level(self) -> bool:
        return self.mean_rgb is None

    @property
    def n_frames(self) -> int:
        return 0 if self.rgb is None else int(self.rgb.shape[0])


@dataclass
class DecodedShard:
    """A shard decoded into columns. V videos, F frames, L labels, S rated segments.

    Ragged fields use offsets: the frames of video i are
    `frames[frame_offsets[i]:frame_offsets[i + 1]]`, likewise labels and segments.
    """

    path: str
    kind: str  # "frame" (SequenceExample) or "video" (Example)
    ids: list[str]  # (V,)
    record_offsets: np.ndarray  # (V,) int64: byte offset of each record's header in the file
    frame_offsets: np.ndarray  # (V+1,) int64
    frames: np.ndarray  # (F, 1152) uint8, rgb ‖ audio; (0, 1152) for video-level shards
    has_labels: np.ndarray  # (V,) bool: the record had a `labels` key
    label_offsets: np.ndarray  # (V+1,) int64
    labels: np.ndarray  # (L,) int64, in record order
    segment_offsets: np.ndarray  # (V+1,) int64
    segment_labels: np.ndarray  # (S,) int64
    segment_start_times: np.ndarray  # (S,) int64
    segment_end_times: np.ndarray  # (S,) int64; -1 where the record has no end times
    segment_scores: np.ndarray  # (S,) float32
    mean_rgb: np.ndarray = field(default_factory=lambda: np.zeros((0, RGB_BYTES), np.float32))
    mean_audio: np.ndarray = field(default_factory=lambda: np.zeros((0, AUDIO_BYTES), np.float32))
    # records left out by on_error="skip-record": (record number, header byte offset, reason)
    skipped: list[tuple[int, int, str]] = field(default_factory=list)

    @property
    def n_videos(self) -> int:
        return len(self.ids)

    def video(self, i: int) -> Video:
        """Video i as a `Video` (copies; for tests and small tools, not hot paths)."""
        lab = self.labels[self.label_offsets[i] : self.label_offsets[i + 1]].copy()
        s0, s1 = self.segment_offsets[i], self.segment_offsets[i + 1]
        if self.kind == "video":
            return Video(self.ids[i], lab if self.has_labels[i] else None,
                         mean_rgb=self.mean_rgb[i].copy(), mean_audio=self.mean_audio[i].copy())
        fr = self.frames[self.frame_offsets[i] : self.frame_offsets[i + 1]]
        end = self.segment_end_times[s0:s1].copy()
        return Video(
            self.ids[i],
            lab if self.has_labels[i] else None,
            rgb=fr[:, :RGB_BYTES].copy(),
            audio=fr[:, RGB_BYTES:].copy(),
            segment_labels=self.segment_labels[s0:s1].copy() if s1 > s0 else None,
            segment_start_times=self.segment_start_times[s0:s1].copy() if s1 > s0 else None,
            segment_end_times=end if s1 > s0 and (end >= 0).all() else None,
            segment_scores=self.segment_scores[s0:s1].copy() if s1 > s0 else None,
        )

    @classmethod
    def from_videos(cls, videos: list[Video], path: str = "<memory>") -> DecodedShard:
        """Build the columnar form directly from `Video` objects (plain Python).

        Used by tests as the expected output of the decoder, and by code that
        wants to feed in-memory videos to the store writer.
        """
        kind = "video" if videos and not videos[0].is_frame_level else "frame"

        def offsets(sizes: list[int]) -> np.ndarray:
            return np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)

        def cat(arrs: list, dtype, width: int | None = None) -> np.ndarray:
            arrs = [np.asarray(a, dtype) for a in arrs if a is not None and len(a)]
            if not arrs:
                return np.zeros((0,) if width is None else (0, width), dtype)
            return np.concatenate(arrs)

        nseg = [0 if v.segment_labels is None else len(v.segment_labels) for v in videos]
        ends = [
            (v.segment_end_times if v.segment_end_times is not None
             else np.full(n, -1, np.int64)) for v, n in zip(videos, nseg)
        ]
        frames = [
            np.concatenate([v.rgb, v.audio], axis=1) if v.n_frames else None for v in videos
        ]
        out = cls(
            path=path,
            kind=kind,
            ids=[v.id for v in videos],
            record_offsets=np.full(len(videos), -1, np.int64),
            frame_offsets=offsets([v.n_frames for v in videos]),
            frames=cat(frames, np.uint8, FRAME_BYTES),
            has_labels=np.array([v.labels is not None for v in videos], bool),
            label_offsets=offsets([0 if v.labels is None else len(v.labels) for v in videos]),
            labels=cat([v.labels for v in videos], np.int64),
            segment_offsets=offsets(nseg),
            segment_labels=cat([v.segment_labels for v in videos], np.int64),
            segment_start_times=cat([v.segment_start_times for v in videos], np.int64),
            segment_end_times=cat(ends, np.int64),
            segment_scores=cat([v.segment_scores for v in videos], np.float32),
        )
        if kind == "video":
            out.mean_rgb = np.stack([np.asarray(v.mean_rgb, np.float32) for v in videos])
            out.mean_audio = np.stack([np.asarray(v.mean_audio, np.float32) for v in videos])
        return out
