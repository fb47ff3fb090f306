"""The task archive (`.openloop/archive/`): finished tasks leave the ledger after a while.

A project that runs every 15 minutes piles up ~35,000 finished tasks a year; every command that
reads or writes `tasks.json` would pay for all of them. Promoted and cancelled tasks (final
states) whose last change is older than `runtime.archiveAfterDays` move to one file per month
of that change, `archive/tasks-YYYY-MM.json` (the ledger's own format), and `archive/index.txt`
names the month of every archived id (`task show`, and ids never handed out again).

Safety: moves happen under the ledger lock, only where no agent runs (the iteration calls this
under its project lock, before any guard snapshot); each file is replaced atomically, the
archive before the ledger: a crash in between leaves a task in both places (the ledger's copy
wins when reading, the next move replaces the archived one), never in neither. A finished task
that a task left in the ledger depends on stays, so dependencies still resolve.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from openloop.state.controlplane import ControlPlane
from openloop.state.ledger import (
    TERMINAL,
    Task,
    TaskLedger,
    TaskRow,
    load_ledger,
    load_rows,
    save_ledger,
)
from openloop.state.storage import atomic_write_text, locked, read_text_or_none

INDEX = "index.txt"


def archive_dir(plane: ControlPlane) -> Path:
    return plane.dir / "archive"


def month_file(plane: ControlPlane, month: str) -> Path:
    return archive_dir(plane) / f"tasks-{month}.json"


def month_files(plane: ControlPlane) -> list[Path]:
    folder = archive_dir(plane)
    return sorted(folder.glob("tasks-*.json")) if folder.is_dir() else []


def read_index(plane: ControlPlane) -> dict[str, str]:
    """Archived task id -> month (YYYY-MM)."""
    text = read_text_or_none(archive_dir(plane) / INDEX)
    found: dict[str, str] = {}
    for line in (text or "").splitlines():
        task_id, _, month = line.partition(" ")
        if task_id and month:
            found[task_id] = month
    return found


def archived_ids(plane: ControlPlane) -> set[str]:
    return set(read_index(plane))


def _parse(stamp: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _cutoff(now: str, days: int) -> datetime | None:
    parsed = _parse(now)
    return None if parsed is None else parsed - timedelta(days=days)


def _old_finished(status: str, updated: str, cutoff: datetime) -> bool:
    if status not in TERMINAL:
        return False
    when = _parse(updated)
    return when is not None and when < cutoff


def rows_due(rows: list[TaskRow], now: str, days: int) -> bool:
    """Whether any row looks due (cheap: from the listing rows, before a full read)."""
    cutoff = _cutoff(now, days)
    return cutoff is not None and any(
        _old_finished(r["status"], r["updatedAt"], cutoff) for r in rows
    )


def due(ledger: TaskLedger, now: str, days: int) -> list[Task]:
    """Finished tasks older than `days`, except those a task staying in the ledger depends on."""
    cutoff = _cutoff(now, days)
    if cutoff is None or days <= 0:
        return []
    moving = {t.id for t in ledger.tasks if _old_finished(t.status, t.updated_at, cutoff)}
    needed = {dep for t in ledger.tasks if t.id not in moving for dep in t.depends_on}
    return [t for t in ledger.tasks if t.id in moving and t.id not in needed]


def move(plane: ControlPlane, ledger: TaskLedger, tasks: list[Task], now: str) -> None:
    """Write `tasks` into their month files and the index, then drop them from `ledger` (which
    the caller saves). Call with the ledger lock held."""
    if not tasks:
        return
    by_month: dict[str, list[Task]] = {}
    for task in tasks:
        by_month.setdefault(task.updated_at[:7], []).append(task)
    for month, group in sorted(by_month.items()):
        path = month_file(plane, month)
        archived = load_ledger(path)
        ids = {t.id for t in group}
        archived.tasks = [t for t in archived.tasks if t.id not in ids] + group
        save_ledger(path, archived, now)
    index = read_index(plane)
    index.update((t.id, t.updated_at[:7]) for t in tasks)
    atomic_write_text(archive_dir(plane) / INDEX, "".join(f"{i} {m}\n" for i, m in index.items()))
    gone = {t.id for t in tasks}
    ledger.tasks = [t for t in ledger.tasks if t.id not in gone]


def archive_finished(plane: ControlPlane, now: str, days: int) -> list[str]:
    """Move what is due out of the ledger; returns the ids moved. The caller must make sure no
    agent runs in the project (hold its iteration lock): the guard compares the ledger."""
    if days <= 0 or not rows_due(load_rows(plane.ledger_file), now, days):
        return []
    with locked(plane.ledger_file, what=f"task ledger {plane.ledger_file}"):
        ledger = load_ledger(plane.ledger_file)
        tasks = due(ledger, now, days)
        if tasks:  # nothing due after all (dependencies): the ledger is left as it is
            move(plane, ledger, tasks, now)
            save_ledger(plane.ledger_file, ledger, now)
    return [t.id for t in tasks]


def all_rows(plane: ControlPlane) -> list[TaskRow]:
    """The ledger's rows and every archived one (the ledger's copy wins over an archived one)."""
    rows = load_rows(plane.ledger_file)
    seen = {r["id"] for r in rows}
    for path in month_files(plane):
        for row in load_rows(path):
            if row["id"] not in seen:
                seen.add(row["id"])
                rows.append(row)
    return rows


def find(plane: ControlPlane, task_id: str) -> Task | None:
    """An archived task, found through the index (every month file if there is no index)."""
    if (archive_dir(plane) / INDEX).exists():
        month = read_index(plane).get(task_id)
        paths = [month_file(plane, month)] if month else []
    else:  # an index lost by hand: look in every month
        paths = month_files(plane)
    for path in paths:
        task = load_ledger(path).find(task_id)
        if task is not None:
            return task
    return None
