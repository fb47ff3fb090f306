"""One scheduler iteration for one project, as a pipeline of small named steps.

    gate -> repair -> select -> precheck -> start -> worktree -> prompt -> agent -> collect
         -> validate -> judge -> hand over -> record

The systemd service runs exactly this (`openloop run-once --project ALIAS`) and exits. Each step
either updates the Iteration or raises Stop with the outcome that ends the run early. The ledger
is re-read under its lock for every change, never written back from a stale copy.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from openloop.adapters import agent as agents
from openloop.adapters import gitops, workspace
from openloop.adapters.supervise import TRANSCRIPT
from openloop.env import Environment
from openloop.errors import ConfigError, GitError
from openloop.loop import baseline, governance, interrupt, modes, pending, promotion, prompts
from openloop.loop.attempt import build_prompt, execute, execute_adhoc, stop_point
from openloop.loop.iteration import Iteration, IterationResult, Selection, Stop
from openloop.loop.outcomes import Outcome
from openloop.progress import NullReporter, Reporter
from openloop.state import backoff, budget, pause, runs, trust
from openloop.state.config import GlobalConfig, load_config, resolve_model
from openloop.state.judge import assess_declared_scope
from openloop.state.ledger import (
    HEALING_KINDS,
    RUNNING,
    Task,
    block_if_exhausted,
    edit_ledger,
    load_ledger,
    return_stuck_tasks,
    transition,
)
from openloop.state.locks import iteration_lock, iteration_slot
from openloop.state.policy import Policy, SelfHealing
from openloop.state.project import Project, require_initialized, resolve
from openloop.state.projectconfig import ProjectConfig

DONE_STATUSES = frozenset({"promoted", "done"})


# --- entry points -------------------------------------------------------------------------------


@contextmanager
def _iteration(
    env: Environment,
    alias: str | None,
    model: str | None,
    provider: str | None,
    reporter: Reporter | None,
    adapter_factory: Callable[[str], agents.AgentAdapter] | None,
) -> Iterator[Iteration]:
    """A loaded Iteration for the project, holding its lock for the whole block."""
    project = resolve(env, alias)
    require_initialized(project)
    with iteration_lock(env, project.alias):
        tracked = PhaseTracker(env, project.alias, reporter or NullReporter())
        try:
            yield _load(env, project, model, provider, tracked, adapter_factory)
        finally:
            runs.clear_phase(env.state_dir, project.alias)


class PhaseTracker:
    """Passes every report on, and keeps the current phase in the state directory for
    `status` (a run started from a shell shows there as well as one systemd started)."""

    def __init__(self, env: Environment, alias: str, inner: Reporter) -> None:
        self.env, self.alias, self.inner = env, alias, inner
        self.task: str | None = None
        self.by = "systemd" if env.environ.get("INVOCATION_ID") else "shell"
        self.began = env.now_iso()

    def phase(self, phase: str, **info: Any) -> None:
        self.task = info.get("task") or self.task
        runs.note_phase(self.env.state_dir, self.alias, {
            "pid": os.getpid(), "phase": phase, "phaseAt": self.env.now_iso(),
            "startedAt": self.began, "taskId": self.task, "startedBy": self.by,
            "check": info.get("check"),
        })  # fmt: skip
        self.inner.phase(phase, **info)

    def agent_event(self, tool_calls: int, cost_usd: float, last_tool: str | None) -> None:
        self.inner.agent_event(tool_calls, cost_usd, last_tool)

    def finished(self, outcome: str, reason: str, **info: Any) -> None:
        self.inner.finished(outcome, reason, **info)


@contextmanager
def _host_slot(it: Iteration) -> Iterator[str | None]:
    """Hold one of the host's iteration slots for the whole block; yields why not (all taken:
    the gate saw one free, but another project's iteration took it since) or None."""
    from openloop.errors import BusyError

    slot = iteration_slot(it.env, it.gconf.runtime.max_concurrent_iterations)
    try:
        slot.__enter__()
    except BusyError as exc:
        yield str(exc)
        return
    try:
        yield None
    finally:
        slot.__exit__()


