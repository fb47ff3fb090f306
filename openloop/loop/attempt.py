"""Running one attempt at a task: worktree, prompt, agent, collect, validate, judge, record.

Each step is a small function over the Iteration; scheduler.py decides whether and what to run
and calls `execute`.
"""

from __future__ import annotations

import os
from typing import Any

from openloop.adapters import agent as agents
from openloop.adapters import environment, gitops, guard, workspace
from openloop.adapters.supervise import TRANSCRIPT
from openloop.env import iso
from openloop.loop import (
    baseline,
    governance,
    interrupt,
    planning,
    prompts,
    userstate,
    validation,
)
from openloop.loop.iteration import Iteration, IterationResult, Selection, Stop
from openloop.loop.outcomes import Outcome
from openloop.state import backoff, budget, checkfiles, runs, trust
from openloop.state.judge import Change, assess, summary_for_prompt
from openloop.state.ledger import Task, block_if_exhausted, edit_ledger, transition
from openloop.state.project import Project

FAILURE_TEXT_LIMIT = 6000


def execute(it: Iteration) -> IterationResult:
    start(it)
    outcome, reason = Outcome.AGENT_ERROR, "iteration ended unexpectedly"
    try:
        prepare_worktree(it)
        it.prompt = build_prompt(it)
        stop_point()
        run_agent(it)
        stop_point()
        collect(it)
        outcome, reason = judge(it)
    except Stop as stop:
        outcome, reason = stop.outcome, stop.reason
    except KeyboardInterrupt:  # a Ctrl+C outside `signals_stop_the_iteration` (a library caller)
        finish(it, Outcome.INTERRUPTED, "interrupted (Ctrl+C)")
        raise
    except Exception as exc:
        # OpenLoop itself failed (git, disk, a bug): close the attempt properly, then let the
        # error surface (exit 1; under systemd, OnFailure= fires).
        finish(it, Outcome.INTERRUPTED, f"OpenLoop failed during the attempt: {exc}")
        raise
    finally:
        if it.worktree is not None:
            workspace.remove_workspace(it.worktree)
    record, outcome, reason = finish(it, outcome, reason)
    it.reporter.finished(outcome.value, reason, task=it.task.id)
    return IterationResult(outcome, reason, it.project.alias, it.task.id, it.run_id, record)


def stop_point() -> None:
    """Between steps: a stop requested by a signal ends the attempt here."""
    if signal_name := interrupt.requested():
        raise Stop(Outcome.INTERRUPTED, f"interrupted by {signal_name}")


def execute_adhoc(it: Iteration, prompt_text: str, *, validate: bool = True) -> IterationResult:
    """`openloop run`: a one-off prompt with an iteration's isolation (worktree, branch) and
    accounting (budget, run record), but no ledger task."""
    now = it.env.now()
    task_id = f"adhoc-{now.strftime('%Y%m%d-%H%M%S')}"
    title = (prompt_text.strip().splitlines() or ["ad-hoc prompt"])[0][:80]
    task = Task(id=task_id, title=title, kind="chore", created_at=iso(now), updated_at=iso(now))
    it.selection = Selection(task, "adhoc", "implementer", "ad-hoc prompt")
    it.started, it.attempt = iso(now), 1
    it.run_id = runs.new_run_id(now, task_id)
    it.run_dir = it.project.plane.runs_dir / it.run_id
    it.run_dir.mkdir(parents=True, exist_ok=True)
    runs.write_record(it.project.plane.runs_dir, _record(it, runs.RUNNING, "started"))
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
    record = _record(it, outcome.value, reason)
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
    _event(
        it,
        "iteration-started",
        f"{it.project.alias}: {sel.mode} {sel.task.id} as {sel.role}, attempt {it.attempt}",
    )
    it.reporter.phase("started", task=sel.task.id, role=sel.role, attempt=it.attempt, run=it.run_id)


def prepare_worktree(it: Iteration) -> None:
    """The agent's own repository at the base commit, on the task's branch name. Nothing of
    the user's repository is shared but its objects, read through alternates."""
    repo = it.project.repo
    if it.base_commit is None:  # precheck found them already for a ledger task
        it.base_branch = governance.base_branch(it.project, it.pconf)
        it.base_commit = gitops.rev_parse(repo, f"refs/heads/{it.base_branch}")
    it.branch = _task_branch(it)
    it.worktree = it.env.worktrees_dir / it.project.alias / it.task.id
    # Task ids are validated on load; this keeps a workspace (which gets deleted) inside ours.
    if it.worktree.resolve().parent != (it.env.worktrees_dir / it.project.alias).resolve():
        raise Stop(Outcome.BLOCKED_BY_POLICY, f"task id {it.task.id!r} is not a safe path")
    it.reporter.phase("worktree", task=it.task.id)
    # Read before any code of the agent's runs: its commits are recorded under this identity.
    it.identity = workspace.identity(repo)
    it.start_commit = _start_commit(it)
    workspace.make_workspace(repo, it.worktree, it.start_commit, it.branch)


