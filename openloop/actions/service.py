"""Service actions: install the units, start and stop the schedules, read their state back, and
the two small hooks the service unit calls around each iteration (gate, record-exit)."""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openloop.adapters import notifications, units
from openloop.env import Environment
from openloop.errors import OpenLoopError
from openloop.state import backoff, budget, pause, runs
from openloop.state.config import GlobalConfig, load_config
from openloop.state.project import Project, project_of, resolve
from openloop.state.registry import load_registry

# --- install ------------------------------------------------------------------------------------


def install(
    env: Environment, *, sandbox: bool | None = None, reload: bool = True
) -> units.InstallReport:
    """Write the units and drop-ins. `sandbox=None` keeps whatever the last install chose."""
    unit_dir = units.user_unit_dir(env)
    if reload:
        units.check_unit_dir_seen(env)
    if sandbox is None:
        sandbox = sandboxed(env)
    report = units.InstallReport(
        unit_dir, packaged=units.packaged_units(env), linger=units.linger_enabled(env)
    )
    files: dict[Path, str] = {}
    if report.packaged is None:
        for name, text in units.render_templates(units.openloop_command()).items():
            files[unit_dir / name] = text
    else:
        report.removed = _remove_shadowing_copies(env)
    service_d = unit_dir / "openloop@.service.d"
    env_dropin = units.environment_dropin(env, units.tool_path(env))
    files[service_d / units.ENV_DROPIN] = env_dropin
    # The OnFailure= handler reads the same config (notification commands) as the iterations.
    files[unit_dir / "openloop-failure@.service.d" / units.ENV_DROPIN] = env_dropin
    if sandbox:
        if reload:
            units.probe_sandbox(env)  # refuse before writing anything if it cannot work here
        files[service_d / units.SANDBOX_DROPIN] = units.sandbox_dropin(env)
    else:
        (service_d / units.SANDBOX_DROPIN).unlink(missing_ok=True)
    for entry in load_registry(env).projects:
        try:  # one broken project.json must not keep the others from being scheduled
            files.update(_dropins_for(env, entry.alias, sandbox))
        except OpenLoopError as exc:
            report.skipped.append(f"{entry.alias}: {exc}")
    for path, text in files.items():
        (report.written if units.write_if_changed(path, text) else report.unchanged).append(
            str(path.relative_to(unit_dir))
        )
    _ensure_environment_file(env)
    if reload:
        units.daemon_reload(env)
    return report


def _remove_shadowing_copies(env: Environment) -> list[str]:
    """With vendor units (a distro package), the copies an earlier install wrote would hide
    them: remove those (never a copy the user edited)."""
    removed = []
    for path in units.shadowing_copies(env):
        path.unlink()
        removed.append(path.name)
    return removed


def _dropins_for(env: Environment, alias: str, sandbox: bool) -> dict[Path, str]:
    project = resolve(env, alias)
    calendar = project.config().schedule.on_calendar
    if calendar and (problem := units.check_calendar(calendar)):
        raise OpenLoopError(f"schedule.onCalendar {calendar!r}: {problem}")
    return units.project_dropins(
        units.user_unit_dir(env), alias, load_config(env), project.config(), project.repo, sandbox
    )


def _ensure_environment_file(env: Environment) -> None:
    path = env.config_dir / "environment"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(
                "# Environment for OpenLoop's units (API keys for the agent go here).\n"
                "# KEY=value per line; this file stays mode 0600.\n"
            )


def dropins_for(env: Environment, alias: str) -> dict[Path, str]:
    """The drop-ins `service install` would write for the project now (doctor compares)."""
    return _dropins_for(env, alias, sandboxed(env))


def sandboxed(env: Environment) -> bool:
    return (units.user_unit_dir(env) / "openloop@.service.d" / units.SANDBOX_DROPIN).exists()


def installed(env: Environment) -> bool:
    unit_dir = units.user_unit_dir(env)
    return (unit_dir / "openloop@.service").exists() or (
        units.packaged_units(env) is not None and (unit_dir / "openloop@.service.d").is_dir()
    )


