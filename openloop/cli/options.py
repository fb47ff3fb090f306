"""Options shared by several commands, as decorators (one definition, one help text)."""

from __future__ import annotations

import click

from openloop.state.ledger import KINDS, RISKS, STATUSES

project_option = click.option(
    "--project",
    "-p",
    "project",
    metavar="ALIAS",
    envvar="OPENLOOP_PROJECT",
    help="Project alias (default: the active project, or the only one linked).",
)
task_option = click.option("--task", "-t", "task_id", required=True, metavar="ID", help="Task id.")


def format_options(func):
    func = click.option("--json", "fmt", flag_value="json", help="Same as --format json.")(func)
    func = click.option(
        "--format",
        "fmt",
        type=click.Choice(["table", "json"]),
        default=None,
        help="Output format (default: table on a terminal, JSON when piped).",
    )(func)
    return func


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")

kind_choice = click.Choice(KINDS)
risk_choice = click.Choice(RISKS)
status_choice = click.Choice(STATUSES)


def examples(*lines: str) -> str:
    """An epilog with examples; \b keeps click from re-wrapping them."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)
