"""Service actions: install the units, start and stop the schedules, read their state back, and
the two small hooks the service unit calls around each iteration (gate, record-exit)."""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openloop.adapters import notifications, units
from openloop.env import Environment
from openloop.errors import OpenLoopError
from openloop.state import backoff, budget, pause, runs
from openloop.state.config import GlobalConfig, load_config
from openloop.state.project import Project, resolve
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


def sandboxed(env: Environment) -> bool:
    return (units.user_unit_dir(env) / "openloop@.service.d" / units.SANDBOX_DROPIN).exists()


def installed(env: Environment) -> bool:
    unit_dir = units.user_unit_dir(env)
    return (unit_dir / "openloop@.service").exists() or (
        units.packaged_units(env) is not None and (unit_dir / "openloop@.service.d").is_dir()
    )


def uninstall(env: Environment) -> list[str]:
    unit_dir = units.user_unit_dir(env)
    aliases = [e.alias for e in load_registry(env).projects]
    units.systemctl(
        env,
        "disable",
        "--now",
        "openloop.target",
        *(units.instance(a, "timer") for a in aliases),
        check=False,
    )
    removed = []
    # Running iterations are stopped first (ExecStopPost records them) while their unit
    # files still exist.
    units.systemctl(env, "stop", "openloop@*.service", check=False)
    targets = [unit_dir / n for n in units.TEMPLATES] + [
        unit_dir / "openloop@.service.d" / units.ENV_DROPIN,
        unit_dir / "openloop@.service.d" / units.SANDBOX_DROPIN,
        unit_dir / "openloop-failure@.service.d" / units.ENV_DROPIN,
    ]
    for path in targets:
        if path.exists():
            path.unlink()
            removed.append(path.name)
    for alias in aliases:
        units.remove_project_dropins(unit_dir, alias)
    for folder in unit_dir.glob("openloop*.d"):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    units.daemon_reload(env)
    return removed


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


def start(env: Environment) -> list[str]:
    if not installed(env):
        install(env)
    timers = [units.instance(e.alias, "timer") for e in load_registry(env).projects]
    units.systemctl(env, "enable", "openloop.target", *timers)
    units.systemctl(env, "start", "openloop.target", *timers)
    return timers


def stop(env: Environment) -> bool:
    """Stop the timers and running iterations, and keep them stopped across logins (the target
    is disabled; `start` enables it again). False if nothing is installed."""
    if not installed(env):
        return False
    units.systemctl(env, "disable", "openloop.target", check=False)
    units.systemctl(env, "stop", "openloop.target", "openloop@*.timer", "openloop@*.service")
    return True


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
    )
    records = runs.list_records(project.plane.runs_dir, limit=1)
    last = records[0] if records else None
    result = RESULTS.get(svc.get("Result", ""), svc.get("Result") or None)
    gate_ = last_gate(env, alias)
    # systemd does not always report exec-condition as the Result; our gate's own record says
    # whether the latest start was skipped, and why.
    if gate_ and not gate_["run"] and (last is None or gate_["at"] > (last.get("startedAt") or "")):
        result = "skipped-by-gate"
    if _gate_failed(svc.get("ExecCondition", "")):
        # ExecCondition exits 1-254 all mean "skip" to systemd, including a gate that could not
        # even be executed (203/EXEC, 226/NAMESPACE) or found a broken config (2): our gate
        # skips with 1 only, so anything else is reported as the error it is.
        result = "gate-error"
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
    for entry in load_registry(env).projects:
        try:
            projects.append(project_status(env, resolve(env, entry.alias)))
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


# --- the hooks around each iteration -------------------------------------------------------------


@dataclass(frozen=True)
class GateDecision:
    run: bool
    reason: str


def gate(env: Environment, alias: str) -> GateDecision:
    """ExecCondition: should this project's iteration run now? Cheap: it writes only its own
    decision (for `service status`) and once-per-state notifications."""
    decision = _gate(env, alias)
    _remember_gate(env, alias, decision)
    return decision


def _gate_file(env: Environment, alias: str) -> Path:
    return env.state_dir / "gate" / f"{alias}.json"


def _remember_gate(env: Environment, alias: str, decision: GateDecision) -> None:
    from openloop.state.storage import atomic_write_text, dump_json

    record = {
        "at": env.now_iso(),
        "run": decision.run,
        "reason": decision.reason,
    }
    atomic_write_text(_gate_file(env, alias), dump_json(record))


def last_gate(env: Environment, alias: str) -> dict[str, Any] | None:
    from openloop.state.storage import read_text_or_none

    text = read_text_or_none(_gate_file(env, alias))
    try:
        return json.loads(text) if text else None
    except json.JSONDecodeError:
        return None


def _gate(env: Environment, alias: str) -> GateDecision:
    from openloop.errors import BusyError, ConfigError
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
    try:
        pconf = project.config()
        governance.load_current(project, pconf)
    except ConfigError as exc:  # the iteration would skip on it too: say so here, not in a crash
        return GateDecision(False, str(exc))
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


def record_exit(env: Environment, alias: str, environ: dict[str, str]) -> str | None:
    """ExecStopPost: if systemd killed the iteration (timeout, watchdog, OOM, signal) or it
    crashed, record that on the task now: attempt counted, reason kept, worktree removed."""
    from openloop.loop.scheduler import repair_after_kill

    result = environ.get("SERVICE_RESULT", "")
    code = environ.get("EXIT_CODE", "")
    status_ = environ.get("EXIT_STATUS", "")
    if result in ("", "success", "exec-condition") and code != "killed":
        return None
    if result == "exit-code" and status_.isdigit() and int(status_) >= 10:
        return None  # a task outcome exit status (SuccessExitStatus): already recorded
    outcome = KILLED_RESULTS.get(result, "interrupted")
    reason = f"systemd stopped the iteration: {result or 'stopped'} ({code} {status_})".strip()
    repaired = repair_after_kill(env, alias, outcome, reason)
    return f"{reason}; repaired: {', '.join(repaired) or 'nothing running'}"


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
