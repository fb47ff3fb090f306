"""The guard's comparison never fails open: whatever the agent leaves (a link in place of the
control plane, a folder where a lock file goes), the attempt ends escaped with what could be put
back put back; and OpenLoop's own edits of a versioned ledger are never an escape."""

from __future__ import annotations

import shutil

from openloop.loop.outcomes import Outcome
from tests.conftest import git
from tests.test_iteration import FakeAgent, add, demo, once, set_project, task_of, write  # noqa: F401


def _versioned(repo, *, commit: bool) -> None:
    set_project(repo, ledger={"versioned": True})
    ignore = repo / ".openloop/.gitignore"
    kept = [line for line in ignore.read_text().splitlines() if line not in ("tasks.json",)]
    ignore.write_text("\n".join(kept) + "\n")
    if commit:
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", "versioned ledger")


def test_a_versioned_ledger_is_not_an_escape_when_openloop_edits_it(ol, demo, env):  # noqa: F811
    _versioned(demo, commit=False)
    assert ol("project", "trust", "demo").code == 0
    add(ol, "Add hello")
    result = once(env, FakeAgent([write("hello.py", "print('hi')\n")]))
    assert result.outcome == Outcome.COMPLETED, result.reason


def test_a_committed_versioned_ledger_with_a_task_added_meanwhile(ol, demo, env):  # noqa: F811
    add(ol, "Add hello")
    _versioned(demo, commit=True)
    assert ol("project", "trust", "demo").code == 0

    def work_while_the_user_adds_a_task(cwd):
        (cwd / "hello.py").write_text("x = 1\n")
        assert ol("task", "add", "--title", "The user's own", "--json").code == 0

    result = once(env, FakeAgent([work_while_the_user_adds_a_task]))
    assert result.outcome == Outcome.COMPLETED, result.reason


def test_a_versioned_ledgers_task_forged_by_the_agent_is_still_an_escape(ol, demo, env):  # noqa: F811
    _versioned(demo, commit=False)
    assert ol("project", "trust", "demo").code == 0
    tid = add(ol, "Add hello")
    ledger = demo / ".openloop/tasks.json"

    def forge(cwd):
        (cwd / "hello.py").write_text("x = 1\n")
        ledger.write_text(ledger.read_text().replace('"Add hello"', '"Forged"'))

    result = once(env, FakeAgent([forge]))
    assert result.outcome == Outcome.ESCAPED
    assert f"task {tid} changed" in result.reason
    assert task_of(demo, tid).title == "Add hello"


def test_the_control_plane_swapped_for_a_link_ends_escaped_not_interrupted(
    ol,
    demo,  # noqa: F811
    env,
    tmp_path,
):
    tid = add(ol, "Add hello")
    elsewhere = tmp_path / "elsewhere"

    def swap(cwd):
        (cwd / "hello.py").write_text("x = 1\n")
        git(demo, "update-ref", "refs/heads/planted", "HEAD")
        shutil.copytree(demo / ".openloop", elsewhere, symlinks=True)
        (elsewhere / "runs-real").mkdir()
        shutil.rmtree(elsewhere / "runs")
        (elsewhere / "runs").symlink_to("runs-real")
        shutil.rmtree(demo / ".openloop")
        (demo / ".openloop").symlink_to(elsewhere)

    result = once(env, FakeAgent([swap]))
    assert result.outcome == Outcome.ESCAPED, result.reason
    assert git(demo, "for-each-ref", "refs/heads/planted") == ""
    assert task_of(demo, tid).status == "blocked"


def test_a_folder_planted_at_the_ledgers_lock_file_ends_escaped(ol, demo, env):  # noqa: F811
    tid = add(ol, "Add hello")
    ledger = demo / ".openloop/tasks.json"
    lock = demo / ".openloop/.tasks.json.lock"

    def plant(cwd):
        (cwd / "hello.py").write_text("x = 1\n")
        ledger.write_text(ledger.read_text().replace('"Add hello"', '"Forged"'))
        lock.unlink(missing_ok=True)
        lock.mkdir()
        (lock / "inside").write_text("kept")

    result = once(env, FakeAgent([plant]))
    assert result.outcome == Outcome.ESCAPED, result.reason
    task = task_of(demo, tid)
    assert task.title == "Add hello" and task.status == "blocked"
    aside = [p for p in lock.parent.iterdir() if p.name.startswith(".tasks.json.lock.planted-")]
    assert len(aside) == 1 and (aside[0] / "inside").read_text() == "kept"


def test_a_ledger_replaced_by_a_folder_a_fifo_or_garbage_is_made_again(ol, demo, env):  # noqa: F811
    import json
    import os

    ledger = demo / ".openloop/tasks.json"
    for how in ("folder", "fifo", "garbage"):
        tid = add(ol, f"Task {how}")

        def act(cwd, how=how) -> None:
            (cwd / "hello.py").write_text(f"x = '{how}'\n")
            ledger.unlink()
            if how == "folder":
                ledger.mkdir()
                (ledger / "x").write_text("x")
            elif how == "fifo":
                os.mkfifo(ledger)
            else:
                ledger.write_text("{ not json")

        result = once(env, FakeAgent([act]))
        assert result.outcome == Outcome.ESCAPED, (how, result.reason)
        assert f"made {ledger.relative_to(demo)} again" in result.reason, how
        data = json.loads(ledger.read_text())
        assert tid in {t["id"] for t in data["tasks"]}, how
        assert task_of(demo, tid).status == "blocked", how  # the run was recorded, escaped


def test_a_forged_copy_of_a_task_placed_before_it_is_an_escape(ol, demo, env):  # noqa: F811
    import json

    tid = add(ol, "Add hello")
    ledger = demo / ".openloop/tasks.json"

    def forge(cwd) -> None:
        (cwd / "hello.py").write_text("x = 1\n")
        data = json.loads(ledger.read_text())
        forged = {**data["tasks"][0], "title": "Forged", "risk": "low-risk"}
        data["tasks"].insert(0, forged)
        ledger.write_text(json.dumps(data))

    result = once(env, FakeAgent([forge]))
    assert result.outcome == Outcome.ESCAPED, result.reason
    assert "duplicate task ids" in result.reason
    data = json.loads(ledger.read_text())
    assert [t["title"] for t in data["tasks"] if t["id"] == tid] == ["Add hello"]