def uninstall(env: Environment, progress=None) -> list[str]:
    """Stop and disable everything, then remove every file OpenLoop wrote in the unit
    directory: templates, template drop-ins and the drop-ins of every instance, also those of
    projects linked from another OPENLOOP_HOME or unlinked since. Returns the removed paths."""
    unit_dir = units.user_unit_dir(env)
    stop(env, progress=progress, disable=False)
    timers = _all_timers(env)
    units.in_batches(
        env,
        "disable",
        ["openloop.target", *timers],
        flags=("--no-reload",),
        progress=_progress(progress, "disabling timers"),
    )
    removed = []
    for path in [unit_dir / n for n in units.TEMPLATES]:
        if path.is_file():
            path.unlink()
            removed.append(str(path.relative_to(unit_dir)))
    ours = (units.DROPIN, units.ENV_DROPIN, units.SANDBOX_DROPIN)
    for folder in sorted(unit_dir.glob("openloop*.d")):
        for path in sorted(folder.iterdir()):
            if path.name in ours and path.is_file():
                path.unlink()
                removed.append(str(path.relative_to(unit_dir)))
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    units.daemon_reload(env)
    units.systemctl(env, "reset-failed", "openloop@*", "openloop-failure@*", check=False)
    return removed


def _all_timers(env: Environment) -> list[str]:
    """Linked projects' timers, plus any other openloop@ timer the manager has loaded or that
    is enabled (a project unlinked, or linked from another OPENLOOP_HOME)."""
    names = {units.instance(e.alias, "timer") for e in load_registry(env).projects}
    names |= {n for n in units.loaded_units(env, "openloop@*.timer")}
    wants = units.user_unit_dir(env) / "openloop.target.wants"
    if wants.is_dir():
        names |= {p.name for p in wants.iterdir() if p.name.startswith("openloop@")}
    return sorted(names)


def project_linked(env: Environment, alias: str) -> bool:
    """Keep the units in step with `project add`: drop-ins, and the timer when running."""
    if not installed(env):
        return False
    for path, text in _dropins_for(env, alias, sandbox=sandboxed(env)).items():
        units.write_if_changed(path, text)
    units.daemon_reload(env)
    if _target_active(env):
        units.systemctl(env, "enable", "--now", units.instance(alias, "timer"))
    return True


def project_unlinked(env: Environment, alias: str) -> None:
    if not installed(env):
        return
    units.systemctl(env, "disable", "--now", units.instance(alias, "timer"), check=False)
    units.remove_project_dropins(units.user_unit_dir(env), alias)
    units.daemon_reload(env)


# --- start / stop -------------------------------------------------------------------------------


# How long `stop` waits for running iterations: TimeoutStopSec=90s, then ExecStopPost.
STOP_WAIT_SECONDS = 150.0


@dataclass
class ScheduleReport:
    """What start/stop did and what `list-timers` shows afterwards."""

    action: str
    expected: int  # timers that should be scheduled afterwards
    scheduled: int  # timers list-timers shows
    problems: list[str]
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # worth saying, not a failure

    @property
    def ok(self) -> bool:
        return not self.problems


def _names(names: list[str] | set[str], limit: int = 8) -> str:
    shown = sorted(names)[:limit]
    more = len(names) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more else "")


def _progress(progress, what: str):
    if progress is None:
        return None

    def report(done: int, total: int) -> None:
        if total > units.BATCH:
            progress(f"{what}: {done}/{total}")

    return report


def start(env: Environment, progress=None) -> ScheduleReport:
    """Enable, then start, every linked project's timer and openloop.target, in batches; then
    check with list-timers. Enabled first: if starting fails half-way, the next login (or a
    retry) still brings everything up."""
    began = time.monotonic()
    if not installed(env):
        install(env)
    timers = [units.instance(e.alias, "timer") for e in load_registry(env).projects]
    problems = units.in_batches(
        env,
        "enable",
        ["openloop.target", *timers],
        flags=("--no-reload",),
        progress=_progress(progress, "enabling timers"),
    )
    units.daemon_reload(env)
    problems += units.in_batches(env, "start", ["openloop.target"], flags=("--no-block",))
    # The target pulls in the timers it wants; starting by name the ones that are not running
    # yet catches any it did not start.
    waiting = _not_active(env, timers)
    problems += units.in_batches(
        env,
        "start",
        waiting,
        flags=("--no-block",),
        progress=_progress(progress, "starting timers"),
    )
    _wait_until(lambda: not _not_active(env, timers))
    scheduled = units.scheduled_timers(env)
    missing = set(timers) - set(scheduled)
    if missing:
        problems.append(f"not scheduled after start: {_names(missing)}")
    extra = set(scheduled) - set(timers)
    if extra:
        problems.append(f"scheduled but not linked here (openloop project list): {_names(extra)}")
    if units.unit_file_state(env, "openloop.target") != "enabled":
        problems.append("openloop.target is not enabled: the timers will not start at login")
    return ScheduleReport("start", len(timers), len(scheduled), problems, time.monotonic() - began)


