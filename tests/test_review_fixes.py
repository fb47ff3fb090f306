"""Regression tests for defects found in review: each reproduces the original problem."""

from __future__ import annotations

import json

import pytest

from openloop.actions import service, unit_hooks
from openloop.loop import promotion, scheduler, validation
from openloop.loop.outcomes import Outcome
from openloop.state.project import resolve
from tests.conftest import git, make_repo
from tests.test_iteration import FakeAgent, add, once, set_project, task_of, write


@pytest.fixture
def demo(ol, project):
    set_project(project, validation={"lintCommand": "! grep -rq BROKEN --include=*.py ."})
    assert ol("project", "trust", "demo").code == 0
    return project


def test_a_task_id_from_the_ledger_cannot_escape_into_the_filesystem(ol, demo, env, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep\n")
    ledger = demo / ".openloop/tasks.json"
    data = json.loads(ledger.read_text())
    now = "2026-11-25T00:00:00.000Z"
    data["tasks"].append(
        {
            "id": "../../../../victim",
            "title": "x",
            "status": "ready",
            "createdAt": now,
            "updatedAt": now,
        }
    )
    ledger.write_text(json.dumps(data))
    result = ol("run-once", "-p", "demo")
    assert result.code == 2 and "tasks.0.id" in result.err
    assert (victim / "precious.txt").exists()


def test_a_cancelled_task_is_never_merged_later(ol, demo, env):
    tid = add(ol, "Edit app", "--risk", "low-risk")
    (demo / "app.py").write_text("mine = 1\n")  # uncommitted edit to the file the agent changes
    git(demo, "add", "app.py")
    git(demo, "commit", "-qm", "app")
    (demo / "app.py").write_text("mine = 2  # work in progress\n")
    once(env, FakeAgent([write("app.py", "agent = 1\n")]))
    plane = resolve(env, "demo").plane
    assert promotion.read_request(plane, tid)["status"] == "deferred"
    main_before = git(demo, "rev-parse", "main")
    assert ol("task", "cancel", "-t", tid).code == 0
    assert promotion.read_request(plane, tid)["status"] == "withdrawn"
    git(demo, "checkout", "--", "app.py")
    once(env, FakeAgent())
    assert git(demo, "rev-parse", "main") == main_before
    refused = ol("promotion", "apply", "-t", tid)
    assert refused.code == 1 and git(demo, "rev-parse", "main") == main_before


def test_a_removed_tasks_id_is_not_reused_by_a_new_task(ol, demo, env):
    tid = add(ol, "Same title")
    once(env, FakeAgent([write("s.py", "s = 1\n")]))
    assert ol("task", "remove", "-t", tid).code == 0
    again = add(ol, "Same title")
    assert again != tid
    assert ol("promotion", "apply", "-t", again).code == 2  # no request of its own


def test_a_deferred_merge_only_merges_the_validated_commit(ol, demo, env):
    tid = add(ol, "Validated", "--risk", "low-risk")
    (demo / "v.py").write_text("user = 1\n")
    git(demo, "add", "v.py")
    git(demo, "commit", "-qm", "v")
    (demo / "v.py").write_text("user = 2\n")  # defers the merge
    once(env, FakeAgent([write("v.py", "agent = 1\n")]))
    git(demo, "checkout", "--", "v.py")
    # Someone adds an unreviewed commit to the task branch meanwhile.
    git(demo, "checkout", "-q", "openloop/validated")
    (demo / "extra.py").write_text("unreviewed = 1\n")
    git(demo, "add", "extra.py")
    git(demo, "commit", "-qm", "unreviewed")
    git(demo, "checkout", "-q", "main")
    once(env, FakeAgent())
    assert not (demo / "extra.py").exists()
    request = promotion.read_request(resolve(env, "demo").plane, tid)
    assert request["status"] == "pending" and "changed since it was validated" in request["note"]


def test_a_rebase_in_progress_in_the_users_checkout_defers_the_merge(ol, demo, env):
    for n in range(2):
        (demo / f"r{n}.txt").write_text(f"{n}\n")
        git(demo, "add", "-A")
        git(demo, "commit", "-qm", f"r{n}")
    git(demo, "-c", "sequence.editor=sed -i 1s/^pick/edit/", "rebase", "-i", "HEAD~2")
    tid = add(ol, "During rebase", "--risk", "low-risk")
    once(env, FakeAgent([write("d.py", "d = 1\n")]))
    request = promotion.read_request(resolve(env, "demo").plane, tid)
    assert request["status"] == "deferred" and "rebase" in request["note"]
    git(demo, "rebase", "--continue")  # the user's rebase still finishes cleanly


def test_scope_globs_are_checked_when_the_task_is_added(ol, demo):
    result = ol("task", "add", "--title", "Bad glob", "--scope", "src/[a")
    assert result.code == 2 and result.err.startswith("openloop: error: --scope:")


def test_non_finite_budget_is_refused(ol, env):
    for value in ("inf", "nan", "Infinity"):
        assert ol("config", "set", "budgets.dailyCostUsd", value).code == 2
    assert ol("config", "show").json()["budgets"]["dailyCostUsd"] == 25


def test_the_projects_validation_timeout_applies(ol, demo, env):
    # Slow only with the agent's change: the default branch itself passes.
    set_project(demo, validation={"lintCommand": "test ! -e t.py || sleep 5", "timeoutSeconds": 1})
    ol("project", "trust", "demo")
    tid = add(ol, "Slow check")
    result = once(env, FakeAgent([write("t.py", "t = 1\n")]))
    assert result.outcome == Outcome.VALIDATION_FAILED
    assert result.record["validation"][0]["status"] == "timed-out"
    assert task_of(demo, tid).status == "ready"


def test_the_gate_skips_while_an_iteration_holds_the_project(ol, demo, env):
    add(ol, "Busy")
    with scheduler.iteration_lock(env, "demo"):
        decision = unit_hooks.gate(env, "demo")
    assert not decision.run and "running" in decision.reason


def test_one_broken_project_does_not_stop_the_foreground_loop(ol, demo, env, tmp_path):
    other = make_repo(tmp_path / "other")
    assert ol("project", "add", "other", str(other), "--init").code == 0
    (other / ".openloop/tasks.json").write_text("{broken")
    lines = []
    unit_hooks.run_foreground(env, interval=0, iterations=1, echo=lines.append)
    assert any(line.startswith("other: error:") for line in lines)


def test_planning_attempts_do_not_count_against_implementation(ol, demo, env):
    tid = add(ol, "Plan then build", "--plan")
    agent = FakeAgent([lambda cwd: None, write(".openloop/specs/plan-then-build.md", "# Spec\n")])
    once(env, agent)  # no spec: an attempt is used
    assert task_of(demo, tid).attempts == 1
    once(env, agent)
    task = task_of(demo, tid)
    assert (task.status, task.attempts, task.last_failure) == ("ready", 0, None)


def test_different_failing_tests_have_different_signatures():
    def failing(tail):
        return [validation.CheckResult("test", "pytest", "failed", 1, 0.1, None, tail)]

    one = validation.failure_signature(failing("FAILED test_1 in 0.51s"))
    two = validation.failure_signature(failing("FAILED test_2 in 0.52s"))
    same = validation.failure_signature(failing("FAILED test_1 in 3.20s"))
    assert one != two and one == same


def test_hostile_titles_stay_data_through_an_iteration(ol, demo, env, tmp_path):
    marker = tmp_path / "pwned"
    title = f"$(touch {marker}) `touch {marker}`; touch {marker}"
    ol("config", "set", "notifications.onTaskComplete", f'echo "$OPENLOOP_TASK_ID" > {tmp_path}/n')
    tid = add(ol, title)
    agent = FakeAgent([write("h.py", "h = 1\n")])
    assert once(env, agent).outcome == Outcome.COMPLETED
    assert not marker.exists()
    assert git(demo, "log", "-1", "--format=%s", f"openloop/{tid}") == f"openloop: {title}"
    assert title in agent.requests[0].prompt
    assert (tmp_path / "n").read_text().strip() == tid


def test_a_repository_path_with_a_space_is_linked_as_is(ol, env, tmp_path):
    (tmp_path / "repo").mkdir()  # a sibling the old parser would have picked
    spaced = make_repo(tmp_path / "repo x")
    assert ol("project", "add", "spaced", str(spaced), "--init").code == 0
    assert ol("project", "list", "--json").json()[0]["path"] == str(spaced.resolve())
    assert (spaced / ".openloop/project.json").exists()
    assert not (tmp_path / "repo" / ".openloop").exists()


def test_unit_files_escape_what_systemd_would_expand(env, monkeypatch, tmp_path):
    from openloop.adapters import units

    rendered = units.render_templates(["/opt/v env%n/bin/openloop"])["openloop@.service"]
    assert "ExecStart='/opt/v env%%n/bin/openloop' run-once" in rendered
    monkeypatch.setitem(env.environ, "OPENLOOP_PI_BIN", "/opt/pi/bin/my-pi")
    monkeypatch.setitem(env.environ, "XDG_STATE_HOME", "/srv/state")
    dropin = units.environment_dropin(env, ["/usr/bin"])
    assert 'Environment="OPENLOOP_PI_BIN=/opt/pi/bin/my-pi"' in dropin
    assert 'Environment="XDG_STATE_HOME=/srv/state"' in dropin
    envfile_line = next(line for line in dropin.splitlines() if line.startswith("EnvironmentFile"))
    assert '"' not in envfile_line  # EnvironmentFile= takes the path raw


def test_reinstalling_keeps_the_sandbox_unless_asked(ol, project, env, monkeypatch, tmp_path):
    from openloop.adapters import units

    monkeypatch.setitem(env.environ, "XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    service.install(env, reload=False)
    marker = units.user_unit_dir(env) / "openloop@.service.d" / units.SANDBOX_DROPIN
    marker.write_text(units.sandbox_dropin(env))  # as a probed --sandbox install leaves it
    service.install(env, reload=False)  # e.g. after changing a project's schedule
    assert marker.exists()
    service.install(env, sandbox=False, reload=False)
    assert not marker.exists()


def test_bad_numbers_in_options_are_usage_errors(ol):
    for args in (
        ["watch", "--interval", "-1"],
        ["logs", "-n", "-5"],
        ["events", "--limit", "0"],
        ["service", "run", "--iterations", "0"],
    ):
        assert ol(*args).code == 2, args
