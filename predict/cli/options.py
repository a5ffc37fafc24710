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


def _weights(ctx, param, value: str | None):
    if value is None:
        return None
    try:
        return [int(x) for x in value.split(",")]
    except ValueError:
        raise IngestError(f"--weights {value!r}: integers separated by commas, one per "
                          "prediction file (such as 3,3,1)") from None


def weights_option(help_text: str):
    """`--weights W1,W2,...`: one integer weight per prediction file (None: unweighted)."""
    return click.option("--weights", default=None, callback=_weights, metavar="W1,W2,...",
                        help=help_text + "; integers >= 0, one per file")
