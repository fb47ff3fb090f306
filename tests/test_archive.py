"""The task archive: old finished tasks leave the ledger, nothing is lost, nothing is reused."""

from __future__ import annotations

import json

from openloop.state import archive
from openloop.state.controlplane import ControlPlane
from openloop.state.ledger import (
    StatusChange,
    Task,
    TaskLedger,
    TaskScope,
    TaskSource,
    load_ledger,
    save_ledger,
)
from openloop.state.storage import dump_json
from tests.test_iteration import FakeAgent, demo, once, write  # noqa: F401 (fixture)

NOW = "2027-03-10T12:00:00.000Z"


def _task(task_id: str, status: str, updated: str, **kw) -> Task:
    task = Task(
        id=task_id,
        title=f"Title of {task_id} — ünïcode ✓",
        description="line one\nline two",
        status=status,
        created_at="2026-01-01T00:00:00.000Z",
        updated_at=updated,
        scope=TaskScope(paths=["src/**"]),
        source=TaskSource(type="issue", ref=f"acme/web#{len(task_id)}"),
        acceptance_criteria=["works"],
        last_run={"runId": "r1", "costUsd": 0.0123, "outcome": "completed"},
        **kw,
    )
    task.history.append(
        StatusChange(at="2026-01-01T00:00:00.000Z", from_=None, to="ready", reason="created")
    )
    return task


def _ledger() -> TaskLedger:
    tasks = [
        _task("old-promoted", "promoted", "2026-11-03T10:00:00.000Z"),
        _task("old-cancelled", "cancelled", "2026-12-24T10:00:00.000Z"),
        _task("old-promoted-2", "promoted", "2026-12-01T00:00:00.000Z"),
        _task("needed-by-open", "promoted", "2026-10-01T00:00:00.000Z"),
        _task("open", "ready", "2026-10-01T00:00:00.000Z", depends_on=["needed-by-open"]),
        _task("recent-promoted", "promoted", "2027-03-09T00:00:00.000Z"),
        _task("old-blocked", "blocked", "2026-10-01T00:00:00.000Z"),
        _task("old-review", "review", "2026-10-01T00:00:00.000Z"),
    ]
    ledger = TaskLedger(tasks=tasks)
    ledger.model_extra["futureKey"] = {"kept": True}  # a newer version's key rides along
    return ledger


def _content(task: Task) -> str:
    return json.dumps(task.to_data(), sort_keys=True, ensure_ascii=False)


def test_the_ledger_text_is_the_standard_encoders(tmp_path):
    ledger = _ledger()
    path = tmp_path / "tasks.json"
    save_ledger(path, ledger, NOW)
    assert path.read_text() == dump_json(ledger.to_data())


def test_archiving_then_listing_all_returns_every_task_identical(ol, project):
    plane = ControlPlane(project)
    before = _ledger()
    save_ledger(plane.ledger_file, before, NOW)
    original = {t.id: _content(t) for t in before.tasks}

    moved = archive.archive_finished(plane, NOW, 30)

    assert sorted(moved) == ["old-cancelled", "old-promoted", "old-promoted-2"]
    kept = load_ledger(plane.ledger_file)
    assert sorted(t.id for t in kept.tasks) == sorted(set(original) - set(moved))
    assert kept.model_extra["futureKey"] == {"kept": True}
    assert sorted(p.name for p in archive.month_files(plane)) == [
        "tasks-2026-11.json",
        "tasks-2026-12.json",
    ]
    # Every task, in the ledger or archived, comes back with the same content.
    listed = ol("task", "list", "--all", "--json")
    assert listed.code == 0, listed.err
    assert sorted(r["id"] for r in listed.json()["tasks"]) == sorted(original)
    assert sorted(r["id"] for r in ol("task", "list", "--json").json()["tasks"]) == sorted(
        set(original) - set(moved)
    )
    for task_id, content in original.items():
        shown = ol("task", "show", "--task", task_id)
        assert shown.code == 0, shown.err
        assert json.dumps(shown.json()["task"], sort_keys=True, ensure_ascii=False) == content
    # A second pass moves nothing and leaves the files alone.
    files = {p: p.read_bytes() for p in [plane.ledger_file, *archive.month_files(plane)]}
    assert archive.archive_finished(plane, NOW, 30) == []
    assert {p: p.read_bytes() for p in files} == files


def test_a_crash_between_archive_and_ledger_loses_nothing(ol, project):
    """The archive is written first: a task in both places is listed once, the ledger's copy."""
    plane = ControlPlane(project)
    ledger = _ledger()
    save_ledger(plane.ledger_file, ledger, NOW)
    copy = TaskLedger.model_validate(ledger.to_data())
    archive.move(plane, copy, archive.due(copy, NOW, 30), NOW)  # ledger never saved
    rows = ol("task", "list", "--all", "--json").json()["tasks"]
    assert sorted(r["id"] for r in rows) == sorted(t.id for t in ledger.tasks)
    assert archive.archive_finished(plane, NOW, 30)  # the next move completes it
    rows = ol("task", "list", "--all", "--json").json()["tasks"]
    assert sorted(r["id"] for r in rows) == sorted(t.id for t in ledger.tasks)
    assert len(load_ledger(archive.month_file(plane, "2026-12")).tasks) == 2


def test_archived_ids_are_never_handed_out_again(ol, project):
    plane = ControlPlane(project)
    save_ledger(plane.ledger_file, _ledger(), NOW)
    archive.archive_finished(plane, NOW, 30)
    result = ol("task", "add", "--title", "Old promoted", "--json")
    assert result.json()["id"] == "old-promoted-3"
    assert ol("task", "add", "--title", "x", "--id", "old-cancelled").code == 2


def test_zero_days_never_archives(project):
    plane = ControlPlane(project)
    save_ledger(plane.ledger_file, _ledger(), NOW)
    assert archive.archive_finished(plane, NOW, 0) == []
    assert not archive.month_files(plane)


def test_an_iteration_archives_before_it_selects(ol, demo, env):  # noqa: F811
    plane = ControlPlane(demo)
    ledger = load_ledger(plane.ledger_file)
    ledger.tasks.append(_task("long-done", "promoted", "2020-01-01T00:00:00.000Z"))
    save_ledger(plane.ledger_file, ledger, NOW)
    assert ol("task", "add", "--title", "Add hello").code == 0
    once(env, FakeAgent([write("hello.py", "print('hi')\n")]))
    assert [t.id for t in load_ledger(plane.ledger_file).tasks] == ["add-hello"]
    assert archive.find(plane, "long-done").status == "promoted"
    assert "archive/" in (demo / ".openloop/.gitignore").read_text()
