"""`predict` command line. Each command lives in its own module and is registered below."""
from ingest.cli.interrupt import quiet_while_importing

with quiet_while_importing():  # Ctrl-C while numba and the rest import: exit 130, one line
    import click

    from ingest.cli.util import Group
    from predict.cli.blend import blend
    from predict.cli.evaluate import evaluate, validate
    from predict.cli.segments import segments
    from predict.cli.topk import topk
    from predict.cli.videos import videos


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="yt8m-segments", prog_name="predict")
def main() -> None:
    """Predict segments, select the top-k per class, validate and score submissions."""


# Commands are registered here, one line each:
main.add_command(topk)
main.add_command(evaluate)
main.add_command(validate)
main.add_command(segments)
main.add_command(videos)
main.add_command(blend)
