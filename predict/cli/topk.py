"""`predict topk`: ensemble-mean top-K per class of quantised predictions → submission CSV."""
from __future__ import annotations

import os

import click
import numpy as np

from ingest.outputs import folder_problem
from predict.cli.options import k_option, weights_option
from predict.predictions import open_ensemble, open_video_predictions, sidecar_path
from predict.prior import restriction
from predict.submission import HEADER, SubmissionError, write_submission
from predict.topk import top_k, weighted_models

# numba's OpenMP threads spin at each of top_k's ~3,300 barriers (1.7M rows) by default:
# with another process busy on one of two cores, the top-k took 21-28 s instead of
# 3-6 s (docs/predictions.md). Threads that sleep while they wait cost little alone.
OMP_WAIT_POLICY = "PASSIVE"


def _one_file(a, b) -> bool:
    """`a` and `b` name one file: the same real path, or (both existing) the same inode."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_paths(predictions, out) -> None:
    """Refuse an --out that is one of the inputs or their sidecars (the CSV would replace
    it), an existing file that is not a submission (an earlier submission is replaced),
    or one that cannot be written (`folder_problem`, unless it is a device or a pipe,
    written in place); warn of a prediction file given twice (its scores would count
    twice in the mean)."""
    if not os.path.basename(out) or os.path.isdir(out):  # `--out ''`, `--out dir/`
        raise SubmissionError(f"--out {out!r}: give the submission's file name (such as "
                              "submission.csv)")
    for i, pred in enumerate(predictions):
        for given in (pred, sidecar_path(pred), sidecar_path(pred, "videos")):
            if _one_file(out, given):
                raise SubmissionError(f"{out}: is one of the inputs ({given}); the submission "
                                      "would replace it: give another --out")
        first = next((p for p in predictions[:i] if _one_file(p, pred)), None)
        if first is not None:
            click.echo(f"warning: {pred} is given twice (also as {first}): its scores count "
                       "twice in the mean", err=True)
    if os.path.isfile(out) and _not_a_submission(out):
        raise SubmissionError(f"{out}: exists and is not a submission (it does not start with "
                              f"{HEADER!r}); remove it or give another --out")
    in_place = os.path.exists(out) and not os.path.isfile(out)  # /dev/null, a pipe
    if not in_place and (problem := folder_problem(out)) is not None:
        raise SubmissionError(f"{out}: {problem}")


def _not_a_submission(path) -> bool:
    """A non-empty file whose first bytes are not the submission header (one that cannot
    be read is left to the writer's own error)."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(HEADER))
    except OSError:
        return False
    return bool(head) and head != HEADER.encode()


@click.command("topk")
@click.argument("predictions", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="submission CSV")
@k_option("entries per class")
@click.option("--seed", default=0, show_default=True,
              help="seed of the tie keys that choose and order the boundary bucket")
@weights_option("the weighted mean of the models (default: the mean)")
@click.option("--video-prior", type=click.Path(dir_okay=False), default=None,
              help="a video-level prediction (predict videos) of the segments' videos: each "
                   "class lists first the segments of the videos that keep it")
@click.option("--top-classes", type=click.IntRange(min=1), default=None,
              help="with --video-prior: the classes each video keeps, its N best by the prior "
                   "(the 3rd place kept 20)")
@click.option("--prior-weight", type=click.FloatRange(min=0), default=None,
              help="with --video-prior: rank kept segments by score × prior^A (default: by "
                   "score)")
def topk(predictions, out, k, seed, weights, video_prior, top_classes, prior_weight) -> None:
    """Average PREDICTIONS (NAME.npy files) and write the top K segments of every class."""
    if (video_prior is None) != (top_classes is None) or (
            prior_weight is not None and video_prior is None):
        raise SubmissionError("--video-prior and --top-classes go together (--prior-weight "
                              "needs both)")
    inputs = predictions + ((video_prior,) if video_prior else ())
    check_paths(inputs, out)  # refuse before the work, not after
    weighted_models(predictions, weights)  # the weights' count and range, before the work
    os.environ.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY)  # before numba's threads start
    models = open_ensemble(predictions)
    kept = None
    if video_prior is not None:
        prior = open_video_predictions(video_prior)
        kept = restriction(prior, models[0].segments, top_classes, prior_weight)
    rows = top_k([m.scores for m in models], k=k, seed=seed, weights=weights,
                 restriction=kept)
    write_submission(out, rows, models[0].segments)
    click.echo(f"{out}: {rows.shape[0]} classes × {rows.shape[1]} segments", err=True)
    if kept is not None:
        share = np.minimum(kept.n_kept, rows.shape[1]).sum() / rows.size
        click.echo(f"{share:.1%} of the entries are segments of videos that keep their class "
                   f"(top {top_classes} by {video_prior})", err=True)
