"""One scheduler iteration for one project, as a pipeline of small named steps.

    gate -> repair -> select -> precheck -> start -> worktree -> prompt -> agent -> collect
         -> validate -> judge -> hand over -> record

The systemd service runs exactly this (`openloop run-once --project ALIAS`) and exits. Each step
either updates the Iteration or raises Stop with the outcome that ends the run early. The ledger
is re-read under its lock for every change, never written back from a stale copy.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openloop import agent as agents
from openloop import budget, gitops, pause, prompts, runs, trust, validation
from openloop.config import GlobalConfig, ModelChoice, load_config, resolve_model
from openloop.env import Environment, iso
from openloop.errors import BusyError
from openloop.ledger import (
    RUNNING,
    Task,
    edit_ledger,
    load_ledger,
    return_stuck_tasks,
    transition,
)
from openloop.outcomes import Outcome
from openloop.policy import Change, Policy, assess, assess_declared_scope, load_policy
from openloop.progress import NullReporter, Reporter
from openloop.projectconfig import ProjectConfig
from openloop.projects import Project, require_initialized, resolve
from openloop.storage import locked
from openloop.tasks import iteration_lock_target

DONE_STATUSES = frozenset({"promoted", "done"})
FAILURE_TEXT_LIMIT = 6000


class Stop(Exception):
    """Ends the iteration early with an outcome (not an error of OpenLoop's)."""

    def __init__(self, outcome: Outcome, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


@dataclass
class Selection:
    task: Task
    mode: str  # "implement" or "plan"
    role: str
    reason: str


@dataclass
class Iteration:
    env: Environment
    project: Project
    gconf: GlobalConfig
    pconf: ProjectConfig
    policy: Policy
    model: ModelChoice
    reporter: Reporter
    adapter_factory: Callable[[str], agents.AgentAdapter]
    selection: Selection | None = None
    run_id: str | None = None
    run_dir: Path | None = None
    started: str | None = None
    attempt: int = 0
    base_branch: str | None = None
    base_commit: str | None = None
    head_commit: str | None = None
    branch: str | None = None
    worktree: Path | None = None
    prompt: str | None = None
    agent_result: agents.AgentResult | None = None
    changes: list[Change] = field(default_factory=list)
    lines_changed: int = 0
    diff_hash: str | None = None
    checks: list[validation.CheckResult] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    decision: dict[str, Any] | None = None
    task_status: str | None = None

    @property
    def task(self) -> Task:
        assert self.selection is not None
        return self.selection.task

    def limit(self, name: str) -> int:
        """A runtime limit: the project's own value, else the global one."""
        own = getattr(self.pconf.runtime, name, None)
        return own if own is not None else getattr(self.gconf.runtime, name)


@dataclass(frozen=True)
class IterationResult:
    outcome: Outcome
    reason: str
    project: str
    task_id: str | None = None
    run_id: str | None = None
    record: dict[str, Any] | None = None

    @property
    def exit_code(self) -> int:
        return self.outcome.exit_code


# --- entry points -------------------------------------------------------------------------------


def run_once(
    env: Environment,
    alias: str | None,
    *,
    model: str | None = None,
    provider: str | None = None,
    reporter: Reporter | None = None,
    adapter_factory: Callable[[str], agents.AgentAdapter] | None = None,
) -> IterationResult:
    project = resolve(env, alias)
    require_initialized(project)
    reporter = reporter or NullReporter()
    with iteration_lock(env, project.alias):
        it = _load(env, project, model, provider, reporter, adapter_factory)
        try:
            gate(it)
            repair(it)
            select(it)
            precheck(it)
        except Stop as stop:
            reporter.finished(stop.outcome.value, stop.reason)
            return IterationResult(
                stop.outcome,
                stop.reason,
                project.alias,
                it.selection.task.id if it.selection else None,
            )
        return execute(it)


def dry_run(env: Environment, alias: str | None, *, model: str | None = None) -> dict[str, Any]:
    """What the next iteration would do, computed without writing anything."""
    project = resolve(env, alias)
    require_initialized(project)
    it = _load(env, project, model, None, NullReporter(), None)
    try:
        gate(it, dry=True)
    except Stop as stop:
        return {"mode": "skip", "outcome": stop.outcome.value, "reason": stop.reason}
    stuck = [t.id for t in load_ledger(project.plane.ledger_file).tasks if t.status in RUNNING]
    try:
        select(it, exclude=set(stuck))
    except Stop as stop:
        return {"mode": "idle", "reason": stop.reason, "wouldRepair": stuck}
    sel = it.selection
    assert sel is not None
    return {
        "mode": sel.mode,
        "role": sel.role,
        "taskId": sel.task.id,
        "reason": sel.reason,
        "attempt": sel.task.attempts + 1,
        "model": it.model.model,
        "provider": it.model.provider,
        "wouldRepair": stuck,
        "prompt": build_prompt(it),
    }


class iteration_lock:  # noqa: N801 - used as a context manager
    """One iteration per project at a time, systemd or not. flock dies with its holder."""

    def __init__(self, env: Environment, alias: str) -> None:
        self.target = iteration_lock_target(env, alias)
        self.alias = alias

    def __enter__(self) -> None:
        self._lock = locked(self.target, timeout=0, what=f"project '{self.alias}'")
        try:
            self._lock.__enter__()
        except BusyError:
            raise BusyError(
                f"another iteration of project '{self.alias}' is running; try again when it ends"
            ) from None

    def __exit__(self, *exc: object) -> None:
        self._lock.__exit__(*exc)


def _load(env, project, model, provider, reporter, adapter_factory) -> Iteration:
    gconf = load_config(env)
    pconf = project.config()
    policy = load_policy(project.plane.policy_file)
    choice = resolve_model(
        model,
        pconf.pi.model,
        gconf.model,
        cli_provider=provider,
        project_provider=pconf.pi.provider,
        global_provider=gconf.provider,
    )
    factory = adapter_factory or (lambda kind: agents.make_adapter(kind))
    return Iteration(env, project, gconf, pconf, policy, choice, reporter, factory)


# --- steps before the agent ---------------------------------------------------------------------


def gate(it: Iteration, *, dry: bool = False) -> None:
    """Reasons not to run at all. The systemd ExecCondition asks the same question."""
    reason = gate_reason(it.env, it.project, it.gconf, it.pconf)
    if reason:
        raise Stop(Outcome.SKIPPED, reason)


def gate_reason(
    env: Environment, project: Project, gconf: GlobalConfig, pconf: ProjectConfig
) -> str | None:
    paused = pause.global_pause(env)
    if paused:
        return f"OpenLoop is paused (since {paused.get('pausedAt')}); 'openloop resume' to go on"
    if project.entry.paused:
        return f"project '{project.alias}' is paused; 'openloop resume -p {project.alias}'"
    if not trust.is_trusted(project.entry, pconf):
        return (
            f"project '{project.alias}' asks to run commands you have not approved; review with "
            f"'openloop project trust {project.alias} --check'"
        )
    left = budget.left_today(env, gconf.budgets.daily_cost_usd)
    if left <= 0:
        return (
            f"daily budget of ${gconf.budgets.daily_cost_usd:.2f} is spent; runs resume tomorrow "
            "(or raise budgets.dailyCostUsd)"
        )
    return None


def repair(it: Iteration) -> None:
    """Undo what a killed iteration left: running tasks, run records, worktrees, processes.

    We hold the project lock, so nothing of this project is running: anything marked running
    belongs to a dead iteration."""
    plane = it.project.plane
    now = it.env.now_iso()
    for record in runs.unfinished(plane.runs_dir):
        _kill_run_processes(record.get("runId"))
        record.update(
            outcome=Outcome.INTERRUPTED.value,
            endedAt=now,
            reason="the iteration was killed before it finished",
        )
        runs.write_record(plane.runs_dir, record)
    with edit_ledger(plane.ledger_file, now) as ledger:
        moved = return_stuck_tasks(
            ledger, now, "repaired: its iteration was killed before it finished"
        )
        for task, _was in moved:
            task.last_failure = "The previous attempt was interrupted (killed or timed out)."
            _block_if_exhausted(task, it.limit("max_attempts_per_task"), now)
    it.repaired = [t.id for t, _ in moved]
    worktrees = it.env.worktrees_dir / it.project.alias
    if worktrees.is_dir():
        for leftover in worktrees.iterdir():
            gitops.remove_worktree(it.project.repo, leftover)
    if it.repaired:
        it.reporter.phase("repaired", task=",".join(it.repaired))


def _kill_run_processes(run_id: str | None) -> None:
    """Processes of a dead run (the agent and its children outlive a SIGKILLed parent outside
    systemd): found by the OPENLOOP_RUN_ID they inherited."""
    if not run_id:
        return
    import signal

    needle = f"OPENLOOP_RUN_ID={run_id}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if needle in (proc / "environ").read_bytes().split(b"\0"):
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue


def select(it: Iteration, exclude: set[str] | None = None) -> None:
    """Choose the mode, the task and the worker role.

    Modes, in order: self-healing (the default branch's baseline is broken), active development
    (eligible tasks), continuous improvement (idle). Only active development exists so far; the
    other two plug in here.
    """
    ledger = load_ledger(it.project.plane.ledger_file)
    max_attempts = it.limit("max_attempts_per_task")
    status_of = {t.id: t.status for t in ledger.tasks}
    eligible = [
        t
        for t in ledger.tasks
        if t.status in ("ready", "proposed")
        and t.id not in (exclude or set())
        and t.attempts < max_attempts
        and all(status_of.get(dep) in DONE_STATUSES for dep in t.depends_on)
    ]
    if not eligible:
        waiting = sum(1 for t in ledger.tasks if t.status in ("ready", "proposed"))
        detail = f" ({waiting} waiting on dependencies or attempts)" if waiting else ""
        raise Stop(Outcome.IDLE, f"no eligible task{detail}")
    task = min(eligible, key=lambda t: (-t.priority, t.status != "ready", t.created_at, t.id))
    mode = "implement" if task.status == "ready" else "plan"
    role = prompts.role_for(task, mode)
    reason = f"next {task.status} task by priority ({task.priority}) then age"
    it.selection = Selection(task, mode, role, reason)


def precheck(it: Iteration) -> None:
    """Policy on the task's declared scope: a denied path blocks before any money is spent."""
    task = it.task
    verdict = assess_declared_scope(it.policy, task.risk, task.scope_paths() or None)
    if verdict.blocked:
        reason = "; ".join(verdict.reasons) or "declared scope is denied by policy"
        _finish_task(it, "blocked", reason, failure=reason, signature="policy-scope-denied")
        raise Stop(Outcome.BLOCKED_BY_POLICY, reason)


# --- the run ------------------------------------------------------------------------------------


def execute(it: Iteration) -> IterationResult:
    start(it)
    outcome, reason = Outcome.AGENT_ERROR, "iteration ended unexpectedly"
    try:
        prepare_worktree(it)
        it.prompt = build_prompt(it)
        run_agent(it)
        collect(it)
        outcome, reason = judge(it)
    except Stop as stop:
        outcome, reason = stop.outcome, stop.reason
    finally:
        if it.worktree is not None:
            gitops.remove_worktree(it.project.repo, it.worktree)
    record = finish(it, outcome, reason)
    it.reporter.finished(outcome.value, reason, task=it.task.id)
    return IterationResult(outcome, reason, it.project.alias, it.task.id, it.run_id, record)


def start(it: Iteration) -> None:
    env, plane, sel = it.env, it.project.plane, it.selection
    assert sel is not None
    now = env.now()
    it.started = iso(now)
    it.run_id = runs.new_run_id(now, sel.task.id)
    it.run_dir = plane.runs_dir / it.run_id
    it.run_dir.mkdir(parents=True, exist_ok=True)
    with edit_ledger(plane.ledger_file, it.started) as ledger:
        task = ledger.get(sel.task.id)
        transition(task, "in_progress", f"run {it.run_id} ({sel.mode}, {sel.role})", it.started)
        task.owner = "openloop"
        it.attempt = task.attempts + 1
        sel.task = task.model_copy(deep=True)
    runs.write_record(plane.runs_dir, _record(it, runs.RUNNING, "started"))
    it.reporter.phase("started", task=sel.task.id, role=sel.role, attempt=it.attempt)


def prepare_worktree(it: Iteration) -> None:
    repo = it.project.repo
    it.base_branch = gitops.default_branch(repo, it.pconf.runtime.default_branch)
    it.base_commit = gitops.rev_parse(repo, f"refs/heads/{it.base_branch}")
    it.branch = f"{it.pconf.runtime.branch_prefix}{it.task.id}"
    it.worktree = it.env.worktrees_dir / it.project.alias / it.task.id
    it.reporter.phase("worktree", task=it.task.id)
    gitops.add_worktree(repo, it.worktree, it.branch, it.base_commit)


def build_prompt(it: Iteration) -> str:
    sel = it.selection
    assert sel is not None
    spec_text = _read_spec(it.project, sel.task) if sel.mode == "implement" else None
    from openloop.policy import summary_for_prompt

    return prompts.build_prompt(
        role=sel.role,
        repo=it.project.repo,
        task=sel.task,
        attempt=sel.task.attempts + 1,
        validation=it.pconf.validation.commands(),
        policy_summary=summary_for_prompt(it.policy),
        spec_text=spec_text,
        previous_failure=sel.task.last_failure,
    )


def _read_spec(project: Project, task: Task) -> str | None:
    """The task's spec, only from the user's control plane (never a path outside specs/)."""
    if not task.spec_id:
        return None
    specs = project.plane.specs_dir.resolve()
    path = (project.repo / task.spec_id).resolve()
    if not path.is_relative_to(specs) or not path.is_file():
        return None
    return path.read_text(encoding="utf-8", errors="replace")[:50_000]


def agent_env(it: Iteration) -> dict[str, str]:
    env = dict(it.env.environ)
    env["OPENLOOP_RUN_ID"] = it.run_id or ""
    env["OPENLOOP_PROJECT"] = it.project.alias
    env["OPENLOOP_TASK_ID"] = it.task.id
    return env


def run_agent(it: Iteration) -> None:
    assert it.worktree is not None and it.run_dir is not None and it.prompt is not None
    adapter = it.adapter_factory(it.pconf.agent.type)
    left = budget.left_today(it.env, it.gconf.budgets.daily_cost_usd)
    request = agents.AgentRequest(
        cwd=it.worktree,
        prompt=it.prompt,
        system_append=prompts.runtime_rules(),
        model=it.model.model,
        provider=it.model.provider,
        run_dir=it.run_dir,
        run_timeout=float(it.limit("run_timeout_seconds")),
        inactivity_timeout=float(it.limit("inactivity_timeout_seconds")),
        budget_left_usd=left if adapter.reports_cost else None,
        env=agent_env(it),
        command=it.pconf.agent.command,
    )
    it.reporter.phase("agent", task=it.task.id, role=it.selection.role, attempt=it.attempt)
    it.agent_result = adapter.run(
        request, lambda p: it.reporter.agent_event(p.tool_calls, p.cost_usd, p.last_tool)
    )


def collect(it: Iteration) -> None:
    """Commit whatever the agent left in the worktree on the task branch and measure it."""
    assert it.worktree is not None and it.base_commit is not None
    it.reporter.phase("collect", task=it.task.id)
    message = (
        f"openloop: {it.task.title}\n\nTask: {it.task.id}\nRun: {it.run_id}\nAttempt: {it.attempt}"
    )
    gitops.commit_all(it.worktree, message)
    it.head_commit = gitops.rev_parse(it.worktree, "HEAD")
    raw = gitops.name_status(it.worktree, it.base_commit, it.head_commit)
    it.changes = [Change(status, path, old) for status, path, old in raw]
    it.lines_changed = gitops.lines_changed(it.worktree, it.base_commit, it.head_commit)
    it.diff_hash = gitops.diff_hash(it.worktree, it.base_commit, it.head_commit) if raw else None


# --- judging the attempt ------------------------------------------------------------------------


def judge(it: Iteration) -> tuple[Outcome, str]:
    result = it.agent_result
    assert result is not None
    if result.outcome != "completed":
        return Outcome(result.outcome), result.error or result.outcome
    if it.selection.mode == "plan":
        return _judge_plan(it)
    if not it.changes:
        return Outcome.NO_PROGRESS, "the agent finished without changing anything"
    if it.diff_hash and it.diff_hash == it.task.last_diff_hash:
        return Outcome.NO_PROGRESS, "the change is identical to the previous attempt's"
    _set_status(it, "validating", f"run {it.run_id}: agent finished, validating")
    commands = it.pconf.validation.commands()
    it.checks = validation.run_all(
        commands,
        it.worktree,
        it.run_dir,
        float(it.limit("validation_timeout_seconds")),
        _validation_env(it),
        on_start=lambda name: it.reporter.phase("validate", check=name),
    )
    if validation.all_passed(it.checks) is False:
        names = ", ".join(c.name for c in it.checks if c.status in ("failed", "timed-out"))
        return Outcome.VALIDATION_FAILED, f"validation failed: {names}"
    verdict = assess(
        it.changes,
        it.policy,
        declared_risk=it.task.risk,
        declared_scope=it.task.scope_paths() or None,
        lines_changed=it.lines_changed,
        validations_passed=validation.all_passed(it.checks),
    )
    it.decision = {
        "risk": verdict.risk,
        "autoMergeAllowed": verdict.auto_merge,
        "blocked": verdict.blocked,
        "reasons": list(verdict.reasons),
    }
    if verdict.blocked:
        return Outcome.BLOCKED_BY_POLICY, "; ".join(verdict.reasons)
    return Outcome.COMPLETED, "validated; " + (
        "auto-merge allowed by policy" if verdict.auto_merge else "kept for review"
    )


def _validation_env(it: Iteration) -> dict[str, str]:
    env = agent_env(it)
    env.pop("OPENLOOP_RUN_ID", None)  # validation children are not the agent's to sweep
    return env


def _judge_plan(it: Iteration) -> tuple[Outcome, str]:
    assert it.worktree is not None
    written = it.worktree / ".openloop" / "specs" / f"{it.task.id}.md"
    if not written.is_file() or not written.read_text(encoding="utf-8", errors="replace").strip():
        return Outcome.NO_PROGRESS, f"the planner wrote no spec at .openloop/specs/{it.task.id}.md"
    target = it.project.plane.specs_dir / f"{it.task.id}.md"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(written, target)
    return Outcome.PLANNED, f"spec written to .openloop/specs/{it.task.id}.md"


# --- recording ----------------------------------------------------------------------------------


def finish(it: Iteration, outcome: Outcome, reason: str) -> dict[str, Any]:
    """Apply the outcome to the task, charge the budget, write the run summary."""
    cost = it.agent_result.cost_usd if it.agent_result else 0.0
    if cost:
        budget.record_spend(it.env, it.project.alias, cost)
    _apply_outcome(it, outcome, reason)
    record = _record(it, outcome.value, reason)
    runs.write_record(it.project.plane.runs_dir, record)
    return record


def _apply_outcome(it: Iteration, outcome: Outcome, reason: str) -> None:
    now = it.env.now_iso()
    limit = it.limit("no_progress_repeat_limit")
    max_attempts = it.limit("max_attempts_per_task")
    signature = validation.failure_signature(it.checks) if it.checks else None
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
            _hand_over(it, task, now)
        elif outcome == Outcome.PLANNED:
            task.spec_id = f".openloop/specs/{task.id}.md"
            task.no_progress_streak = 0
            transition(task, "ready", reason, now)
        elif outcome == Outcome.BLOCKED_BY_POLICY:
            task.branch = it.branch
            task.last_failure = reason
            transition(task, "blocked", reason, now)
        else:
            no_progress = outcome == Outcome.NO_PROGRESS or (
                signature is not None and signature == task.last_failure_signature
            )
            task.no_progress_streak = task.no_progress_streak + 1 if no_progress else 0
            if outcome != Outcome.BUDGET_STOPPED:  # the budget ran out, not the task's fault
                task.attempts += 1
            task.last_failure_signature = signature or outcome.value
            task.last_failure = _failure_text(it, outcome, reason)
            if it.diff_hash:
                task.last_diff_hash = it.diff_hash
            if task.no_progress_streak >= limit:
                transition(
                    task,
                    "blocked",
                    f"no progress in {task.no_progress_streak} attempts in a row: {reason}",
                    now,
                )
            elif not _block_if_exhausted(task, max_attempts, now, reason):
                transition(
                    task,
                    _requeue_status(it),
                    f"attempt {it.attempt} {outcome.value}: {reason}",
                    now,
                )
        it.task_status = task.status


def _requeue_status(it: Iteration) -> str:
    return "proposed" if it.selection.mode == "plan" else "ready"


def _block_if_exhausted(task: Task, max_attempts: int, now: str, reason: str = "") -> bool:
    if task.attempts < max_attempts:
        return False
    detail = f" (last: {reason})" if reason else ""
    transition(task, "blocked", f"reached the maximum of {max_attempts} attempts{detail}", now)
    return True


def _failure_text(it: Iteration, outcome: Outcome, reason: str) -> str:
    if outcome == Outcome.VALIDATION_FAILED:
        return validation.failure_summary(it.checks, FAILURE_TEXT_LIMIT)
    text = f"{outcome.value}: {reason}"
    if it.agent_result and it.agent_result.final_text:
        text += f"\nThe agent's last message:\n{it.agent_result.final_text[-2000:]}"
    return text


def _hand_over(it: Iteration, task: Task, now: str) -> None:
    from openloop import promotion

    decision = promotion.hand_over(it, task, now)
    it.decision = {**(it.decision or {}), **decision}


def _set_status(it: Iteration, status: str, reason: str) -> None:
    with edit_ledger(it.project.plane.ledger_file, it.env.now_iso()) as ledger:
        transition(ledger.get(it.task.id), status, reason, it.env.now_iso())


def _finish_task(it, status: str, reason: str, *, failure: str, signature: str) -> None:
    with edit_ledger(it.project.plane.ledger_file, it.env.now_iso()) as ledger:
        task = ledger.get(it.task.id)
        task.last_failure, task.last_failure_signature = failure, signature
        transition(task, status, reason, it.env.now_iso())


def _record(it: Iteration, outcome: str, reason: str) -> dict[str, Any]:
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
        "decision": it.decision,
        "outcome": outcome,
        "reason": reason,
        "taskStatus": it.task_status,
        "transcript": str(it.run_dir / agents.TRANSCRIPT) if it.run_dir else None,
    }
