"""Recording an attempt's end: the outcome applied to the task (attempts, no-progress, review
or merge), the budget charged once, the run record, the journal and the notifications, and the
project's backoff after an environment failure. attempt.py runs the attempt and calls finish().
"""

from __future__ import annotations

import os
from typing import Any

from openloop.adapters import environment
from openloop.adapters.supervise import TRANSCRIPT
from openloop.loop import planning, validation
from openloop.loop.iteration import Iteration
from openloop.loop.outcomes import Outcome
from openloop.state import backoff, budget, runs
from openloop.state.ledger import block_if_exhausted, edit_ledger, transition

FAILURE_TEXT_LIMIT = 6000


def charge(it: Iteration) -> None:
    """The run's final cost to the day's budget, folding its live entry (one locked write)."""
    cost = it.agent_result.cost_usd if it.agent_result else 0.0
    budget.record_spend(it.env, it.project.alias, cost, run_id=it.run_id)


def finish(it: Iteration, outcome: Outcome, reason: str) -> tuple[dict[str, Any], Outcome, str]:
    """Apply the outcome to the task, charge the budget, write the run summary. Returns the
    record and the final outcome (a repeated failure may have become no-progress)."""
    charge(it)
    handover = None
    if outcome == Outcome.COMPLETED:
        from openloop.loop import promotion

        handover = promotion.prepare_handover(it, it.env.now_iso())
    outcome, reason = _apply_outcome(it, outcome, reason, handover)
    record = run_record(it, outcome.value, reason)
    runs.write_record(it.project.plane.runs_dir, record)
    runs.prune(it.project.plane.runs_dir, it.gconf.runtime.keep_runs)
    if outcome == Outcome.ESCAPED:
        event(it, "escaped", f"{it.project.alias}: {it.task.id}: {reason}", priority=3)
    event(
        it,
        "iteration-finished",
        f"{it.project.alias}: {it.task.id}: {outcome.value}: {reason}",
        priority=6 if not outcome.is_failure else 4,
        outcome=outcome.value,
        task_status=it.task_status or "",
    )
    _notify_task(it, outcome, reason)
    _environment_backoff(it, outcome)
    return record, outcome, reason


def event(it: Iteration, name: str, message: str, priority: int = 6, **fields: str) -> None:
    from openloop.adapters import journal

    sel = it.selection
    journal.send(
        message,
        priority=priority,
        event=name,
        project=it.project.alias,
        task=sel.task.id if sel else None,
        role=sel.role if sel else None,
        run=it.run_id,
        **fields,
    )


def _notify_task(it: Iteration, outcome: Outcome, reason: str) -> None:
    from openloop.adapters import notifications

    if it.task_status in ("review", "promoted") and outcome == Outcome.COMPLETED:
        event = "task-complete"
    elif it.task_status in ("blocked", "failed"):
        event = "task-failed"
    else:
        return
    notifications.notify(
        it.env,
        event,
        project=it.project.alias,
        task_id=it.task.id,
        message=f"{it.project.alias} {it.task.id}: {it.task_status}: {reason}",
    )


def _environment_backoff(it: Iteration, outcome: Outcome) -> None:
    """An environment failure backs the project off (and notifies once while it lasts); the
    next agent run that gets past the environment ends the backoff."""
    from openloop.adapters import notifications

    result, alias = it.agent_result, it.project.alias
    if result is None:
        return  # the agent never ran: nothing learned about its environment
    if outcome != Outcome.ENVIRONMENT_ERROR:
        if backoff.clear(it.env, alias) is not None:
            for kind in environment.ENVIRONMENT_KINDS:
                notifications.clear(it.env, _environment_key(alias, kind))
            event(it, "environment-recovered", f"{alias}: the agent's environment works again")
        return
    problem = result.environment or environment.EnvironmentProblem(
        "agent-missing", result.error or "the agent could not run", "see 'openloop doctor'"
    )
    record = backoff.record_failure(
        it.env,
        alias,
        kind=problem.kind,
        reason=problem.what,
        fix=problem.fix,
        retry_after=problem.retry_after,
        task_id=it.task.id,
        run_id=it.run_id,
    )
    # The journal has every one as iteration-finished; the notification is once per failure.
    message = f"{alias}: {record.message}; retry at {backoff.retry_time(it.env, record)}"
    notifications.notify(
        it.env,
        "environment-error",
        project=alias,
        task_id=it.task.id,
        once_key=_environment_key(alias, problem.kind),
        message=message,
    )


def _environment_key(alias: str, kind: str) -> str:
    return f"environment-error:{alias}:{kind}"


