"""Video-level candidate restriction (`predict topk --video-prior`, issue 23 §1).

The 2nd and 3rd places of the challenge ranked a class's segments first within the videos
that a video-level model finds likely for that class (docs/predictions.md says what each
did). Here: each video keeps its N most likely classes under the prior (a video-level
prediction, `predict videos`): the N best of its 1000 prior scores, by score descending
then class index ascending. Within class c, a segment whose video keeps c is *kept*.

Order of class c's list: the top-k rule of predict/topk.py applied to the tiered score

    kept:   10000 + r,  r = the ranking score: the ensemble score s, or with A
                        (`--prior-weight`) floor(s * (p / 9999) ** A + 1/2), p the video's
                        prior score of c (the float64 power of a 10,000-entry table,
                        then one float64 product and floor: the same IEEE operations in
                        the kernel and in the numpy twin)
    others: s

so every kept segment ranks above every other, and the list is as long as without the
prior: score descending; the boundary bucket (the lowest tiered score in the top k) by
the seeded tie key, every bucket above it by row ascending.

One pass: the scan of predict/topk.py runs unchanged over all rows (its buffers end
holding each class's top k of all rows, so also the m best rows that are not kept, for
any m <= k - kept), a round of rows (SUB_ROWS) at a time; after each round
`gather_kept` appends the round's kept (row, class) ranking scores to their classes' runs
(N per row), each thread reading the rows it has just compared. `finish_restricted` then
writes each class's list from the two.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from ingest.errors import IngestError
from predict import prior_kernels as PK
from predict import topk_kernels as K
from predict.predictions import QUANT_SCALE, VideoPredictions, prefault


@dataclass
class Restriction:
    """What the scan and the finish need of a video prior for one segment table.

    video_of (N,) int32: each segment row's video (a row of `kept`); kept (U, n_top) int16:
    each video's kept classes, ascending; factor (U, n_top) float64: prior ** A per kept
    (video, class), or (0, 0) without A; n_kept (C,) int64: kept rows per class.
    """

    video_of: np.ndarray
    kept: np.ndarray
    factor: np.ndarray
    n_kept: np.ndarray

    def start(self, n_rows: int, n_parts: int) -> None:
        """Allocate the kept runs (the scan's first pass fills them, `gather`)."""
        n_cls = len(self.n_kept)
        self.ptr = np.concatenate([[0], np.cumsum(self.n_kept)]).astype(np.int64)
        self.kept_buf = np.empty(int(self.ptr[-1]), np.uint32)
        self.cursor = self.ptr[:-1].copy()
        self.epoch_pos = np.full((n_cls, -(-n_rows // K.EPOCH_ROWS) + 1), K.NOT_STARTED,
                                 np.int64)
        self.epoch_pos[:, 0] = 0
        self.starts = np.empty((n_parts, n_cls), np.int64)

    def gather(self, row0: int, vals: np.ndarray) -> None:
        """Append the kept scores of rows row0.. (`vals` (B, C), one epoch, B <= SUB_ROWS:
        the round the scan has just compared)."""
        epoch = row0 >> K.EPOCH_BITS
        if row0 & K.ROW_MASK == 0 and epoch:
            self.epoch_pos[:, epoch] = self.cursor - self.ptr[:-1]
        PK.gather_kept(vals, row0, self.video_of, self.kept, self.factor, self.kept_buf,
                       self.cursor, self.starts)

    def finish(self, k: int, seed: int, buf, cnt, epoch_pos, n_parts: int) -> None:
        """buf[c, :k] = class c's list (`finish_restricted`)."""
        assert np.array_equal(self.cursor, self.ptr[1:]), "a row block was not gathered"
        PK.finish_restricted(k, seed, buf, cnt, epoch_pos, self.kept_buf, self.ptr,
                             self.epoch_pos, len(self.video_of), n_parts)


def restriction(prior: VideoPredictions, segments: pl.DataFrame, top_classes: int,
                prior_weight: float | None = None) -> Restriction:
    """The `Restriction` of `segments` (the prediction files' table) under `prior`: each
    video keeps its `top_classes` best classes; ranking score with A = `prior_weight`.

    IngestError (one line) for a prior that lacks a segment's video (the first missing,
    in row order), or `top_classes` outside 1..C.
    """
    n_cls = prior.scores.shape[1]
    if not 1 <= top_classes <= n_cls:
        raise IngestError(f"--top-classes {top_classes}: between 1 and {n_cls}")
    if prior_weight is not None and not 0 <= prior_weight < float("inf"):
        raise IngestError(f"--prior-weight {prior_weight}: a number >= 0")
    # runs of one video (a table from predict segments has one per video): looked up once
    runs = segments["video_id"].rle().struct.unnest()
    index = prior.videos.select("video_id").with_row_index("prior_row")
    joined = runs.join(index, left_on="value", right_on="video_id", how="left",
                       maintain_order="left")
    missing = joined.filter(pl.col("prior_row").is_null())
    if missing.height:
        raise IngestError(f"{prior.path}: has no row for video {missing['value'][0]!r} "
                          f"of the segments ({missing['value'].n_unique()} videos missing): "
                          "a prior of another store?")
    used, run_video = np.unique(joined["prior_row"].to_numpy(), return_inverse=True)
    video_of = np.repeat(run_video, joined["len"].to_numpy())
    prefault(prior.scores)
    kept = np.empty((len(used), top_classes), np.int16)
    PK.kept_classes(prior.scores, used, top_classes, kept)
    factor = np.zeros((0, 0))
    if prior_weight is not None:
        table = (np.arange(QUANT_SCALE + 1) / QUANT_SCALE) ** float(prior_weight)
        factor = table[prior.scores[used[:, None], kept]]
    per_video = np.bincount(run_video, weights=joined["len"].to_numpy(),
                            minlength=len(used)).astype(np.int64)
    n_kept = np.bincount(kept.ravel(), weights=np.repeat(per_video, top_classes),
                         minlength=n_cls).astype(np.int64)
    return Restriction(video_of.astype(np.int32), kept, factor, n_kept)


def kept_classes_numpy(scores: np.ndarray, n_top: int) -> np.ndarray:
    """Plain numpy twin of `kept_classes` over every row of `scores` (V, C): (V, n_top)
    class indices, ascending."""
    n_cls = scores.shape[1]
    keys = scores.astype(np.int64) * n_cls + (n_cls - 1 - np.arange(n_cls))
    best = np.argsort(-keys, axis=1, kind="stable")[:, :n_top]
    return np.sort(best, axis=1)

