"""`predict` command line. Each command lives in its own module and is registered below."""
import click

from ingest.cli.util import Group


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="yt8m-segments", prog_name="predict")
def main() -> None:
    """Predict segments, select the top-k per class, validate and score submissions."""


# Commands are registered here, one line each:
from predict.cli.topk import topk

main.add_command(topk)
from predict.cli.evaluate import evaluate, validate

main.add_command(evaluate)
main.add_command(validate)
from predict.cli.segments import segments

main.add_command(segments)
