"""`ingest`: YouTube-8M TFRecord shards → the training store.

Each command lives in its own module and is registered below.
"""
from ingest.cli.interrupt import quiet_while_importing

with quiet_while_importing():  # Ctrl-C while the modules below import: exit 130, one line
    import click

    from ingest.cli.decode import decode_cmd
    from ingest.cli.store import convert_cmd, info_cmd, verify_cmd
    from ingest.cli.synth import synth
    from ingest.cli.util import Group


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="yt8m-segments", prog_name="ingest")
def main() -> None:
    """Read YouTube-8M TFRecord shards, make synthetic ones, build the training store."""


# Commands are registered here, one line each:
main.add_command(synth)
main.add_command(convert_cmd)
main.add_command(info_cmd)
main.add_command(verify_cmd)
main.add_command(decode_cmd)
