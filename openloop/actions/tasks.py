"""Task actions behind `openloop task ...`: create, change, cancel, retry, recover."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from openloop.env import Environment
from openloop.errors import InputError, OpenLoopError, StateError
from openloop.state.ledger import (
    RUNNING,
    TERMINAL,
    StatusChange,
    Task,
    TaskLedger,
    TaskScope,
    TaskSource,
    append_to_ledger,
    check_task_id,
    edit_ledger,
    new_task_id,
    transition,
)
from openloop.state.project import Project, require_initialized
from openloop.state.taskinput import check_scope, needs_plan
from openloop.text import check_line, check_text


def _event(project: Project, task: Task, name: str, message: str) -> None:
    """Task changes made by hand belong in the audit trail (`openloop events`) too."""
    from openloop.adapters import journal

    journal.send(
        f"{project.alias}: {task.id}: {message}",
        event=name,
        project=project.alias,
        task=task.id,
        status=task.status,
    )


def _ids_with_records(project: Project) -> set[str]:
    """Ids no longer in the ledger that must not be handed out again: tasks with promotion
    records, and archived tasks."""
    from openloop.state import archive

    plane = project.plane
    return (
        {p.stem for p in plane.promotions_dir.glob("*.json")}
        | {p.stem for p in plane.promotion_results_dir.glob("*.jsonl")}
        | archive.archived_ids(plane)
    )


def _withdraw_promotion(project: Project, task_id: str, now: str, reason: str) -> None:
    """A task that leaves review by hand takes its open promotion request with it, so nothing
    merges it later."""
    from openloop.loop import pending

    pending.withdraw(project, task_id, now, reason)


def _check_dependencies(ledger: TaskLedger, depends_on: list[str], own_id: str | None) -> None:
    for dep in depends_on:
        check_task_id(dep, option="--depends-on")
        if dep == own_id:
            raise InputError(f"--depends-on: task '{dep}' cannot depend on itself")
        if ledger.find(dep) is None:
            raise InputError(f"--depends-on: unknown task id '{dep}'")


@dataclass
class NewTask:
    title: str | None = None
    kind: str = "chore"
    risk: str = "medium-risk"
    scope: tuple[str, ...] = ()
    priority: int = 0
    description: str | None = None
    depends_on: tuple[str, ...] = ()
    acceptance: tuple[str, ...] = ()
    ref: str | None = None
    task_id: str | None = None
    needs_plan: bool = False
    strict: bool = (
        False  # refuse, rather than add a 'proposed' task, when the ref cannot be fetched
    )
    ref_option: str = "--from-ref"  # `enqueue` calls it --ref
    description_option: str = "--description"  # or --description-file


def _check_new_task(spec: NewTask) -> None:
    """Everything the user typed, before anything is fetched or written."""
    if spec.title is not None:
        check_line(spec.title, "--title", "titles")
        if not spec.title.strip():
            raise InputError("--title: must not be empty")
    for criterion in spec.acceptance:
        check_line(criterion, "--accept", "acceptance criteria")
    if spec.ref is not None:
        check_line(spec.ref, spec.ref_option, "references")
    if spec.task_id:
        check_task_id(spec.task_id, option="--id")


def add_task(
    env: Environment,
    project: Project,
    spec: NewTask,
    *,
    fetch=None,
    warn: Callable[[str], None] = lambda message: None,
) -> Task:
    """`warn` receives notes for the user (a fetched title that had to be cleaned). `fetch`
    reads an issue (default: refs.fetch_issue)."""
    from openloop.adapters import refs  # only `task add` needs it: not imported by `task list`

    fetch = fetch or refs.fetch_issue
    require_initialized(project)
    _check_new_task(spec)
    scope = check_scope(list(spec.scope))
    source = TaskSource(type="human", ref="openloop task add")
    title, description, id_seed = spec.title, spec.description, spec.title
    unfetched = False
    if description is not None:
        description = check_text(description, spec.description_option)  # CRLF becomes LF
    if spec.ref:
        ref = refs.parse_ref(spec.ref)
        fetched = fetch(ref)  # network and auth are optional: None falls back to the ref itself
        if fetched is None:
            unfetched = True
            _unfetched(ref, spec, warn)
        if fetched and not title:
            title = fetched.title
            for note in fetched.title_notes:
                warn(note)
        if fetched and not description:
            description = fetched.body
            for note in fetched.body_notes:
                warn(note)
        title = title or refs.fallback_title(ref)
        source = TaskSource(type="issue", ref=ref.short())
        id_seed = ref.slug()
    if not title:
        raise InputError("--title: required (or give --from-ref REF)")
    plan_first = needs_plan(spec.kind, description, _planning(project))
    now = env.now_iso()
    with append_to_ledger(project.plane.ledger_file, now) as ledger:
        if spec.ref:
            dup = next(
                (t for t in ledger.tasks if t.ref == source.ref and t.status not in TERMINAL),
                None,
            )
            if dup:
                raise InputError(f"--ref: {source.ref} is already queued as task '{dup.id}'")
        reserved = _ids_with_records(project)
        if spec.task_id and (ledger.find(spec.task_id) or spec.task_id in reserved):
            raise InputError(f"--id: task '{spec.task_id}' already exists or existed")
        task_id = spec.task_id or new_task_id(ledger, id_seed or title, reserved)
        _check_dependencies(ledger, list(spec.depends_on), task_id)
        task = Task(
            id=task_id,
            title=title.strip(),
            description=description,
            kind=spec.kind,
            # Unfetched and untitled: 'Issue o/r#N' with no body is not work for an agent yet
            # (it waits for 'task accept' or an edit, see modes.waiting_for_acceptance).
            status="proposed"
            if spec.needs_plan or plan_first or (unfetched and not spec.title)
            else "ready",
            risk=spec.risk,
            priority=spec.priority,
            scope=TaskScope(paths=scope) if scope else None,
            depends_on=list(spec.depends_on),
            source=source,
            owner="openloop",
            acceptance_criteria=list(spec.acceptance),
            created_at=now,
            updated_at=now,
        )
        task.history.append(StatusChange(at=now, from_=None, to=task.status, reason="created"))
        ledger.added.append(task)
    _event(project, task, "task-added", f"added ({task.status}): {task.title}")
    return task


def _planning(project: Project):
    from openloop.errors import ConfigError
    from openloop.state.projectconfig import Planning

    try:
        return project.config().planning
    except ConfigError:  # the iteration reports a broken project.json; adding still works
        return Planning()


def accept_task(env: Environment, project: Project, task_id: str, reason: str | None) -> Task:
    """A proposal of discovery (idle mode) accepted by a human: it joins the queue."""
    # Here only: the loop's modules (policy, yaml, pathspec) would slow down every `task add`.
    from openloop.loop import modes

    _check_id_and_reason(task_id, reason)
    now = env.now_iso()
    with edit_ledger(project.plane.ledger_file, now) as ledger:
        task = ledger.get(task_id)
        if not modes.waiting_for_acceptance(task):
            raise StateError(
                f"task '{task_id}' is {task.status} ({task.source.type}); only proposals "
                "(discovery's, or an issue that could not be fetched) wait for acceptance"
            )
        transition(task, "ready", reason or "accepted by user", now)
    _event(project, task, "task-accepted", reason or "accepted by user")
    return task


def _check_id_and_reason(task_id: str, reason: str | None) -> None:
    """The preamble of every move a user makes on one task: both are data, one line each."""
    check_task_id(task_id)
    if reason is not None:
        check_line(reason, "--reason", "reasons")


def _unfetched(ref, spec: NewTask, warn: Callable[[str], None]) -> None:
    from openloop.adapters import refs

    tool, present = refs.fetch_tool(ref)
    why = f"{tool} is not installed" if not present else f"{tool} failed (logged in? online?)"
    if spec.strict:
        raise OpenLoopError(
            f"{spec.ref_option}: could not fetch {ref.short()}: {why}; nothing was added "
            f"(without --strict the task is added as 'proposed' for you to complete)"
        )
    if spec.title:
        warn(f"note: could not fetch {ref.short()} ({why}); the task keeps your title")
    else:
        warn(
            f"note: could not fetch {ref.short()} ({why}): the task is added as 'proposed' "
            f"with the ref as its title; give it a title and description with 'openloop task "
            f"update', then '--status ready' (or fetch it: install {tool}, and add it again)"
        )


@dataclass
class TaskChanges:
    title: str | None = None
    kind: str | None = None
    risk: str | None = None
    scope: tuple[str, ...] | None = None
    priority: int | None = None
    description: str | None = None
    depends_on: tuple[str, ...] | None = None
    status: str | None = None
    reason: str | None = None


def _check_changes(changes: TaskChanges) -> TaskChanges:
    """The user's values, checked; the description with its line ends normalised."""
    if changes.title is not None:
        check_line(changes.title, "--title", "titles")
        if not changes.title.strip():
            raise InputError("--title: must not be empty")
    if changes.reason is not None:
        check_line(changes.reason, "--reason", "reasons")
    if changes.description is not None:
        return replace(changes, description=check_text(changes.description, "--description"))
    return changes