def stop(env: Environment, progress=None, *, disable: bool = True) -> ScheduleReport | None:
    """Stop the timers, then the running iterations (ExecStopPost records them as stopped by
    the user), then disable openloop.target so they stay stopped across logins (`start`
    enables it again); then check with list-timers. Disabled last: a stop that fails half-way
    leaves the schedule as it was. None if nothing is installed."""
    if not installed(env):
        return None
    began = time.monotonic()
    loaded = units.loaded_units(env, "openloop@*.timer")
    timers = sorted(n for n, state in loaded.items() if state.active != "inactive")
    problems = units.in_batches(
        env,
        "stop",
        timers,
        flags=("--no-block",),
        progress=_progress(progress, "stopping timers"),
    )
    problems += units.in_batches(env, "stop", ["openloop.target"], flags=("--no-block",))
    _wait_until(lambda: not units.scheduled_timers(env))
    running = _running_services(env)
    if running:
        if progress is not None:
            progress(f"stopping {len(running)} running iteration(s)")
        # --no-block: an iteration may take TimeoutStopSec to end; we wait below, for all of
        # them at once, instead of in one systemctl call that outlives its own timeout.
        problems += units.in_batches(env, "stop", running, flags=("--no-block",))
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        while running and time.monotonic() < deadline:
            time.sleep(0.2)
            running = _running_services(env)
        if running:
            problems.append(f"still running after {STOP_WAIT_SECONDS:.0f}s: {_names(running)}")
    if disable:
        problems += units.in_batches(env, "disable", ["openloop.target"])
    scheduled = units.scheduled_timers(env)
    if scheduled:
        problems.append(f"still scheduled after stop: {_names(set(scheduled))}")
    if disable and units.unit_file_state(env, "openloop.target") == "enabled":
        problems.append("openloop.target is still enabled: the timers would start at login")
    return ScheduleReport("stop", 0, len(scheduled), problems, time.monotonic() - began)


def start_project(env: Environment, alias: str) -> ScheduleReport:
    """`service start -p ALIAS`: this project's drop-ins, then its timer enabled and started;
    then checked with list-timers. The other projects' timers are left as they are."""
    began = time.monotonic()
    project = resolve(env, alias)
    dropins = _dropins_for(env, project.alias, sandboxed(env))  # raises: nothing to schedule
    if not installed(env):
        install(env)
    else:
        for path, text in dropins.items():
            units.write_if_changed(path, text)
        units.daemon_reload(env)
    timer = units.instance(project.alias, "timer")
    problems = units.in_batches(env, "enable", [timer], flags=("--no-reload",))
    problems += units.in_batches(env, "start", [timer], flags=("--no-block",))
    _wait_until(lambda: not _not_active(env, [timer]))
    scheduled = units.scheduled_timers(env)
    if timer not in scheduled:
        problems.append(f"not scheduled after start: {timer}")
    report = ScheduleReport("start", 1, int(timer in scheduled), problems, 0.0)
    if units.unit_file_state(env, "openloop.target") != "enabled":
        report.notes.append(
            "openloop.target is not enabled: this timer runs until you log out "
            "('openloop service start' enables every project's)"
        )
    report.seconds = time.monotonic() - began
    return report


def stop_project(env: Environment, alias: str) -> ScheduleReport | None:
    """`service stop -p ALIAS`: its timer stopped and disabled (so openloop.target does not
    bring it back at login), then its running iteration stopped (recorded as interrupted by
    you); checked with list-timers. None if nothing is installed."""
    if not installed(env):
        return None
    began = time.monotonic()
    project = resolve(env, alias)
    timer = units.instance(project.alias, "timer")
    svc = units.instance(project.alias, "service")
    problems = units.in_batches(env, "stop", [timer], flags=("--no-block",))
    _wait_until(lambda: timer not in units.scheduled_timers(env))
    if svc in _running_services(env):
        problems += units.in_batches(env, "stop", [svc], flags=("--no-block",))
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        while svc in _running_services(env) and time.monotonic() < deadline:
            time.sleep(0.2)
        if svc in _running_services(env):
            problems.append(f"still running after {STOP_WAIT_SECONDS:.0f}s: {svc}")
    problems += units.in_batches(env, "disable", [timer])
    if timer in units.scheduled_timers(env):
        problems.append(f"still scheduled after stop: {timer}")
    return ScheduleReport("stop", 0, 0, problems, time.monotonic() - began)


