"""What a project is doing right now, for `status`: the iteration running (whoever started
it: systemd or a shell) and why its runs are skipped, with the fix.

Cheap by design, for many projects: no systemctl, no git, no lock taken. Running means the
project's iteration lock is held (read from /proc/locks once for all projects: trying the lock
would make an iteration starting at that instant fail as busy); the task, phase and start time
come from the iteration's phase file and its run record marked running, trusted only when
they name the lock holder's pid.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from openloop.env import Environment
from openloop.errors import OpenLoopError
from openloop.state import backoff, locks, pause, runs, trust
from openloop.state.config import GlobalConfig
from openloop.state.gate import Shared, gate_reason
from openloop.state.project import Project


def held_locks() -> dict[tuple[int, int], int] | None:
    """Read once per `status`, for every project."""
    return locks.held_locks()


def activity(
    env: Environment,
    project: Project,
    gconf: GlobalConfig,
    held: dict[tuple[int, int], int] | None,
    last_gate: dict[str, Any] | None = None,
    common: Shared | None = None,
) -> dict[str, Any]:
    """{"iteration": the run in progress or None, "skipped": why runs are skipped or None}."""
    return {
        "iteration": running_iteration(env, project, held),
        "skipped": skip_reason(env, project, gconf, last_gate, common),
    }


def running_iteration(
    env: Environment, project: Project, held: dict[tuple[int, int], int] | None
) -> dict[str, Any] | None:
    alias = project.alias
    open_runs = None
    if held is None:  # no /proc/locks: fall back on the run record's pid being alive
        open_runs = runs.unfinished(project.plane.runs_dir)
        holder = next((r.get("pid") for r in open_runs if pid_alive(r.get("pid"))), None)
    else:
        holder = locks.iteration_lock_holder(env, alias, held)
    if holder is None:
        return None
    if open_runs is None:  # all the run records (up to runtime.keepRuns): only when running
        open_runs = runs.unfinished(project.plane.runs_dir)
    record = next((r for r in reversed(open_runs) if r.get("pid") in (holder, None)), None)
    phase = runs.read_phase(env.state_dir, alias) or {}
    if holder and phase.get("pid") != holder:
        phase = {}
    if not record and not phase:
        # The lock without an iteration's traces: a merge, a purge, or an iteration that has
        # not reported its first phase yet.
        return {"pid": holder or None, "taskId": None, "phase": None, "startedAt": None,
                "elapsedSeconds": None, "startedBy": None, "runId": None}  # fmt: skip
    started = (record or {}).get("startedAt") or phase.get("startedAt")
    return {
        "pid": holder or (record or {}).get("pid"),
        "runId": (record or {}).get("runId"),
        "taskId": (record or {}).get("taskId") or phase.get("taskId"),
        "title": (record or {}).get("title"),
        "phase": phase.get("phase"),
        "check": phase.get("check"),
        "startedAt": started,
        "elapsedSeconds": _elapsed(env, started),
        "startedBy": phase.get("startedBy"),
    }


def pid_alive(pid: Any) -> bool:
    """Whether a process with this pid exists (ours or another user's)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _elapsed(env: Environment, started: str | None) -> int | None:
    if not started:
        return None
    try:
        when = datetime.fromisoformat(started.replace("Z", "+00:00"))
        return max(0, int((env.now() - when).total_seconds()))
    except (ValueError, TypeError):
        return None


def skip_reason(
    env: Environment,
    project: Project,
    gconf: GlobalConfig,
    last_gate: dict[str, Any] | None = None,
    common: Shared | None = None,
) -> dict[str, Any] | None:
    """Why this project's runs are skipped now: {"kind", "reason", "fix"}; None when they are
    not (an empty queue or a full host is not a problem to fix: not reported here)."""
    alias = project.alias
    try:
        pconf = project.config()
    except OpenLoopError as exc:
        return {
            "kind": "invalid-rules",
            "reason": str(exc),
            "fix": f"fix the file, then 'openloop config validate -p {alias}'",
        }
    reason = gate_reason(env, project, gconf, pconf, common)
    if reason:
        return {"kind": _kind(env, project, pconf, reason), "reason": reason,
                "fix": _fix(env, project, pconf, reason)}  # fmt: skip
    if last_gate and last_gate.get("error"):
        return {
            "kind": "invalid-rules",
            "reason": str(last_gate.get("reason")),
            "fix": f"'openloop config validate -p {alias}', then 'openloop doctor'",
        }
    return None


def _kind(env: Environment, project: Project, pconf, reason: str) -> str:
    if project.entry.paused or pause.global_pause(env):
        return "paused"
    if trust.untrusted_reason(project.entry, pconf):
        return "untrusted"
    if backoff.active(env, project.alias) is not None:
        return "environment-error"
    if "budget" in reason:
        return "over-budget"
    return "skipped"


def _fix(env: Environment, project: Project, pconf, reason: str) -> str:
    alias = project.alias
    kind = _kind(env, project, pconf, reason)
    if kind == "paused":
        return "'openloop resume'" if pause.global_pause(env) else f"'openloop resume -p {alias}'"
    if kind == "untrusted":
        return f"'openloop project trust {alias}' (review the commands first with --check)"
    if kind == "environment-error":
        waiting = backoff.summary(env, alias) or {}
        fix = waiting.get("fix") or "fix the agent's environment"
        return f"{fix}; then 'openloop resume -p {alias}' to retry now"
    if kind == "over-budget":
        key = "budgets.dailyCostUsd" if "budgets.dailyCostUsd" in reason else (
            "budgets.projectDailyCostUsd")  # fmt: skip
        return f"wait for tomorrow, or raise it: 'openloop config set {key} AMOUNT'"
    return "see 'openloop doctor'"