def _stopped(it: Iteration, stop: Stop) -> IterationResult:
    if (signal_name := interrupt.requested()) and stop.outcome != Outcome.INTERRUPTED:
        # Stopped by a signal before any attempt began: say so (exit 17), whatever came first.
        stop = Stop(Outcome.INTERRUPTED, f"interrupted by {signal_name} before an attempt began")
    it.reporter.finished(stop.outcome.value, stop.reason)
    task_id = it.selection.task.id if it.selection else None
    return IterationResult(stop.outcome, stop.reason, it.project.alias, task_id)


def run_once(
    env: Environment,
    alias: str | None,
    *,
    model: str | None = None,
    provider: str | None = None,
    reporter: Reporter | None = None,
    adapter_factory: Callable[[str], agents.AgentAdapter] | None = None,
) -> IterationResult:
    with (
        interrupt.signals_stop_the_iteration(),
        _iteration(env, alias, model, provider, reporter, adapter_factory) as it,
        _host_slot(it) as no_slot,
    ):
        try:
            gate(it)
            if no_slot:
                raise Stop(Outcome.SKIPPED, no_slot)
            repair(it)
            archive_finished_tasks(it)
            pending.retry_deferred(it)
            prepare_modes(it)
            select(it)
            precheck(it)
            stop_point()
        except Stop as stop:
            return _stopped(it, stop)
        return execute(it)


def archive_finished_tasks(it: Iteration) -> None:
    """Old finished tasks leave the ledger for the archive: here, under the project's lock and
    before any guard snapshot, so no agent sees the ledger change under it."""
    from openloop.state import archive

    archive.archive_finished(
        it.project.plane, it.env.now_iso(), it.gconf.runtime.archive_after_days
    )


def run_prompt(
    env: Environment,
    alias: str | None,
    prompt_text: str,
    *,
    model: str | None = None,
    provider: str | None = None,
    validate: bool = True,
    reporter: Reporter | None = None,
    adapter_factory: Callable[[str], agents.AgentAdapter] | None = None,
) -> IterationResult:
    """`openloop run`: the agent on a one-off prompt, gated, isolated and accounted."""
    with (
        interrupt.signals_stop_the_iteration(),
        _iteration(env, alias, model, provider, reporter, adapter_factory) as it,
    ):
        try:
            gate(it)
            repair(it)
            govern(it)
            stop_point()
        except Stop as stop:
            return _stopped(it, stop)
        return execute_adhoc(it, prompt_text, validate=validate)


def repair_after_kill(
    env: Environment, alias: str, outcome: str, reason: str, *, user_stop: bool = False
) -> list[str]:
    """What record-exit does once systemd has killed an iteration: the repair step, now, with
    the cause systemd reported. A stop the user asked for (`service stop`) is recorded as
    interrupted, costs the task no attempt and notifies nobody."""
    project = resolve(env, alias)
    with iteration_lock(env, project.alias):
        it = _load(env, project, None, None, NullReporter(), None)
        repair(it, Outcome(outcome), reason, count_attempt=not user_stop)
    if it.repaired and not user_stop:
        from openloop.adapters import notifications

        for task_id in it.repaired:
            notifications.notify(
                env,
                "task-failed",
                project=alias,
                task_id=task_id,
                message=f"{alias} {task_id}: {reason}",
            )
    return it.repaired