def _not_active(env: Environment, names: list[str]) -> list[str]:
    loaded = units.loaded_units(env, "openloop@*.timer")
    return [n for n in names if n not in loaded or loaded[n].active != "active"]


def _wait_until(done, seconds: float = 30.0) -> bool:
    """Poll for the manager to finish jobs queued with --no-block. (A blocking systemctl
    waits for every job's completion signal; for hundreds of units, or units already in the
    wanted state right after a daemon-reload, it sat out the 25 s D-Bus timeout per call.)"""
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _running_services(env: Environment) -> list[str]:
    return sorted(
        name
        for name, state in units.loaded_units(env, "openloop@*.service").items()
        if state.active in ("active", "activating", "deactivating", "reloading")
    )


def _target_active(env: Environment) -> bool:
    return units.show(env, "openloop.target", "ActiveState").get("ActiveState") == "active"


# --- status -------------------------------------------------------------------------------------


RESULTS = {
    "success": "success",
    "exec-condition": "skipped-by-gate",
    "timeout": "timeout",
    "watchdog": "watchdog",
    "exit-code": "failure",
    "signal": "killed",
    "core-dump": "crashed",
    "oom-kill": "oom-kill",
    "start-limit-hit": "start-limit-hit",
    "resources": "resources",
}


def project_status(env: Environment, project: Project) -> dict[str, Any]:
    alias = project.alias
    timer = units.show(env, units.instance(alias, "timer"), "ActiveState", "UnitFileState")
    next_run, last_trigger = units.timer_times(env, units.instance(alias, "timer"))
    svc = units.show(
        env,
        units.instance(alias, "service"),
        "ActiveState",
        "SubState",
        "Result",
        "StatusText",
        "ExecMainStatus",
        "ExecCondition",
        "ExecMainStartTimestampMonotonic",
        "InactiveExitTimestampMonotonic",
    )
    records = runs.list_records(project.plane.runs_dir, limit=1)
    last = records[0] if records else None
    result = RESULTS.get(svc.get("Result", ""), svc.get("Result") or None)
    gate_ = last_gate(env, alias)
    started = svc.get("InactiveExitTimestampMonotonic", "0") not in ("", "0") or svc.get(
        "ExecMainStartTimestampMonotonic", "0"
    ) not in ("", "0")
    if not started and gate_ is None and last is None:
        result = "never-run"  # systemd's Result of a unit that never started is "success"
    # systemd does not always report exec-condition as the Result; our gate's own record says
    # whether the latest start was skipped, and why.
    if gate_ and not gate_["run"] and (last is None or gate_["at"] > (last.get("startedAt") or "")):
        result = "skipped-by-gate"
    if _gate_failed(svc.get("ExecCondition", "")):
        # ExecCondition exits 1-254 all mean "skip" to systemd, including a gate that could not
        # even be executed (203/EXEC, 226/NAMESPACE) or found a broken config (2): our gate
        # skips with 1 only, so anything else is reported as the error it is.
        result = "gate-error"
    broken = "the gate cannot run: see 'openloop doctor'" if result == "gate-error" else None
    if gate_ and gate_.get("error"):
        result, broken = "gate-error", gate_.get("reason")
    elif svc.get("ActiveState") == "failed":
        broken = f"the unit failed ({svc.get('Result')}); see 'openloop logs -p {alias}'"
    return {
        "project": alias,
        "timer": timer.get("ActiveState") or "unknown",
        "enabled": timer.get("UnitFileState") or "unknown",
        "nextRun": next_run,
        "lastTrigger": last_trigger,
        "service": svc.get("ActiveState") or "unknown",
        "running": svc.get("ActiveState") in ("active", "activating"),
        "status": svc.get("StatusText") or None,
        "lastResult": result,
        "broken": broken,
        "lastGate": gate_,
        "lastExitStatus": svc.get("ExecMainStatus") or None,
        "lastRun": None
        if last is None
        else {
            "runId": last.get("runId"),
            "taskId": last.get("taskId"),
            "outcome": last.get("outcome"),
            "reason": last.get("reason"),
            "endedAt": last.get("endedAt"),
        },
        "paused": project.entry.paused or bool(pause.global_pause(env)),
        "environmentError": backoff.summary(env, alias),
    }


