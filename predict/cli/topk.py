"""`predict topk`: ensemble-mean top-K per class of quantised predictions → submission CSV."""
from __future__ import annotations

import os
from pathlib import Path

import click

from predict.cli.options import k_option
from predict.predictions import open_ensemble
from predict.submission import SubmissionError, write_submission
from predict.topk import top_k

# numba's OpenMP threads spin at each of top_k's ~3,300 barriers (1.7M rows) by default:
# with another process busy on one of two cores, the top-k took 21-28 s instead of
# 3-6 s (docs/predictions.md). Threads that sleep while they wait cost little alone.
OMP_WAIT_POLICY = "PASSIVE"


@click.command("topk")
@click.argument("predictions", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="submission CSV")
@k_option("entries per class")
@click.option("--seed", default=0, show_default=True,
              help="seed of the tie keys that choose and order the boundary bucket")
def topk(predictions, out, k, seed) -> None:
    """Average PREDICTIONS (NAME.npy files) and write the top K segments of every class."""
    if not Path(out).resolve().parent.is_dir():  # refuse before the work, not after
        raise SubmissionError(f"{out}: its folder {Path(out).parent} does not exist")
    os.environ.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY)  # before numba's threads start
    models = open_ensemble(predictions)
    rows = top_k([m.scores for m in models], k=k, seed=seed)
    write_submission(out, rows, models[0].segments)
    click.echo(f"{out}: {rows.shape[0]} classes × {rows.shape[1]} segments", err=True)