def _start_commit(it: Iteration) -> str:
    """Where the agent starts: the base commit, or, for a task implemented on its own spec, the
    planner's commit replayed onto the base (the spec is then reviewed and merged with the
    implementation, on the task's branch)."""
    task = it.task
    if (
        it.selection.mode == "implement"
        and task.spec_commit
        and task.spec_id == planning.spec_path(task.id)
        and gitops.regular_file_at(it.project.repo, task.spec_commit, task.spec_id) is not None
    ):
        replayed, _conflict = workspace.replay_onto(
            it.project.repo, task.spec_commit, it.base_commit, it.identity or {}
        )
        if replayed:
            return replayed
    return it.base_commit


def _task_branch(it: Iteration) -> str:
    """`<prefix><task-id>`, unless a branch of that name exists that OpenLoop did not make for
    this task (the ledger records the branch it made): then the first free `-2`, `-3`...
    OpenLoop never resets a branch it did not create."""
    repo, name = it.project.repo, f"{it.pconf.runtime.branch_prefix}{it.task.id}"
    if it.task.branch and it.task.branch.startswith(name):
        return it.task.branch
    candidate, n = name, 1
    while gitops.ref_exists(repo, f"refs/heads/{candidate}") and not _ours(it, candidate):
        n += 1
        candidate = f"{name}-{n}"
    return candidate


def _ours(it: Iteration, branch: str) -> bool:
    """A branch OpenLoop recorded for this task but whose ledger entry a killed run never
    wrote: its tip is OpenLoop's own commit for the task (the agent cannot make one: refs in
    the user's repository are guarded while it runs)."""
    message = gitops.git(
        it.project.repo, "log", "-1", "--format=%B", f"refs/heads/{branch}", check=False
    ).stdout
    return message.startswith("openloop: ") and f"\nTask: {it.task.id}\n" in message


def guarded(it: Iteration, what: str, action):
    """Run `action` (code the agent wrote: the agent itself, or its checks) and prove it left
    the user's repository, checkout, control files and git settings as they were."""
    before = guard.take(it.project.repo, dict(it.env.environ))
    user_before = userstate.take(it.env)
    try:
        return action()
    finally:
        found = guard.verify(it.project.repo, before, dict(it.env.environ))
        found += userstate.verify(it.env, user_before)
        if found:
            it.escape = found
            raise Stop(Outcome.ESCAPED, f"escaped: during {what}: " + "; ".join(found))


def build_prompt(it: Iteration) -> str:
    sel = it.selection
    assert sel is not None
    spec_text = _read_spec(it.project, sel.task) if sel.mode == "implement" else None
    if sel.role == "ci-healer" or sel.mode == "plan":
        spec_text = None
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
    """The task's spec: from the planner's recorded commit (a regular file under
    .openloop/specs/ there); a spec from before that lived in the user's control plane is read
    from there. Never a path outside specs/."""
    if not task.spec_id:
        return None
    if not task.spec_id.startswith(planning.SPEC_DIR + "/") or ".." in task.spec_id.split("/"):
        return None
    if task.spec_commit:
        text = gitops.regular_file_at(project.repo, task.spec_commit, task.spec_id)
        return text[:50_000] if text else None
    specs = project.plane.specs_dir.resolve()
    path = (project.repo / task.spec_id).resolve()
    if not path.is_relative_to(specs) or not path.is_file():
        return None
    return path.read_text(encoding="utf-8", errors="replace")[:50_000]


def run_agent(it: Iteration) -> None:
    assert it.worktree is not None and it.run_dir is not None and it.prompt is not None
    assert it.run_id is not None
    adapter = it.adapter_factory(it.pconf.agent.type)
    # The day's budget, shared live with every other running iteration: this run publishes its
    # spend as the agent reports it and is stopped at once when the day's total reaches a
    # ceiling (its own calls or another project's). finish() charges the final cost.
    live = budget.LiveSpend(it.env, it.run_id, it.project.alias, ceilings(it))
    request = agents.AgentRequest(
        cwd=it.worktree,
        prompt=it.prompt,
        system_append=prompts.runtime_rules(),
        model=it.model.model,
        provider=it.model.provider,
        run_dir=it.run_dir,
        run_timeout=float(it.limit("run_timeout_seconds")),
        inactivity_timeout=float(it.limit("inactivity_timeout_seconds")),
        budget_left_usd=None,
        env=it.agent_env(),
        command=it.pconf.agent.command,
        budget_check=live,
    )
    it.reporter.phase("agent", task=it.task.id, role=it.selection.role, attempt=it.attempt)

    def run():
        it.agent_result = adapter.run(
            request, lambda p: it.reporter.agent_event(p.tool_calls, p.cost_usd, p.last_tool)
        )

    guarded(it, "the agent's run", run)


