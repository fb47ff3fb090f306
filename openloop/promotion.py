"""Hand-over of a validated result: review branch or merge, with a record of every decision.

`.openloop/promotions/<task-id>.json` is the pending request a human acts on;
`.openloop/promotion-results/<task-id>.jsonl` is the append-only chronology of decisions and
their outcomes for that task.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openloop.controlplane import ControlPlane
from openloop.storage import atomic_write_text, dump_json, locked, read_text_or_none


@dataclass(frozen=True)
class Decision:
    action: str  # "review" (branch kept for a human) or "auto-merge"
    risk: str
    reasons: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


def request_path(plane: ControlPlane, task_id: str) -> Path:
    return plane.promotions_dir / f"{task_id}.json"


def history_path(plane: ControlPlane, task_id: str) -> Path:
    return plane.promotion_results_dir / f"{task_id}.jsonl"


def write_request(plane: ControlPlane, task_id: str, request: dict[str, Any]) -> Path:
    path = request_path(plane, task_id)
    atomic_write_text(path, dump_json({"version": 1, **request}))
    return path


def read_request(plane: ControlPlane, task_id: str) -> dict[str, Any] | None:
    text = read_text_or_none(request_path(plane, task_id))
    return json.loads(text) if text else None


def append_history(plane: ControlPlane, task_id: str, entry: dict[str, Any]) -> None:
    """Append one JSON line; rewritten atomically under a lock, so a crash never tears it."""
    path = history_path(plane, task_id)
    with locked(path, what=f"promotion history of {task_id}"):
        existing = read_text_or_none(path) or ""
        atomic_write_text(path, existing + json.dumps(entry, ensure_ascii=False) + "\n")


def read_history(plane: ControlPlane, task_id: str) -> list[dict[str, Any]]:
    text = read_text_or_none(history_path(plane, task_id)) or ""
    entries = []
    for line in text.splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a hand-edited line must not hide the rest of the chronology
    return entries


def hand_over(it, task, now: str) -> dict[str, Any]:
    """Route a validated result: for now every result waits for a human on its review branch.

    `it` is the scheduler's Iteration; `task` is the ledger's copy, in status validating.
    """
    from openloop.ledger import transition

    plane: ControlPlane = it.project.plane
    decision = it.decision or {}
    request = {
        "taskId": task.id,
        "title": task.title,
        "createdAt": now,
        "status": "pending",
        "action": "review",
        "branch": it.branch,
        "baseBranch": it.base_branch,
        "baseCommit": it.base_commit,
        "headCommit": it.head_commit,
        "risk": decision.get("risk", task.risk),
        "reasons": decision.get("reasons", []),
        "changedFiles": [c.path for c in it.changes],
        "linesChanged": it.lines_changed,
        "validation": [c.to_data() for c in it.checks],
        "runIds": [it.run_id],
        "costUsd": it.agent_result.cost_usd if it.agent_result else 0.0,
    }
    write_request(plane, task.id, request)
    append_history(
        plane,
        task.id,
        {
            "at": now,
            "kind": "request",
            "action": "review",
            "runId": it.run_id,
            "headCommit": it.head_commit,
            "risk": request["risk"],
            "reasons": request["reasons"],
        },
    )
    transition(task, "review", f"validated in run {it.run_id}; review branch {it.branch}", now)
    return {"action": "review"}