def _apply_outcome(
    it: Iteration, outcome: Outcome, reason: str, handover=None
) -> tuple[Outcome, str]:
    """Move the task according to the outcome. A repeated failure that exhausts the
    no-progress limit turns the outcome into no-progress, so record and ledger agree."""
    now = it.env.now_iso()
    limit = it.limit("no_progress_repeat_limit")
    max_attempts = it.max_attempts(it.task)
    judged = it.judged_checks()
    signature = validation.failure_signature(judged) if judged else None
    with edit_ledger(it.project.plane.ledger_file, now) as ledger:
        task = ledger.get(it.task.id)
        task.last_run = {
            "runId": it.run_id,
            "outcome": outcome.value,
            "reason": reason,
            "completedAt": now,
            "branch": it.branch,
            "headCommit": it.head_commit,
        }
        if outcome == Outcome.COMPLETED:
            task.no_progress_streak = 0
            task.last_failure = task.last_failure_signature = None
            task.branch = it.branch
            from openloop.loop import promotion

            decision = promotion.settle_handover(it, task, handover, now)
            it.decision = {**(it.decision or {}), **decision}
        elif outcome == Outcome.PLANNED:
            task.spec_id = planning.spec_path(task.id)
            task.spec_commit = it.head_commit
            task.branch = it.branch
            plan = it.plan or {}
            if plan.get("files") and not task.scope_paths():
                from openloop.state.ledger import TaskScope

                task.scope = TaskScope(paths=plan["files"])  # the spec's file list
            made = planning.create_subtasks(
                ledger, task, plan.get("subtasks") or [], it.head_commit, now
            )
            # The planned task implements what is left once its subtasks are in.
            task.depends_on += [m for m in made if m not in task.depends_on]
            # Implementation starts fresh: planning attempts and failures are not its own.
            task.attempts = task.no_progress_streak = 0
            task.last_failure = task.last_failure_signature = task.last_diff_hash = None
            transition(task, "ready", reason, now)
        elif outcome == Outcome.BLOCKED_BY_POLICY:
            task.branch = it.branch
            task.last_failure = reason
            transition(task, "blocked", reason, now)
        elif outcome == Outcome.ENVIRONMENT_ERROR:
            # pi missing, the key refused, the quota spent: not the task's fault. No attempt,
            # no no-progress, its failure and diff untouched; the project backs off instead.
            # The branch is remembered so the retries (unlimited) reuse it, not -2, -3, ...
            task.branch = it.branch
            transition(task, _requeue_status(it), f"attempt not counted: {reason}", now)
        elif outcome == Outcome.ESCAPED:
            # Nothing of this attempt is kept or merged; a human looks first.
            task.attempts += 1
            task.last_failure = task.last_failure_signature = reason
            transition(task, "blocked", reason, now)
        else:
            no_progress = outcome == Outcome.NO_PROGRESS or (
                signature is not None and signature == task.last_failure_signature
            )
            task.no_progress_streak = task.no_progress_streak + 1 if no_progress else 0
            # The budget ran out, or the checks lost their approval: not the task's fault.
            if outcome not in (Outcome.BUDGET_STOPPED, Outcome.SKIPPED):
                task.attempts += 1
            task.last_failure_signature = signature or outcome.value
            task.last_failure = _failure_text(it, outcome, reason)
            if it.diff_hash and outcome != Outcome.SKIPPED:  # a skipped change was never judged
                task.last_diff_hash = it.diff_hash
            if task.no_progress_streak >= limit:
                outcome = Outcome.NO_PROGRESS
                reason = f"no progress in {task.no_progress_streak} attempts in a row: {reason}"
                transition(task, "blocked", reason, now)
            elif not block_if_exhausted(task, max_attempts, now, reason):
                transition(
                    task,
                    _requeue_status(it),
                    f"attempt {it.attempt} {outcome.value}: {reason}",
                    now,
                )
        it.task_status = task.status
    return outcome, reason


def _baseline_record(it: Iteration) -> dict[str, Any] | None:
    """What the run knew of its base commit's health, and which failures it excused."""
    entry = it.baseline
    if entry is None:
        return None
    return {
        "tree": entry.get("tree"),
        "commit": entry.get("commit"),
        "status": entry.get("status"),
        "excused": list(it.excused),
    }


def _requeue_status(it: Iteration) -> str:
    return "proposed" if it.selection.mode == "plan" else "ready"


def _failure_text(it: Iteration, outcome: Outcome, reason: str) -> str:
    if outcome == Outcome.VALIDATION_FAILED and it.checks:
        text = validation.failure_summary(it.judged_checks(), FAILURE_TEXT_LIMIT)
        notes = "".join(f"\n(note: {e['reason']})" for e in it.excused)
        return text + notes
    text = f"{outcome.value}: {reason}"
    if it.agent_result and it.agent_result.final_text:
        text += f"\nThe agent's last message:\n{it.agent_result.final_text[-2000:]}"
    return text


def run_record(it: Iteration, outcome: str, reason: str) -> dict[str, Any]:
    result = it.agent_result
    sel = it.selection
    return {
        "runId": it.run_id,
        "project": it.project.alias,
        "taskId": sel.task.id if sel else None,
        "title": sel.task.title if sel else None,
        "mode": sel.mode if sel else None,
        "role": sel.role if sel else None,
        "attempt": it.attempt,
        "model": it.model.model,
        "provider": it.model.provider,
        "agent": it.pconf.agent.type,
        "pid": os.getpid(),
        "startedAt": it.started,
        "endedAt": None if outcome == runs.RUNNING else it.env.now_iso(),
        "durationSeconds": round(result.duration, 3) if result else None,
        "costUsd": result.cost_usd if result else 0.0,
        "tokens": result.tokens if result else {},
        "toolCalls": result.tool_calls if result else 0,
        "toolErrors": result.tool_errors if result else 0,
        "stopReason": result.stop_reason if result else None,
        "baseBranch": it.base_branch,
        "baseCommit": it.base_commit,
        "branch": it.branch,
        "headCommit": it.head_commit,
        "changedFiles": [
            {"status": c.status, "path": c.path, "oldPath": c.old_path} for c in it.changes
        ],
        "linesChanged": it.lines_changed,
        "diffHash": it.diff_hash,
        "validation": [c.to_data() for c in it.checks],
        "baseline": _baseline_record(it),
        "decision": it.decision,
        "escape": it.escape or None,
        "outcome": outcome,
        "reason": reason,
        "taskStatus": it.task_status,
        "transcript": str(it.run_dir / TRANSCRIPT) if it.run_dir else None,
    }
