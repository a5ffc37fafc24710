"""`predict blend`: integer ensemble weights that maximise MAP@K on a held-out store."""
from __future__ import annotations

import json
import os

import click

from predict.blend import DEFAULT_MAX_WEIGHT
from predict.cli.options import k_option
from predict.cli.topk import OMP_WAIT_POLICY


@click.command("blend")
@click.argument("predictions", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--truth", "truth_path", required=True, type=click.Path(),
              help="the held-out store (or its truth.parquet) that PREDICTIONS predict")
@k_option("list cut per class, as predict topk --k and predict evaluate --k")
@click.option("--fold", type=click.IntRange(min=0), default=None,
              help="score only this fold of the --truth store (its videos' segments and "
                   "ratings)")
@click.option("--max-weight", type=click.IntRange(min=1, max=100), default=DEFAULT_MAX_WEIGHT,
              show_default=True, help="weights searched: 0..MAX_WEIGHT")
@click.option("--seed", default=0, show_default=True, help="predict topk's --seed")
@click.option("--video-prior", type=click.Path(dir_okay=False), default=None,
              help="as predict topk --video-prior (weights fit under the restriction)")
@click.option("--top-classes", type=click.IntRange(min=1), default=None,
              help="as predict topk --top-classes")
@click.option("--prior-weight", type=click.FloatRange(min=0), default=None,
              help="as predict topk --prior-weight")
@click.option("--json", "as_json", is_flag=True,
              help="print {weights, map (the best), map_equal (all ones), k, fold (if "
                   "given), classes, predictions, tried: [{weights, map}] in search order}")
def blend(predictions, truth_path, k, fold, max_weight, seed, video_prior, top_classes,
          prior_weight, as_json) -> None:
    """Search integer weights of PREDICTIONS (NAME.npy files of one held-out store) that
    maximise MAP@K; print each candidate's MAP and the best (for predict topk --weights)."""
    from predict.blend import BlendError, held_out, search
    from predict.predictions import open_ensemble, open_video_predictions
    from predict.prior import restriction

    if len(predictions) < 2:
        raise BlendError("predict blend weighs two or more prediction files")
    if (video_prior is None) != (top_classes is None) or (
            prior_weight is not None and video_prior is None):
        raise BlendError("--video-prior and --top-classes go together (--prior-weight needs "
                         "both)")
    os.environ.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY)  # before numba's threads start
    data = held_out(open_ensemble(predictions), truth_path, fold)
    kept = None
    if video_prior is not None:
        kept = restriction(open_video_predictions(video_prior), data.segments, top_classes,
                           prior_weight)

    def report(weights, value):
        if not as_json:
            click.echo(f"weights {_w(weights)}: MAP@{k} = {value:.6f}")

    found = search(data, k, max_weight, seed, kept, report)
    weights, value = found.best
    if as_json:
        click.echo(json.dumps({
            "weights": list(weights), "map": value, "map_equal": found.candidates[0][1],
            "k": k, **({} if fold is None else {"fold": fold}),
            "classes": int((data.n_positive > 0).sum()), "predictions": list(predictions),
            "tried": [{"weights": list(w), "map": m} for w, m in found.candidates]}))
        return
    click.echo(f"best weights {_w(weights)}: MAP@{k} = {value:.6f} over "
               f"{int((data.n_positive > 0).sum())} classes, {len(found.candidates)} "
               f"candidates (predict topk ... --weights {_w(weights)})")


def _w(weights) -> str:
    return ",".join(map(str, weights))