def settle_stopped_run(
    env: Environment, alias: str, outcome: str, reason: str, *, user_stop: bool
) -> str | None:
    """run-once closes a run it was asked to stop (SIGTERM) as `interrupted` and counts the
    attempt: from inside, a user's `service stop` and systemd's kill at RuntimeMaxSec look the
    same. record-exit knows which it was (SERVICE_RESULT) and settles the latest run here: a
    user stop gives the attempt back (no fault of the task); a timeout gets its real outcome,
    so a task that always times out is recognisable. Returns the task id settled, if any."""
    project = resolve(env, alias)
    now = env.now_iso()
    with iteration_lock(env, project.alias):
        records = runs.list_records(project.plane.runs_dir, limit=1)
        record = records[0] if records else None
        if not record or record.get("outcome") != Outcome.INTERRUPTED.value:
            return None
        if not str(record.get("reason", "")).startswith("interrupted by SIG"):
            return None  # not a run that stopped itself on a signal
        task_id = record.get("taskId")
        if user_stop:
            record["reason"] = f"stopped by the user ({record.get('reason')})"
        else:
            record.update(outcome=outcome, reason=reason)
        runs.write_record(project.plane.runs_dir, record)
        with edit_ledger(project.plane.ledger_file, now) as ledger:
            task = next((t for t in ledger.tasks if t.id == task_id), None)
            if task is None:
                return None
            last = task.history[-1] if task.history else None
            requeue = last is not None and last.reason.startswith("attempt ")
            if user_stop:
                if requeue and task.attempts > 0:
                    task.attempts -= 1
                    task.last_failure = task.last_failure_signature = None
                    last.reason = f"stopped by the user: {last.reason}"
            else:
                task.last_failure_signature = outcome
                task.last_failure = f"The previous attempt did not finish: {reason}."
                if requeue:
                    last.reason = f"attempt {task.attempts} {outcome}: {reason}"
    return task_id


def has_work(env: Environment, project: Project, gconf: GlobalConfig) -> str | None:
    """Why an iteration has something to do (eligible task, a dead run to repair, a deferred
    merge, a default branch to validate or heal, idle discovery), or None: the gate then skips
    the run without starting it. Cheap: it reads files and git, it never runs a check."""
    ledger = load_ledger(project.plane.ledger_file)
    if any(t.status in RUNNING for t in ledger.tasks) or runs.unfinished(project.plane.runs_dir):
        return "a previous iteration needs repair"
    if any(r.get("status") == "deferred" for r in promotion.list_requests(project.plane)):
        return "a deferred merge can be retried"
    try:
        pconf = project.config()
        branch = governance.base_branch(project, pconf)
        commit = gitops.rev_parse(project.repo, f"refs/heads/{branch}")
        policy = governance.governing_policy(project, commit, branch).policy
        entry = baseline.cached(env, project, pconf, commit)
    except (ConfigError, GitError):
        pconf, policy, entry, commit = None, Policy(), None, None
    healing = policy.self_healing
    max_attempts = (pconf.runtime.max_attempts_per_task if pconf else None) or (
        gconf.runtime.max_attempts_per_task
    )
    wanted = healing.enabled or policy.discovery.enabled
    if commit and entry is None and pconf is not None and wanted:
        return f"the tip of {branch} ({commit[:12]}) is not validated yet"
    if due := modes.unhealed(entry, healing, ledger.tasks):
        return f"the default branch fails {due[0]['check']}: a {due[0]['kind']} task is due"
    eligible = eligible_tasks(ledger.tasks, max_attempts, healing=healing)
    if eligible:
        return f"task {eligible[0].id} is {eligible[0].status}"
    if commit and modes.discovery_due(env, project.alias, policy, entry):
        return "idle with a healthy default branch: discovery can propose work"
    return None


def _iteration_running(env: Environment, alias: str) -> bool:
    from openloop.errors import BusyError

    try:
        with iteration_lock(env, alias):
            return False
    except BusyError:
        return True


