"""What the units are doing: each project's timer, service, last gate and last result, in one
batched systemd query for all projects (`status`, `service status`, the dashboard)."""

from __future__ import annotations

import os
import re
from typing import Any

from openloop.actions.service import installed
from openloop.actions.unit_hooks import last_gate
from openloop.adapters import manager, units
from openloop.env import Environment
from openloop.state import backoff, budget, pause, runs
from openloop.state.config import GlobalConfig, load_config
from openloop.state.project import Project, project_of, resolve
from openloop.state.registry import load_registry

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


_UNREAD: Any = object()


def project_status(
    env: Environment,
    project: Project,
    *,
    gate: Any = _UNREAD,
    paused: Any = _UNREAD,
    waiting: Any = _UNREAD,
) -> dict[str, Any]:
    """The project's unit, last run and gate. `gate` (last_gate), `paused` (the global pause)
    and `waiting` (backoff.summary): what a caller over many projects has read already."""
    alias = project.alias
    timer = manager.show(env, units.instance(alias, "timer"), "ActiveState", "UnitFileState")
    next_run, last_trigger = manager.timer_times(env, units.instance(alias, "timer"))
    svc = manager.show(
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
    gate_ = last_gate(env, alias) if gate is _UNREAD else gate
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
        "paused": project.entry.paused
        or bool(pause.global_pause(env) if paused is _UNREAD else paused),
        "environmentError": backoff.summary(env, alias) if waiting is _UNREAD else waiting,
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
    return manager.snapshot(env, names, *STATUS_PROPERTIES)


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
        manager.settle()  # systemctl missing: the whole screen's error, not each project's
        for entry in entries:
            try:
                projects.append(project_status(env, project_of(entry)))
            except Exception as exc:  # one broken project must not hide the others
                projects.append({"project": entry.alias, "error": str(exc)})
    return {
        "installed": installed(env),
        "target": manager.show(env, "openloop.target", "ActiveState").get("ActiveState"),
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
        "target": manager.show(env, "openloop.target", "ActiveState").get("ActiveState"),
        "paused": pause.global_pause(env),
        "budget": budget_summary(budget.today(env), load_config(env)),
        "linger": units.linger_enabled(env),
        "projects": [project_status(env, project)],
    }
