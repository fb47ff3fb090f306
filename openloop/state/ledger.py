"""The task ledger (`.openloop/tasks.json`): task model, state machine, and locked edits.

Status lifecycle (the only place transitions are decided is `TRANSITIONS` + `transition()`):

    proposed -> planned -> ready -> in_progress -> validating -> review -> promoted
                                        |              |-> promoted (auto-merge)
                                        |              '-> ready (retry) / blocked / failed
                                        '-> ready (retry, repair) / blocked / failed
    blocked, failed -> ready (retry);  any open state -> cancelled

`done` is kept for ledgers written by the original tool (validated work not promoted through
OpenLoop); a reviewer may also mark reviewed work done after merging it by hand.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import Field

from openloop.errors import ConfigError, InputError, NotFoundError, StateError
from openloop.state.models_base import FileModel, file_version, validate

# Re-exported: the ledger's vocabulary and its listing view live in modules of their own, which
# importers that need nothing else (option parsing, `task list`) import directly.
from openloop.state.rows import TaskRow as TaskRow
from openloop.state.rows import filter_tasks as filter_tasks
from openloop.state.rows import load_rows as load_rows
from openloop.state.rows import summary as summary
from openloop.state.storage import (
    atomic_write_text,
    collector_paused,
    load_json_object,
    lock_path_for,
    locked,
    open_for_writing,
    read_text_or_none,
)
from openloop.state.taskfields import KINDS as KINDS
from openloop.state.taskfields import LEDGER_VERSION, TASK_ID_PATTERN, Kind, Risk, Status
from openloop.state.taskfields import RISKS as RISKS
from openloop.state.taskfields import STATUSES as STATUSES
from openloop.state.taskfields import TASK_ID_RE as TASK_ID_RE
from openloop.text import check_line

PromotionMode = Literal["auto-merge", "pull-request", "manual-only"]

RUNNING = frozenset({"in_progress", "validating"})
HEALING_KINDS = frozenset({"lint-fix", "type-fix", "localized-test-fix", "ci-heal"})
PLANNED_KINDS = frozenset({"feature", "epic"})  # planned first unless configured otherwise
TERMINAL = frozenset({"promoted", "cancelled"})

TRANSITIONS: dict[str, frozenset[str]] = {
    "proposed": frozenset({"planned", "ready", "in_progress", "blocked", "cancelled"}),
    "planned": frozenset({"ready", "proposed", "in_progress", "blocked", "cancelled"}),
    "ready": frozenset({"proposed", "in_progress", "blocked", "cancelled"}),
    # Leaving in_progress: the diff goes to validation, or the attempt ends (back to the queue,
    # to the state it was picked from on repair, or stopped).
    "in_progress": frozenset({"validating", "proposed", "planned", "ready", "blocked", "failed"}),
    "validating": frozenset({"review", "promoted", "ready", "blocked", "failed"}),
    "review": frozenset({"promoted", "done", "ready", "blocked", "cancelled"}),
    "done": frozenset({"promoted", "ready"}),
    "blocked": frozenset({"ready", "proposed", "cancelled"}),
    "failed": frozenset({"ready", "cancelled"}),
    "promoted": frozenset(),
    "cancelled": frozenset(),
}

# Ids become branch names, worktree directories and file names: checked on every load, not
# only when the CLI creates them (a ledger can be hand-edited, versioned, or pulled).
TaskId = Annotated[str, Field(pattern=TASK_ID_PATTERN)]
_SLUG_RUN = re.compile(r"[^a-z0-9]+")
SLUG_MAX = 48


class TaskScope(FileModel):
    paths: list[str] = Field(default_factory=list)


class TaskSource(FileModel):
    type: Literal["human", "issue", "discovery", "ci", "spec"] = "human"
    ref: str | None = None


class StatusChange(FileModel):
    at: str
    from_: str | None = Field(None, alias="from")
    to: str
    reason: str


class Task(FileModel):
    id: TaskId
    title: str
    description: str | None = None
    kind: Kind = "feature"
    status: Status = "ready"
    risk: Risk = "medium-risk"
    priority: int = 0
    scope: TaskScope | None = None
    depends_on: list[TaskId] = Field(default_factory=list)
    source: TaskSource = Field(default_factory=TaskSource)
    spec_id: str | None = None
    # The planner's commit holding the spec (read from there, never from the user's checkout).
    spec_commit: str | None = Field(None, pattern=r"^[0-9a-f]{40}$")
    branch: str | None = None
    owner: str | None = None
    acceptance_criteria: list[str] = Field(default_factory=list)
    attempts: int = Field(0, ge=0)
    last_failure_signature: str | None = None
    last_failure: str | None = None
    no_progress_streak: int = Field(0, ge=0)
    last_diff_hash: str | None = None
    promotion: PromotionMode | None = None
    promoted_at: str | None = None
    notes: list[str] = Field(default_factory=list)
    last_run: dict[str, Any] | None = None
    history: list[StatusChange] = Field(default_factory=list)
    created_at: str
    updated_at: str

    def scope_paths(self) -> list[str]:
        return list(self.scope.paths) if self.scope else []


class TaskLedger(FileModel):
    version: Literal[2] = LEDGER_VERSION
    updated_at: str | None = None
    tasks: list[Task] = Field(default_factory=list)

    def find(self, task_id: str) -> Task | None:
        return next((t for t in self.tasks if t.id == task_id), None)

    def get(self, task_id: str) -> Task:
        task = self.find(task_id)
        if task is None:
            raise NotFoundError(f"--task: unknown task id '{task_id}'")
        return task


# --- reading and writing ------------------------------------------------------------------------


def parse_ledger(data: dict[str, Any], source: str) -> TaskLedger:
    if file_version(data, LEDGER_VERSION, source) == 1:
        # Version 1 (TypeScript OpenLoop) tasks carry a subset of our fields and the same status
        # names; the only change is the version number. Unknown keys ride along.
        data = {**data, "version": LEDGER_VERSION}
    ledger = validate(TaskLedger, data, source)
    seen: set[str] = set()
    for index, task in enumerate(ledger.tasks):
        if task.id in seen:
            raise ConfigError(f"{source}: tasks.{index}.id: duplicate task id '{task.id}'")
        seen.add(task.id)
    return ledger


def load_ledger(path: Path) -> TaskLedger:
    text = read_text_or_none(path)
    return TaskLedger() if text is None else _parsed(path, text)


def _parsed(path: Path, text: str) -> TaskLedger:
    with collector_paused():
        return parse_ledger(load_json_object(path, text), str(path))


def ledger_text(ledger: TaskLedger) -> str:
    """The file's text: pydantic-core's serialiser, the same JSON as `dump_json(to_data())`
    (indent 2, UTF-8 kept) in a fraction of the time on a large ledger."""
    return ledger.model_dump_json(indent=2, by_alias=True) + "\n"


def save_ledger(path: Path, ledger: TaskLedger, now: str) -> None:
    ledger.updated_at = now
    atomic_write_text(path, ledger_text(ledger))


@contextmanager
def edit_ledger(path: Path, now: str) -> Iterator[TaskLedger]:
    """Re-read, modify and write the ledger under its lock.

    Each edit starts from the file as it is now, so a long iteration never writes back a stale
    copy over tasks the CLI added meanwhile. Nothing is written if the block raises.
    """
    with locked(path, what=f"task ledger {path}"):
        text = read_text_or_none(path)
        ledger = TaskLedger() if text is None else _parsed(path, text)
        stamp = ledger.updated_at
        yield ledger
        if ledger.updated_at != stamp:  # the block set it: serialise afresh
            stamp = ledger.updated_at = now
        new = ledger_text(ledger)
        if new == text:
            return  # nothing changed: the file stays as it is, with its stamp
        ledger.updated_at = now
        _write_validated(path, _restamped(new, stamp, now) or ledger_text(ledger))


def _restamped(text: str, old: str | None, new: str) -> str | None:
    """`text`, serialised with the stamp `old`, as if with `new`: the stamp is the file's second
    line (`version` comes first, and a value never spans lines), so no second serialisation of
    a large ledger is needed. None when the text does not start as expected."""
    head = f'{{\n  "version": {LEDGER_VERSION},\n  "updatedAt": '
    before, after = f"{head}{json.dumps(old)},\n", f"{head}{json.dumps(new)},\n"
    return after + text[len(before) :] if text.startswith(before) else None


# --- appending without re-validating what OpenLoop itself wrote -------------------------------
#
# `task add` into a large ledger must not pay for validating every task again. Each write under
# the lock records a digest of the exact text written in the lock file (which only holders of the
# lock touch, which the guard and git ignore); a later append whose file still has that digest
# knows every task in it was validated and serialised by OpenLoop, appends the new task (validated
# by its model) to the parsed file and writes the same text the full path would. Any other file
# (edited by hand, written by the original tool, torn) goes the full, validating way.


def _digest(data: bytes) -> str:
    import hashlib

    return hashlib.blake2b(data, digest_size=20).hexdigest()


def _write_validated(path: Path, text: str) -> None:
    """Write the ledger (the lock held) and remember its digest."""
    atomic_write_text(path, text)
    try:
        with open_for_writing(lock_path_for(path), depth=1) as lock:
            lock.write(_digest(text.encode("utf-8")).encode())
    except OSError:
        pass  # only the fast path of the next append is lost


def _written_by_us(path: Path, raw: bytes) -> bool:
    try:
        remembered = lock_path_for(path).read_text()
    except (OSError, UnicodeDecodeError):
        return False
    return remembered == _digest(raw)


class TaskKey(NamedTuple):
    id: str
    status: str
    ref: str | None


@dataclass
class LedgerAppend:
    """What an append needs to know of the tasks already there, and the tasks it adds."""

    existing: list[TaskKey]
    added: list[Task] = dataclass_field(default_factory=list)

    @property
    def tasks(self) -> list[TaskKey]:
        return self.existing + [TaskKey(t.id, t.status, t.source.ref) for t in self.added]

    def find(self, task_id: str) -> TaskKey | None:
        return next((t for t in self.tasks if t.id == task_id), None)


@contextmanager
def append_to_ledger(path: Path, now: str) -> Iterator[LedgerAppend]:
    """Add tasks (`view.added.append(task)`) under the ledger lock; same file, same errors as
    `edit_ledger`, without re-validating a ledger OpenLoop wrote itself. Nothing is written if
    the block raises."""
    with locked(path, what=f"task ledger {path}"):
        try:
            raw: bytes | None = path.read_bytes()
        except FileNotFoundError:
            raw = None
        if raw is not None and _written_by_us(path, raw):
            import json

            import pydantic_core

            with collector_paused():
                data = json.loads(raw)
                view = LedgerAppend(
                    [
                        TaskKey(t["id"], t["status"], (t.get("source") or {}).get("ref"))
                        for t in data["tasks"]
                    ]
                )
            yield view
            data["updatedAt"] = now
            data["tasks"].extend(t.to_data() for t in view.added)
            with collector_paused():
                text = pydantic_core.to_json(data, indent=2).decode("utf-8") + "\n"
        else:
            ledger = load_ledger(path)
            view = LedgerAppend([TaskKey(t.id, t.status, t.source.ref) for t in ledger.tasks])
            yield view
            ledger.tasks.extend(view.added)
            ledger.updated_at = now
            text = ledger_text(ledger)
        _write_validated(path, text)


# --- state machine ------------------------------------------------------------------------------


def can_transition(current: str, target: str) -> bool:
    return target in TRANSITIONS.get(current, frozenset())


def transition(task: Task, target: str, reason: str, now: str) -> None:
    """Move a task to `target`, or raise StateError naming the allowed moves."""
    if target not in STATUSES:
        raise InputError(f"--status: unknown status '{target}' (one of: {', '.join(STATUSES)})")
    if not can_transition(task.status, target):
        allowed = ", ".join(sorted(TRANSITIONS.get(task.status, ()))) or "none: it is final"
        raise StateError(
            f"task '{task.id}' cannot go from {task.status} to {target} (allowed: {allowed})"
        )
    task.history.append(StatusChange(at=now, from_=task.status, to=target, reason=reason))
    task.status = target  # type: ignore[assignment]
    task.updated_at = now


def status_before_run(task: Task) -> str:
    """The status a running task was picked from (what a repair returns it to)."""
    for change in reversed(task.history):
        if change.to == "in_progress" and change.from_ in ("proposed", "planned", "ready"):
            return change.from_
    return "ready"


# --- ids ----------------------------------------------------------------------------------------


def slugify(text: str) -> str:
    slug = _SLUG_RUN.sub("-", text.lower()).strip("-")
    if len(slug) > SLUG_MAX:
        slug = slug[:SLUG_MAX].rsplit("-", 1)[0] or slug[:SLUG_MAX]
    return slug.strip("-")


def check_task_id(task_id: str, *, option: str = "--task") -> str:
    check_line(task_id, option, "task ids")
    # fullmatch: with match(), `$` also matches before a final newline ("abc\n" passed).
    if not TASK_ID_RE.fullmatch(task_id):
        raise InputError(
            f"{option}: '{task_id}' is not a valid task id "
            "(lowercase letters, digits and '-', starting with a letter or digit, at most 100)"
        )
    return task_id


def new_task_id(
    ledger: TaskLedger | LedgerAppend,
    text: str,
    reserved: set[str] | frozenset[str] = frozenset(),
) -> str:
    """A readable slug of `text`, made unique with -2, -3... `reserved` are ids no longer in the
    ledger whose records remain (a removed task's promotion): never handed out again."""
    base = slugify(text) or "task"
    taken = {t.id for t in ledger.tasks} | set(reserved)
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


# --- selection ----------------------------------------------------------------------------------


def return_stuck_tasks(
    ledger: TaskLedger, now: str, reason: str, *, count_attempt: bool = True
) -> list[tuple[Task, str]]:
    """Put tasks left running by a dead iteration back where they were picked from.

    The interrupted run counts as an attempt (a task that kills its iteration every time must
    eventually stop being picked), unless the user stopped it (`count_attempt=False`): that is
    no fault of the task. Returns (task, status it was in) pairs.
    """
    moved = []
    for task in ledger.tasks:
        if task.status in RUNNING:
            was = task.status
            task.attempts += 1 if count_attempt else 0
            task.last_failure_signature = "interrupted"
            transition(task, status_before_run(task), reason, now)
            moved.append((task, was))
    return moved


def block_if_exhausted(task: Task, max_attempts: int, now: str, reason: str = "") -> bool:
    """Block a task that used up its attempts; True if it did."""
    if task.attempts < max_attempts:
        return False
    detail = f" (last: {reason})" if reason else ""
    transition(task, "blocked", f"reached the maximum of {max_attempts} attempts{detail}", now)
    return True
