"""Running one attempt at a task: worktree, prompt, agent, collect, validate, judge, record.

Each step is a small function over the Iteration; scheduler.py decides whether and what to run
and calls `execute`.
"""

from __future__ import annotations

from openloop.adapters import agent as agents
from openloop.adapters import gitops, guard, supervise, workspace
from openloop.env import iso
from openloop.loop import (
    baseline,
    governance,
    interrupt,
    planning,
    prompts,
    validation,
)
from openloop.loop.guarding import guarded
from openloop.loop.iteration import Iteration, IterationResult, Stop
from openloop.loop.outcomes import Outcome
from openloop.loop.record import event, finish, run_record
from openloop.state import budget, checkfiles, runs, trust
from openloop.state.judge import Change, assess, summary_for_prompt
from openloop.state.ledger import Task, edit_ledger, transition
from openloop.state.project import Project


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
    runs.write_record(plane.runs_dir, run_record(it, runs.RUNNING, "started"))
    event(
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
    it.identity, it.gitdir = workspace.identity_and_gitdir(repo)
    it.start_commit = _start_commit(it)
    workspace.make_workspace(repo, it.worktree, it.start_commit, it.branch, it.gitdir)


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
    supervise.probe_soon()  # runs beside the snapshot below
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

    guarded(it, "the agent's run", run, keep=True)


def ceilings(it: Iteration) -> budget.Ceilings:
    conf = it.gconf.budgets
    return budget.Ceilings(conf.daily_cost_usd, conf.project_daily_cost_usd)


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
    head = workspace.record(repo, it.worktree, start, message, it.identity or {}, it.gitdir)
    branch_ref, clean, it.clean = f"refs/heads/{it.branch}", it.clean, None
    # The branch as the guard saw it after the agent; the update is a compare-and-swap.
    old = clean.refs.get(branch_ref) if clean else gitops.ref_value(repo, branch_ref)
    if not workspace.set_branch(repo, it.branch, head, old):
        raise Stop(Outcome.AGENT_ERROR, f"branch {it.branch} moved while recording the result")
    it.head_commit = head
    it.clean = clean and guard.carried(clean, {branch_ref: head})
    diff = gitops.diff_summary(repo, it.base_commit, it.head_commit)
    it.changes = [Change(status, path, old) for status, path, old in diff.changes]
    it.lines_changed, it.diff_hash, it.links = diff.lines, diff.digest, diff.links


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
        symlinks=gitops.link_targets(it.project.repo, it.links),
        # The checks cannot vouch for a change to the files they run (base tree: what was approved).
        command_files=_command_files(it),
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


def _command_files(it: Iteration) -> dict[str, str]:
    """checkfiles.command_files against the base tree (what was approved), with every path it
    asks about looked up in one git call: a first pass only collects the questions."""
    commands, repo, base = trust.repo_commands(it.pconf), it.project.repo, it.base_commit
    asked: list[str] = []
    checkfiles.command_files(commands, lambda path: asked.append(path) or False)
    known = gitops.files_at(repo, base, asked)
    return checkfiles.command_files(
        commands,
        lambda path: path in known if path in asked else gitops.is_file_at(repo, base, path),
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


def _set_status(it: Iteration, status: str, reason: str) -> None:
    with edit_ledger(it.project.plane.ledger_file, it.env.now_iso()) as ledger:
        transition(ledger.get(it.task.id), status, reason, it.env.now_iso())
