"""`predict` command line (placeholder until the codec lands)."""
import click


@click.group()
def main() -> None:
    """Predict, select top-k, score.
