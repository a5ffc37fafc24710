"""`predict videos`: a video-level run over every video of a store (the prior of `predict topk
--video-prior`); torch is imported only when the command runs."""
from __future__ import annotations

import click

from predict.cli.options import model_run_options


@click.command("videos")
@model_run_options("A run directory of train pretrain or train finetune --kind agnostic.",
                   "videos", 64, 1, "Videos per batch.")
def videos(store, run, out, batch_size, device, threads, precision, torch_threads, overwrite,
           quiet) -> None:
    """Predict every video of STORE with the video model of RUN (quantised .npy, one row per
    video, in the store's order)."""
    from predict.videos import predict_videos

    r = predict_videos(store, run, out, batch_size, device, threads, progress=not quiet,
                       overwrite=overwrite, precision=precision, torch_threads=torch_threads)
    click.echo(f"{r['out']}: {r['videos']} videos ({r['empty']} without frames), Lm "
               f"{r['max_len'] or 'all frames'}, {r['videos_per_s']:.0f} videos/s", err=True)
