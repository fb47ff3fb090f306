"""One scheduler iteration for one project, as a pipeline of small named steps.

    gate -> repair -> select -> precheck -> start -> worktree -> prompt -> agent -> collect
         -> validate -> judge -> hand over -> record

The systemd service runs exactly this (`openloop run-once --project ALIAS`) and exits. Each step
either updates the Iteration or raises Stop with the outcome that ends the run early. The ledger
is re-read under its lock for every change, never written back from a stale copy.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from openloop.adapters import agent as agents
from openloop.adapters import gitops
from openloop.env import Environment
from openloop.errors import ConfigError, GitError
from openloop.loop import baseline, governance, interrupt, modes, pending
from openloop.loop.adhoc import execute_adhoc
from openloop.loop.attempt import build_prompt, execute, stop_point
from openloop.loop.iteration import Iteration, IterationResult, Stop
from openloop.loop.outcomes import Outcome
from openloop.loop.steps import (
    eligible_tasks,
    gate,
    govern,
    precheck,
    prepare_modes,
    repair,
    select,
)
from openloop.progress import NullReporter, Reporter
from openloop.state import runs
from openloop.state.config import GlobalConfig, load_config, resolve_model
from openloop.state.ledger import (
    RUNNING,
    edit_ledger,
    load_ledger,
)
from openloop.state.locks import iteration_lock, iteration_slot
from openloop.state.policy import Policy
from openloop.state.project import Project, require_initialized, resolve
from openloop.state.projectconfig import ProjectConfig
from openloop.state.requests import list_requests

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
    if any(r.get("status") == "deferred" for r in list_requests(project.plane)):
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
