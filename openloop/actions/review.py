"""What a person reviews: a task with its promotion, a promotion request with its branch state,
and the diff itself (through git's own pager)."""

from __future__ import annotations

from typing import Any

from openloop.adapters import gitops
from openloop.errors import NotFoundError, StateError
from openloop.loop import promotion
from openloop.state.ledger import check_task_id, load_ledger
from openloop.state.project import Project, require_initialized


def task_view(project: Project, task_id: str) -> dict[str, Any]:
    """`task show`: the task, its promotion request and the promotion chronology."""
    require_initialized(project)
    check_task_id(task_id)
    ledger = load_ledger(project.plane.ledger_file)
    found = ledger.find(task_id)
    if found is None:  # a finished task moved to the archive (state/archive.py)
        from openloop.state import archive

        found = archive.find(project.plane, task_id) or ledger.get(task_id)
    view = {
        "project": project.alias,
        "task": found.to_data(),
        "promotion": promotion.read_request(project.plane, task_id),
        "promotionHistory": promotion.read_history(project.plane, task_id),
    }
    from openloop.actions.migrate import run_summaries

    if v1_runs := run_summaries(project.plane, task_id):
        view["v1Runs"] = v1_runs  # the original OpenLoop's run summaries (runs/*.md)
    return view


def promotion_view(project: Project, task_id: str) -> dict[str, Any]:
    """`promotion show`: the request, whether its branch still exists, and its history."""
    check_task_id(task_id)
    request = promotion.read_request(project.plane, task_id)
    if request is None:
        raise NotFoundError(f"--task: no promotion request for task '{task_id}'")
    branch = request.get("branch")
    request["branchExists"] = bool(branch) and gitops.ref_exists(
        project.repo, f"refs/heads/{branch}"
    )
    request["history"] = promotion.read_history(project.plane, task_id)
    return request


def show_diff(project: Project, task_id: str, *, color: str | None, stat: bool = False) -> int:
    """The reviewed change, base..head as recorded in the request, in git's pager."""
    request = promotion_view(project, task_id)
    base, head = request.get("baseCommit"), request.get("headCommit")
    if not base or not head:
        raise StateError(f"the promotion of '{task_id}' records no commits to compare")
    for commit in (base, head):
        if not gitops.ref_exists(project.repo, f"{commit}^{{commit}}"):
            raise StateError(
                f"commit {commit[:12]} of the promotion of '{task_id}' is no longer in "
                f"{project.repo} (garbage-collected?)"
            )
    return gitops.show_diff(project.repo, base, head, color=color, stat=stat)
