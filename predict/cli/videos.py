"""`predict videos`: a video-level run over every video of a store (the prior of `predict topk
--video-prior`); torch is imported only when the command runs."""
from __future__ import annotations

import click


@click.command("videos")
@click.option("--store", required=True, type=click.Path(), help="The store to predict.")
@click.option("--model", "run", required=True, type=click.Path(),
              help="A run directory of train pretrain or train finetune --kind agnostic.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="PRED_DIR/NAME: writes NAME.npy and NAME.videos.parquet.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Videos per batch.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True,
              help="Loader threads.")
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32",
              show_default=True, help="fp32 (TF32 matmuls on CUDA) or bf16 autocast.")
@click.option("--torch-threads", type=click.IntRange(min=1), default=None,
              help="CPU: torch's threads (default: the cores less one per loader thread, at "
                   "least 1).")
@click.option("--overwrite", is_flag=True,
              help="Replace NAME.npy / NAME.videos.parquet if they exist (else refused).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def videos(store, run, out, batch_size, device, threads, precision, torch_threads, overwrite,
           quiet) -> None:
    """Predict every video of STORE with the video model of RUN (quantised .npy, one row per
    video, in the store's order)."""
    from predict.videos import predict_videos

    r = predict_videos(store, run, out, batch_size, device, threads, progress=not quiet,
                       overwrite=overwrite, precision=precision, torch_threads=torch_threads)
    click.echo(f"{r['out']}: {r['videos']} videos ({r['empty']} without frames), Lm "
               f"{r['max_len'] or 'all frames'}, {r['videos_per_s']:.0f} videos/s", err=True)