def update_task(env: Environment, project: Project, task_id: str, changes: TaskChanges) -> Task:
    check_task_id(task_id)
    changes = _check_changes(changes)
    scope = check_scope(list(changes.scope)) if changes.scope is not None else None
    now = env.now_iso()
    with edit_ledger(project.plane.ledger_file, now) as ledger:
        task = ledger.get(task_id)
        if task.status in RUNNING:
            raise StateError(
                f"task '{task_id}' is running; change it after the iteration ends "
                f"(or 'openloop task recover' if that iteration is dead)"
            )
        if changes.status in RUNNING or changes.status == "promoted":
            raise StateError(f"--status: {changes.status} is set by iterations and promotions only")
        was = task.status
        if changes.depends_on is not None:
            _check_dependencies(ledger, list(changes.depends_on), task_id)
            task.depends_on = list(changes.depends_on)
        for name in ("title", "kind", "risk", "priority", "description"):
            value = getattr(changes, name)
            if value is not None:
                setattr(task, name, value.strip() if name == "title" else value)
        if scope is not None:
            task.scope = TaskScope(paths=scope) if scope else None
        if changes.status is not None and changes.status != task.status:
            transition(task, changes.status, changes.reason or "openloop task update", now)
        task.updated_at = now
    if was == "review" and task.status != "review":
        _withdraw_promotion(project, task_id, now, f"task moved to {task.status} by hand")
    _event(project, task, "task-updated", f"updated ({task.status})")
    return task


