"""`openloop promotion ...`"""

from __future__ import annotations

import click

from openloop.cli.options import (
    examples,
    format_options,
    project_option,
    show_options,
    task_option,
)
from openloop.cli.output import print_json, print_table, want_json
from openloop.cli.render import color_option as render_color_option
from openloop.loop import pending, promotion
from openloop.state.ledger import check_task_id
from openloop.state.project import resolve
from openloop.state.requests import list_requests


@click.group(
    epilog=examples(
        "openloop promotion list -p web",
        "openloop promotion show -p web --task add-health",
        "openloop promotion apply -p web --task add-health",
        "openloop promotion reject -p web --task add-health --reason 'wrong approach' --retry",
    )
)
def promotion_group() -> None:
    """Review what iterations produced: merge it, or send it back.

    Validated work that policy does not auto-merge waits on its branch openloop/<task-id>
    with a request in .openloop/promotions/. Every decision and outcome is appended to
    .openloop/promotion-results/<task-id>.jsonl.
    """


@promotion_group.command("list", epilog=examples("openloop promotion list -p web --status pending"))
@project_option
@click.option(
    "--status",
    type=click.Choice(["pending", "deferred", "merged", "applied", "rejected"]),
    help="Only requests in this status.",
)
@format_options
@click.pass_obj
def list_cmd(env, project, status, fmt) -> None:
    """List promotion requests, newest first."""
    proj = resolve(env, project)
    rows = [r for r in list_requests(proj.plane) if not status or r["status"] == status]
    if want_json(fmt, env.stdout_isatty):
        print_json(rows)
        return
    table = [
        {
            "task": r["taskId"],
            "status": r["status"],
            "action": r["action"],
            "risk": r.get("risk"),
            "files": len(r.get("changedFiles", [])),
            "branch": r.get("branch"),
            "created": r.get("createdAt"),
        }
        for r in rows
    ]
    print_table(
        table,
        ["task", "status", "action", "risk", "files", "branch", "created"],
        empty="No promotion requests.",
    )


@promotion_group.command(
    "show",
    epilog=examples(
        "openloop promotion show -p web add-health",
        "openloop promotion show -p web add-health --diff",
        "openloop promotion show -p web --task add-health --json",
    ),
)
@project_option
@task_option
@click.option("--diff", "with_diff", is_flag=True, help="Then show the diff (git's pager).")
@show_options
@click.pass_obj
def show_cmd(env, project, task_id, with_diff, fmt) -> int:
    """Show a request: status, risk, why it waits, checks, diffstat, history.

    A readable screen on a terminal; JSON when piped or with --json. The diff itself:
    --diff, or 'openloop promotion diff'.
    """
    from openloop.actions import review
    from openloop.cli import render, screens

    proj = resolve(env, project)
    request = review.promotion_view(proj, task_id)
    if want_json(fmt, env.stdout_isatty):
        print_json(request)
        return 0
    color = render.use_color(env)
    screens.promotion_screen(request, proj.alias, env.now(), color).echo()
    if not with_diff:
        return 0
    click.echo()
    return review.show_diff(proj, task_id, color="always" if color else "never")


@promotion_group.command(
    "diff",
    epilog=examples(
        "openloop promotion diff -p web add-health",
        "openloop promotion diff -p web add-health --stat",
        "openloop promotion diff -p web add-health | less -R",
    ),
)
@project_option
@task_option
@click.option("--stat", is_flag=True, help="Only the diffstat.")
@render_color_option
@click.pass_obj
def diff_cmd(env, project, task_id, stat) -> int:
    """The change under review (base..head of the request), through git's pager and colours.

    git's own settings apply (core.pager, color.diff); hooks, external diff drivers and
    textconv filters never run, since the branch content is the agent's.
    """
    from openloop.actions import review
    from openloop.cli import render

    choice = render.color_choice()
    if choice is None and env.environ.get("NO_COLOR"):
        choice = "never"
    return review.show_diff(resolve(env, project), task_id, color=choice, stat=stat)


@promotion_group.command("history", epilog=examples("openloop promotion history -p web --task x"))
@project_option
@task_option
@click.pass_obj
def history_cmd(env, project, task_id) -> None:
    """The chronology of decisions and outcomes for a task (JSON)."""
    proj = resolve(env, project)
    check_task_id(task_id)
    print_json(promotion.read_history(proj.plane, task_id))


@promotion_group.command(
    "apply",
    epilog=examples(
        "openloop promotion apply -p web --task add-health",
    ),
)
@project_option
@task_option
@click.option(
    "--no-validate",
    is_flag=True,
    help="Run no check at all, even when the branch is rebased first (not recommended).",
)
@click.pass_obj
def apply_cmd(env, project, task_id, no_validate) -> None:
    """Merge a review branch into the default branch.

    The branch is rebased onto the default branch if that moved, the project's checks run on
    the result (only while they are the commands you approved), and the default branch is
    fast-forwarded (in your checkout only the way 'git merge --ff-only' would). If anything
    fails, nothing is changed. With --no-validate no command of the project runs at all.
    """
    from openloop.state.locks import iteration_lock

    proj = resolve(env, project)
    check_task_id(task_id)
    with iteration_lock(env, proj.alias):
        result = pending.apply(env, proj, task_id, validate=not no_validate)
    click.echo(f"Applied {task_id}: {result.reason} ({result.head[:12]})")


@promotion_group.command(
    "reject",
    epilog=examples(
        "openloop promotion reject -p web --task add-health --reason 'use the existing helper'",
        "openloop promotion reject -p web --task add-health --retry --delete-branch",
    ),
)
@project_option
@task_option
@click.option("--reason", help="Why; with --retry it is given to the agent's next attempt.")
@click.option(
    "--retry", is_flag=True, help="Send the task back to 'ready' instead of cancelling it."
)
@click.option("--delete-branch", is_flag=True, help="Also delete the review branch.")
@click.pass_obj
def reject_cmd(env, project, task_id, reason, retry, delete_branch) -> None:
    """Reject a request: cancel the task, or send it back with --retry."""
    from openloop.state.locks import iteration_lock

    proj = resolve(env, project)
    check_task_id(task_id)
    with iteration_lock(env, proj.alias):
        status = pending.reject(
            env, proj, task_id, reason=reason, retry=retry, delete_branch=delete_branch
        )
    click.echo(f"Rejected {task_id}; task is now {status}")
