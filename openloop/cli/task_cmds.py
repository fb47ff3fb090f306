"""`openloop task ...` and `openloop enqueue`."""

from __future__ import annotations

from pathlib import Path

import click

# openloop.actions.tasks is imported by the commands that change tasks: it brings the loop's
# modules, which `task list` and `task show` on a large ledger do not need.
from openloop.cli.options import (
    examples,
    format_options,
    kind_choice,
    project_option,
    risk_choice,
    show_options,
    status_choice,
    task_option,
)
from openloop.cli.output import info, print_json, print_table, truncate, want_json
from openloop.errors import InputError
from openloop.state.project import require_initialized, resolve
from openloop.state.rows import filter_tasks, load_rows, summary


@click.group(
    epilog=examples(
        "openloop task add -p web --title 'Add a /health endpoint' --scope 'src/**'",
        "openloop task list -p web --status ready",
        "openloop task show -p web --task add-a-health-endpoint",
    )
)
def task() -> None:
    """Manage a project's task backlog (.openloop/tasks.json).

    \b
    Lifecycle: proposed -> planned -> ready -> in_progress -> validating -> review -> promoted
    (plus blocked, failed, cancelled, done). Higher --priority runs first; ties run oldest first.
    """


def _read_description(description: str | None, description_file: Path | None) -> str | None:
    if description and description_file:
        raise InputError("--description and --description-file: give one, not both")
    if description_file:
        try:
            return description_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(
                f"--description-file: cannot read {description_file}: {exc.strerror}"
            ) from None
    return description


def _add_options(func):
    for decorator in reversed(
        [
            project_option,
            click.option("--title", help="What to do, in one line."),
            click.option(
                "--from-ref",
                "ref",
                metavar="REF",
                help="A GitHub/GitLab issue URL or owner/repo#N; title and body are fetched "
                "with gh/glab. If that fails the task is added as 'proposed' (see --strict).",
            ),
            click.option(
                "--strict",
                is_flag=True,
                help="With --from-ref: add nothing (exit 1) when the issue cannot be fetched.",
            ),
            click.option(
                "--kind",
                type=kind_choice,
                default="chore",
                show_default=True,
                help="'feature' and 'epic' are planned first (project.json planning.kinds).",
            ),
            click.option(
                "--risk",
                type=risk_choice,
                default="medium-risk",
                show_default=True,
                help="Declared risk; the real diff can only raise it.",
            ),
            click.option(
                "--scope",
                multiple=True,
                metavar="GLOB",
                help="Repo-relative path or glob the change should stay in (repeatable).",
            ),
            click.option(
                "--priority", type=int, default=0, show_default=True, help="Higher runs first."
            ),
            click.option("--description", help="Longer description for the agent."),
            click.option(
                "--description-file",
                type=click.Path(dir_okay=False, path_type=Path),
                help="Read the description from a file.",
            ),
            click.option(
                "--depends-on",
                multiple=True,
                metavar="ID",
                help="A task that must be promoted or done first (repeatable).",
            ),
            click.option(
                "--accept",
                "acceptance",
                multiple=True,
                metavar="TEXT",
                help="An acceptance criterion (repeatable).",
            ),
            click.option(
                "--id",
                "task_id",
                metavar="ID",
                help="Choose the id (default: a slug of the title).",
            ),
            click.option(
                "--plan",
                "needs_plan",
                is_flag=True,
                help="Start as 'proposed': the planner writes a spec (and may split the task) "
                "before implementation.",
            ),
            click.option("--json", "as_json", is_flag=True, help="Print the created task as JSON."),
        ]
    ):
        func = decorator(func)
    return func


def _add(env, project, as_json, description, description_file, **fields) -> None:
    from openloop.actions import tasks

    proj = resolve(env, project)
    spec = tasks.NewTask(
        description=_read_description(description, description_file),
        description_option="--description-file" if description_file else "--description",
        **fields,
    )
    created = tasks.add_task(env, proj, spec, warn=info)
    if as_json:
        print_json(created.to_data())
    else:
        click.echo(f"Added task {created.id} to {proj.alias} ({created.status}, {created.risk})")


