"""Every `openloop task` command, including what it does with bad input."""

from __future__ import annotations

import json
import os
import stat

import pytest


def tasks_of(ol, *args):
    return ol("task", "list", "--json", *args).json()["tasks"]


def test_add_list_show(ol, project):
    added = ol(
        "task",
        "add",
        "-p",
        "demo",
        "--title",
        "Add a /health endpoint",
        "--kind",
        "bugfix",
        "--risk",
        "low-risk",
        "--scope",
        "src/**",
        "--scope",
        "./src/**",
        "--scope",
        "docs/x.md",
        "--priority",
        "5",
        "--description",
        "Return 200 OK",
        "--accept",
        "GET /health is 200",
        "--json",
    )
    assert added.code == 0, added.err
    task = added.json()
    assert task["id"] == "add-a-health-endpoint"
    assert task["status"] == "ready"
    assert task["scope"] == {"paths": ["src/**", "docs/x.md"]}
    assert task["acceptanceCriteria"] == ["GET /health is 200"]
    assert task["history"][0]["to"] == "ready"

    planned = ol("task", "add", "--title", "Big refactor", "--plan", "--json").json()
    assert planned["status"] == "proposed"
    # A feature (or epic) is planned first; the default kind is a chore, implemented at once.
    feature = ol("task", "add", "--title", "New page", "--kind", "feature", "--json").json()
    assert feature["status"] == "proposed"
    assert ol("task", "remove", "--task", feature["id"]).code == 0
    chore = ol("task", "add", "--title", "Tidy", "--json").json()
    assert (chore["kind"], chore["status"]) == ("chore", "ready")
    assert ol("task", "remove", "--task", chore["id"]).code == 0

    ids = [t["id"] for t in tasks_of(ol)]
    assert ids == ["add-a-health-endpoint", "big-refactor"]  # priority 5 first
    assert [t["id"] for t in tasks_of(ol, "--status", "proposed")] == ["big-refactor"]
    assert [t["id"] for t in tasks_of(ol, "--risk", "low-risk")] == ["add-a-health-endpoint"]

    shown = ol("task", "show", "--task", "add-a-health-endpoint").json()
    assert shown["task"]["description"] == "Return 200 OK"


