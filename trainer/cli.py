"""`train` command line (placeholder until the codec lands)."""
import click


@click.group()
def main() -> None:
    """Train models.
