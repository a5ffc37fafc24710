"""Shared CLI behaviour: user mistakes become one line on stderr and exit status 1."""
from __future__ import annotations

import click

from ingest.errors import IngestError


class Group(click.Group):
    """A click group that turns `IngestError` (and missing files) into a one-line error."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except IngestError as err:
            raise click.ClickException(str(err)) from None
        except FileNotFoundError as err:
            raise click.ClickException(f"{err.filename}: no such file or directory") from None
