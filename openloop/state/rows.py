"""The listing view of the ledger: `task list`, the dashboard's counts and the archive's scan
read only the fields a row shows, validated straight from the file's bytes, without building
the full task models of state/ledger.py (a 10,000-task listing pays for what it prints)."""

from __future__ import annotations

from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from openloop.errors import ConfigError
from openloop.state.models_base import describe_validation_error, file_version
from openloop.state.storage import collector_paused, load_json_object
from openloop.state.taskfields import (
    LEDGER_VERSION,
    RISKS,
    STATUSES,
    TASK_ID_PATTERN,
    Kind,
    Risk,
    Status,
)

T = TypeVar("T")
TaskId = Annotated[str, Field(pattern=TASK_ID_PATTERN)]


class TaskRow(TypedDict):
    """The listing view of a task: a plain dict with the fields a listing shows, still
    type-checked, in this order, defaults filled in (the JSON `task list` prints).

    A dict, not a model: validating 10,000 rows into dicts takes two thirds of the time.
    """

    __pydantic_config__ = ConfigDict(extra="ignore")  # type: ignore[misc]

    id: TaskId
    title: str
    status: Annotated[Status, Field(default="ready")]
    risk: Annotated[Risk, Field(default="medium-risk")]
    kind: Annotated[Kind, Field(default="feature")]
    priority: Annotated[int, Field(default=0)]
    attempts: Annotated[int, Field(default=0, ge=0)]
    createdAt: str
    updatedAt: str


class _LedgerRows(TypedDict):
    __pydantic_config__ = ConfigDict(extra="ignore")  # type: ignore[misc]

    version: Annotated[int, Field(default=1)]
    tasks: Annotated[list[TaskRow], Field(default_factory=list)]


_ADAPTER: list[TypeAdapter[_LedgerRows]] = []


def _adapter() -> TypeAdapter[_LedgerRows]:
    """Built on first use: commands that never list pay nothing for it."""
    if not _ADAPTER:
        _ADAPTER.append(TypeAdapter(_LedgerRows))
    return _ADAPTER[0]


def load_rows(path: Path) -> list[TaskRow]:
    """All tasks as listing rows; same errors as `load_ledger` for a broken file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    try:
        with collector_paused():
            rows = _adapter().validate_json(raw)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            load_json_object(path, raw.decode("utf-8", "replace"))  # for the line number
        raise ConfigError(describe_validation_error(path, exc)) from None
    file_version({"version": rows["version"]}, LEDGER_VERSION, path)
    return rows["tasks"]


def filter_tasks(tasks: list[T], *, status: str | None = None, risk: str | None = None) -> list[T]:
    """Tasks (or rows) matching the filters, in run order: priority, then age."""
    rows = bool(tasks) and isinstance(tasks[0], dict)
    get = itemgetter if rows else attrgetter
    of_status, of_risk = get("status"), get("risk")
    tasks = [
        t
        for t in tasks
        if (status is None or of_status(t) == status) and (risk is None or of_risk(t) == risk)
    ]
    # (-priority, created, id) as two stable sorts with C-level keys: no Python call per task
    # on a 10,000-task listing.
    tasks.sort(key=get("createdAt" if rows else "created_at", "id"))
    tasks.sort(key=get("priority"), reverse=True)
    return tasks


def summary(tasks: list[Any]) -> dict[str, Any]:
    """Counts by status and risk, of tasks or rows."""
    by_status = dict.fromkeys(STATUSES, 0)
    by_risk = dict.fromkeys(RISKS, 0)
    pairs = (
        ((t["status"], t["risk"]) for t in tasks)
        if tasks and isinstance(tasks[0], dict)
        else ((t.status, t.risk) for t in tasks)
    )
    for status, risk in pairs:
        by_status[status] += 1
        by_risk[risk] += 1
    return {"total": len(tasks), "byStatus": by_status, "byRisk": by_risk}
