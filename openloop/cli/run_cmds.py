"""`openloop run-once` and `openloop run`."""

from __future__ import annotations

import sys

import click

from openloop.cli import render, screens
from openloop.cli.options import examples, project_option
from openloop.cli.output import print_json
from openloop.cli.render import color_option
from openloop.loop import scheduler
from openloop.progress import LineReporter, LiveReporter


def _reporter(quiet: bool, project: str | None):
    from openloop.adapters.watchdog import SystemdReporter, under_systemd

    if under_systemd():
        return SystemdReporter(project or "openloop")
    if quiet:
        return None
    return LiveReporter() if sys.stderr.isatty() else LineReporter()


@click.command(
    "run-once",
    epilog=examples(
        "openloop run-once -p web",
        "openloop run-once -p web --dry-run",
        "openloop run-once -p web --model claude-sonnet-4-5 --json",
    ),
)
@project_option
@click.option("--model", help="Model for this run (wins over project and global config).")
@click.option("--provider", help="Provider for this run.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print what the next iteration would do (mode, role, task, prompt); "
    "run and write nothing.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the run summary (or the plan) as JSON."
)
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@color_option
@click.pass_obj
def run_once_cmd(env, project, model, provider, dry_run, as_json, quiet) -> int:
    """Run one iteration for a project and exit.

    \b
    Validates the default branch once per tree (self-healing), picks the next eligible task,
    runs the agent in a repository of its own, records its files on branch openloop/<task-id>,
    validates them (lint, typecheck, test), and hands the result over (review or auto-merge)
    or sends it back for another attempt. Anything the agent changed outside its repository
    ends the run as escaped.
    \b
    Exit status: 0 completed, planned, idle or skipped; 10 validation failed; 11 agent error;
    12 stalled; 13 timed out; 14 budget stopped; 15 no progress; 16 blocked by policy;
    17 interrupted; 18 escaped; 19 environment error (pi missing, API key refused, quota
    spent: no attempt counted, the project backs off); 1 OpenLoop itself failed (or another
    iteration of the project is running).
    """
    if dry_run:
        plan = scheduler.dry_run(env, project, model=model)
        if as_json or not env.stdout_isatty:
            print_json(plan)
        else:
            screens.plan_screen(plan, project, render.use_color(env)).echo()
        return 0
    result = scheduler.run_once(
        env, project, model=model, provider=provider, reporter=_reporter(quiet, project)
    )
    if not as_json:
        _failed_checks(result.record)
    if as_json:
        print_json(
            result.record
            or {
                "outcome": result.outcome.value,
                "reason": result.reason,
                "project": result.project,
                "taskId": result.task_id,
            }
        )
    else:
        task = f" task {result.task_id}" if result.task_id else ""
        click.echo(f"{result.project}{task}: {result.outcome.value}: {result.reason}")
        if result.record:
            r = result.record
            click.echo(
                f"  run {r['runId']}  cost ${r['costUsd']:.4f}  tools {r['toolCalls']}  "
                f"files {len(r['changedFiles'])}  branch {r['branch']}  "
                f"task now {r['taskStatus']}"
            )
    return result.exit_code


def _failed_checks(record) -> None:
    """After the run: each failed check's last lines and the path of its full log."""
    from openloop.cli.output import info

    for check in (record or {}).get("validation") or []:
        if check.get("status") not in ("failed", "timed-out", "error"):
            continue
        info(f"check {check.get('name')} {check.get('status')}: `{check.get('command')}`")
        tail = (check.get("tail") or "").rstrip().splitlines()[-15:]
        for line in tail:
            info(f"  | {line}")
        if check.get("log"):
            info(f"  full log: {check['log']}")


@click.command(
    "run",
    epilog=examples(
        "openloop run -p web --prompt 'Explain the build in BUILD.md'",
        "openloop run -p web --prompt-file task.md --no-validate",
    ),
)
@project_option
@click.option("--prompt", "prompt_text", help="What to ask the agent.")
@click.option(
    "--prompt-file", type=click.File("r"), help="Read the prompt from a file ('-': stdin)."
)
@click.option("--model", help="Model for this run.")
@click.option("--provider", help="Provider for this run.")
@click.option(
    "--validate/--no-validate",
    default=True,
    show_default=True,
    help="Run the project's checks on the result.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@click.pass_obj
def run_cmd(
    env, project, prompt_text, prompt_file, model, provider, validate, as_json, quiet
) -> int:
    """Run the agent once on a prompt, outside the task ledger.

    Same isolation and accounting as an iteration: a repository of its own, a branch
    openloop/adhoc-<time> (kept for you to inspect or merge), the day's budget, a run record in
    .openloop/runs/. Nothing is merged.
    """
    from openloop.errors import InputError

    if bool(prompt_text) == bool(prompt_file):
        raise InputError("--prompt or --prompt-file: give exactly one")
    text = prompt_text or prompt_file.read()
    if not text.strip():
        raise InputError("--prompt: must not be empty")
    result = scheduler.run_prompt(
        env,
        project,
        text,
        model=model,
        provider=provider,
        validate=validate,
        reporter=_reporter(quiet, project),
    )
    if as_json:
        print_json(result.record or {"outcome": result.outcome.value, "reason": result.reason})
    else:
        click.echo(f"{result.project}: {result.outcome.value}: {result.reason}")
    return result.exit_code
