"""The task ledger: state machine, ids, file validation and migration."""

from __future__ import annotations

import json

import pytest

from openloop.errors import ConfigError, StateError
from openloop.state.ledger import (
    STATUSES,
    TRANSITIONS,
    Task,
    TaskLedger,
    can_transition,
    edit_ledger,
    ledger_text,
    load_ledger,
    new_task_id,
    return_stuck_tasks,
    slugify,
    transition,
)

NOW = "2026-11-25T10:00:00.000Z"


def _task(status="ready", **kw) -> Task:
    return Task(
        id=kw.pop("id", "t"), title="T", status=status, created_at=NOW, updated_at=NOW, **kw
    )


def test_transition_table_covers_every_status_and_only_known_targets():
    assert set(TRANSITIONS) == set(STATUSES)
    for targets in TRANSITIONS.values():
        assert targets <= set(STATUSES)
    assert TRANSITIONS["promoted"] == frozenset() and TRANSITIONS["cancelled"] == frozenset()


@pytest.mark.parametrize(
    ("current", "target", "allowed"),
    [
        ("ready", "in_progress", True),
        ("in_progress", "validating", True),
        ("validating", "review", True),
        ("validating", "promoted", True),
        ("review", "promoted", True),
        ("blocked", "ready", True),
        ("failed", "ready", True),
        ("proposed", "planned", True),
        ("ready", "promoted", False),
        ("ready", "review", False),
        ("promoted", "ready", False),
        ("cancelled", "ready", False),
        ("in_progress", "cancelled", False),
        ("blocked", "in_progress", False),
    ],
)
def test_transitions(current, target, allowed):
    assert can_transition(current, target) is allowed
    task = _task(current)
    if allowed:
        transition(task, target, "because", NOW)
        assert task.status == target
        assert task.history[-1].from_ == current and task.history[-1].reason == "because"
    else:
        with pytest.raises(StateError, match=f"cannot go from {current} to {target}"):
            transition(task, target, "because", NOW)
        assert task.status == current and task.history == []


def test_stuck_tasks_return_to_where_they_were_picked_from_with_the_attempt_counted():
    planned = _task("proposed", id="p")
    transition(planned, "in_progress", "picked", NOW)
    ready = _task("ready", id="r")
    transition(ready, "in_progress", "picked", NOW)
    transition(ready, "validating", "diff", NOW)
    ledger = TaskLedger(tasks=[planned, ready, _task("blocked", id="b")])
    moved = return_stuck_tasks(ledger, NOW, "repair")
    assert [(t.id, was, t.status) for t, was in moved] == [
        ("p", "in_progress", "proposed"),
        ("r", "validating", "ready"),
    ]
    assert planned.attempts == 1 and ready.attempts == 1
    assert ledger.find("b").attempts == 0


@pytest.mark.parametrize(
    ("title", "slug"),
    [
        ("Add a /health endpoint", "add-a-health-endpoint"),
        ("  Fix: crash on ÜTF-8 input!! ", "fix-crash-on-tf-8-input"),
        ("$(rm -rf /)", "rm-rf"),
        ("x" * 100, "x" * 48),
        ("word " * 20, "word-word-word-word-word-word-word-word-word-word"[:44].rstrip("-")),
        ("!!!", ""),
    ],
)
def test_slugify(title, slug):
    assert slugify(title) == slug


def test_new_ids_are_unique_and_readable():
    ledger = TaskLedger(tasks=[_task(id="fix-it"), _task(id="fix-it-2")])
    assert new_task_id(ledger, "Fix it") == "fix-it-3"
    assert new_task_id(ledger, "???") == "task"


def test_malformed_ledgers_are_reported_with_path_and_field(tmp_path):
    path = tmp_path / "tasks.json"
    cases = {
        "{not json": "line 1: invalid JSON",
        "[]": "expected a JSON object",
        json.dumps(
            {
                "version": 2,
                "tasks": [
                    {"id": "a", "title": "A", "status": "wat", "createdAt": NOW, "updatedAt": NOW}
                ],
            }
        ): "tasks.0.status",
        json.dumps(
            {
                "version": 2,
                "tasks": [
                    {"id": "a", "title": "A", "createdAt": NOW, "updatedAt": NOW, "attempts": -1}
                ],
            }
        ): "tasks.0.attempts",
        json.dumps(
            {"version": 2, "tasks": [{"title": "A", "createdAt": NOW, "updatedAt": NOW}]}
        ): "tasks.0.id",
        json.dumps({"version": 9, "tasks": []}): "version: 9 is newer",
    }
    for text, expected in cases.items():
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_ledger(path)
        assert str(info.value).startswith(f"{path}:"), info.value
        assert expected in str(info.value)


def test_duplicate_ids_are_rejected(tmp_path):
    path = tmp_path / "tasks.json"
    task = {"id": "a", "title": "A", "createdAt": NOW, "updatedAt": NOW}
    path.write_text(json.dumps({"version": 2, "tasks": [task, task]}))
    with pytest.raises(ConfigError, match="tasks.1.id: duplicate task id 'a'"):
        load_ledger(path)


def test_an_edit_that_changes_nothing_leaves_the_file_as_it_is(tmp_path):
    path = tmp_path / "tasks.json"
    with edit_ledger(path, "2026-01-01T00:00:00.000Z") as ledger:
        ledger.tasks.append(
            Task(id="a", title="A", created_at="2026-01-01T00:00:00.000Z", updated_at="x")
        )
    before, inode = path.read_bytes(), path.stat().st_ino
    with edit_ledger(path, "2026-02-02T00:00:00.000Z") as ledger:
        assert ledger.get("a").title == "A"
    assert path.read_bytes() == before and path.stat().st_ino == inode  # not even rewritten


def test_an_edit_is_stamped_exactly_as_a_fresh_serialisation_would_be(tmp_path):
    path = tmp_path / "tasks.json"
    with edit_ledger(path, "2026-01-01T00:00:00.000Z") as ledger:
        ledger.tasks.append(
            Task(id="a", title='A "q"\n', created_at="2026-01-01T00:00:00.000Z", updated_at="x")
        )
    with edit_ledger(path, "2026-02-02T00:00:00.000Z") as ledger:
        ledger.get("a").title = "B"
    text = path.read_text()
    reread = load_ledger(path)
    assert reread.updated_at == "2026-02-02T00:00:00.000Z" and reread.get("a").title == "B"
    assert text == ledger_text(reread)
