"""What a human (or a later iteration) does with a pending promotion request: apply it (merge
after re-validating the reviewed commit), reject it, withdraw it, or retry a merge that was
deferred. The request files and the merge itself are loop/promotion.py."""

from __future__ import annotations

from typing import Any

from openloop.adapters import gitops
from openloop.env import Environment
from openloop.errors import NotFoundError, StateError, UntrustedError
from openloop.loop import governance, promotion
from openloop.state import trust
from openloop.state.config import load_config
from openloop.state.controlplane import ControlPlane
from openloop.state.ledger import edit_ledger, transition
from openloop.state.project import Project
from openloop.state.projectconfig import ProjectConfig
from openloop.state.requests import OPEN_STATUSES, list_requests
from openloop.text import check_line

# --- what a human (or a later iteration) does with a pending request -------------------------


def _open_request(plane: ControlPlane, task_id: str) -> dict[str, Any]:
    request = promotion.read_request(plane, task_id)
    if request is None:
        raise NotFoundError(f"--task: no promotion request for task '{task_id}'")
    if request.get("status") not in OPEN_STATUSES:
        raise StateError(f"the promotion of '{task_id}' is already {request.get('status')}")
    return request


def apply(
    env: Environment, project: Project, task_id: str, *, validate: bool = True
) -> promotion.MergeResult:
    """Merge a review branch into the default branch, or refuse and change nothing."""
    plane = project.plane
    request = _open_request(plane, task_id)
    _require_review(plane, task_id)
    pconf = project.config()
    if validate:
        trust.require_trusted(project.entry, pconf)
    branch, head, base = _reviewed(project, pconf, task_id, request)
    if not gitops.ref_exists(project.repo, f"refs/heads/{branch}"):
        raise StateError(f"branch {branch} no longer exists")
    gconf = load_config(env)
    now = env.now_iso()
    result = promotion.merge_branch(
        env,
        project,
        pconf,
        branch,
        base=base,
        expected_head=head,
        check_dir=plane.runs_dir / f"apply-{task_id}",
        check_env=dict(env.environ),
        timeout=float(gconf.runtime.validation_timeout_seconds),
        validate="always" if validate else "never",
    )
    if not result.merged:
        promotion.append_history(
            plane, task_id, {"at": now, "kind": "apply", "status": "refused", "note": result.reason}
        )
        error = UntrustedError if result.untrusted else StateError
        raise error(f"cannot apply '{task_id}': {result.reason}; nothing was changed")
    _close(
        plane,
        task_id,
        request,
        now,
        "applied",
        result.reason,
        merged=result.head,
        alias=project.alias,
        validated=result.validated,
    )
    with edit_ledger(plane.ledger_file, now) as ledger:
        task = ledger.get(task_id)
        transition(task, "promoted", f"applied by user: {result.reason}", now)
        task.promoted_at = now
    return result


def _reviewed(project: Project, pconf: ProjectConfig, task_id: str, request: dict[str, Any]):
    """(branch, commit, base) of what was put up for review, cross-checked between the request
    and the ledger (the run that made it wrote both): a request rewritten after the fact to
    name another branch, commit or base is refused, never merged."""
    from openloop.state.ledger import load_ledger

    task = load_ledger(project.plane.ledger_file).get(task_id)
    recorded = (task.last_run or {}).get("headCommit")
    branch, head = request.get("branch"), request.get("headCommit")
    base = governance.base_branch(project, pconf)
    problems = []
    if branch != task.branch:
        problems.append(f"its branch {branch!r} is not the task's {task.branch!r}")
    if not head or head != recorded:
        problems.append("its commit is not the one the task's last run recorded")
    if request.get("baseBranch") not in (None, base):
        problems.append(f"its base {request.get('baseBranch')!r} is not the pinned {base!r}")
    if problems:
        raise StateError(
            f"the promotion request of '{task_id}' does not match the ledger: "
            + "; ".join(problems)
            + "; nothing was changed"
        )
    return branch, head, base


