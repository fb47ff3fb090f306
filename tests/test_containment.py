"""Containment with a scripted agent (fast; tests/e2e/test_containment_pi.py plays the same
attacks with the real pi): the agent's own repository, the guard, and how an escape shows."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from openloop.actions import dashboard
from openloop.adapters import guard, journal, workspace
from openloop.loop.outcomes import Outcome
from tests.conftest import git
from tests.test_iteration import FakeAgent, add, demo, once, task_of, write  # noqa: F401
from tests.test_journal import _fields, sink  # noqa: F401


def test_the_agents_workspace_is_a_repository_of_its_own(ol, demo, env):  # noqa: F811
    add(ol, "Look around")
    seen = {}

    def look(cwd: Path) -> None:
        seen["gitdir"] = git(cwd, "rev-parse", "--absolute-git-dir")
        seen["common"] = git(cwd, "rev-parse", "--git-common-dir")
        seen["branches"] = git(cwd, "for-each-ref", "--format=%(refname)").splitlines()
        hooks = Path(seen["gitdir"]) / "hooks"
        seen["hooks"] = sorted(os.listdir(hooks)) if hooks.exists() else []
        (cwd / "a.py").write_text("a = 1\n")

    once(env, FakeAgent([look]))
    assert Path(seen["gitdir"]) == Path(env.worktrees_dir / "demo" / "look-around" / ".git")
    assert seen["common"] == ".git"  # not a worktree of the user's repository
    assert seen["branches"] == ["refs/heads/openloop/look-around"]
    assert seen["hooks"] == []  # no template, no sample hooks
    assert not (demo / ".git" / "worktrees").exists()


def test_refs_moved_in_the_agents_repository_stay_there(ol, demo, env):  # noqa: F811
    tid = add(ol, "Commit and push")
    main = git(demo, "rev-parse", "main")

    def commit_and_move_main(cwd: Path) -> None:
        (cwd / "x.py").write_text("x = 1\n")
        git(cwd, "add", "-A")
        git(cwd, "commit", "-qm", "mine")
        git(cwd, "update-ref", "refs/heads/main", "HEAD")

    result = once(env, FakeAgent([commit_and_move_main]))
    assert result.outcome == Outcome.COMPLETED
    assert git(demo, "rev-parse", "main") == main
    assert task_of(demo, tid).status == "review"
    # OpenLoop recorded the files, not the agent's commit.
    head = git(demo, "rev-parse", f"openloop/{tid}")
    assert git(demo, "log", "-1", "--format=%s", head).startswith("openloop: Commit and push")


def test_moving_the_users_ref_escapes_and_is_put_back(ol, demo, env, sink):  # noqa: F811
    tid = add(ol, "Sneaky")
    main = git(demo, "rev-parse", "main")

    def move_users_main(cwd: Path) -> None:
        git(demo, "commit", "--allow-empty", "-qm", "agent")  # moves main in the user's repo

    result = once(env, FakeAgent([move_users_main]))
    assert result.outcome == Outcome.ESCAPED and result.exit_code == 18
    assert result.reason.startswith("escaped: during the agent's run: ")
    assert "ref refs/heads/main" in result.reason and "put back" in result.reason
    assert git(demo, "rev-parse", "main") == main
    task = task_of(demo, tid)
    assert task.status == "blocked" and task.history[-1].reason.startswith("escaped:")
    assert task.last_run["outcome"] == "escaped"
    events = []
    while True:
        try:
            events.append(_fields(sink.recv(65536)))
        except TimeoutError:
            break
        if events[-1].get("OPENLOOP_EVENT") == "iteration-finished":
            break
    assert any(e.get("OPENLOOP_EVENT") == "escaped" and e["PRIORITY"] == "3" for e in events)
    screen = dashboard.dashboard(env, with_systemd=False)
    assert screen["projects"][0]["escaped"] == [tid]
    assert "ESCAPED" in dashboard.render(screen)


def test_a_check_that_plants_a_hook_escapes(ol, demo, env, tmp_path):  # noqa: F811
    marker = tmp_path / "hook-ran"
    hook = demo / ".git" / "hooks" / "post-merge"
    script = f"#!/bin/sh\ntouch {marker}\n"
    # The agent's code is what the checks run: a test that installs a hook in the user's repo.
    from tests.test_iteration import set_project

    set_project(demo, validation={"lintCommand": f"sh plant.sh {hook}"})
    (demo / "plant.sh").write_text("true\n")
    git(demo, "add", "plant.sh")
    git(demo, "commit", "-qm", "plant script")
    assert ol("project", "trust", "demo").code == 0
    tid = add(ol, "Plant", "--risk", "low-risk")
    payload = f"printf '%s' '{script}' > \"$1\"; chmod +x \"$1\"\n"
    result = once(env, FakeAgent([write("plant.sh", payload)]))
    assert result.outcome == Outcome.ESCAPED
    assert "during the checks" in result.reason and "hooks/post-merge created" in result.reason
    assert task_of(demo, tid).status == "blocked"
    assert "OpenLoop took it away; what was there is now post-merge.openloop-escaped-" in (
        result.reason
    )
    assert not hook.exists() and not marker.exists()  # never run by OpenLoop, and set aside
    assert [p.read_text() for p in hook.parent.glob("post-merge.openloop-escaped-*")] == [script]


def test_openloop_never_runs_hooks_or_fsmonitor_of_the_users_repository(ol, demo, env, tmp_path):  # noqa: F811
    marker = tmp_path / "ran"
    hooks = demo / ".git" / "hooks"
    for name in ("pre-commit", "post-commit", "post-merge", "reference-transaction"):
        path = hooks / name
        path.write_text(f"#!/bin/sh\necho {name} >> {marker}\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    fsmonitor = tmp_path / "fsmonitor.sh"
    fsmonitor.write_text(f"#!/bin/sh\necho fsmonitor >> {marker}\n")
    fsmonitor.chmod(0o755)
    git(demo, "config", "core.fsmonitor", str(fsmonitor))
    assert ol("project", "trust", "demo").code == 0
    tid = add(ol, "Merge me", "--risk", "low-risk")
    result = once(env, FakeAgent([write("m.py", "m = 1\n")]))
    assert result.outcome == Outcome.COMPLETED
    assert task_of(demo, tid).status == "promoted"
    assert not marker.exists()


def test_guard_sees_each_kind_of_change(demo):  # noqa: F811
    before = guard.take(demo)
    (demo / ".openloop" / "policy.yaml").write_text("version: 2\n")
    (demo / ".git" / "hooks" / "post-commit").write_text("#!/bin/sh\n")
    git(demo, "config", "core.fsmonitor", "true")
    git(demo, "update-ref", "refs/heads/extra", "main")
    found = before.differences(guard.take(demo))
    text = "\n".join(found)
    assert "ref refs/heads/extra (none) ->" in text
    assert "control file .openloop/policy.yaml changed" in text
    assert "hooks/post-commit created" in text
    assert "config changed" in text
    restored = guard.restore_refs(demo, before.refs, guard.take(demo).refs)
    assert restored == ["refs/heads/extra deleted"]


def test_what_openloop_and_the_user_write_meanwhile_is_not_an_escape(ol, demo):  # noqa: F811
    add(ol, "Existing")
    run_dir = demo / ".openloop" / "runs" / "20261130T000000Z-existing-abcd"
    run_dir.mkdir(parents=True)
    record = {"runId": run_dir.name, "outcome": "running"}  # written before the agent starts
    (run_dir.parent / f"{run_dir.name}.json").write_text(json.dumps(record))
    before = guard.take(demo)
    (run_dir / "transcript.jsonl").write_text("{}\n")  # the running agent's transcript
    add(ol, "Added meanwhile")  # the user's `task add` while an agent runs
    assert before.differences(guard.take(demo)) == []


def test_openloops_records_and_existing_tasks_are_guarded(ol, demo):  # noqa: F811
    tid = add(ol, "Existing")
    before = guard.take(demo)
    ledger = demo / ".openloop" / "tasks.json"
    ledger.write_text(ledger.read_text().replace('"medium-risk"', '"low-risk"'))
    (demo / ".openloop" / "runs").mkdir(exist_ok=True)
    (demo / ".openloop" / "runs" / "planted.json").write_text("{}")
    (demo / ".openloop" / "promotions").mkdir(exist_ok=True)
    (demo / ".openloop" / "promotions" / f"{tid}.json").write_text("{}")
    found = "\n".join(before.differences(guard.take(demo)))
    assert f"task {tid} changed" in found
    assert "control file .openloop/runs/planted.json created" in found
    assert f"control file .openloop/promotions/{tid}.json created" in found


def test_replay_onto_a_moved_base_needs_no_work_tree(demo):  # noqa: F811
    base = git(demo, "rev-parse", "main")
    (demo / "user.txt").write_text("u\n")
    git(demo, "add", "user.txt")
    git(demo, "commit", "-qm", "user")
    tip = git(demo, "rev-parse", "main")
    ws = demo.parent / "ws"
    workspace.make_workspace(demo, ws, base, "task")
    (ws / "task.txt").write_text("t\n")
    who = workspace.identity(demo)
    head = workspace.record(demo, ws, base, "task\n", who)
    replayed, why = workspace.replay_onto(demo, head, tip, who)
    assert why == "" and replayed
    assert git(demo, "rev-parse", f"{replayed}~1") == tip
    files = git(demo, "ls-tree", "--name-only", replayed).splitlines()
    assert "user.txt" in files and "task.txt" in files
    # A conflicting change is refused with the file named.
    (ws / "user.txt").write_text("other\n")
    clash = workspace.record(demo, ws, base, "clash\n", who)
    replayed, why = workspace.replay_onto(demo, clash, tip, who)
    assert replayed is None and "user.txt" in why
    workspace.remove_workspace(ws)
    assert journal  # imported for the sink fixture's monkeypatching


def test_a_change_between_the_agents_end_and_its_checks_is_caught(ol, demo, env, monkeypatch):  # noqa: F811
    # The checks' guard starts from the snapshot that proved the agent's run clean (not from a
    # new one): what changes in between, apart from OpenLoop's own branch and ledger, is an
    # escape too, and is put back.
    from openloop.loop import attempt

    tid = add(ol, "Add hello")
    real = attempt._set_status

    def set_status_and_plant(it, status, reason):
        real(it, status, reason)
        git(demo, "update-ref", "refs/heads/planted", "HEAD")

    monkeypatch.setattr(attempt, "_set_status", set_status_and_plant)
    result = once(env, FakeAgent([write("hello.py", "print('hi')\n")]))
    assert result.outcome == Outcome.ESCAPED
    assert "during the checks" in result.reason and "refs/heads/planted" in result.reason
    assert git(demo, "for-each-ref", "refs/heads/planted") == ""
    assert task_of(demo, tid).status != "in_progress"


def test_openloops_own_branch_and_ledger_edits_between_agent_and_checks_are_not_escapes(
    ol,
    demo,  # noqa: F811
    env,
):
    tid = add(ol, "Add hello")
    result = once(env, FakeAgent([write("hello.py", "print('hi')\n")]))
    assert result.outcome == Outcome.COMPLETED, result.reason
    assert git(demo, "rev-parse", "--verify", "refs/heads/openloop/" + tid)
