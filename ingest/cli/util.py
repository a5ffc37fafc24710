"""Shared CLI behaviour: user mistakes become one line on stderr and exit status 1; Ctrl-C
becomes one line and exit status 130 (ingest/cli/interrupt.py)."""
from __future__ import annotations

import click

from ingest.cli.interrupt import EXIT_INTERRUPTED
from ingest.errors import IngestError

# What to say after "Interrupted." when a command is stopped by Ctrl-C, by command name.
INTERRUPT_HINTS = {
    "convert": "the parts converted so far are kept: run the same command again to resume",
}


class Group(click.Group):
    """A click group that turns `IngestError` (and missing files) into a one-line error
    (exit 1) and Ctrl-C into a one-line notice (exit 130), never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except IngestError as err:
            raise click.ClickException(str(err)) from None
        except FileNotFoundError as err:
            raise click.ClickException(f"{err.filename}: no such file or directory") from None
        except KeyboardInterrupt:
            hint = INTERRUPT_HINTS.get(ctx.invoked_subcommand or "")
            click.echo(f"Interrupted{'; ' + hint if hint else ''}.", err=True)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