def reject(
    env: Environment,
    project: Project,
    task_id: str,
    *,
    reason: str | None,
    retry: bool = False,
    delete_branch: bool = False,
) -> str:
    """Turn a request down: the task is cancelled, or with `retry` goes back to ready with the
    reviewer's reason in its next prompt. Returns the task's new status."""
    if reason is not None:
        check_line(reason, "--reason", "reasons")
    plane = project.plane
    request = _open_request(plane, task_id)
    now = env.now_iso()
    why = reason or "rejected by reviewer"
    with edit_ledger(plane.ledger_file, now) as ledger:
        task = ledger.get(task_id)
        if retry:
            transition(task, "ready", f"review rejected, retry: {why}", now)
            task.attempts = 0
            task.no_progress_streak = 0
            task.last_failure = f"A reviewer rejected the previous result: {why}"
        else:
            transition(task, "cancelled", f"review rejected: {why}", now)
        status = task.status
    _close(plane, task_id, request, now, "rejected", why, alias=project.alias)
    if delete_branch:
        gitops.delete_branch(project.repo, request["branch"])
    return status


def withdraw(project: Project, task_id: str, now: str, reason: str) -> bool:
    """Close an open request without merging (its task was cancelled, removed, moved)."""
    request = promotion.read_request(project.plane, task_id)
    if request is None or request.get("status") not in OPEN_STATUSES:
        return False
    _close(project.plane, task_id, request, now, "withdrawn", reason, alias=project.alias)
    return True


def _require_review(plane: ControlPlane, task_id: str) -> None:
    from openloop.state.ledger import load_ledger

    task = load_ledger(plane.ledger_file).find(task_id)
    if task is None or task.status != "review":
        state = "gone" if task is None else task.status
        raise StateError(f"task '{task_id}' is {state}, not in review: its promotion is stale")


def retry_deferred(it) -> None:
    """Merges deferred by an earlier iteration (checkout busy, branch moved), tried again.

    Only what was validated merges: the task must still be in review and its branch must still
    point at the validated commit; anything else goes back to a human."""
    from openloop.errors import GitError
    from openloop.state.ledger import load_ledger

    plane = it.project.plane
    for request in list_requests(plane):
        if request.get("status") != "deferred" or it.merges_done >= 1:
            continue
        task_id, branch = request["taskId"], request["branch"]
        now = it.env.now_iso()
        task = load_ledger(plane.ledger_file).find(task_id)
        if task is None or task.status != "review":
            withdraw(it.project, task_id, now, "task is no longer in review")
            continue
        try:
            branch, head, base = _reviewed(it.project, it.pconf, task_id, request)
            if request.get("action") != "auto-merge" or task.last_run.get("outcome") != "completed":
                result = promotion.MergeResult(
                    False, "only a result the policy allowed to auto-merge retries"
                )
            else:
                result = promotion.merge_branch(
                    it.env,
                    it.project,
                    it.pconf,
                    branch,
                    base=base,
                    expected_head=head,
                    check_dir=plane.runs_dir / f"promote-{task_id}",
                    check_env=it.check_env_for(task_id),
                    timeout=float(it.limit("validation_timeout_seconds")),
                )
        except (GitError, StateError) as exc:
            result = promotion.MergeResult(False, f"cannot merge {branch}: {exc}")
        if result.deferred:
            continue
        if result.merged:
            it.merges_done += 1
            with edit_ledger(plane.ledger_file, now) as ledger:
                task = ledger.get(task_id)
                transition(task, "promoted", f"deferred merge done: {result.reason}", now)
                task.promoted_at = now
            _close(
                plane,
                task_id,
                request,
                now,
                "merged",
                result.reason,
                merged=result.head,
                alias=it.project.alias,
            )
        else:
            request.update(status="pending", action="review", note=result.reason)
            promotion.write_request(plane, task_id, request)
            promotion.append_history(
                plane,
                task_id,
                {
                    "at": now,
                    "kind": "decision",
                    "action": "review",
                    "status": "pending",
                    "note": result.reason,
                },
            )


def _close(
    plane,
    task_id,
    request,
    now,
    status,
    note,
    merged: str | None = None,
    *,
    alias: str,
    validated: bool | None = None,
) -> None:
    """validated: False records that a merge ran no check (`apply --no-validate`)."""
    promotion.journal_event(alias, task_id, status, note)
    request.update(status=status, processedAt=now, note=note)
    entry = {"at": now, "kind": status, "note": note, "mergedCommit": merged}
    if merged:
        request["mergedCommit"] = merged
    if validated is not None:
        request["validated"] = entry["validated"] = validated
    promotion.write_request(plane, task_id, request)
    promotion.append_history(plane, task_id, entry)