def dry_run(env: Environment, alias: str | None, *, model: str | None = None) -> dict[str, Any]:
    """What the next iteration would do, computed without writing anything."""
    project = resolve(env, alias)
    require_initialized(project)
    it = _load(env, project, model, None, NullReporter(), None)
    try:
        gate(it, dry=True)
    except Stop as stop:
        return {"mode": "skip", "outcome": stop.outcome.value, "reason": stop.reason}
    running = [t.id for t in load_ledger(project.plane.ledger_file).tasks if t.status in RUNNING]
    # Tasks marked running are a dead iteration's only if no iteration holds the lock now.
    if _iteration_running(env, project.alias):
        return {
            "mode": "busy",
            "reason": "an iteration of this project is running",
            "running": running,
        }
    stuck = running
    try:
        select(it, exclude=set(stuck), dry=True)
    except Stop as stop:
        return {"mode": "idle", "reason": stop.reason, "wouldRepair": stuck}
    sel = it.selection
    assert sel is not None
    try:
        govern(it)
    except Stop as stop:
        return {"mode": "skip", "outcome": stop.outcome.value, "reason": stop.reason}
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


def _load(env, project, model, provider, reporter, adapter_factory) -> Iteration:
    gconf = load_config(env)
    try:
        pconf = project.config()
        policy = Policy()  # the governing one is read at the base commit: see govern()
        settings_error = None
    except ConfigError as exc:
        # The project's own rules cannot be read (a misspelled denyGlobs...): the gate skips it.
        # The defaults only fill the Iteration; nothing runs or merges on them.
        pconf, policy, settings_error = ProjectConfig(), Policy(), str(exc)
    choice = resolve_model(
        model,
        pconf.pi.model,
        gconf.model,
        cli_provider=provider,
        project_provider=pconf.pi.provider,
        global_provider=gconf.provider,
    )
    factory = adapter_factory or (lambda kind: agents.make_adapter(kind))
    return Iteration(
        env, project, gconf, pconf, policy, choice, reporter, factory, settings_error=settings_error
    )


# --- steps before the agent ---------------------------------------------------------------------


def gate(it: Iteration, *, dry: bool = False) -> None:
    """Reasons not to run at all. The systemd ExecCondition asks the same question."""
    reason = it.settings_error or gate_reason(it.env, it.project, it.gconf, it.pconf)
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
    if untrusted := trust.untrusted_reason(project.entry, pconf):
        return untrusted
    conf = gconf.budgets
    day = budget.today(env)
    if day.total() >= conf.daily_cost_usd:
        return (
            f"daily budget of ${conf.daily_cost_usd:.2f} is spent; runs resume tomorrow "
            "(or raise budgets.dailyCostUsd)"
        )
    own = conf.project_daily_cost_usd
    if own is not None and day.total(project.alias) >= own:
        return (
            f"project '{project.alias}' spent its daily budget of ${own:.2f}; runs resume "
            "tomorrow (or raise budgets.projectDailyCostUsd)"
        )
    # The agent's environment failed (pi missing, the key refused, the quota spent): wait.
    return backoff.gate_reason(env, project.alias)


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
    # Checks of a killed validation of the default branch (they carry no run record).
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
    worktrees = it.env.worktrees_dir / it.project.alias
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
        it.base_branch = governance.base_branch(it.project, it.pconf)
        it.base_commit = gitops.rev_parse(it.project.repo, f"refs/heads/{it.base_branch}")
    except GitError as exc:
        raise Stop(Outcome.SKIPPED, f"no default branch to start from: {exc}") from None
    try:
        governing = governance.governing_policy(it.project, it.base_commit, it.base_branch)
    except ConfigError as exc:
        # A policy that cannot be read (a misspelled denyGlobs...) governs nothing: skip.
        raise Stop(Outcome.SKIPPED, str(exc)) from None
    it.policy, it.policy_approved = governing.policy, governing.approved


def _finish_task(it, status: str, reason: str, *, failure: str, signature: str) -> None:
    with edit_ledger(it.project.plane.ledger_file, it.env.now_iso()) as ledger:
        task = ledger.get(it.task.id)
        task.last_failure, task.last_failure_signature = failure, signature
        transition(task, status, reason, it.env.now_iso())
