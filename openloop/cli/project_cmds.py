"""`openloop project ...`"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from openloop.actions import projects, service
from openloop.cli.options import examples, format_options, json_option, show_options
from openloop.cli.output import info, print_json, print_table, want_json
from openloop.state.controlplane import InitReport
from openloop.state.project import resolve


@click.group(
    epilog=examples(
        "openloop project add web ~/src/web --init",
        "openloop project list",
        "openloop project activate web",
    )
)
def project() -> None:
    """Link git repositories and manage their control planes."""


def _sync_units(env, action) -> None:
    """Keep installed systemd units in step; a project change must not fail because of them."""
    from openloop.errors import OpenLoopError

    try:
        if action():
            info("Updated the systemd units for this project.")
    except OpenLoopError as exc:
        info(f"warning: systemd units not updated: {exc} (run 'openloop service install')")


def _report_init(report: InitReport) -> None:
    for label, items in (
        ("added", report.added),
        ("updated", report.updated),
        ("kept (edited by you)", report.kept),
        ("backed up", report.backed_up),
    ):
        for item in items:
            info(f"  {label}: {item}")
    if report.detection is not None:
        for slot in ("lint", "typecheck", "test"):
            found = getattr(report.detection, slot)
            info(f"  {slot}: {found.command} (from {found.source})" if found else f"  {slot}: -")


@project.command(
    "add",
    epilog=examples(
        "openloop project add web ~/src/web --init",
        "openloop project add api . --init",
        "openloop project add web ~/src/web-moved --force   # relink an alias to a new path",
    ),
)
@click.argument("alias")
@click.argument("path", type=click.Path(file_okay=False, path_type=Path))
@click.option("--init", "do_init", is_flag=True, help="Also create the control plane (.openloop/).")
@click.option("--force", is_flag=True, help="Relink an alias that already exists.")
@click.pass_obj
def add_cmd(env, alias: str, path: Path, do_init: bool, force: bool) -> None:
    """Link the git repository at PATH under ALIAS.

    ALIAS becomes the systemd instance name (openloop@ALIAS.timer): lowercase letters, digits,
    '-', '_' and '.', at most 64, not starting with '-' or '.'.
    """
    result = projects.add(env, alias, path, init=do_init, force=force)
    click.echo(f"Linked project {result.entry.alias} -> {result.entry.path}")
    if result.report:
        _report_init(result.report)
    elif not result.entry.initialized:
        info(f"Next: openloop project init {alias}")
    _sync_units(env, lambda: service.project_linked(env, alias))
    if result.untrusted_commands:
        info(
            f"This repository asks OpenLoop to run commands; review and approve them with "
            f"'openloop project trust {alias}'"
        )


@project.command(
    "init", epilog=examples("openloop project init web", "openloop project init web --force")
)
@click.argument("alias")
@click.option(
    "--force",
    is_flag=True,
    help="Replace files you edited too (backed up to .openloop/backup/ first). "
    "The task ledger is never touched.",
)
@click.pass_obj
def init_cmd(env, alias: str, force: bool) -> None:
    """Create or refresh the control plane of a linked project.

    Safe to re-run: missing files are added, files OpenLoop wrote and you did not edit are
    updated, files you edited are kept. Detected validation commands only fill empty slots.
    """
    report = projects.init(env, alias, force=force)
    click.echo(f"Initialized {alias}")
    _report_init(report)


@project.command("list", epilog=examples("openloop project list", "openloop project list --json"))
@format_options
@click.pass_obj
def list_cmd(env, fmt: str | None) -> None:
    """List linked projects."""
    entries = projects.list_projects(env)
    if not entries:
        _hint_v1(env)
    if want_json(fmt, env.stdout_isatty):
        print_json([e.to_data() for e in entries])
        return
    rows = [
        {"alias": e.alias, "initialized": e.initialized, "paused": e.paused, "path": e.path}
        for e in entries
    ]
    print_table(
        rows,
        ["alias", "initialized", "paused", "path"],
        empty="No linked projects. Link one with 'openloop project add ALIAS PATH --init'.",
    )


def _hint_v1(env) -> None:
    from openloop.actions import migrate

    if home := migrate.v1_home_present(env):
        click.echo(
            f"hint: the original OpenLoop's home is at {home}: import its projects with "
            f"'openloop project import-v1'",
            err=True,
        )


@project.command(
    "import-v1",
    epilog=examples(
        "openloop project import-v1", "openloop project import-v1 --home /old/.openloop"
    ),
)
@click.option(
    "--home",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="The original OpenLoop's home (default: ~/.openloop).",
)
@json_option
@click.pass_obj
def import_v1_cmd(env, home, as_json: bool) -> int:
    """Import the projects of the original (TypeScript) OpenLoop: links, tasks, pending reviews,
    run summaries; its prompt files are replaced (backed up). Its home is left as it was."""
    from openloop.actions import migrate

    report = migrate.import_v1(env, home)
    if as_json:
        print_json(report.to_data())
    else:
        _print_import(report)
    return 1 if any(p.skipped and not p.linked for p in report.projects) else 0


def _print_import(report) -> None:
    from openloop.text import escape

    def echo(line: str) -> None:
        click.echo(escape(line))  # aliases, paths and notes come from the original's files

    echo(f"From {report.home}: global config {report.config}.")
    for p in report.projects:
        if not p.linked:
            echo(f"  {p.alias}: not imported: {p.skipped}")
            continue
        echo(f"  {p.alias} -> {p.path}: linked, {p.tasks} task(s) migrated")
        for task_id in p.promotions:
            echo(f"    review waiting: openloop promotion show -p {p.alias} {task_id}")
        for note in p.promotions_kept:
            echo(f"    promotion kept as it was: {note}")
        if p.run_summaries:
            echo(f"    {p.run_summaries} run summaries kept in .openloop/runs/ (in task show)")
        if p.prompts_replaced:
            replaced = ", ".join(p.prompts_replaced)
            echo(f"    prompt files replaced: {replaced} (originals in {p.backup})")
        echo(f"    next: openloop project trust {p.alias}")


@project.command(
    "show", epilog=examples("openloop project show web", "openloop project show web --json")
)
@click.argument("alias")
@show_options
@click.pass_obj
def show_cmd(env, alias: str, fmt) -> None:
    """Show a project's registry entry, control-plane paths and trust state.

    A readable screen on a terminal; JSON when piped or with --json.
    """
    proj = resolve(env, alias)
    data = proj.entry.to_data()
    data["controlPlane"] = str(proj.plane.dir)
    data["controlPlaneExists"] = proj.plane.exists()
    if proj.plane.exists():
        review = projects.review_trust(proj)
        data["commandsTrusted"] = review.commands_approved
        data["policyApproved"] = not review.policy_diff
        data["policySource"] = review.policy_source
    if want_json(fmt, env.stdout_isatty):
        print_json(data)
        return
    from openloop.cli import render, screens

    screens.project_screen(data, env.now(), render.use_color(env)).echo()


@project.command(
    "remove",
    epilog=examples(
        "openloop project remove web",
        "openloop project remove web --purge               # asks first",
        "openloop project remove web --purge --branches --yes",
    ),
)
@click.argument("alias")
@click.option("--purge", is_flag=True, help="Also delete <repo>/.openloop/ (ledger, runs, config).")
@click.option(
    "--branches",
    is_flag=True,
    help="Also delete the branches OpenLoop made (openloop/<task>; not one checked out).",
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask before deleting anything.")
@click.pass_obj
def remove_cmd(env, alias: str, purge: bool, branches: bool, yes: bool) -> None:
    """Unlink a project. Its .openloop/ stays in the repository unless --purge.

    --purge and --branches delete data: what would go is listed and you are asked first
    (--yes skips the question; without a terminal, --yes is required).
    """
    if (purge or branches) and not yes:
        _confirm_removal(alias, projects.removal_plan(env, alias), purge, branches)
    entry = projects.remove(env, alias, purge=purge, branches=branches)
    _sync_units(env, lambda: service.project_unlinked(env, alias))
    kept = "deleted" if purge else "kept"
    click.echo(f"Removed project {alias}. Control plane in {entry.path}/.openloop {kept}.")


def _confirm_removal(alias, plan, purge: bool, branches: bool) -> None:
    from openloop.errors import InputError

    lines = []
    if purge and plan.exists:
        lines.append(
            f"  {plan.control_plane}: {plan.tasks} task(s), {plan.runs} run record(s), "
            f"{plan.pending_reviews} pending review(s), config and policy"
        )
    if branches:
        lines.append(f"  branches: {', '.join(plan.branches) or '(none)'}")
    if not lines:
        return
    if not sys.stdin.isatty():
        raise InputError(
            "--purge/--branches delete data and there is no terminal to ask on: add --yes"
        )
    info(f"This deletes, for project {alias}:")
    for line in lines:
        info(line)
    if not click.confirm("Delete?", default=False, err=True):
        raise click.exceptions.Abort()


@project.command("activate", epilog=examples("openloop project activate web"))
@click.argument("alias")
@click.pass_obj
def activate_cmd(env, alias: str) -> None:
    """Make ALIAS the default for commands that take --project."""
    projects.activate(env, alias)
    click.echo(f"Active project set to {alias}")


@project.command(
    "trust", epilog=examples("openloop project trust web --check", "openloop project trust web")
)
@click.argument("alias")
@click.option(
    "--check",
    is_flag=True,
    help="Only show the commands and whether they are approved; exit 1 if not.",
)
@click.pass_obj
def trust_cmd(env, alias: str, check: bool) -> None:
    """Approve the commands this repository asks OpenLoop to run, and its policy.

    Validation commands and a custom agent command live in the repository's
    .openloop/project.json, which a pull or an agent's commit can change. OpenLoop runs them
    only after you approve them here. The policy (.openloop/policy.yaml, read from the default
    branch's tip commit) is approved the same way: while it differs from the approved one,
    nothing auto-merges. The diff since your last approval is shown first.
    """
    review = projects.review_trust(resolve(env, alias))
    click.echo("Commands:")
    for line in review.commands or ["  (no commands)"]:
        click.echo(line)
    click.echo(f"Policy ({review.policy_source}):")
    for line in review.policy_diff or ["  (approved, unchanged)"]:
        click.echo(f"  {line}")
    if check:
        click.echo("approved" if review.approved else "NOT approved")
        click.get_current_context().exit(0 if review.approved else 1)
    projects.trust_project(env, alias)
    click.echo(f"Approved the commands and the policy of {alias}.")
