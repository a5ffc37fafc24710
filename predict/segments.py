"""`predict segments`: a trained model over every candidate segment of a store, into the
prediction format of docs/predictions.md (`NAME.npy` + `NAME.segments.parquet`).

    predict segments --store STORE --model RUN --out PRED_DIR/NAME [--batch-size 1024]

The run may be a pre-training run (its video model applied to the 11-frame windows,
no fine-tuning), a context-agnostic or a context-aware fine-tuning run; its best
checkpoint is used (its last where no evaluation chose one). Candidates are the store's
(first 6 and last 2 segments of each video dropped, paper §4.2), read by the loader in
store order, in batches of whole videos: an aware model encodes each video's context
once (`encode_context`) and classifies all the video's candidates with it (the reference
code encoded it again for every segment). The context follows the loader's evaluation
rule (the video less its first 6 and last 2 segments, Lm frames evenly spaced).

Eval mode, no sampling randomness: the same store and run give byte-identical files on the
same device type. Under `torchrun` each rank predicts a contiguous run of the same batches
into the same temporary file; rank 0 writes the sidecar and renames both at the end.
This module imports torch: `predict topk`, `validate` and `evaluate` never import it.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

from ingest.errors import IngestError
from predict.predictions import PredictionWriter, _segment_table, sidecar_path

RUN_KINDS = {"pretrain": "video", "finetune-agnostic": "video", "finetune-aware": "aware"}


class SegmentsError(IngestError):
    """A run, store or output that `predict segments` cannot use."""


def load_run(run: str):
    """(model in eval mode, "video" | "aware", context Lm) of a run directory."""
    from trainer.checkpoint import load_checkpoint
    from trainer.models.config import config_from_dict
    from trainer.recipes.runtime import read_run_config, run_checkpoint
    from trainer.registry import build_config

    saved = read_run_config(run)
    kind = RUN_KINDS.get(saved.get("recipe"))
    if kind is None or "model" not in saved:
        raise SegmentsError(f"{run}: not a trained model run (recipe {saved.get('recipe')!r})")
    model = build_config(config_from_dict(saved["model"]))
    load_checkpoint(run_checkpoint(run), model, restore_rng=False)
    max_len = saved.get("finetune", {}).get("max_len") if kind == "aware" else None
    return model.eval(), kind, max_len


def check_sidecar(out: Path, segments: pl.DataFrame) -> None:
    """Predictions in one folder are of one store: refuse an output whose segment table
    differs from one already there (`predict topk` could not ensemble them)."""
    mine = sidecar_path(out)
    for other in sorted(out.parent.glob("*.segments.parquet")):
        if other == mine or other.name.startswith("."):
            continue
        theirs = pl.read_parquet(other, columns=["video_id", "start_time"])
        if not theirs.equals(segments.select("video_id", "start_time")):
            raise SegmentsError(
                f"{out}: its candidates differ from those of {other} ({len(segments)} rows "
                f"against {len(theirs)}): predictions of another store belong in another folder")
        return


class _RankWriter(PredictionWriter):
    """A `PredictionWriter` shared by the ranks of a `torchrun` job: one temporary file of
    a name every rank knows (rank 0 creates it, the others open it), rows written at
    their offsets; only rank 0 renames."""

    def __init__(self, path, video_ids, start_times, tag: str, rank: int):
        self.path, self.rank = Path(path), rank
        self.sidecar = sidecar_path(self.path)
        self.segments = _segment_table(video_ids, start_times, self.sidecar)  # checked rows
        self.n_rows = len(self.segments)
        self._tmp = self.path.with_name(f".{self.path.name}.{tag}.tmp.npy")
        self._tmp_side = self.sidecar.with_name(f".{self.sidecar.name}.{tag}.tmp")
        self.rows_written = 0

    def open(self) -> None:
        from predict.predictions import PRED_DTYPE

        mode = "w+" if self.rank == 0 else "r+"
        shape = (self.n_rows, 1000) if self.rank == 0 else None
        self._mm = np.lib.format.open_memmap(self._tmp, mode=mode, dtype=PRED_DTYPE, shape=shape)

    def write_at(self, row: int, block: np.ndarray) -> None:
        self.rows_written = row
        self.write(block)


def predict_segments(store: str, run: str, out: str, batch_size: int = 1024,
                     device: str = "auto", threads: int = 2, progress: bool = True) -> dict:
    """Predict every candidate of `store` with the model of `run` into `out` (.npy path)."""
    import torch

    from trainer.data import Loader, LoaderConfig, StoreIndex
    from trainer.recipes.runtime import autocast, barrier, cpu_threads, start_ranks, stop_ranks

    out_path = Path(out if str(out).endswith(".npy") else f"{out}.npy")
    ranks = start_ranks(device)
    cpu_threads(ranks, threads)
    try:
        model, kind, max_len = load_run(run)
        model.to(ranks.device)
        index = StoreIndex.build(store)
        cand = index.store.candidates
        cfg = LoaderConfig(kind="candidates", batch_size=batch_size, max_len=max_len or 150,
                           train=False, with_context=kind == "aware", threads=threads,
                           world_size=ranks.world, rank=ranks.rank, device=str(ranks.device))
        loader = Loader(index, cfg)
        if not out_path.parent.is_dir():
            raise SegmentsError(f"{out_path.parent}: no such directory")
        check_sidecar(out_path, cand)
        tag = os.environ.get("TORCHELASTIC_RUN_ID", str(os.getpid())) if ranks.world > 1 \
            else str(os.getpid())
        writer = _RankWriter(out_path, cand["video_id"], cand["start_time"], tag, ranks.rank)
        if ranks.main:
            writer.open()
        barrier(ranks)
        if not ranks.main:
            writer.open()
        done, t0 = 0, time.perf_counter()
        bar = _bar(progress and ranks.main, len(loader), cand.height // ranks.world)
        try:
            with torch.no_grad(), autocast(ranks, "auto"):
                for batch in loader:
                    probs = _probs(model, kind, batch)
                    writer.write_at(int(batch.rows[0]), probs)
                    done += len(probs)
                    if bar is not None:
                        bar.update(len(probs))
            writer._mm.flush()
            del writer._mm
            barrier(ranks)
            if ranks.main:
                writer.rows_written = writer.n_rows
                writer._mm = None
                _finish(writer)
        except BaseException:
            if ranks.main:
                writer.abort()
            raise
        finally:
            if bar is not None:
                bar.close()
        seconds = time.perf_counter() - t0
        return {"out": str(out_path), "candidates": cand.height, "predicted_here": done,
                "seconds": seconds, "candidates_per_s": done / max(seconds, 1e-9), "kind": kind}
    finally:
        stop_ranks()


def _probs(model, kind: str, batch) -> np.ndarray:
    """`(b, 1000)` float32 probabilities of a candidate batch."""
    if kind == "aware":
        context = model.encode_context(batch.context, batch.context_mask)  # (V, D) once each
        out = model.classify(context[batch.video_slot], batch.windows)
    else:
        out = model(batch.windows, None)
    return out.probs().float().cpu().numpy()


def _finish(writer: _RankWriter) -> None:
    """Rank 0: the sidecar, then both renames (PredictionWriter.close without the memmap)."""
    try:
        writer.segments.write_parquet(writer._tmp_side)
        os.replace(writer._tmp_side, writer.sidecar)
        try:
            os.replace(writer._tmp, writer.path)
        except BaseException:
            writer.sidecar.unlink(missing_ok=True)
            raise
    except BaseException:
        writer.abort()
        raise


def _bar(enabled: bool, batches: int, total: int):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="seg", unit_scale=True, file=sys.stderr, leave=False,
                desc="predict")
