"""`predict validate` and `predict evaluate`: check a submission file, score it by MAP@K."""
from __future__ import annotations

import json

import click

from predict.submission import (
    SubmissionError,
    problem_summary,
    read_submission,
    validate_submission,
)
from predict.topk import DEFAULT_K


@click.command("validate")
@click.argument("submission", type=click.Path(dir_okay=False))
@click.option("--k", default=DEFAULT_K, show_default=True, help="most entries per class")
def validate(submission, k) -> None:
    """Check SUBMISSION; print each problem with its line number, exit 1 if any."""
    problems = validate_submission(submission, k)
    for p in problems[1:]:
        click.echo(p.format(submission), err=True)
    if problems:
        raise SubmissionError(problem_summary(submission, problems))
    click.echo(f"{submission}: valid")


@click.command("evaluate")
@click.argument("submission", type=click.Path(dir_okay=False))
@click.option("--truth", "truth_path", required=True, type=click.Path(),
              help="a store directory or a truth.parquet")
@click.option("--k", default=DEFAULT_K, show_default=True, help="list cut per class")
@click.option("--json", "as_json", is_flag=True, help="print {map, k, classes, per_class}")
def evaluate(submission, truth_path, k, as_json) -> None:
    """Score SUBMISSION by MAP@K against the rated segments in --truth."""
    from ingest.store.truth import read_truth
    from predict.metric import mean_average_precision, truth_by_class

    if k < 1:
        raise SubmissionError(f"--k must be at least 1, got {k}")
    truth = truth_by_class(read_truth(truth_path))
    # The file may hold up to the challenge's 100,000 entries per class; MAP@k cuts them to k.
    rows = read_submission(submission, max(k, DEFAULT_K))
    result = mean_average_precision(rows, truth, k)
    if as_json:
        click.echo(json.dumps(result.to_json()))
    else:
        click.echo(f"MAP@{k} = {result.map:.6f} over {result.classes} classes")