# Every property project_status reads, asked for all projects at once by the status screens
# (one that is missing here still works: its unit is then asked on its own).
STATUS_PROPERTIES = (
    "ActiveState",
    "UnitFileState",
    "SubState",
    "Result",
    "StatusText",
    "ExecMainStatus",
    "ExecCondition",
    "ExecMainStartTimestampMonotonic",
    "InactiveExitTimestampMonotonic",
)


def systemd_snapshot(env: Environment, aliases: list[str]):
    """A context in which project_status of these projects asks systemd nothing more: two
    systemctl calls for all of them instead of three per project."""
    names = [units.instance(a, kind) for a in aliases for kind in ("timer", "service")]
    return units.snapshot(env, names, *STATUS_PROPERTIES)


def _gate_failed(exec_condition: str) -> bool:
    """From `systemctl show -p ExecCondition`: the gate's program is missing (systemd then
    skips without running anything), or it ran and exited neither 0 nor 1."""
    path = re.search(r"\bpath=(\S+)", exec_condition)
    if path and not os.access(path.group(1), os.X_OK):
        return True
    pid = re.search(r"\bpid=(\d+)", exec_condition)
    status = re.search(r"\bstatus=(\d+)", exec_condition)
    if not pid or pid.group(1) == "0" or not status:
        return False
    return status.group(1) not in ("0", "1")


def budget_summary(day: budget.DaySpend, gconf: GlobalConfig) -> dict[str, Any]:
    """Today's spend for status: charged + live (`liveUsd`: what running iterations have
    spent so far), against the ceilings."""
    return {
        "spentUsd": round(day.total(), 4),
        "liveUsd": round(day.live_usd(), 4),
        "dailyUsd": gconf.budgets.daily_cost_usd,
        "projectDailyUsd": gconf.budgets.project_daily_cost_usd,
        "byProject": {
            alias: round(day.total(alias), 4)
            for alias in sorted(set(day.by_project) | {e.project for e in day.live.values()})
        },
    }


def status(env: Environment) -> dict[str, Any]:
    gconf = load_config(env)
    day = budget.today(env)
    projects = []
    entries = load_registry(env).projects
    with systemd_snapshot(env, [e.alias for e in entries]):
        for entry in entries:
            try:
                projects.append(project_status(env, project_of(entry)))
            except Exception as exc:  # one broken project must not hide the others
                projects.append({"project": entry.alias, "error": str(exc)})
    return {
        "installed": installed(env),
        "target": units.show(env, "openloop.target", "ActiveState").get("ActiveState"),
        "paused": pause.global_pause(env),
        "budget": budget_summary(day, gconf),
        "linger": units.linger_enabled(env),
        "projects": projects,
    }


def status_of(env: Environment, alias: str) -> dict[str, Any]:
    """`service status -p ALIAS`: status() with this one project's row."""
    project = resolve(env, alias)
    return {
        "installed": installed(env),
        "target": units.show(env, "openloop.target", "ActiveState").get("ActiveState"),
        "paused": pause.global_pause(env),
        "budget": budget_summary(budget.today(env), load_config(env)),
        "linger": units.linger_enabled(env),
        "projects": [project_status(env, project)],
    }


# --- the hooks around each iteration -------------------------------------------------------------


@dataclass(frozen=True)
class GateDecision:
    run: bool
    reason: str


class GateFailure(OpenLoopError):
    """The gate could not decide: OpenLoop cannot read this project's state (a corrupt ledger,
    an unreadable registry...). Not a skip: the unit must fail, so that OnFailure= notifies and
    `status`/`doctor` show the project as broken instead of it quietly never running again."""

    # ExecCondition: exit 1-254 means "skip"; only 255 (or a signal) fails the unit.
    exit_code = 255


def gate(env: Environment, alias: str) -> GateDecision:
    """ExecCondition: should this project's iteration run now? Cheap: it writes only its own
    decision (for `service status`) and once-per-state notifications. Raises GateFailure when
    it cannot tell."""
    try:
        decision = _gate(env, alias)
    except Exception as exc:  # noqa: BLE001 - any crash here is "cannot read the state"
        message = f"{type(exc).__name__}: {exc}" if not isinstance(exc, OpenLoopError) else str(exc)
        try:
            _remember_gate(env, alias, GateDecision(False, message), error=True)
        except Exception:  # noqa: BLE001,S110 - the state dir itself may be what is broken
            pass
        raise GateFailure(f"{alias}: the gate cannot read the project's state: {message}") from exc
    _remember_gate(env, alias, decision)
    return decision


