"""`predict topk`: ensemble-mean top-K per class of quantised predictions → submission CSV."""
from __future__ import annotations

from pathlib import Path

import click

from predict.cli.options import k_option
from predict.predictions import open_ensemble
from predict.submission import SubmissionError, write_submission
from predict.topk import top_k


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
    models = open_ensemble(predictions)
    rows = top_k([m.scores for m in models], k=k, seed=seed)
    write_submission(out, rows, models[0].segments)
    click.echo(f"{out}: {rows.shape[0]} classes × {rows.shape[1]} segments", err=True)
