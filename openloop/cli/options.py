"""Options shared by several commands, as decorators (one definition, one help text)."""

from __future__ import annotations

import functools

import click

from openloop.state.taskfields import KINDS, RISKS, STATUSES

project_option = click.option(
    "--project",
    "-p",
    "project",
    metavar="ALIAS",
    envvar="OPENLOOP_PROJECT",
    help="Project alias (default: the active project, or the only one linked).",
)


def task_option(func):
    """The task: `ID` as the first argument or `--task/-t ID` (both are accepted everywhere)."""

    @functools.wraps(func)
    def wrapper(*args, task_arg=None, task_opt=None, **kwargs):
        if task_arg and task_opt and task_arg != task_opt:
            raise click.UsageError(f"two tasks given ('{task_arg}' and --task '{task_opt}')")
        task_id = task_arg or task_opt
        if not task_id:
            raise click.UsageError("Missing task: give its ID (or --task ID)")
        return func(*args, task_id=task_id, **kwargs)

    wrapper = click.option(
        "--task", "-t", "task_opt", metavar="ID", help="Task id (or give it as the argument)."
    )(wrapper)
    return click.argument("task_arg", metavar="[ID]", required=False)(wrapper)


def format_options(func):
    func = click.option("--json", "fmt", flag_value="json", help="Same as --format json.")(func)
    func = click.option(
        "--format",
        "fmt",
        type=click.Choice(["table", "text", "json"]),
        default=None,
        help="Output format: table/text for people, json for scripts "
        "(default: text on a terminal, JSON when piped).",
    )(func)
    return func


def show_options(func):
    """What every `show` takes: --format/--json (the want_json rule) and --color."""
    from openloop.cli.render import color_option

    return color_option(format_options(func))


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")

kind_choice = click.Choice(KINDS)
risk_choice = click.Choice(RISKS)
status_choice = click.Choice(STATUSES)


def examples(*lines: str) -> str:
    """An epilog with examples; \b keeps click from re-wrapping them."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)
