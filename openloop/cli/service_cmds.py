"""`openloop service ...`, `pause`/`resume`, and the hooks the units call (gate, record-exit)."""

from __future__ import annotations

import os

import click

from openloop.actions import pause, service
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
    removed = service.uninstall(env)
    click.echo(f"Removed {len(removed)} unit file(s); timers stopped and disabled.")


@service_group.command("start", epilog=examples("openloop service start"))
@click.pass_obj
def start_cmd(env) -> None:
    """Enable and start every project's timer (installs the units first if needed)."""
    timers = service.start(env)
    click.echo(f"Started openloop.target with {len(timers)} project timer(s).")
    if units.linger_enabled(env) is False:
        info("Linger is off: timers stop at logout ('loginctl enable-linger $USER').")


@service_group.command("stop", epilog=examples("openloop service stop"))
@click.pass_obj
def stop_cmd(env) -> None:
    """Stop all timers and any running iteration (a killed iteration is recorded).

    They stay stopped across logins and reboots until 'openloop service start'. To skip runs
    for a while without touching systemd, use 'openloop pause'.
    """
    if not service.stop(env):
        click.echo("Nothing to stop: the units are not installed.")
        return
    click.echo("Stopped OpenLoop timers and iterations.")


@service_group.command("restart", epilog=examples("openloop service restart"))
@click.pass_obj
def restart_cmd(env) -> None:
    """Re-install the units (picking up config changes) and restart the timers."""
    service.install(env)
    service.stop(env)
    timers = service.start(env)
    click.echo(f"Restarted {len(timers)} project timer(s).")


@service_group.command(
    "status", epilog=examples("openloop service status", "openloop service status --json")
)
@json_option
@click.pass_obj
def status_cmd(env, as_json: bool) -> None:
    """Per project: timer state, next and last run, the last result, live STATUS text."""
    from openloop.state import backoff

    data = service.status(env)
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
                "now": p.get("status")
                if p.get("running")
                else ("paused" if p.get("paused") else "idle"),
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
    service.run_foreground(
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
    """ExecCondition of openloop@.service: exit 0 to run, 1 to skip this time."""
    from openloop.adapters import journal

    decision = service.gate(env, project)
    if not decision.run:
        journal.send(f"{project}: skipped: {decision.reason}", event="skipped", project=project)
        click.echo(f"skip: {decision.reason}")
        return 1
    return 0


@click.command("record-exit", hidden=True)
@click.option("--project", "-p", required=True)
@click.pass_obj
def record_exit_cmd(env, project) -> int:
    """ExecStopPost of openloop@.service: record a run systemd killed."""
    from openloop.adapters import journal

    summary = service.record_exit(env, project, dict(os.environ))
    if summary:
        journal.send(f"{project}: {summary}", priority=4, event="iteration-killed", project=project)
        click.echo(summary)
    return 0


@click.command("notify-failure", hidden=True)
@click.option("--unit", required=True)
@click.pass_obj
def notify_failure_cmd(env, unit) -> int:
    """OnFailure= handler: OpenLoop itself failed in UNIT."""
    from openloop.adapters import notifications

    alias = unit.removeprefix("openloop@").removesuffix(".service")
    result = units.show(env, unit, "Result").get("Result")
    if result in ("timeout", "watchdog"):
        return 0  # a hung task, already recorded and notified by record-exit: not a crash
    notifications.notify(
        env,
        "task-failed",
        project=alias,
        message=f"OpenLoop unit {unit} failed; see 'openloop logs -p {alias}'",
    )
    return 0
