"""`train models`: every registered variant with its parameter counts beside the paper's."""
from __future__ import annotations

import json

import click

from trainer.registry import parameter_rows

_COLUMNS = (
    ("name", "model", 27),
    ("total_m", "total M", 9),
    ("trainable_m", "train. M", 9),
    ("paper_total_m", "paper", 7),
    ("paper_trainable_m", "paper tr.", 9),
    ("reference_total_m", "ref.", 6),
    ("reference_trainable_m", "ref. tr.", 8),
    ("reproduces_paper", "within 3% of paper", 9),
)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return str(value)


def format_table(rows: list[dict]) -> str:
    """Fixed-width text table; notes are printed under it."""
    lines = ["  ".join(title.ljust(width) for _, title, width in _COLUMNS).rstrip()]
    for row in rows:
        lines.append("  ".join(_cell(row[k]).ljust(w) for k, _, w in _COLUMNS).rstrip())
    for row in rows:
        if row["note"]:
            lines.append(f"note {row['name']}: {row['note']}")
    return "\n".join(lines)


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="One JSON list instead of a table.")
def models_command(as_json: bool) -> None:
    """List the model variants and their parameter counts (ours beside the paper's)."""
    rows = parameter_rows()
    click.echo(json.dumps(rows, indent=1) if as_json else format_table(rows))
