"""`openloop service ...`, `pause`/`resume`, and the hooks the units call (gate, record-exit)."""

from __future__ import annotations

import os

import click

from openloop.actions import pause, service, unit_hooks, unit_status
from openloop.adapters import units
from openloop.cli.options import examples, json_option, project_option
from openloop.cli.output import info, print_json, print_table


@click.group(
    epilog=examples(
        "openloop service install",
        "openloop service start",
        "openloop service status",
        "systemctl --user list-timers 'openloop@*'",
    )
)
def service_group() -> None:
    """Run every linked project unattended under your systemd user manager.

    \b
    Each project is openloop@<alias>.timer -> openloop@<alias>.service (one iteration, then
    exit); openloop.target groups the timers. systemd provides the schedule, one iteration per
    project at a time, the hard timeout and watchdog, resource limits and the journal.
    To keep running after you log out: loginctl enable-linger $USER
    """


@service_group.command(
    "install", epilog=examples("openloop service install", "openloop service install --sandbox")
)
@click.option(
    "--sandbox/--no-sandbox",
    default=None,
    help="Confine iterations with mount namespaces (needs user namespaces, which some "
    "distributions block; refused where it cannot work). Default: as the last install.",
)
@click.pass_obj
def install_cmd(env, sandbox: bool) -> None:
    """Write the units and per-project drop-ins into ~/.config/systemd/user and reload.

    Records where pi, git and node are (units do not see your shell's PATH) and creates
    ~/.config/openloop/environment (mode 0600) for API keys. Safe to re-run after changing a
    project's schedule or limits.
    """
    report = service.install(env, sandbox=sandbox)
    if report.packaged:
        click.echo(f"Using the packaged units in {report.packaged}; drop-ins in {report.unit_dir}")
    else:
        click.echo(f"Installed OpenLoop units in {report.unit_dir}")
    for name in report.written:
        info(f"  wrote {name}")
    for name in report.removed:
        info(f"  removed {name} (an old copy that hid the packaged unit)")
    for problem in report.skipped:
        info(f"  warning: skipped project {problem}")
    if report.linger is False:
        info(
            "Linger is off: your timers stop when you log out. Enable it with:\n"
            "  loginctl enable-linger $USER"
        )
    info("Next: openloop service start")


@service_group.command("uninstall", epilog=examples("openloop service uninstall"))
@click.pass_obj
def uninstall_cmd(env) -> None:
    """Stop and remove OpenLoop's units and drop-ins (your projects and config stay)."""
    removed = service.uninstall(env, progress=info)
    click.echo(f"Removed {len(removed)} unit file(s) and drop-in(s); timers stopped and disabled.")


def _finish(report, done: str) -> int:
    """Print what `list-timers` shows and exactly what differs from what was asked; exit 1
    if anything does."""
    took = f"{report.seconds:.1f}s"
    if report.ok:
        click.echo(f"{done} ({report.scheduled} timer(s) scheduled; {took}).")
        return 0
    click.echo(f"{done}, but the end state differs ({took}):", err=True)
    for problem in report.problems:
        click.echo(f"  - {problem}", err=True)
    return 1


# Not project_option: no default from the active project or OPENLOOP_PROJECT, since without
# -p these commands mean every project.
one_project = click.option(
    "--project", "-p", "alias", metavar="ALIAS", help="Only this project (default: all)."
)


@service_group.command(
    "start", epilog=examples("openloop service start", "openloop service start -p web")
)
@one_project
@click.pass_obj
def start_cmd(env, alias) -> int:
    """Enable and start every project's timer (installs the units first if needed)."""
    if alias:
        report = service.start_project(env, alias)
        code = _finish(report, f"Started {units.instance(alias, 'timer')}")
        for note in report.notes:
            info(note)
        return code
    report = service.start(env, progress=info)
    code = _finish(report, f"Started openloop.target with {report.expected} project timer(s)")
    if units.linger_enabled(env) is False:
        info("Linger is off: timers stop at logout ('loginctl enable-linger $USER').")
    return code


@service_group.command(
    "stop", epilog=examples("openloop service stop", "openloop service stop -p web")
)
@one_project
@click.pass_obj
def stop_cmd(env, alias) -> int:
    """Stop all timers and any running iteration (recorded as interrupted by you).

    They stay stopped across logins and reboots until 'openloop service start'. With -p, only
    that project's timer and iteration (its timer is disabled until 'service start -p').
    To skip runs for a while without touching systemd, use 'openloop pause'.
    """
    report = service.stop_project(env, alias) if alias else service.stop(env, progress=info)
    if report is None:
        click.echo("Nothing to stop: the units are not installed.")
        return 0
    if alias:
        return _finish(report, f"Stopped {units.instance(alias, 'timer')} and its iteration")
    return _finish(report, "Stopped OpenLoop timers and iterations")


@service_group.command("restart", epilog=examples("openloop service restart"))
@click.pass_obj
def restart_cmd(env) -> int:
    """Re-install the units (picking up config changes) and restart the timers.

    The start runs even if the stop reported a problem: a restart never ends with the
    schedule stopped because one unit misbehaved.
    """
    service.install(env)
    stopped = service.stop(env, progress=info)
    code = _finish(stopped, "Stopped") if stopped is not None else 0
    started = service.start(env, progress=info)
    return max(code, _finish(started, f"Restarted {started.expected} project timer(s)"))


