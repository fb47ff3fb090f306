"""`openloop status`: one screen across projects, from the ledgers, budget and systemd."""

from __future__ import annotations

import contextlib
from typing import Any

from openloop.actions.service import budget_summary
from openloop.env import Environment
from openloop.errors import OpenLoopError
from openloop.state import backoff, budget, pause, requests
from openloop.state.config import load_config
from openloop.state.ledger import load_ledger, load_rows, summary
from openloop.state.project import project_of
from openloop.state.registry import ProjectEntry, load_registry


def dashboard(env: Environment, *, with_systemd: bool = True) -> dict[str, Any]:
    gconf = load_config(env)
    entries = load_registry(env).projects
    snapshot = contextlib.nullcontext()
    if with_systemd:
        from openloop.actions import service

        snapshot = service.systemd_snapshot(env, [e.alias for e in entries])
    with snapshot:
        rows = [_row(env, entry, with_systemd) for entry in entries]
    return {
        "paused": pause.global_pause(env),
        "budget": budget_summary(budget.today(env), gconf),
        "projects": rows,
    }


def _row(env: Environment, entry: ProjectEntry, with_systemd: bool) -> dict[str, Any]:
    row: dict[str, Any] = {"project": entry.alias, "paused": entry.paused}
    try:
        project = project_of(entry)
        counts = summary(load_rows(project.plane.ledger_file))["byStatus"]
        row["tasks"] = {k: v for k, v in counts.items() if v}
        if counts.get("blocked"):
            row["escaped"] = _escaped(project)
        if waiting := backoff.summary(env, entry.alias):
            row["environmentError"] = waiting
        row["pendingReviews"] = sum(
            1
            for r in requests.list_requests(project.plane)
            if r.get("status") in requests.OPEN_STATUSES
        )
        if with_systemd:
            from openloop.actions import service

            state = service.project_status(env, project)
            row.update(
                nextRun=state["nextRun"],
                running=state["running"],
                status=state["status"],
                lastResult=state["lastResult"],
                lastRun=state["lastRun"],
                broken=state["broken"],
            )
    except OpenLoopError as exc:
        row["error"] = str(exc)
    return row


def _escaped(project) -> list[str]:
    """Blocked tasks whose last run changed something outside the agent's own repository:
    each needs a human to look at what changed (task show has the exact difference)."""
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
        lines.append(
            f"{row['project'][:16]:16} {t.get('ready', 0) + t.get('proposed', 0):>5} "
            f"{t.get('in_progress', 0) + t.get('validating', 0):>3} {row['pendingReviews']:>6} "
            f"{t.get('blocked', 0) + t.get('failed', 0):>7} "
            f"{t.get('promoted', 0) + t.get('done', 0):>5}  {now}"
        )
        if row.get("broken"):
            lines.append(f"  ! BROKEN: {row['broken']}")
        if waiting := row.get("environmentError"):
            lines.append(f"  ! {backoff.describe(row['project'], waiting)}")
        for task_id in row.get("escaped", []):
            lines.append(
                f"  ! {task_id} ESCAPED its workspace and was blocked: "
                f"'openloop task show -p {row['project']} --task {task_id}'"
            )
    if not data["projects"]:
        lines.append("No linked projects. Link one with 'openloop project add ALIAS PATH --init'.")
    return "\n".join(lines)