def ceilings(it: Iteration) -> budget.Ceilings:
    conf = it.gconf.budgets
    return budget.Ceilings(conf.daily_cost_usd, conf.project_daily_cost_usd)


def charge(it: Iteration) -> None:
    """The run's final cost to the day's budget, folding its live entry (one locked write)."""
    cost = it.agent_result.cost_usd if it.agent_result else 0.0
    budget.record_spend(it.env, it.project.alias, cost, run_id=it.run_id)


def collect(it: Iteration) -> None:
    """Record the files the agent left as one commit on the task branch, with OpenLoop's own
    index in the user's repository (never the agent's git metadata), and measure it."""
    assert it.worktree is not None and it.base_commit is not None
    it.reporter.phase("collect", task=it.task.id)
    repo = it.project.repo
    message = (
        f"openloop: {it.task.title}\n\n"
        f"Task: {it.task.id}\nRun: {it.run_id}\nAttempt: {it.attempt}\n"
    )
    start = it.start_commit or it.base_commit
    head = workspace.record(repo, it.worktree, start, message, it.identity or {})
    branch_ref = f"refs/heads/{it.branch}"
    old = gitops.rev_parse(repo, branch_ref) if gitops.ref_exists(repo, branch_ref) else None
    if not workspace.set_branch(repo, it.branch, head, old):
        raise Stop(Outcome.AGENT_ERROR, f"branch {it.branch} moved while recording the result")
    it.head_commit = head
    raw = gitops.name_status(repo, it.base_commit, it.head_commit)
    it.changes = [Change(status, path, old) for status, path, old in raw]
    it.lines_changed = gitops.lines_changed(repo, it.base_commit, it.head_commit)
    it.diff_hash = gitops.diff_hash(repo, it.base_commit, it.head_commit) if raw else None


# --- judging the attempt ------------------------------------------------------------------------


def run_checks(it: Iteration) -> None:
    """The project's checks in the agent's workspace, only while they are the commands the user
    approved: the gate asked before the agent ran, and the approval is asked again right before
    running. They run code the agent wrote, so they are guarded like the agent."""
    if refusal := trust.recheck(it.env, it.project.entry, it.pconf):
        raise Stop(Outcome.SKIPPED, f"checks not run: {refusal}")
    it.checks = guarded(
        it,
        "the checks",
        lambda: validation.run_all(
            it.pconf.validation.commands(),
            it.worktree,
            it.run_dir,
            float(it.limit("validation_timeout_seconds")),
            it.check_env(),
            on_start=lambda name: it.reporter.phase("validate", check=name),
        ),
    )


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
    run_checks(it)
    stop_point()
    it.excused = _against_baseline(it)
    if validation.all_passed(it.judged_checks()) is False:
        names = ", ".join(c.name for c in it.judged_checks() if c.status in ("failed", "timed-out"))
        return Outcome.VALIDATION_FAILED, f"validation failed: {names}"
    verdict = assess(
        it.changes,
        it.policy,
        declared_risk=it.task.risk,
        declared_scope=it.task.scope_paths() or None,
        lines_changed=it.lines_changed,
        validations_passed=validation.all_passed(it.checks),
        symlinks=gitops.changed_symlinks(it.project.repo, it.base_commit, it.head_commit),
        # The checks cannot vouch for a change to the files they run (base tree: what was approved).
        command_files=checkfiles.command_files(
            trust.repo_commands(it.pconf),
            lambda path: gitops.is_file_at(it.project.repo, it.base_commit, path),
        ),
    )
    it.decision = {
        "risk": verdict.risk,
        "autoMergeAllowed": verdict.auto_merge,
        "blocked": verdict.blocked,
        "reasons": list(verdict.reasons),
    }
    if not it.policy_approved and verdict.auto_merge:
        it.decision["autoMergeAllowed"] = False
        it.decision["reasons"].append(
            "policy.yaml differs from the one you approved: nothing auto-merges until "
            f"'openloop project trust {it.project.alias}'"
        )
    # A check excused by the baseline did not pass: nothing auto-merges on it (the gate above).
    it.decision["reasons"] += [e["reason"] for e in it.excused]
    if verdict.blocked:
        return Outcome.BLOCKED_BY_POLICY, "; ".join(verdict.reasons)
    excused = "".join(f"; {e['reason']}" for e in it.excused)
    return Outcome.COMPLETED, f"validated{excused}; " + (
        "auto-merge allowed by policy" if it.decision["autoMergeAllowed"] else "kept for review"
    )


