"""`trainer` command line. Each command lives in its own module and is registered below."""
from ingest.cli.interrupt import quiet_while_importing

with quiet_while_importing():  # Ctrl-C while torch and the rest import: exit 130, one line
    import click

    from ingest.cli.util import Group
    from trainer.cli.data import loader_bench_command
    from trainer.cli.models import models_command
    from trainer.cli.train import finetune_cmd, plot_cmd, pretrain_cmd


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="yt8m-segments", prog_name="train")
def main() -> None:
    """Build, inspect and train the models."""


# Commands are registered here, one line each:
main.add_command(models_command)
main.add_command(loader_bench_command)
main.add_command(pretrain_cmd)
main.add_command(finetune_cmd)
main.add_command(plot_cmd)
