"""Options shared by the `predict` commands."""
from __future__ import annotations

import click

from ingest.errors import IngestError
from predict.topk import DEFAULT_K


def _at_least_one(ctx, param, value: int) -> int:
    if value < 1:
        raise IngestError(f"--k must be at least 1, got {value}")
    return value


def k_option(help_text: str):
    """`--k` (default the challenge's 100,000), refused below 1 with a one-line error."""
    return click.option("--k", default=DEFAULT_K, show_default=True, callback=_at_least_one,
                        help=help_text)
