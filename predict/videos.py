"""`predict videos`: a video-level model over every video of a store, into the prediction
format of docs/predictions.md (`NAME.npy`, one row per video, + `NAME.videos.parquet`).

    predict videos --store STORE --model RUN --out PRED_DIR/NAME [--batch-size 64]

The video-level prior of `predict topk --video-prior` (issue 23 §1: the 2nd and 3rd places
ranked a class's segments within the videos that a video-level model finds likely for it).
The run is a pre-training run or a context-agnostic fine-tuning (both hold a video model:
its best checkpoint, or its last where no evaluation chose one); a context-aware run has no
video-level output and is refused. Whole videos, as the recipes evaluate them: the loader's
video batches in evaluation mode (store order, Lm evenly spaced frames of videos longer
than Lm, `trainer/data/loader.py`), Lm the run's: a pre-training run's `max_len` (None:
every frame), a context-agnostic run's recorded `max_len` (its Table 4 context length,
150; 60 for the tiny variants). Every video of the store has a row, in the store's order;
a video without frames has a row of zeros.

Eval mode, no randomness: the same store and run give the same file on the same device
type. Under `torchrun` the ranks take the loader's batches dealt to them (`partition`)
and write their rows into one temporary file; rank 0 writes the video table and renames
both at the end. Imports torch (only when the command runs).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ingest.vocab import N_SEGMENT_CLASSES
from predict.predictions import check_output, shared_writer
from predict.segments import (
    PRECISIONS,
    SegmentsError,
    load_run,
    prediction_threads,
    progress_bar,
)

VIDEO_RUNS = {"pretrain": "pretrain", "finetune-agnostic": "finetune"}  # recipe: config key


def video_run(run: str):
    """(model in eval mode, Lm or None) of a run whose model is a video model; a
    context-aware run is refused in one line."""
    from trainer.recipes.runtime import read_run_config

    saved = read_run_config(run)
    recipe = saved.get("recipe")
    if recipe == "finetune-aware":
        raise SegmentsError(f"{run}: a context-aware fine-tuning run has no video-level output "
                            "(it classifies segments); predict videos takes a pre-training "
                            "or context-agnostic run")
    model, _, _ = load_run(run)  # refuses what is not a trained model run
    return model, saved.get(VIDEO_RUNS[recipe], {}).get("max_len")


def predict_videos(store: str, run: str, out: str, batch_size: int = 64,
                   device: str = "auto", threads: int = 2, progress: bool = True,
                   overwrite: bool = False, precision: str = "fp32",
                   torch_threads: int | None = None) -> dict:
    """Predict every video of `store` with the video model of `run` into `out` (.npy path).

    Returns {"out", "videos", "predicted_here", "empty", "seconds", "videos_per_s",
    "max_len"}. `precision`, `threads`, `torch_threads` as in `predict_segments`.
    """
    out_path = Path(out if str(out).endswith(".npy") else f"{out}.npy")
    check_output(out_path, overwrite, kind="videos")  # before torch and the model
    if precision not in PRECISIONS:
        raise SegmentsError(f"--precision {precision!r}: one of {', '.join(PRECISIONS)}")

    import torch

    from trainer.data import Loader, LoaderConfig, StoreIndex
    from trainer.recipes.runtime import autocast, barrier, start_ranks, stop_ranks

    ranks = start_ranks(device)
    prediction_threads(ranks, torch_threads)
    try:
        model, max_len = video_run(run)
        model.to(ranks.device)
        index = StoreIndex.build(store)
        videos = index.store.videos["video_id"]
        cfg = LoaderConfig(kind="video", batch_size=batch_size, max_len=max_len, train=False,
                           skip_unlabelled=False, threads=threads, world_size=ranks.world,
                           rank=ranks.rank, device=str(ranks.device))
        loader = Loader(index, cfg)
        empty = np.flatnonzero(index.n_frames == 0)
        done, t0 = 0, time.perf_counter()
        bar = progress_bar(progress and ranks.main, len(videos) // ranks.world, "video",
                           "predict videos")
        try:  # the ranks share one temporary file; rank 0 publishes it
            with (shared_writer(out_path, videos, None, ranks, barrier) as writer,
                  torch.no_grad(), autocast(ranks, precision)):
                if ranks.main:  # no frames, no prediction: a row of zeros
                    writer.write_rows(empty, np.zeros((len(empty), N_SEGMENT_CLASSES), np.uint16))
                for batch in loader:
                    valid = batch.valid.cpu().numpy()
                    probs = model(batch.frames, batch.mask).probs().float().cpu().numpy()
                    writer.write_rows(batch.rows.cpu().numpy()[valid], probs[valid])
                    done += int(valid.sum())
                    if bar is not None:
                        bar.update(int(valid.sum()))
        finally:
            if bar is not None:
                bar.close()
        seconds = time.perf_counter() - t0
        return {"out": str(out_path), "videos": len(videos), "predicted_here": done,
                "empty": len(empty), "seconds": seconds,
                "videos_per_s": done / max(seconds, 1e-9), "max_len": max_len}
    finally:
        stop_ranks()