def _against_baseline(it: Iteration) -> list[dict[str, str]]:
    """The task's failing checks that fail on its base commit for the same reasons: not the
    task's doing. A healing task's own check is never excused (fixing it is the task)."""
    if not any(c.status in ("failed", "timed-out") for c in it.checks):
        return []
    entry = it.baseline
    if entry is None or entry.get("commit") != it.base_commit:
        entry = baseline.cached(it.env, it.project, it.pconf, it.base_commit)
    if entry is None:
        return []
    files = set(
        gitops.git(it.project.repo, "ls-tree", "-r", "--name-only", it.head_commit).stdout.split(
            "\n"
        )
    )
    roots = (f"{it.worktree}/", f"{it.worktree.resolve()}/") if it.worktree else ()
    must_fix = frozenset()
    if it.task.source.type == "ci" and it.task.kind in baseline.HEAL_KIND.values():
        must_fix = frozenset(k for k, v in baseline.HEAL_KIND.items() if v == it.task.kind)
    return baseline.compare(it.checks, entry, files.__contains__, roots, must_fix)


def _judge_plan(it: Iteration) -> tuple[Outcome, str]:
    """The planner's spec, read from its commit on the task's branch (a regular file only),
    with its subtasks validated like `task add`. Nothing is copied into the user's checkout:
    the spec is reviewed and merged with the task's implementation."""
    assert it.worktree is not None and it.head_commit is not None
    rel = planning.spec_path(it.task.id)
    text = gitops.regular_file_at(it.project.repo, it.head_commit, rel)
    if not text or not text.strip():
        return Outcome.NO_PROGRESS, f"the planner wrote no spec (a regular file) at {rel}"
    others = [p for c in it.changes for p in c.paths() if p != rel]
    if others:
        return (
            Outcome.VALIDATION_FAILED,
            f"the planner may change only {rel}; it also changed: {', '.join(others[:10])}",
        )
    from openloop.errors import InputError
    from openloop.state.ledger import load_ledger

    try:
        items = planning.subtasks(text, load_ledger(it.project.plane.ledger_file), it.task)
    except InputError as exc:
        return Outcome.VALIDATION_FAILED, f"the spec's subtask block is invalid: {exc}"
    it.plan = {"files": planning.files_to_touch(text), "subtasks": items}
    split = f", split into {len(items)} subtasks" if items else ""
    return Outcome.PLANNED, f"spec committed at {rel} on {it.branch}{split}"


# --- recording ----------------------------------------------------------------------------------


def finish(it: Iteration, outcome: Outcome, reason: str) -> tuple[dict[str, Any], Outcome, str]:
    """Apply the outcome to the task, charge the budget, write the run summary. Returns the
    record and the final outcome (a repeated failure may have become no-progress)."""
    charge(it)
    handover = None
    if outcome == Outcome.COMPLETED:
        from openloop.loop import promotion

        handover = promotion.prepare_handover(it, it.env.now_iso())
    outcome, reason = _apply_outcome(it, outcome, reason, handover)
    record = _record(it, outcome.value, reason)
    runs.write_record(it.project.plane.runs_dir, record)
    runs.prune(it.project.plane.runs_dir, it.gconf.runtime.keep_runs)
    if outcome == Outcome.ESCAPED:
        _event(it, "escaped", f"{it.project.alias}: {it.task.id}: {reason}", priority=3)
    _event(
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


def _event(it: Iteration, name: str, message: str, priority: int = 6, **fields: str) -> None:
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
            _event(it, "environment-recovered", f"{alias}: the agent's environment works again")
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


def _set_status(it: Iteration, status: str, reason: str) -> None:
    with edit_ledger(it.project.plane.ledger_file, it.env.now_iso()) as ledger:
        transition(ledger.get(it.task.id), status, reason, it.env.now_iso())


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
        "baseline": _baseline_record(it),
        "decision": it.decision,
        "escape": it.escape or None,
        "outcome": outcome,
        "reason": reason,
        "taskStatus": it.task_status,
        "transcript": str(it.run_dir / TRANSCRIPT) if it.run_dir else None,
    }