@service_group.command(
    "status",
    epilog=examples(
        "openloop service status",
        "openloop service status -p web",
        "openloop service status --json",
    ),
)
@one_project
@json_option
@click.pass_obj
def status_cmd(env, alias, as_json: bool) -> None:
    """Per project: timer state, next and last run, the last result, live STATUS text."""
    from openloop.state import backoff

    data = unit_status.status_of(env, alias) if alias else unit_status.status(env)
    if as_json:
        print_json(data)
        return
    paused = data["paused"]
    click.echo(
        f"units installed: {'yes' if data['installed'] else 'no'}   "
        f"openloop.target: {data['target'] or 'unknown'}   "
        f"budget today: ${data['budget']['spentUsd']:.2f} of "
        f"${data['budget']['dailyUsd']:.2f}" + ("   PAUSED" if paused else "")
    )
    rows, notes = [], []
    for p in data["projects"]:
        last = p.get("lastRun") or {}
        if waiting := p.get("environmentError"):
            notes.append(f"! {p['project']}: {backoff.describe(p['project'], waiting)}")
        rows.append(
            {
                "project": p["project"],
                "timer": p.get("timer"),
                "next": p.get("nextRun"),
                "last result": p.get("lastResult"),
                "last outcome": last.get("outcome"),
                "now": f"BROKEN: {p['broken']}"
                if p.get("broken")
                else (
                    p.get("status")
                    if p.get("running")
                    else ("paused" if p.get("paused") else "idle")
                ),
            }
        )
    print_table(
        rows,
        ["project", "timer", "next", "last result", "last outcome", "now"],
        empty="No linked projects.",
    )
    for note in notes:
        click.echo(note)


@service_group.command(
    "run", epilog=examples("openloop service run", "openloop service run --interval 60")
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0),
    help="Seconds between a project's iterations (default: its configured interval).",
)
@click.option(
    "--iterations",
    type=click.IntRange(min=1),
    help="Stop after this many rounds (default: forever).",
)
@click.pass_obj
def run_cmd(env, interval, iterations) -> None:
    """Run the schedules in the foreground (hosts without a systemd user manager).

    A thin loop over run-once: same gate, same locks, no pid files. Stop with Ctrl+C.
    """
    click.echo("Running OpenLoop schedules in the foreground; Ctrl+C to stop.", err=True)
    unit_hooks.run_foreground(
        env, interval=interval, iterations=iterations, echo=lambda line: click.echo(line)
    )


@click.command("pause", epilog=examples("openloop pause", "openloop pause -p web"))
@project_option
@click.option("--reason", help="Shown by status.")
@click.pass_obj
def pause_cmd(env, project, reason) -> None:
    """Pause all iterations (or one project's with --project). Running ones finish."""
    click.echo(f"Paused {pause.set_paused(env, True, project, reason)}.")


@click.command("resume", epilog=examples("openloop resume", "openloop resume -p web"))
@project_option
@click.pass_obj
def resume_cmd(env, project) -> None:
    """Resume after 'openloop pause', or retry now after an environment error."""
    click.echo(f"Resumed {pause.set_paused(env, False, project)}.")


@click.command("gate", hidden=True)
@click.option("--project", "-p", required=True)
@click.pass_obj
def gate_cmd(env, project) -> int:
    """ExecCondition of openloop@.service: exit 0 to run, 1 to skip this time, 255 when the
    project's state cannot be read (255 is what makes systemd fail the unit: 1-254 all skip)."""
    from openloop.adapters import journal

    try:
        decision = unit_hooks.gate(env, project)
    except unit_hooks.GateFailure as exc:
        journal.send(str(exc), priority=journal.ERR, event="gate-failed", project=project)
        if not journal.running_under_systemd():
            click.echo(f"openloop: error: {exc}", err=True)
        return unit_hooks.GateFailure.exit_code
    if not decision.run:
        # One record per skip: the structured one. Under systemd, stdout is the journal too,
        # so the plain line is for a shell only.
        journal.send(f"{project}: skipped: {decision.reason}", event="skipped", project=project)
        if not journal.running_under_systemd():
            click.echo(f"skip: {decision.reason}")
        return 1
    return 0


@click.command("record-exit", hidden=True)
@click.option("--project", "-p", required=True)
@click.pass_obj
def record_exit_cmd(env, project) -> int:
    """ExecStopPost of openloop@.service: record a run systemd killed or the user stopped."""
    from openloop.adapters import journal

    summary = unit_hooks.record_exit(env, project, dict(os.environ))
    if summary:
        journal.send(f"{project}: {summary}", priority=4, event="iteration-killed", project=project)
        if not journal.running_under_systemd():
            click.echo(summary)
    return 0


@click.command("notify-failure", hidden=True)
@click.option("--unit", required=True)
@click.pass_obj
def notify_failure_cmd(env, unit) -> int:
    """OnFailure= handler: OpenLoop itself failed in UNIT (once per distinct failure)."""
    unit_hooks.notify_unit_failure(env, unit)
    return 0