@task.command(
    "add",
    epilog=examples(
        "openloop task add -p web --title 'Fix flaky login test' --kind bugfix --risk low-risk",
        "openloop task add -p web --from-ref https://github.com/acme/web/issues/42",
        "openloop task add -p web --title 'Split the billing module' --plan --priority 5",
    ),
)
@_add_options
@click.pass_obj
def add_cmd(env, **kwargs) -> None:
    """Add a task (status 'ready', or 'proposed' with --plan)."""
    _add(env, **kwargs)


@click.command("enqueue", epilog=examples("openloop enqueue -p web --ref acme/web#42"))
@project_option
@click.option(
    "--ref", required=True, metavar="REF", help="GitHub/GitLab issue URL or owner/repo#N."
)
@click.option(
    "--strict", is_flag=True, help="Add nothing (exit 1) when the issue cannot be fetched."
)
@click.option("--json", "as_json", is_flag=True, help="Print the created task as JSON.")
@click.pass_obj
def enqueue(env, project, ref, strict, as_json) -> None:
    """Queue an issue as a task (same as 'task add --from-ref').

    Without gh/glab (or when they fail) the task is added as 'proposed' with the ref as its
    title, for you to complete; --strict adds nothing instead.
    """
    _add(env, project, as_json, None, None, ref=ref, ref_option="--ref", strict=strict)


@task.command(
    "list",
    epilog=examples(
        "openloop task list -p web", "openloop task list -p web --status blocked --json"
    ),
)
@project_option
@click.option("--status", type=status_choice, help="Only tasks in this status.")
@click.option("--risk", type=risk_choice, help="Only tasks with this risk.")
@click.option(
    "--all",
    "with_archive",
    is_flag=True,
    help="Include archived tasks (finished ones moved to .openloop/archive/).",
)
@format_options
@click.pass_obj
def list_cmd(env, project, status, risk, with_archive, fmt) -> None:
    """List tasks, highest priority first, then oldest."""
    proj = resolve(env, project)
    require_initialized(proj)
    if with_archive:
        from openloop.state import archive

        all_rows = archive.all_rows(proj.plane)
    else:
        all_rows = load_rows(proj.plane.ledger_file)
    rows = filter_tasks(all_rows, status=status, risk=risk)
    if want_json(fmt, env.stdout_isatty):
        print_json({"summary": summary(rows), "tasks": rows})
        return
    table = [
        {
            "id": t["id"],
            "status": t["status"],
            "risk": t["risk"],
            "kind": t["kind"],
            "prio": t["priority"],
            "tries": t["attempts"],
            "title": truncate(t["title"], 50),
        }
        for t in rows
    ]
    print_table(
        table,
        ["id", "status", "risk", "kind", "prio", "tries", "title"],
        empty=f"No tasks. Add one with 'openloop task add -p {proj.alias} --title ...'.",
    )


@task.command(
    "show",
    epilog=examples(
        "openloop task show -p web fix-flaky-login-test",
        "openloop task show -p web --task fix-flaky-login-test --json",
    ),
)
@project_option
@task_option
@show_options
@click.pass_obj
def show_cmd(env, project, task_id, fmt) -> None:
    """Show one task: fields, last run, promotion and status history.

    A readable screen on a terminal; JSON when piped or with --json.
    """
    from openloop.actions import review
    from openloop.cli import render, screens

    data = review.task_view(resolve(env, project), task_id)
    if want_json(fmt, env.stdout_isatty):
        print_json(data)
        return
    screens.task_screen(data, env.now(), render.use_color(env)).echo()


