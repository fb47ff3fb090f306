"""`openloop status`: one screen across projects, from the ledgers, budget and systemd.

Cheap over hundreds of projects: the registry is read once, systemd is asked once for every
unit (unit_status.systemd_snapshot), and a project's own reads are only of what the screen shows.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from openloop.actions import activity, unit_status
from openloop.actions.unit_hooks import last_gate
from openloop.actions.unit_status import budget_summary
from openloop.adapters import manager
from openloop.env import Environment
from openloop.errors import OpenLoopError
from openloop.state import backoff, gate, requests
from openloop.state import baseline as baseline_cache
from openloop.state.config import load_config
from openloop.state.project import project_of
from openloop.state.registry import ProjectEntry, load_registry
from openloop.state.rows import load_rows, summary


def dashboard(env: Environment, *, with_systemd: bool = True) -> dict[str, Any]:
    # Reading /proc/locks took 10-15 ms on some hosts (the kernel builds the whole table): it
    # runs beside the reads of the config, the registry and the systemd query.
    found: list[dict[tuple[int, int], int] | None] = []
    reader = threading.Thread(target=lambda: found.append(activity.held_locks()), daemon=True)
    reader.start()
    gconf = load_config(env)
    entries = load_registry(env).projects
    common = gate.shared(env)
    snapshot = contextlib.nullcontext()
    if with_systemd:
        snapshot = unit_status.systemd_snapshot(env, [e.alias for e in entries])
    with snapshot:
        reader.join()
        held = found[0] if found else None  # None: unknown, as when it cannot be read
        # The files first, while systemctl answers; then what systemd says, per project.
        rows = [_row(env, entry, gconf, held, common) for entry in entries]
        if with_systemd:
            manager.settle()  # systemctl missing: the whole screen's error, not each project's
            for row, known in rows:
                _unit_part(env, row, known, common)
    return {
        "paused": common.paused,
        "budget": budget_summary(common.day, gconf),
        "projects": [row for row, _known in rows],
    }


def _row(
    env: Environment, entry: ProjectEntry, gconf, held, common: gate.Shared
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The project's row from its files, and what _unit_part needs of them (None: an error)."""
    row: dict[str, Any] = {"project": entry.alias, "paused": entry.paused}
    try:
        project = project_of(entry)
        counts = summary(load_rows(project.plane.ledger_file))["byStatus"]
        row["tasks"] = {k: v for k, v in counts.items() if v}
        if counts.get("blocked"):
            row["escaped"] = _escaped(project)
        if waiting := backoff.summary(env, entry.alias):
            row["environmentError"] = waiting
        if health := baseline_cache.summary(env, entry.alias):
            row["baseline"] = health
        row["pendingReviews"] = sum(
            1
            for r in requests.list_requests(project.plane)
            if r.get("status") in requests.OPEN_STATUSES
        )
        gate_ = last_gate(env, project.alias)
        row["activity"] = activity.activity(env, project, gconf, held, gate_, common)
    except OpenLoopError as exc:
        row["error"] = str(exc)
        return row, None
    return row, {"project": project, "gate": gate_, "waiting": waiting}


def _unit_part(env: Environment, row: dict[str, Any], known, common: gate.Shared) -> None:
    if known is None:
        return
    try:
        state = unit_status.project_status(
            env,
            known["project"],
            gate=known["gate"],
            paused=common.paused,
            waiting=known["waiting"],
        )
    except OpenLoopError as exc:
        row["error"] = str(exc)
        return
    row.update(
        nextRun=state["nextRun"],
        running=state["running"],
        status=state["status"],
        lastResult=state["lastResult"],
        lastRun=state["lastRun"],
        broken=state["broken"],
    )


def _escaped(project) -> list[str]:
    """Blocked tasks whose last run changed something outside the agent's own repository:
    each needs a human to look at what changed (task show has the exact difference)."""
    from openloop.state.ledger import load_ledger  # its models: only when something is blocked

    return [
        t.id
        for t in load_ledger(project.plane.ledger_file).tasks
        if t.status == "blocked" and (t.last_run or {}).get("outcome") == "escaped"
    ]


def render(data: dict[str, Any]) -> str:
    spent, daily = data["budget"]["spentUsd"], data["budget"]["dailyUsd"]
    lines = [
        f"OpenLoop  budget ${spent:.2f} / ${daily:.2f} today"
        + ("  PAUSED" if data["paused"] else "")
    ]
    lines.append("")
    header = f"{'PROJECT':16} {'READY':>5} {'RUN':>3} {'REVIEW':>6} {'BLOCKED':>7} {'DONE':>5}  "
    lines.append(header + "NEXT / NOW")
    for row in data["projects"]:
        if "error" in row:
            lines.append(f"{row['project']:16} error: {row['error']}")
            continue
        t = row.get("tasks", {})
        now = (
            row.get("status")
            if row.get("running")
            else ("paused" if row.get("paused") else (row.get("nextRun") or "-"))
        )
        now = _running_now(row) or now
        lines.append(
            f"{row['project'][:16]:16} {t.get('ready', 0) + t.get('proposed', 0):>5} "
            f"{t.get('in_progress', 0) + t.get('validating', 0):>3} {row['pendingReviews']:>6} "
            f"{t.get('blocked', 0) + t.get('failed', 0):>7} "
            f"{t.get('promoted', 0) + t.get('done', 0):>5}  {now}"
        )
        if row.get("broken"):
            lines.append(f"  ! BROKEN: {row['broken']}")
        lines.extend(_skip_lines(row))
        if waiting := row.get("environmentError"):
            lines.append(f"  ! {backoff.describe(row['project'], waiting)}")
        health = row.get("baseline") or {}
        for failure in health.get("unhealable", []):
            lines.append(
                f"  ! {health.get('branch')} fails {failure['check']}, not auto-healable "
                f"({failure['why']}): fix it by hand"
            )
        for failure in health.get("healable", []):
            lines.append(f"  ~ {health.get('branch')} fails {failure['check']}: {failure['kind']}")
        for task_id in row.get("escaped", []):
            lines.append(
                f"  ! {task_id} ESCAPED its workspace and was blocked: "
                f"'openloop task show -p {row['project']} --task {task_id}'"
            )
    if not data["projects"]:
        lines.append("No linked projects. Link one with 'openloop project add ALIAS PATH --init'.")
    return "\n".join(lines)


def _running_now(row: dict[str, Any]) -> str | None:
    """`running add-health: agent 3m12s (shell)`, for a run however it was started."""
    it = (row.get("activity") or {}).get("iteration")
    if not it:
        return None
    what = it.get("taskId") or "(no task yet)"
    phase = it.get("phase") or "phase not known"
    if it.get("check"):
        phase += f" {it['check']}"
    elapsed = it.get("elapsedSeconds")
    clock = f" {_duration(elapsed)}" if elapsed is not None else ""
    by = f" ({it['startedBy']})" if it.get("startedBy") else ""
    return f"running {what}: {phase}{clock}{by}"


def _duration(seconds: int) -> str:
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _skip_lines(row: dict[str, Any]) -> list[str]:
    skipped = (row.get("activity") or {}).get("skipped")
    if not skipped or skipped.get("kind") == "environment-error" and row.get("environmentError"):
        return []  # the environment error has its own line, with the retry time and fix
    return [f"  ! SKIPPED ({skipped['kind']}): {skipped['reason']}", f"    fix: {skipped['fix']}"]