def test_description_file_and_dependencies(ol, project, tmp_path):
    desc = tmp_path / "d.md"
    desc.write_text("# Long\nbody\n")
    assert ol("task", "add", "--title", "Base", "--description-file", str(desc)).code == 0
    dep = ol("task", "add", "--title", "On top", "--depends-on", "base", "--json")
    assert dep.json()["dependsOn"] == ["base"]
    assert ol("task", "show", "-t", "base").json()["task"]["description"] == "# Long\nbody\n"
    bad = ol("task", "add", "--title", "X", "--depends-on", "nope")
    assert bad.code == 2 and "--depends-on: unknown task id 'nope'" in bad.err
    in_use = ol("task", "remove", "-t", "base")
    assert in_use.code == 1 and "dependency of: on-top" in in_use.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["task", "add", "-p", "nope", "--title", "x"], "unknown project 'nope'"),
        (["task", "add", "--title", "x", "--risk", "huge"], "Invalid value for '--risk'"),
        (["task", "add", "--title", "x", "--kind", "party"], "Invalid value for '--kind'"),
        (["task", "add"], "--title: required"),
        (["task", "add", "--title", "   "], "--title: must not be empty"),
        (["task", "add", "--title", "x", "--scope", "/etc/passwd"], "must be relative"),
        (["task", "add", "--title", "x", "--scope", "src/../../x"], "must not contain '..'"),
        (
            ["task", "add", "--title", "x", "--id", "../../etc"],
            "--id: '../../etc' is not a valid task id",
        ),
        (["task", "add", "--title", "x", "--priority", "high"], "Invalid value for '--priority'"),
        (["task", "show", "--task", "../x"], "not a valid task id"),
        (["task", "show", "--task", "missing"], "unknown task id 'missing'"),
        (["task", "cancel", "--task", "missing"], "unknown task id 'missing'"),
        (["task", "update", "--task", "missing", "--title", "y"], "unknown task id 'missing'"),
        (["task", "list", "--status", "nope"], "Invalid value for '--status'"),
        (
            ["task", "add", "--title", "x", "--description", "a", "--description-file", "f"],
            "give one, not both",
        ),
        (["enqueue", "--ref", "not a ref"], "--ref"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_leaves_the_ledger_alone(ol, project, args, message):
    ledger = project / ".openloop/tasks.json"
    before = ledger.read_bytes()
    result = ol(*args)
    assert result.code == 2, (result.code, result.err)
    assert message in result.err
    assert "Traceback" not in result.err
    assert ledger.read_bytes() == before


@pytest.mark.parametrize(
    ("content", "field"),
    [
        ("{oops", "invalid JSON"),
        ('{"version": 2, "tasks": [{"id": "a", "title": "A"}]}', "tasks.0.createdAt"),
        ('{"version": 2, "tasks": {"a": 1}}', "tasks:"),
    ],
)
def test_malformed_ledger_exits_2_and_is_untouched(ol, project, content, field):
    ledger = project / ".openloop/tasks.json"
    ledger.write_text(content)
    for args in (["task", "list"], ["task", "add", "--title", "x"], ["task", "recover"]):
        result = ol(*args)
        assert result.code == 2, args
        assert str(ledger) in result.err and field in result.err
        assert len(result.err.strip().splitlines()) == 1
    assert ledger.read_text() == content


def test_update_goes_through_the_state_machine(ol, project):
    ol("task", "add", "--title", "Fix login", "--plan")
    assert (
        ol(
            "task",
            "update",
            "-t",
            "fix-login",
            "--priority",
            "3",
            "--risk",
            "low-risk",
            "--scope",
            "auth/**",
            "--title",
            "Fix the login",
        ).code
        == 0
    )
    task = ol("task", "show", "-t", "fix-login").json()["task"]
    assert (task["priority"], task["risk"], task["scope"], task["title"]) == (
        3,
        "low-risk",
        {"paths": ["auth/**"]},
        "Fix the login",
    )
    assert task["id"] == "fix-login"  # ids are stable across title changes

    ok = ol("task", "update", "-t", "fix-login", "--status", "ready", "--reason", "spec approved")
    assert ok.code == 0
    history = ol("task", "show", "-t", "fix-login").json()["task"]["history"]
    assert history[-1]["from"] == "proposed" and history[-1]["reason"] == "spec approved"

    bad = ol("task", "update", "-t", "fix-login", "--status", "review")
    assert bad.code == 1
    assert "cannot go from ready to review" in bad.err
    for reserved in ("promoted", "in_progress", "validating"):
        refused = ol("task", "update", "-t", "fix-login", "--status", reserved)
        assert refused.code == 1 and "set by iterations and promotions only" in refused.err
    assert ol("task", "update", "-t", "fix-login", "--clear-scope").code == 0
    assert ol("task", "show", "-t", "fix-login").json()["task"]["scope"] is None


def test_cancel_retry_remove(ol, project):
    ol("task", "add", "--title", "A")
    assert ol("task", "cancel", "-t", "a", "--reason", "dup").code == 0
    assert ol("task", "show", "-t", "a").json()["task"]["status"] == "cancelled"
    again = ol("task", "cancel", "-t", "a")
    assert again.code == 1 and "cannot go from cancelled" in again.err
    refused = ol("task", "retry", "-t", "a")
    assert refused.code == 1 and "only blocked or failed" in refused.err

    ledger_file = project / ".openloop/tasks.json"
    data = json.loads(ledger_file.read_text())
    data["tasks"].append(
        {
            **data["tasks"][0],
            "id": "b",
            "status": "blocked",
            "attempts": 3,
            "lastFailureSignature": "no-progress",
            "history": [],
        }
    )
    ledger_file.write_text(json.dumps(data))
    assert ol("task", "retry", "-t", "b").code == 0
    b = ol("task", "show", "-t", "b").json()["task"]
    assert (b["status"], b["attempts"], b["lastFailureSignature"]) == ("ready", 0, None)

    assert ol("task", "remove", "-t", "b").code == 0
    assert [t["id"] for t in tasks_of(ol)] == ["a"]


def test_recover_returns_stuck_tasks_and_refuses_while_an_iteration_holds_the_lock(
    ol, project, env
):
    from openloop.state.locks import iteration_lock_target
    from openloop.state.storage import locked

    ledger_file = project / ".openloop/tasks.json"
    ol("task", "add", "--title", "Stuck")
    data = json.loads(ledger_file.read_text())
    data["tasks"][0]["status"] = "in_progress"
    data["tasks"][0]["history"].append(
        {"at": "2026-11-25T00:00:00.000Z", "from": "ready", "to": "in_progress", "reason": "picked"}
    )
    ledger_file.write_text(json.dumps(data))

    with locked(iteration_lock_target(env, "demo")):
        busy = ol("task", "recover")
        assert busy.code == 1 and "iteration of project 'demo' is running" in busy.err
    done = ol("task", "recover")
    assert done.code == 0 and "Recovered 1 task(s) in demo: stuck" in done.out
    task = ol("task", "show", "-t", "stuck").json()["task"]
    assert (task["status"], task["attempts"]) == ("ready", 1)
    assert ol("task", "recover").out.startswith("No stuck tasks")

    # A recovered task that has used up its attempts is blocked, not left unpickable in ready.
    data = json.loads(ledger_file.read_text())
    data["tasks"][0].update(status="in_progress", attempts=2)
    ledger_file.write_text(json.dumps(data))
    assert ol("task", "recover").code == 0
    task = ol("task", "show", "-t", "stuck").json()["task"]
    assert (task["status"], task["attempts"]) == ("blocked", 3)
    assert ol("task", "retry", "-t", "stuck").code == 0


def _fake_gh(tmp_path, monkeypatch, payload: str, code: int = 0):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gh = bin_dir / "gh"
    gh.write_text(f"#!/bin/sh\necho '{payload}'\nexit {code}\n")
    gh.chmod(gh.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_from_ref_fetches_title_and_body_with_gh(ol, project, tmp_path, monkeypatch):
    _fake_gh(tmp_path, monkeypatch, '{"title": "Crash on empty input", "body": "Steps..."}')
    added = ol("task", "add", "--from-ref", "https://github.com/acme/web/issues/42", "--json")
    assert added.code == 0, added.err
    task = added.json()
    assert task["title"] == "Crash on empty input"
    assert task["description"] == "Steps..."
    assert task["source"] == {"type": "issue", "ref": "acme/web#42"}
    assert task["id"] == "acme-web-42"
    dup = ol("enqueue", "--ref", "acme/web#42")
    assert dup.code == 2 and "already queued as task 'acme-web-42'" in dup.err


def test_enqueue_without_network_or_gh_keeps_the_ref(ol, project, tmp_path, monkeypatch):
    _fake_gh(tmp_path, monkeypatch, "error: could not connect", code=1)
    added = ol("enqueue", "--ref", "acme/web#7", "--json")
    assert added.code == 0, added.err
    task = added.json()
    assert "acme/web#7" in task["title"]
    assert task["source"]["ref"] == "acme/web#7"
