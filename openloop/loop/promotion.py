"""Hand-over of a validated result: review branch or merge, with a record of every decision.

`.openloop/promotions/<task-id>.json` is the pending request a human acts on;
`.openloop/promotion-results/<task-id>.jsonl` is the append-only chronology of decisions and
their outcomes for that task.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from openloop.adapters import gitops, guard, workspace
from openloop.env import Environment
from openloop.loop import userstate, validation
from openloop.state import trust
from openloop.state.controlplane import ControlPlane
from openloop.state.ledger import transition
from openloop.state.project import Project
from openloop.state.projectconfig import ProjectConfig
from openloop.state.storage import atomic_write_text, dump_json, locked, read_text_or_none


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


# --- merging ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MergeResult:
    merged: bool
    reason: str
    head: str | None = None
    deferred: bool = False  # nothing wrong with the change: try again on a later iteration
    checks: tuple[validation.CheckResult, ...] = ()
    untrusted: bool = False  # refused: the checks to run are not the approved commands
    validated: bool = True  # False: merged with no check run on the result (--no-validate)


def merge_branch(
    env: Environment,
    project: Project,
    pconf: ProjectConfig,
    branch: str,
    *,
    base: str,
    check_dir: Path,
    check_env: dict[str, str],
    timeout: float,
    validate: Literal["always", "if-rebased", "never"] = "if-rebased",
    expected_head: str | None = None,
) -> MergeResult:
    """Fast-forward `base` to `branch`, replaying the change onto it first if `base` moved
    since the task branch was cut. Never touches the user's work.

    expected_head: the commit that was judged (or reviewed); a branch whose tip is anything
    else is not merged: only what was judged may land.

    The replay is computed in memory (git merge-tree). validate: run the checks on the result
    "always", only when it was replayed (the validated commit is not the one merged), or
    "never" (the user said so: not one command runs, so no changed command can run
    unapproved). Checks run only while they are the approved commands, in a fresh workspace of
    their own, guarded like the agent (they run code the agent wrote)."""
    repo = project.repo
    base_tip = gitops.rev_parse(repo, f"refs/heads/{base}")
    head = gitops.rev_parse(repo, f"refs/heads/{branch}")
    if expected_head is not None and head != expected_head:
        return MergeResult(
            False,
            f"{branch} changed since it was validated (at {head[:12]}, judged "
            f"{expected_head[:12]}): not merged",
        )
    checks: tuple[validation.CheckResult, ...] = ()
    needs_rebase = not gitops.is_ancestor(repo, base_tip, head)
    if needs_rebase:
        replayed, conflict = workspace.replay_onto(repo, head, base_tip, workspace.identity(repo))
        if replayed is None:
            return MergeResult(False, conflict)
        head = replayed
    if validate == "always" or (needs_rebase and validate == "if-rebased"):
        if refusal := trust.recheck(env, project.entry, pconf):
            return MergeResult(False, f"checks not run: {refusal}", untrusted=True)
        checks, escaped = _checks_on(env, project, pconf, head, check_dir, check_env, timeout)
        if escaped:
            return MergeResult(False, escaped, checks=checks)
        if any(c.status == "interrupted" for c in checks):
            # A stop signal is not a verdict on the change: try again on a later iteration.
            return MergeResult(
                False, "merge deferred: interrupted by a signal", deferred=True, checks=checks
            )
        if validation.all_passed(list(checks)) is False:
            failed = ", ".join(
                c.name for c in checks if c.status != "passed" and c.status != "not-configured"
            )
            where = f"rebased onto {base}" if needs_rebase else "to be merged"
            return MergeResult(
                False, f"validation failed on the result {where}: {failed}", checks=checks
            )
    problem = gitops.advance_branch(repo, base, base_tip, head)
    if problem:
        return MergeResult(False, f"merge deferred: {problem}", head, deferred=True, checks=checks)
    if needs_rebase:  # the task branch shows exactly what was merged
        gitops.git(repo, "update-ref", f"refs/heads/{branch}", head)
    reason = f"merged {branch} into {base}"
    if validate == "never":
        rebased = f"rebased onto {base}, " if needs_rebase else ""
        reason += f" ({rebased}no check run: merged without validation)"
    return MergeResult(True, reason, head, checks=checks, validated=validate != "never")


def _checks_on(env, project, pconf, commit, check_dir, check_env, timeout):
    """The approved checks on `commit` in a workspace of their own. Returns (checks, why the
    run escaped or None)."""
    repo = project.repo
    scratch = env.worktrees_dir / project.alias / f"_promote-{commit[:12]}"
    workspace.make_workspace(repo, scratch, commit)
    before = guard.take(repo, dict(env.environ))
    user_before = userstate.take(env, project.alias)
    try:
        checks = tuple(
            validation.run_all(pconf.validation.commands(), scratch, check_dir, timeout, check_env)
        )
    finally:
        workspace.remove_workspace(scratch)
    found = guard.verify(repo, before, dict(env.environ)) + userstate.verify(env, user_before)
    if not found:
        return checks, None
    return checks, "escaped: during the checks before merging: " + "; ".join(found)


# --- the hand-over after an iteration -----------------------------------------------------------


@dataclass
class Handover:
    """A validated result's promotion, decided and (if allowed) merged before the ledger is
    locked to record it: a re-validation may take minutes and must not block the CLI."""

    request: dict[str, Any]
    merged: MergeResult | None


def prepare_handover(it, now: str) -> Handover:
    """Decide review or auto-merge for the iteration's task and do the merge if allowed.

    Renovate's rule: merge silently when green and allowed, open a review otherwise; at most
    one auto-merge per project per iteration.
    """
    task = it.task
    decision = dict(it.decision or {})
    wants_merge = bool(decision.get("autoMergeAllowed")) and task.promotion in (None, "auto-merge")
    if decision.get("autoMergeAllowed") and not wants_merge:
        decision.setdefault("reasons", []).append(f"the task asks for promotion '{task.promotion}'")
    request = _request(it, task, now, decision, "auto-merge" if wants_merge else "review")
    merged: MergeResult | None = None
    if wants_merge and it.merges_done >= 1:
        merged = MergeResult(False, "merge deferred: one auto-merge per iteration", deferred=True)
    elif wants_merge:
        merged = merge_branch(
            it.env,
            it.project,
            it.pconf,
            it.branch,
            base=it.base_branch,
            expected_head=it.head_commit,
            check_dir=it.run_dir / "promote",
            check_env=it.check_env(),
            timeout=float(it.limit("validation_timeout_seconds")),
        )
    return Handover(request, merged)


def settle_handover(it, task, handover: Handover, now: str) -> dict[str, Any]:
    """Record a prepared hand-over on the ledger's task (status validating)."""
    return _settle(it.project.plane, task, handover.request, handover.merged, it, now)


