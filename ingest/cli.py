"""`ingest` command line (placeholder until the codec lands)."""
import click


@click.group()
def main() -> None:
    """Read YouTube-8M TFRecord shards and build the training store."""
