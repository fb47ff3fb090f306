"""`task add` appends without re-validating a ledger OpenLoop wrote itself, and writes exactly
what the validating path writes; any other file is validated in full, as before."""

from __future__ import annotations

import json

from openloop.state.ledger import ledger_text, load_ledger
from openloop.state.storage import lock_path_for


def _ledger(project):
    return project / ".openloop/tasks.json"


def test_an_append_writes_what_a_full_rewrite_would(ol, project):
    for title in ("First — ünïcode ✓", "Second", "Third"):
        assert ol("task", "add", "--title", title, "--scope", "src/**").code == 0
    text = _ledger(project).read_text()
    assert text == ledger_text(load_ledger(_ledger(project)))  # canonical, byte for byte
    assert [t.id for t in load_ledger(_ledger(project)).tasks] == [
        "first-n-code",
        "second",
        "third",
    ]


def test_a_ledger_edited_by_hand_is_validated_in_full(ol, project):
    assert ol("task", "add", "--title", "First").code == 0
    path = _ledger(project)
    data = json.loads(path.read_text())
    data["tasks"][0]["status"] = "wat"
    path.write_text(json.dumps(data, indent=2))
    result = ol("task", "add", "--title", "Second")
    assert result.code == 2 and "tasks.0.status" in result.err
    assert json.loads(path.read_text()) == data


def test_a_digest_left_by_another_content_is_not_trusted(ol, project):
    assert ol("task", "add", "--title", "First").code == 0
    path = _ledger(project)
    lock_path_for(path).write_text("0" * 40)
    data = json.loads(path.read_text())
    data["version"] = 1  # the original tool's file: converted on the full path
    path.write_text(json.dumps(data))
    assert ol("task", "add", "--title", "Second").code == 0
    assert json.loads(path.read_text())["version"] == 2


def test_a_duplicate_ref_and_unknown_dependency_are_refused_on_the_fast_path(ol, project):
    first = ol("task", "add", "--title", "A", "--from-ref", "acme/web#1", "--json")
    assert first.code == 0, first.err
    again = ol("task", "add", "--from-ref", "acme/web#1")
    assert again.code == 2 and "already queued" in again.err
    dep = ol("task", "add", "--title", "B", "--depends-on", "nope")
    assert dep.code == 2 and "unknown task id" in dep.err
    assert ol("task", "add", "--title", "C", "--depends-on", first.json()["id"]).code == 0


def test_listing_order_is_priority_then_age_then_id():
    import random

    from openloop.state.ledger import TaskRow, filter_tasks

    rows = [
        TaskRow(
            id=f"t{i}",
            title="x",
            priority=random.randint(-2, 2),
            createdAt=f"2026-01-0{random.randint(1, 3)}",
            updatedAt="u",
        )
        for i in range(200)
    ]
    expected = sorted(rows, key=lambda t: (-t["priority"], t["createdAt"], t["id"]))
    assert filter_tasks(list(reversed(rows))) == expected
