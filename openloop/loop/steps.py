"""The steps of an iteration before the agent runs: gate, repair, the modes' tasks (healing,
planning, discovery), select, precheck and govern. loop/scheduler.py runs them in order."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from openloop.adapters import agent as agents
from openloop.adapters import gitops, workspace
from openloop.adapters.supervise import TRANSCRIPT
from openloop.errors import ConfigError, GitError
from openloop.loop import baseline, governance, modes, prompts
from openloop.loop.iteration import Iteration, Selection, Stop
from openloop.loop.outcomes import Outcome
from openloop.state import budget, runs
from openloop.state.gate import gate_reason
from openloop.state.judge import assess_declared_scope
from openloop.state.ledger import (
    HEALING_KINDS,
    Task,
    block_if_exhausted,
    edit_ledger,
    load_ledger,
    return_stuck_tasks,
    transition,
)
from openloop.state.policy import SelfHealing

DONE_STATUSES = frozenset({"promoted", "done"})


# --- steps before the agent ---------------------------------------------------------------------


def gate(it: Iteration, *, dry: bool = False) -> None:
    """Reasons not to run at all. The systemd ExecCondition asks the same question."""
    reason = it.settings_error or gate_reason(it.env, it.project, it.gconf, it.pconf)
    if reason:
        raise Stop(Outcome.SKIPPED, reason)


def repair(
    it: Iteration,
    outcome: Outcome = Outcome.INTERRUPTED,
    reason: str = "the iteration was killed before it finished",
    *,
    count_attempt: bool = True,
) -> None:
    """Undo what a killed iteration left: running tasks, run records, worktrees, processes.

    We hold the project lock, so nothing of this project is running: anything marked running
    belongs to a dead iteration. `outcome`/`reason` say what is known of its end (systemd tells
    record-exit: a timeout, a watchdog kill); by default it was simply interrupted."""
    plane = it.project.plane
    now = it.env.now_iso()
    worktrees = it.env.worktrees_dir / it.project.alias
    # Checks of a killed validation of the default branch (they carry no run record): only
    # then is its scratch checkout still there (removed once its checks were stopped). The
    # search reads every process's environment: not a cost to pay at every iteration.
    if worktrees.is_dir() and any(worktrees.glob(f"{baseline.SCRATCH_PREFIX}*")):
        _kill_run_processes(baseline.run_prefix(it.project.alias), prefix=True)
    for record in runs.unfinished(plane.runs_dir):
        _kill_run_processes(record.get("runId"))
        # The run never got to charge what the agent spent; its transcript knows. Its live
        # entry in the day's budget is folded into that charge (never counted twice).
        cost = agents.transcript_cost(plane.runs_dir / record["runId"] / TRANSCRIPT)
        cost = max(cost, budget.live_cost(it.env, record["runId"]))
        budget.record_spend(it.env, it.project.alias, cost, run_id=record["runId"])
        record.update(outcome=outcome.value, endedAt=now, reason=reason, costUsd=cost)
        runs.write_record(plane.runs_dir, record)
    with edit_ledger(plane.ledger_file, now) as ledger:
        moved = return_stuck_tasks(ledger, now, f"repaired: {reason}", count_attempt=count_attempt)
        for task, _was in moved:
            task.last_failure = f"The previous attempt did not finish: {reason}."
            task.last_failure_signature = outcome.value
            block_if_exhausted(task, it.limit("max_attempts_per_task"), now)
    it.repaired = [t.id for t, _ in moved]
    if worktrees.is_dir():
        for leftover in worktrees.iterdir():
            workspace.remove_workspace(leftover)
        workspace.prune_old_worktrees(it.project.repo)
    if it.repaired:
        it.reporter.phase("repaired", task=",".join(it.repaired))


def _kill_run_processes(run_id: str | None, *, prefix: bool = False) -> None:
    """Processes of a dead run (the agent and its children outlive a SIGKILLed parent outside
    systemd): found by the OPENLOOP_RUN_ID they inherited (or its prefix)."""
    if not run_id:
        return
    needle = f"OPENLOOP_RUN_ID={run_id}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            values = (proc / "environ").read_bytes().split(b"\0")
            if any(v == needle or (prefix and v.startswith(needle)) for v in values):
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue


def prepare_modes(it: Iteration) -> None:
    """Before choosing: the default branch's health (validated once per tree, loop/baseline.py)
    and the healing tasks it calls for (loop/modes.py)."""
    try:
        govern(it)
    except Stop:
        return  # no default branch (yet): precheck says so if a task is picked
    it.baseline = baseline.ensure(it)
    if it.baseline is not None:
        modes.sync_healing(it, it.baseline)


def select(it: Iteration, exclude: set[str] | None = None, *, dry: bool = False) -> None:
    """Choose the mode, the task and the worker role.

    Modes, in order: self-healing (a healing task for the broken default branch, `ci-healer`),
    active development (eligible tasks: `sdd-planner` for those needing a plan, else
    `implementer`; accepted proposals run as `repo-improver`), continuous improvement (nothing
    eligible and a healthy default branch: discovery proposes tasks, no agent runs).
    """
    ledger = load_ledger(it.project.plane.ledger_file)
    eligible = eligible_tasks(
        ledger.tasks, it.limit("max_attempts_per_task"), exclude, healing=it.policy.self_healing
    )
    if not eligible:
        waiting = sum(
            1
            for t in ledger.tasks
            if t.status in ("ready", "proposed") and not modes.waiting_for_acceptance(t)
        )
        detail = f" ({waiting} waiting on dependencies or attempts)" if waiting else ""
        proposed = [] if dry or it.base_commit is None else modes.discover(it, it.baseline)
        if proposed:
            detail += f"; discovery proposed {len(proposed)}: {', '.join(proposed)}"
        raise Stop(Outcome.IDLE, f"no eligible task{detail}")
    task = eligible[0]
    mode = "implement" if task.status == "ready" else "plan"
    role = prompts.role_for(task, mode)
    if task.kind in HEALING_KINDS and task.source.type == "ci":
        reason = "self-healing: the default branch fails; healing goes before other work"
    else:
        reason = f"next {task.status} task by priority ({task.priority}) then age"
    it.selection = Selection(task, mode, role, reason)


def eligible_tasks(
    tasks: list[Task],
    max_attempts: int,
    exclude: set[str] | None = None,
    *,
    healing: SelfHealing | None = None,
) -> list[Task]:
    """Tasks an iteration may pick, best first: ready (or proposed, for planning; not a
    discovery proposal waiting for acceptance), attempts left, every dependency promoted or
    done; healing tasks first (while policy.selfHealing allows them, with its attempts), then by
    priority, ready before proposed, then age."""
    healing = healing or SelfHealing()
    status_of = {t.id: t.status for t in tasks}

    def heals(t: Task) -> bool:
        return t.kind in HEALING_KINDS and t.source.type == "ci"

    def allowed(t: Task) -> bool:
        if heals(t):
            return modes.healing_allows(healing, t.kind) and (
                t.attempts < healing.max_attempts_per_signature
            )
        return t.attempts < max_attempts

    eligible = [
        t
        for t in tasks
        if t.status in ("ready", "proposed")
        and not modes.waiting_for_acceptance(t)
        and t.id not in (exclude or set())
        and allowed(t)
        and all(status_of.get(dep) in DONE_STATUSES for dep in t.depends_on)
    ]
    return sorted(
        eligible,
        key=lambda t: (not heals(t), -t.priority, t.status != "ready", t.created_at, t.id),
    )


def precheck(it: Iteration) -> None:
    """Before any money is spent: the default branch must exist (a repository with no commit
    yet is not the task's fault), and the task's declared scope must not hit a denied path."""
    if it.base_commit is None:  # prepare_modes found no default branch, or no usable policy
        govern(it)
    task = it.task
    verdict = assess_declared_scope(it.policy, task.risk, task.scope_paths() or None)
    if verdict.blocked:
        reason = "; ".join(verdict.reasons) or "declared scope is denied by policy"
        _finish_task(it, "blocked", reason, failure=reason, signature="policy-scope-denied")
        raise Stop(Outcome.BLOCKED_BY_POLICY, reason)


def govern(it: Iteration) -> None:
    """The base branch and commit, and the policy committed there (see loop/governance.py)."""
    try:
        branch = governance.base_branch(it.project, it.pconf)
        commit = gitops.rev_parse(it.project.repo, f"refs/heads/{branch}")
    except GitError as exc:
        raise Stop(Outcome.SKIPPED, f"no default branch to start from: {exc}") from None
    try:
        governing = governance.governing_policy(it.project, commit, branch)
    except ConfigError as exc:
        # A policy that cannot be read (a misspelled denyGlobs...) governs nothing: skip.
        raise Stop(Outcome.SKIPPED, str(exc)) from None
    # Set together, last: a base commit means its policy governs (precheck relies on it).
    it.base_branch, it.base_commit = branch, commit
    it.policy, it.policy_approved = governing.policy, governing.approved


def _finish_task(it, status: str, reason: str, *, failure: str, signature: str) -> None:
    with edit_ledger(it.project.plane.ledger_file, it.env.now_iso()) as ledger:
        task = ledger.get(it.task.id)
        task.last_failure, task.last_failure_signature = failure, signature
        transition(task, status, reason, it.env.now_iso())
