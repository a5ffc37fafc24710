"""`predict validate` and `predict evaluate`: check a submission file, score it by MAP@K."""
from __future__ import annotations

import json

import click

from predict.cli.options import k_option
from predict.submission import SubmissionError, validate_submission


@click.command("validate")
@click.argument("submission", type=click.Path(dir_okay=False))
@k_option("most entries per class")
def validate(submission, k) -> None:
    """Check SUBMISSION; print its problems in file order, exit 1 if any."""
    problems = validate_submission(submission, k, progress=None)
    if problems.count > 1:
        for p in problems:
            click.echo(p.format(submission), err=True)
        if problems.count > len(problems):
            click.echo(f"{submission}: {problems.count - len(problems)} more problems "
                       f"not shown", err=True)
    if problems:
        raise SubmissionError(problems.summary(submission))
    click.echo(f"{submission}: valid")


@click.command("evaluate")
@click.argument("submission", type=click.Path(dir_okay=False))
@click.option("--truth", "truth_path", required=True, type=click.Path(),
              help="a store directory or a truth.parquet")
@k_option("list cut per class")
@click.option("--json", "as_json", is_flag=True, help="print {map, k, classes, per_class}")
def evaluate(submission, truth_path, k, as_json) -> None:
    """Score SUBMISSION by MAP@K against the rated segments in --truth."""
    from ingest.store.truth import read_truth
    from predict.metric import EvaluationError, evaluate_submission, truth_index

    truth = truth_index(read_truth(truth_path))
    if not truth.n_positive.any():
        raise EvaluationError(
            f"{truth_path}: no positive ratings (score > 0.5) among its {truth.n_rated} rated "
            f"(segment, class) pairs: MAP is undefined")
    ev = evaluate_submission(submission, truth, k)
    if not ev.video_overlap and not _has_entries(submission):
        raise EvaluationError(f"{submission}: the submission has no entries (no class row "
                              "lists a segment): nothing to score")
    if not ev.video_overlap:
        raise EvaluationError(
            f"{submission}: none of its video ids appears in {truth_path} "
            f"({truth.n_rated} rated pairs): predictions for another split?")
    if not ev.rated_entries:
        click.echo(f"Warning: none of the first {k} entries of any class in {submission} is "
                   f"rated for that class in {truth_path}: MAP is 0", err=True)
    result = ev.result
    if as_json:
        click.echo(json.dumps(result.to_json()))
    else:
        click.echo(f"MAP@{k} = {result.map:.6f} over {result.classes} classes")


def _has_entries(path) -> bool:
    """Whether a row of the (validated) submission `path` lists a segment; reads up to the
    first that does (the whole file only when it has none)."""
    with open(path, "rb") as f:
        next(f, None)  # the header
        return any(line.partition(b",")[2].strip() for line in f)
