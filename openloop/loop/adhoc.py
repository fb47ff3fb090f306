"""`openloop run`: the agent on a one-off prompt, with an iteration's isolation (worktree,
branch, guard) and accounting (budget, run record), but no ledger task."""

from __future__ import annotations

from openloop.adapters import workspace
from openloop.env import iso
from openloop.loop import validation
from openloop.loop.attempt import collect, prepare_worktree, run_agent, run_checks, stop_point
from openloop.loop.iteration import Iteration, IterationResult, Selection, Stop
from openloop.loop.outcomes import Outcome
from openloop.loop.record import charge, run_record
from openloop.state import runs
from openloop.state.ledger import Task


def execute_adhoc(it: Iteration, prompt_text: str, *, validate: bool = True) -> IterationResult:
    """The prompt's attempt, from the workspace to the run record."""
    now = it.env.now()
    task_id = f"adhoc-{now.strftime('%Y%m%d-%H%M%S')}"
    title = (prompt_text.strip().splitlines() or ["ad-hoc prompt"])[0][:80]
    task = Task(id=task_id, title=title, kind="chore", created_at=iso(now), updated_at=iso(now))
    it.selection = Selection(task, "adhoc", "implementer", "ad-hoc prompt")
    it.started, it.attempt = iso(now), 1
    it.run_id = runs.new_run_id(now, task_id)
    it.run_dir = it.project.plane.runs_dir / it.run_id
    it.run_dir.mkdir(parents=True, exist_ok=True)
    runs.write_record(it.project.plane.runs_dir, run_record(it, runs.RUNNING, "started"))
    try:
        prepare_worktree(it)
        it.prompt = prompt_text
        run_agent(it)
        collect(it)
        outcome, reason = _judge_adhoc(it, validate)
    except Stop as stop:
        outcome, reason = stop.outcome, stop.reason
    finally:
        if it.worktree is not None:
            workspace.remove_workspace(it.worktree)
    charge(it)
    record = run_record(it, outcome.value, reason)
    runs.write_record(it.project.plane.runs_dir, record)
    it.reporter.finished(outcome.value, reason)
    return IterationResult(outcome, reason, it.project.alias, None, it.run_id, record)


def _judge_adhoc(it: Iteration, validate: bool) -> tuple[Outcome, str]:
    result = it.agent_result
    assert result is not None
    if result.outcome != "completed":
        return Outcome(result.outcome), result.error or result.outcome
    if not it.changes:
        return Outcome.COMPLETED, "the agent changed nothing"
    if validate:
        try:
            run_checks(it)
            stop_point()
        except Stop as stop:
            return stop.outcome, f"{stop.reason}; changes on branch {it.branch}"
        if validation.all_passed(it.checks) is False:
            return Outcome.VALIDATION_FAILED, f"validation failed; changes on branch {it.branch}"
    return Outcome.COMPLETED, f"changes committed on branch {it.branch}"
