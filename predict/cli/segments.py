"""`predict segments`: a trained model over every candidate segment of a store (torch is
imported only when the command runs, so `predict topk` and friends stay torch-free)."""
from __future__ import annotations

import click


@click.command("segments")
@click.option("--store", required=True, type=click.Path(), help="The store to predict.")
@click.option("--model", "run", required=True, type=click.Path(),
              help="A run directory of train pretrain / train finetune.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="PRED_DIR/NAME: writes NAME.npy and NAME.segments.parquet.")
@click.option("--batch-size", type=click.IntRange(min=53), default=1024, show_default=True,
              help="Candidates per batch (whole videos; at least one video's 52).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True,
              help="Loader threads.")
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32",
              show_default=True,
              help="fp32 (TF32 matmuls on CUDA) or bf16 autocast (faster on GPUs; moves some "
                   "entries across the top-K cut, docs/predictions.md).")
@click.option("--torch-threads", type=click.IntRange(min=1), default=None,
              help="CPU: torch's threads (default: the cores less one per loader thread, at "
                   "least 1).")
@click.option("--overwrite", is_flag=True,
              help="Replace NAME.npy / NAME.segments.parquet if they exist (else refused).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def segments(store, run, out, batch_size, device, threads, precision, torch_threads,
             overwrite, quiet) -> None:
    """Predict every candidate segment of STORE with the model of RUN (quantised .npy)."""
    from predict.segments import predict_segments

    r = predict_segments(store, run, out, batch_size, device, threads, progress=not quiet,
                         overwrite=overwrite, precision=precision, torch_threads=torch_threads)
    click.echo(f"{r['out']}: {r['candidates']} candidates, {r['kind']} model, "
               f"{r['candidates_per_s']:.0f} candidates/s", err=True)
