"""Random frame-level `Video`s for the codec tests (any labels, frames and segments)."""
from __future__ import annotations

import numpy as np

from ingest.codec.video import Video


def random_video(rng: np.random.Generator, i: int, n_frames: int | None = None,
                 labels: bool = True, segments: bool = True, ends: bool | None = None) -> Video:
    n = int(rng.integers(0, 40)) if n_frames is None else n_frames
    ns = int(rng.integers(1, 6)) if segments else 0
    ends = bool(rng.integers(2)) if ends is None else ends
    return Video(
        id=f"vid{i:04d}-{rng.integers(1 << 30):x}",
        labels=rng.integers(0, 3862, int(rng.integers(0, 6))) if labels else None,
        rgb=rng.integers(0, 256, (n, 1024), dtype=np.uint8),
        audio=rng.integers(0, 256, (n, 128), dtype=np.uint8),
        segment_labels=rng.integers(0, 3862, ns) if ns else None,
        segment_start_times=rng.integers(0, 60, ns) * 5 if ns else None,
        segment_end_times=rng.integers(0, 60, ns) * 5 + 5 if ns and ends else None,
        segment_scores=rng.integers(0, 2, ns).astype(np.float32) if ns else None,
    )
