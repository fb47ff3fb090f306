"""`openloop status`, `watch`, `logs`, `events`, `doctor`: reading the state back."""

from __future__ import annotations

import time

import click

from openloop.cli.options import examples, json_option, project_option
from openloop.cli.output import plain, print_json
from openloop.text import escape, escape_text


@click.command("status", epilog=examples("openloop status", "openloop status --json"))
@json_option
@click.pass_obj
def status_cmd(env, as_json: bool) -> None:
    """One screen: tasks by state, pending reviews, today's spend, next run per project."""
    from openloop.actions import dashboard

    data = dashboard.dashboard(env, with_systemd=_systemd_available())
    if as_json:
        print_json(data)
    else:
        plain(dashboard.render(data))


def _systemd_available() -> bool:
    import shutil

    return shutil.which("systemctl") is not None


@click.command("watch", epilog=examples("openloop watch", "openloop watch --interval 5"))
@click.option(
    "--interval", type=click.FloatRange(min=0.2), default=2.0, show_default=True, help="Seconds."
)
@click.pass_obj
def watch_cmd(env, interval: float) -> None:
    """The status screen, refreshed until Ctrl+C (needs a terminal)."""
    import sys

    from openloop.actions import dashboard
    from openloop.errors import InputError

    if not sys.stdout.isatty():
        raise InputError("watch needs a terminal; use 'openloop status --json' in scripts")
    try:
        while True:
            text = escape_text(
                dashboard.render(dashboard.dashboard(env, with_systemd=_systemd_available()))
            )
            click.echo(
                "\x1b[H\x1b[2J" + text + f"\n\nrefreshing every {interval:g}s, Ctrl+C to stop"
            )
            time.sleep(interval)
    except KeyboardInterrupt:
        click.echo("")


@click.command(
    "logs",
    epilog=examples(
        "openloop logs -p web --since 1h",
        "openloop logs -p web --task add-health -f",
        "openloop logs -p web --run 20261125T101500Z-add-health-1a2b --json",
    ),
)
@project_option
@click.option("--task", "task_id", help="Only this task's records.")
@click.option("--run", "run_id", help="Only this run's records.")
@click.option(
    "--since",
    default=None,
    help="30m, -1h, 1h30m, today, 2026-11-25, '2026-11-25 10:00', ISO (default: all).",
)
@click.option(
    "-n",
    "--lines",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="At most this many.",
)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new records.")
@json_option
@click.pass_obj
def logs_cmd(env, project, task_id, run_id, since, lines, follow, as_json) -> None:
    """Read OpenLoop's journal records (the iterations' output and OpenLoop's own)."""
    from openloop.adapters import journal_read
    from openloop.state.project import resolve

    alias = resolve(env, project).alias if project else None
    since_dt = journal_read.parse_since(since, env.now()) if since else None
    home = _home(env)
    if not follow:
        entries = journal_read.read(
            project=alias, task=task_id, run=run_id, since=since_dt, limit=lines, **home
        )
        _emit(entries, as_json, with_project=alias is None)
        return
    # follow() yields the backlog and then new records, with nothing lost between the two.
    noted = [False]
    try:
        for entry in journal_read.follow(
            project=alias, task=task_id, run=run_id, since=since_dt, limit=lines, **home
        ):
            _emit([entry], as_json, with_project=alias is None, noted=noted)
    except KeyboardInterrupt:
        pass


def _home(env) -> dict:
    """This home's records only: its id, and its projects for records without the id."""
    from openloop.state.registry import load_registry

    return {"home": env.home_id, "aliases": [e.alias for e in load_registry(env).projects]}


@click.command(
    "events", epilog=examples("openloop events --since 1h", "openloop events -p web --json")
)
@project_option
@click.option(
    "--since",
    default="1d",
    show_default=True,
    help="30m, -1h, today, a date, 'YYYY-MM-DD HH:MM', ISO...",
)
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@json_option
@click.pass_obj
def events_cmd(env, project, since, limit, as_json) -> None:
    """The audit trail: iterations started and finished, promotions, skips, pauses, budget."""
    from openloop.adapters import journal_read
    from openloop.state.project import resolve

    alias = resolve(env, project).alias if project else None
    entries = journal_read.read(
        project=alias,
        event_only=True,
        since=journal_read.parse_since(since, env.now()),
        limit=limit,
        **_home(env),
    )
    if not entries and not as_json:
        click.echo(f"No events since {since}.")
        return
    _emit(entries, as_json, with_project=True)


def _emit(entries, as_json: bool, with_project: bool, noted: list[bool] | None = None) -> None:
    from openloop.adapters import journal_read

    noted = [False] if noted is None else noted
    if not noted[0] and any(journal_read.untagged_record(e) for e in entries):
        noted[0] = True  # once per command
        click.echo(
            "note: some records carry no OpenLoop home id (written by an older OpenLoop): "
            "shown because their project is linked here",
            err=True,
        )
    if as_json:
        print_json([journal_read.entry_to_json(e) for e in entries])
        return
    for entry in entries:
        # One record, one line: an agent's output or a task title cannot drive the terminal.
        click.echo(escape(journal_read.format_entry(entry, with_project=with_project)))


@click.command("doctor", epilog=examples("openloop doctor", "openloop doctor --json"))
@json_option
@click.pass_obj
def doctor_cmd(env, as_json: bool) -> int:
    """Check everything an unattended run needs, and say how to fix what is missing."""
    from dataclasses import asdict

    from openloop.actions import doctor

    checks = doctor.run_checks(env)
    failed = [c for c in checks if not c.ok]
    if as_json:
        print_json([asdict(c) for c in checks])
    else:
        for c in checks:
            mark = "ok  " if c.ok and not c.warning else ("warn" if c.ok else "FAIL")
            click.echo(f"[{mark}] {c.name}: {c.detail}")
            if c.fix and (not c.ok or c.warning):
                click.echo(f"       fix: {c.fix}")
        click.echo(f"\n{len(failed)} problem(s)." if failed else "\nAll set for unattended runs.")
    return 1 if failed else 0
