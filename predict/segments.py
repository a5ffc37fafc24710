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
same device type. float32 by default (TF32 matmuls on CUDA), `--precision bf16` for bf16
autocast. Under `torchrun` each rank predicts a contiguous run of the same batches
into the same temporary file; rank 0 writes the sidecar and renames both at the end.
This module imports torch: `predict topk`, `validate` and `evaluate` never import it.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

from ingest.errors import IngestError
from predict.predictions import check_output, shared_writer, sidecar_path

RUN_KINDS = {"pretrain": "video", "finetune-agnostic": "video", "finetune-aware": "aware"}
# fp32 by default (TF32 matmuls on CUDA): the probabilities are quantised at 1/9999, and
# bf16's 8-bit mantissa moves entries across the top-K cut (docs/predictions.md).
PRECISIONS = ("fp32", "bf16")


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


def predict_segments(store: str, run: str, out: str, batch_size: int = 1024,
                     device: str = "auto", threads: int = 2, progress: bool = True,
                     overwrite: bool = False, precision: str = "fp32",
                     torch_threads: int | None = None) -> dict:
    """Predict every candidate of `store` with the model of `run` into `out` (.npy path).
    An existing output is refused unless `overwrite`; an unwritable one, before any work.
    `precision` "fp32" (TF32 matmuls on CUDA) or "bf16" (autocast); `torch_threads` on the
    CPU (default: every core of this rank, `prediction_threads`)."""
    out_path = Path(out if str(out).endswith(".npy") else f"{out}.npy")
    check_output(out_path, overwrite)  # before torch is imported and the model loaded
    if precision not in PRECISIONS:
        raise SegmentsError(f"--precision {precision!r}: one of {', '.join(PRECISIONS)}")

    import torch

    from trainer.data import Loader, LoaderConfig, StoreIndex
    from trainer.recipes.runtime import autocast, barrier, start_ranks, stop_ranks

    ranks = start_ranks(device)
    prediction_threads(ranks, torch_threads)
    try:
        model, kind, max_len = load_run(run)
        model.to(ranks.device)
        index = StoreIndex.build(store)
        cand = index.store.candidates
        cfg = LoaderConfig(kind="candidates", batch_size=batch_size, max_len=max_len or 150,
                           train=False, with_context=kind == "aware", threads=threads,
                           world_size=ranks.world, rank=ranks.rank, device=str(ranks.device))
        loader = Loader(index, cfg)
        check_sidecar(out_path, cand)
        done, t0 = 0, time.perf_counter()
        bar = progress_bar(progress and ranks.main, cand.height // ranks.world)
        try:  # the ranks share one temporary file; rank 0 publishes it
            with (shared_writer(out_path, cand["video_id"], cand["start_time"], ranks,
                                barrier) as writer,
                  torch.no_grad(), autocast(ranks, precision)):
                for batch in loader:
                    probs = _probs(model, kind, batch)
                    writer.write_at(int(batch.rows[0]), probs)
                    done += len(probs)
                    if bar is not None:
                        bar.update(len(probs))
        finally:
            if bar is not None:
                bar.close()
        seconds = time.perf_counter() - t0
        return {"out": str(out_path), "candidates": cand.height, "predicted_here": done,
                "seconds": seconds, "candidates_per_s": done / max(seconds, 1e-9), "kind": kind}
    finally:
        stop_ranks()


def prediction_threads(ranks, torch_threads: int | None) -> None:
    """CUDA: TF32 matmuls allowed (the fp32 default). CPU: `torch_threads` for torch if
    given, else every core of the rank's share (`cpu_threads` with no core kept back). The
    candidate loader needs little CPU (alone ~133,000 candidates/s on one core, against
    1,500-7,500/s through the tiny models), so keeping a core per loader thread, as the
    training recipes do, leaves cores idle: on the idle 2-core VM torch on both cores
    predicted at 1.18-1.48x the rate of torch on one (`bench_predict.py --threads-compare`,
    benchmarks/RESULTS.md `## predict segments`). Beside other busy processes the second
    thread cost more than it brought (0.58x): `--torch-threads 1` there."""
    import torch

    from trainer.recipes.runtime import cpu_threads

    if ranks.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return
    if torch_threads:
        torch.set_num_threads(torch_threads)
    else:
        cpu_threads(ranks, 0)


def _probs(model, kind: str, batch) -> np.ndarray:
    """`(b, 1000)` float32 probabilities of a candidate batch."""
    if kind == "aware":
        context = model.encode_context(batch.context, batch.context_mask)  # (V, D) once each
        out = model.classify(context[batch.video_slot], batch.windows)
    else:
        out = model(batch.windows, None)
    return out.probs().float().cpu().numpy()


def progress_bar(enabled: bool, total: int, unit: str = "seg", desc: str = "predict"):
    """A tqdm bar on stderr of `total` units (None where not `enabled`: a quiet run, a
    rank other than 0); shared by `predict segments` and `predict videos`."""
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, unit_scale=True, file=sys.stderr, leave=False,
                desc=desc)