def _request(it, task, now: str, decision: dict, action: str) -> dict[str, Any]:
    return {
        "taskId": task.id,
        "title": task.title,
        "createdAt": now,
        "status": "pending",
        "action": action,
        "branch": it.branch,
        "baseBranch": it.base_branch,
        "baseCommit": it.base_commit,
        "headCommit": it.head_commit,
        "risk": decision.get("risk", task.risk),
        "reasons": decision.get("reasons", []),
        "diffstat": gitops.diffstat(it.project.repo, it.base_commit, it.head_commit),
        "changedFiles": [c.path for c in it.changes],
        "linesChanged": it.lines_changed,
        "validation": [c.to_data() for c in it.checks],
        "runIds": [it.run_id],
        "costUsd": it.agent_result.cost_usd if it.agent_result else 0.0,
    }


def _settle(plane, task, request, merged: MergeResult | None, it, now: str) -> dict[str, Any]:
    if merged is not None and merged.merged:
        it.merges_done += 1
        request.update(status="merged", mergedCommit=merged.head, processedAt=now)
        transition(task, "promoted", f"{merged.reason} (run {request['runIds'][-1]})", now)
        task.promoted_at = now
    elif merged is not None and merged.deferred:
        request.update(status="deferred", note=merged.reason)
        transition(task, "review", f"{merged.reason}; retried on a later iteration", now)
    else:
        if merged is not None:  # merge attempted and refused: a human decides
            request.update(action="review", note=merged.reason)
        transition(
            task,
            "review",
            f"review branch {request['branch']}" + (f": {merged.reason}" if merged else ""),
            now,
        )
    write_request(plane, task.id, request)
    journal_event(
        it.project.alias,
        task.id,
        request["status"],
        f"{request['action']}: {request.get('note') or ', '.join(request['reasons']) or 'ok'}",
    )
    append_history(
        plane,
        task.id,
        {
            "at": now,
            "kind": "decision",
            "action": request["action"],
            "status": request["status"],
            "risk": request["risk"],
            "reasons": request["reasons"],
            "runId": request["runIds"][-1],
            "headCommit": request["headCommit"],
            "note": request.get("note"),
        },
    )
    return {"action": request["action"], "status": request["status"]}


def journal_event(alias: str, task_id: str, status: str, note: str) -> None:
    from openloop.adapters import journal

    journal.send(
        f"{alias}: promotion of {task_id}: {status}: {note}",
        event=f"promotion-{status}",
        project=alias,
        task=task_id,
    )
