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


def model_run_options(model_help: str, sidecar: str, batch_default: int, batch_min: int,
                      batch_help: str):
    """The options of `predict segments` and `predict videos` (a trained run over a
    store): --store --model --out --batch-size --device --threads --precision
    --torch-threads --overwrite --quiet."""
    options = [
        click.option("--store", required=True, type=click.Path(), help="The store to predict."),
        click.option("--model", "run", required=True, type=click.Path(), help=model_help),
        click.option("--out", required=True, type=click.Path(dir_okay=False),
                     help=f"PRED_DIR/NAME: writes NAME.npy and NAME.{sidecar}.parquet."),
        click.option("--batch-size", type=click.IntRange(min=batch_min), default=batch_default,
                     show_default=True, help=batch_help),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                     show_default=True),
        click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True,
                     help="Loader threads."),
        click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32",
                     show_default=True,
                     help="fp32 (TF32 matmuls on CUDA) or bf16 autocast (faster on GPUs; moves "
                          "some entries across the top-K cut, docs/predictions.md)."),
        click.option("--torch-threads", type=click.IntRange(min=1), default=None,
                     help="CPU: torch's threads (default: every core of the rank's share; "
                          "1 can be faster beside other busy processes)."),
        click.option("--overwrite", is_flag=True,
                     help=f"Replace NAME.npy / NAME.{sidecar}.parquet if they exist (else "
                          "refused)."),
        click.option("--quiet", is_flag=True, help="No progress bar."),
    ]

    def apply(f):
        for option in reversed(options):
            f = option(f)
        return f

    return apply
