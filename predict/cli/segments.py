"""`predict segments`: a trained model over every candidate segment of a store (torch is
imported only when the command runs, so `predict topk` and friends stay torch-free)."""
from __future__ import annotations

import click

from predict.cli.options import model_run_options


@click.command("segments")
@model_run_options("A run directory of train pretrain / train finetune.", "segments", 1024, 53,
                   "Candidates per batch (whole videos; at least one video's 52).")
def segments(store, run, out, batch_size, device, threads, precision, torch_threads,
             overwrite, quiet) -> None:
    """Predict every candidate segment of STORE with the model of RUN (quantised .npy)."""
    from predict.segments import predict_segments

    r = predict_segments(store, run, out, batch_size, device, threads, progress=not quiet,
                         overwrite=overwrite, precision=precision, torch_threads=torch_threads)
    click.echo(f"{r['out']}: {r['candidates']} candidates, {r['kind']} model, "
               f"{r['candidates_per_s']:.0f} candidates/s", err=True)