def _gate_file(env: Environment, alias: str) -> Path:
    return env.state_dir / "gate" / f"{alias}.json"


def _remember_gate(
    env: Environment, alias: str, decision: GateDecision, *, error: bool = False
) -> None:
    from openloop.state.storage import atomic_write_text, dump_json

    record: dict[str, Any] = {"at": env.now_iso(), "run": decision.run, "reason": decision.reason}
    if error:
        record["error"] = True
    atomic_write_text(_gate_file(env, alias), dump_json(record))


def last_gate(env: Environment, alias: str) -> dict[str, Any] | None:
    from openloop.state.storage import read_text_or_none

    text = read_text_or_none(_gate_file(env, alias))
    try:
        return json.loads(text) if text else None
    except json.JSONDecodeError:
        return None


def _gate(env: Environment, alias: str) -> GateDecision:
    from openloop.errors import BusyError
    from openloop.loop import governance
    from openloop.loop.scheduler import gate_reason, has_work
    from openloop.state.locks import iteration_lock

    project = resolve(env, alias)
    try:
        with iteration_lock(env, project.alias):
            pass
    except BusyError:
        return GateDecision(False, "another iteration of this project is running")
    gconf = load_config(env)
    # An invalid project.json or policy.yaml raises: run-once would only skip on it, but under
    # the timer a project whose rules cannot be read must fail (OnFailure=, one notice), not go
    # quiet until someone looks.
    pconf = project.config()
    governance.load_current(project, pconf)
    reason = gate_reason(env, project, gconf, pconf)
    if reason:
        if "budget" in reason:
            day = budget.day_key(env.now())
            notifications.notify(
                env,
                "budget-exhausted",
                project=alias,
                message=reason,
                # The day's ceiling notifies once a day; each project's own once for it.
                once_key=f"budget-exhausted:{day}"
                if "budgets.dailyCostUsd" in reason
                else f"budget-exhausted:{alias}:{day}",
            )
        return GateDecision(False, reason)
    work = has_work(env, project, gconf)
    if work:
        from openloop.state.locks import slots_in_use

        cap = gconf.runtime.max_concurrent_iterations
        if slots_in_use(env, cap) >= cap:
            return GateDecision(
                False,
                f"{cap} iteration(s) already running on this host "
                "(runtime.maxConcurrentIterations); trying again at the next tick",
            )
    if not work:
        notifications.notify(
            env,
            "queue-empty",
            project=alias,
            once_key=f"queue-empty:{alias}",
            message=f"{alias}: no eligible task",
        )
        return GateDecision(False, "no eligible task and nothing to repair")
    notifications.clear(env, f"queue-empty:{alias}")
    return GateDecision(True, work)


KILLED_RESULTS = {
    "timeout": "timed-out",
    "watchdog": "stalled",
    "oom-kill": "interrupted",
    "signal": "interrupted",
    "core-dump": "interrupted",
    "exit-code": "interrupted",
}

# What run-once exits with when a stop signal ended it cleanly (Outcome.INTERRUPTED).
STOPPED_BY_SIGNAL = "17"
# A stop signal systemd sends on `systemctl stop`, seen as the main process's death.
STOP_SIGNALS = ("TERM", "INT", "HUP")