@task.command(
    "update",
    epilog=examples(
        "openloop task update -p web --task fix-login --priority 10 --risk low-risk",
        "openloop task update -p web --task fix-login --status ready --reason 'spec approved'",
    ),
)
@project_option
@task_option
@click.option("--title")
@click.option("--kind", type=kind_choice)
@click.option("--risk", type=risk_choice)
@click.option("--scope", multiple=True, metavar="GLOB", help="Replace the scope (repeatable).")
@click.option("--clear-scope", is_flag=True, help="Remove the declared scope.")
@click.option("--priority", type=int)
@click.option("--description")
@click.option("--depends-on", multiple=True, metavar="ID", help="Replace the dependencies.")
@click.option("--status", type=status_choice, help="Move through the state machine (checked).")
@click.option("--reason", help="Why (recorded in the status history).")
@click.pass_obj
def update_cmd(env, project, task_id, scope, clear_scope, depends_on, **fields) -> None:
    """Change a task's fields; status changes go through the state machine."""
    from openloop.actions import tasks

    if scope and clear_scope:
        raise InputError("--scope and --clear-scope: give one, not both")
    changes = tasks.TaskChanges(
        scope=() if clear_scope else (tuple(scope) if scope else None),
        depends_on=tuple(depends_on) if depends_on else None,
        **fields,
    )
    proj = resolve(env, project)
    updated = tasks.update_task(env, proj, task_id, changes)
    click.echo(f"Updated task {updated.id} ({updated.status})")


@task.command(
    "cancel", epilog=examples("openloop task cancel -p web --task fix-login --reason 'not needed'")
)
@project_option
@task_option
@click.option("--reason", help="Recorded in the status history.")
@click.pass_obj
def cancel_cmd(env, project, task_id, reason) -> None:
    """Cancel a task that is not running."""
    from openloop.actions import tasks

    done = tasks.cancel_task(env, resolve(env, project), task_id, reason)
    click.echo(f"Cancelled task {done.id}")


@task.command("retry", epilog=examples("openloop task retry -p web --task fix-login"))
@project_option
@task_option
@click.option("--reason", help="Recorded in the status history.")
@click.pass_obj
def retry_cmd(env, project, task_id, reason) -> None:
    """Send a blocked or failed task back to 'ready' with its attempts reset."""
    from openloop.actions import tasks

    done = tasks.retry_task(env, resolve(env, project), task_id, reason)
    click.echo(f"Task {done.id} is ready again (attempts reset)")


@task.command("remove", epilog=examples("openloop task remove -p web --task fix-login"))
@project_option
@task_option
@click.pass_obj
def remove_cmd(env, project, task_id) -> None:
    """Delete a task from the ledger (not while it runs)."""
    from openloop.actions import tasks

    proj = resolve(env, project)
    tasks.remove_task(env, proj, task_id)
    click.echo(f"Removed task {task_id} from {proj.alias}")


@task.command("recover", epilog=examples("openloop task recover -p web"))
@project_option
@click.pass_obj
def recover_cmd(env, project) -> None:
    """Return tasks stuck 'in_progress' by a dead run to the queue.

    Refuses while an iteration of the project is running. Every iteration does this by itself
    first, so this is only needed to tidy up by hand.
    """
    from openloop.actions import tasks

    proj = resolve(env, project)
    require_initialized(proj)
    moved = tasks.recover_tasks(env, proj)
    if not moved:
        click.echo(f"No stuck tasks in {proj.alias}.")
        return
    click.echo(f"Recovered {len(moved)} task(s) in {proj.alias}: {', '.join(moved)}")


@task.command("accept", epilog=examples("openloop task accept -p web --task add-tests-for-calc"))
@project_option
@task_option
@click.option("--reason", help="Recorded in the status history.")
@click.pass_obj
def accept_cmd(env, project, task_id, reason) -> None:
    """Accept a proposal made by discovery (idle mode): it becomes 'ready'."""
    from openloop.actions import tasks

    done = tasks.accept_task(env, resolve(env, project), task_id, reason)
    click.echo(f"Accepted task {done.id} (ready)")