def cancel_task(env: Environment, project: Project, task_id: str, reason: str | None) -> Task:
    _check_id_and_reason(task_id, reason)
    now = env.now_iso()
    with edit_ledger(project.plane.ledger_file, now) as ledger:
        task = ledger.get(task_id)
        if task.status in RUNNING:
            raise StateError(
                f"task '{task_id}' is running; stop the iteration first "
                f"('openloop service stop' or wait for it to finish)"
            )
        transition(task, "cancelled", reason or "cancelled by user", now)
    _withdraw_promotion(project, task_id, now, "task cancelled")
    _event(project, task, "task-cancelled", reason or "cancelled by user")
    return task


def retry_task(env: Environment, project: Project, task_id: str, reason: str | None) -> Task:
    _check_id_and_reason(task_id, reason)
    now = env.now_iso()
    with edit_ledger(project.plane.ledger_file, now) as ledger:
        task = ledger.get(task_id)
        if task.status not in ("blocked", "failed"):
            raise StateError(
                f"task '{task_id}' is {task.status}; only blocked or failed tasks can be retried"
            )
        transition(task, "ready", reason or "retry requested by user", now)
        task.attempts = 0
        task.no_progress_streak = 0
        task.last_failure_signature = None
        task.last_diff_hash = None
    _event(project, task, "task-retried", reason or "retry requested by user")
    return task


def remove_task(env: Environment, project: Project, task_id: str) -> Task:
    check_task_id(task_id)
    with edit_ledger(project.plane.ledger_file, env.now_iso()) as ledger:
        task = ledger.get(task_id)
        if task.status in RUNNING:
            raise StateError(f"task '{task_id}' is running; it cannot be removed now")
        dependents = [t.id for t in ledger.tasks if task_id in t.depends_on]
        if dependents:
            raise StateError(f"task '{task_id}' is a dependency of: {', '.join(dependents)}")
        ledger.tasks.remove(task)
    _withdraw_promotion(project, task_id, env.now_iso(), "task removed")
    _event(project, task, "task-removed", "removed from the ledger")
    return task


def recover_tasks(env: Environment, project: Project) -> list[str]:
    """The iteration's own repair step, by hand: tasks left running by a dead iteration go
    back to the queue (the attempt counts), its worktree and run record are closed. Refused
    while an iteration of the project is running."""
    from openloop.loop.scheduler import repair_after_kill

    return repair_after_kill(
        env, project.alias, "interrupted", "recovered by 'openloop task recover'"
    )