def record_exit(env: Environment, alias: str, environ: dict[str, str]) -> str | None:
    """ExecStopPost, after every start of the unit (also a skip, also a failed gate).

    - a run that ended well or a normal skip: the project works; a past failure is over, so
      the next one notifies again;
    - the gate failed (exit 255): nothing ran; OnFailure= notifies, nothing to record;
    - the user stopped the run (`service stop`): `interrupted`, no attempt, no notice;
    - systemd killed it (timeout, watchdog, OOM, signal) or it crashed: recorded on the task
      now (attempt counted, reason kept, worktree removed)."""
    from openloop.loop.scheduler import repair_after_kill, settle_stopped_run

    result = environ.get("SERVICE_RESULT", "")
    code = environ.get("EXIT_CODE", "")
    status_ = environ.get("EXIT_STATUS", "")
    if result == "exec-condition" or (result == "success" and code != "killed"):
        notifications.clear_prefix(env, failure_key_prefix(alias))
        if result == "success" and status_ == STOPPED_BY_SIGNAL:
            settle_stopped_run(env, alias, "interrupted", "", user_stop=True)
            return "stopped by the user; the task keeps its attempts"
        return None
    if result == "" and code != "killed":
        return None
    if result == "exit-code" and status_ == "255" and (last_gate(env, alias) or {}).get("error"):
        return None  # the gate failed: no iteration ran; the OnFailure= handler notifies
    if result == "exit-code" and status_.isdigit() and int(status_) >= 10:
        return None  # a task outcome exit status (SuccessExitStatus): already recorded
    outcome = KILLED_RESULTS.get(result, "interrupted")
    reason = f"systemd stopped the iteration: {result or 'stopped'} ({code} {status_})".strip()
    if code == "exited" and status_ == STOPPED_BY_SIGNAL:
        # run-once handled systemd's SIGTERM (RuntimeMaxSec) and closed the run itself.
        task_id = settle_stopped_run(env, alias, outcome, reason, user_stop=False)
        return f"{reason}; settled: {task_id or 'nothing'}"
    user_stop = result == "success" and code == "killed" and status_ in STOP_SIGNALS
    if user_stop:
        reason = f"stopped by the user before it finished ({status_})"
    repaired = repair_after_kill(env, alias, outcome, reason, user_stop=user_stop)
    return f"{reason}; repaired: {', '.join(repaired) or 'nothing running'}"


def failure_key_prefix(alias: str) -> str:
    return f"unit-failed:{alias}:"


def notify_unit_failure(env: Environment, unit: str) -> bool:
    """OnFailure= handler: OpenLoop itself failed in UNIT. One notice per distinct failure (the
    gate's error, or systemd's result and status), and none again until the project has worked
    once more (record_exit clears it): a crash that lasts must not notify at every tick."""
    import hashlib

    alias = unit.removeprefix("openloop@").removesuffix(".service")
    props = units.show(env, unit, "Result", "ExecMainStatus", "ExecMainCode")
    result = props.get("Result")
    if result in ("timeout", "watchdog"):
        return False  # a hung task, already recorded and notified by record-exit: not a crash
    gate_ = last_gate(env, alias) or {}
    if gate_.get("error"):
        what = f"its state cannot be read: {gate_.get('reason')}"
    else:
        what = f"{result or 'failed'} (exit status {props.get('ExecMainStatus') or '?'})"
    digest = hashlib.sha256(what.encode()).hexdigest()[:12]
    return notifications.notify(
        env,
        "task-failed",
        project=alias,
        once_key=f"{failure_key_prefix(alias)}{digest}",
        message=f"OpenLoop unit {unit} failed: {what}; see 'openloop logs -p {alias}'",
    )


# --- the fallback for hosts without a user manager ------------------------------------------------


def run_foreground(
    env: Environment, *, interval: float | None = None, iterations: int | None = None, echo=print
) -> None:
    """`service run`: each project on its own schedule, in this process, via run-once logic.
    No pid files: the per-project lock is what keeps two iterations apart."""
    from openloop.errors import OpenLoopError
    from openloop.loop import interrupt
    from openloop.loop.scheduler import run_once

    next_at: dict[str, float] = {}
    done = 0
    while iterations is None or done < iterations:
        gconf = load_config(env)
        now = time.monotonic()
        for entry in load_registry(env).projects:
            if next_at.get(entry.alias, 0) > now:
                continue
            minutes = None
            try:  # one broken project must not stop the others
                decision = gate(env, entry.alias)
                if decision.run:
                    result = run_once(env, entry.alias)
                    echo(f"{entry.alias}: {result.outcome.value}: {result.reason}")
                    if interrupt.requested():  # a stop signal: the loop ends with the run
                        return
                minutes = resolve(env, entry.alias).config().schedule.interval_minutes
            except OpenLoopError as exc:
                echo(f"{entry.alias}: error: {exc}")
            pause_s = (
                interval
                if interval is not None
                else 60 * (minutes or gconf.runtime.interval_minutes)
            )
            next_at[entry.alias] = time.monotonic() + pause_s
        done += 1
        if iterations is not None and done >= iterations:
            break
        wake = min(next_at.values(), default=time.monotonic() + 60)
        time.sleep(max(0.5, wake - time.monotonic()))
