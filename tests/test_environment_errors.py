"""Environment failures (pi missing, Node too old, the API key refused, the quota spent) are not
the task's fault: no attempt is counted, the project backs off, status and doctor say why.

The agent is the real PiAdapter running a fake `pi` script (tests/test_agent.py's FAKE) that
prints the events the real pi prints for these failures (observed in
tests/e2e/test_environment_pi.py), or no pi at all.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from openloop.actions import unit_hooks, unit_status
from openloop.adapters.agent import AgentResult, make_adapter
from openloop.adapters.environment import classify_provider_error
from openloop.adapters.environment import retry_after_seconds as parse_retry
from openloop.adapters.supervise import AgentRequest
from openloop.loop import scheduler
from openloop.loop.outcomes import Outcome
from openloop.state import backoff
from openloop.state.ledger import load_ledger
from tests.conftest import git
from tests.test_agent import FAKE, assistant
from tests.test_iteration import FakeAgent, add, set_project, write

START = datetime(2030, 1, 15, 12, 0, tzinfo=UTC)
PI_MISSING_REASON = "'pi' not found: install it or set OPENLOOP_PI_BIN"


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def hhmm(when: datetime) -> str:
    return when.astimezone().strftime("%H:%M")


@pytest.fixture
def demo(ol, project):
    set_project(project, validation={"lintCommand": "true"})
    assert ol("project", "trust", "demo").code == 0
    return project


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def no_pi(env, clock):
    """The test environment with a fake clock and OPENLOOP_PI_BIN pointing at nothing."""
    environ = {**env.environ, "OPENLOOP_PI_BIN": str(Path(env.state_dir) / "no" / "pi")}
    return replace(env, environ=environ, clock=clock)


@pytest.fixture
def fake_pi(tmp_path) -> Path:
    path = tmp_path / "fakebin" / "pi"
    path.parent.mkdir()
    path.write_text(FAKE)
    path.chmod(0o755)
    return path


def scripted(env, clock, tmp_path, actions: list[list[Any]]):
    """The environment for an iteration whose pi is the fake script playing `actions`."""
    script = tmp_path / "pi-actions.json"
    script.write_text(json.dumps(actions))
    return replace(env, environ={**env.environ, "FAKE_ACTIONS": str(script)}, clock=clock)


def once(env, adapter=None):
    factory = (lambda kind: adapter) if adapter is not None else None
    return scheduler.run_once(env, "demo", adapter_factory=factory)


def only_task(repo: Path):
    [task] = load_ledger(repo / ".openloop/tasks.json").tasks
    return task


def pi_result(fake_pi: Path, tmp_path: Path, actions, env: dict[str, str] | None = None):
    script = tmp_path / "actions.json"
    script.write_text(json.dumps(actions))
    cwd = tmp_path / "work"
    cwd.mkdir(exist_ok=True)
    request = AgentRequest(
        cwd=cwd,
        prompt="Fix it.\n",
        system_append="",
        model="scripted",
        provider="mock",
        run_dir=tmp_path / "run",
        run_timeout=30.0,
        inactivity_timeout=10.0,
        budget_left_usd=None,
        env={
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path / "home"),
            "FAKE_ACTIONS": str(script),
            **(env or {}),
        },
    )
    return make_adapter("pi", pi_binary=str(fake_pi)).run(request)


# --- the iteration: no attempt, back to ready, the gate waits -----------------------------------


def test_pi_missing_costs_no_attempt_and_the_gate_waits_with_the_fix(ol, demo, no_pi, clock):
    add(ol, "Add hello")
    result = once(no_pi)
    assert result.outcome == Outcome.ENVIRONMENT_ERROR and result.exit_code == 19
    assert result.reason == PI_MISSING_REASON
    task = only_task(demo)
    assert (task.status, task.attempts, task.no_progress_streak) == ("ready", 0, 0)
    assert task.last_failure is None and task.last_failure_signature is None
    assert task.last_run["outcome"] == "environment-error"
    assert result.record["outcome"] == "environment-error"

    retry = hhmm(START + timedelta(minutes=5))
    decision = unit_hooks.gate(no_pi, "demo")
    assert not decision.run
    assert decision.reason.startswith(f"{PI_MISSING_REASON}; retry at {retry}")
    skipped = once(no_pi)
    assert skipped.outcome == Outcome.SKIPPED and skipped.reason == decision.reason
    assert only_task(demo).attempts == 0

    clock.advance(minutes=5)
    assert unit_hooks.gate(no_pi, "demo").run  # due again: the next run tries


def test_three_environment_failures_never_block_the_task(ol, demo, no_pi, clock):
    add(ol, "Add hello")
    for _ in range(4):  # more than maxAttemptsPerTask (3)
        assert once(no_pi).outcome == Outcome.ENVIRONMENT_ERROR
        clock.advance(hours=7)
    task = only_task(demo)
    assert (task.status, task.attempts) == ("ready", 0)
    # The retries reuse the task's branch instead of leaving openloop/add-hello-2, -3, ...
    assert git(demo, "branch", "--list", "openloop/*").split() == ["openloop/add-hello"]


def test_backoff_grows_and_a_working_agent_run_resets_it(ol, demo, no_pi, clock):
    add(ol, "Add hello")
    expected = [5, 15, 45, 135, 360, 360]  # minutes, capped at 6 h
    for failures, minutes in enumerate(expected, start=1):
        assert once(no_pi).outcome == Outcome.ENVIRONMENT_ERROR
        record = backoff.load(no_pi, "demo")
        assert record.failures == failures
        assert datetime.fromisoformat(record.retry_at) == clock.now + timedelta(minutes=minutes)
        clock.advance(minutes=minutes - 1)
        assert once(no_pi).outcome == Outcome.SKIPPED  # a minute early
        clock.advance(minutes=1)

    # pi works again (here: a fake agent that changes a file): the backoff is gone...
    assert once(no_pi, FakeAgent([write("hello.py", "print('hi')\n")])).outcome == (
        Outcome.COMPLETED
    )
    assert backoff.load(no_pi, "demo") is None
    # ... and the next failure starts over at 5 minutes.
    add(ol, "Second")
    assert once(no_pi).outcome == Outcome.ENVIRONMENT_ERROR
    record = backoff.load(no_pi, "demo")
    assert record.failures == 1
    assert datetime.fromisoformat(record.retry_at) == clock.now + timedelta(minutes=5)


def test_resume_retries_now(ol, demo, no_pi):
    add(ol, "Add hello")
    assert once(no_pi).outcome == Outcome.ENVIRONMENT_ERROR
    assert not unit_hooks.gate(no_pi, "demo").run
    result = ol("resume", "-p", "demo", environment=no_pi)
    assert result.code == 0 and "environment backoff ended" in result.out
    assert unit_hooks.gate(no_pi, "demo").run


def test_one_notification_for_three_failures_and_again_after_recovery(
    ol, demo, no_pi, clock, tmp_path
):
    log = tmp_path / "notified.log"
    command = f"echo $OPENLOOP_EVENT $OPENLOOP_PROJECT >> {log}"
    assert ol("config", "set", "notifications.onEnvironmentError", command).code == 0
    add(ol, "Add hello")
    for _ in range(3):
        assert once(no_pi).outcome == Outcome.ENVIRONMENT_ERROR
        clock.advance(hours=7)
    assert log.read_text().splitlines() == ["environment-error demo"]

    once(no_pi, FakeAgent([write("hello.py", "print('hi')\n")]))  # recovered
    add(ol, "Second")
    assert once(no_pi).outcome == Outcome.ENVIRONMENT_ERROR
    assert log.read_text().splitlines() == ["environment-error demo"] * 2


def test_without_its_own_command_the_notification_goes_to_on_task_failed(ol, demo, no_pi, tmp_path):
    log = tmp_path / "failed.log"
    assert ol("config", "set", "notifications.onTaskFailed", f"echo $OPENLOOP_EVENT >> {log}")
    add(ol, "Add hello")
    once(no_pi)
    assert log.read_text().split() == ["environment-error"]


def test_status_service_status_and_doctor_show_the_fix_and_the_retry_time(ol, demo, no_pi):
    add(ol, "Add hello")
    once(no_pi)
    retry = hhmm(START + timedelta(minutes=5))

    text = ol("status", environment=no_pi).out
    assert f"! {PI_MISSING_REASON}; retry at {retry}" in text
    [row] = ol("status", "--json", environment=no_pi).json()["projects"]
    waiting = row["environmentError"]
    assert (waiting["kind"], waiting["reason"], waiting["failures"]) == (
        "agent-missing",
        "'pi' not found",
        1,
    )
    assert waiting["fix"] == "install it or set OPENLOOP_PI_BIN"

    [state] = unit_status.status(no_pi)["projects"]
    assert state["environmentError"]["retryAtLocal"] == retry

    checks = {c["name"]: c for c in ol("doctor", "--json", environment=no_pi).json()}
    agent = checks["agent demo"]
    assert not agent["ok"]
    assert agent["detail"].startswith(f"'pi' not found; retry at {retry}")
    assert agent["fix"].startswith("install it or set OPENLOOP_PI_BIN")


def test_a_401_from_pi_is_an_environment_error_through_the_iteration(
    ol, demo, env, clock, tmp_path, fake_pi
):
    # What pi prints when the provider answers 401 (errorMessage "<status> <message>"; exit 0).
    actions = [["out", assistant("error", 0, "", "401 Incorrect API key provided: sk-x")]]
    env = scripted(env, clock, tmp_path, actions)
    add(ol, "Add hello")
    result = once(env, make_adapter("pi", pi_binary=str(fake_pi)))
    assert result.outcome == Outcome.ENVIRONMENT_ERROR
    assert result.reason.startswith("the provider refused the API key (401 Incorrect API key")
    key_file = f"{env.config_dir / 'environment'}"
    assert result.reason.endswith(f": set it in {key_file}")
    task = only_task(demo)
    assert (task.status, task.attempts) == ("ready", 0)
    assert backoff.load(env, "demo").kind == "auth"
    checks = {c["name"]: c for c in ol("doctor", "--json", environment=env).json()}
    assert checks["agent demo"]["fix"].startswith(f"set it in {key_file}")


def test_a_429_that_says_when_uses_that_time(ol, demo, env, clock, tmp_path, fake_pi):
    message = "429 Rate limit reached for requests. Please retry after 120s."
    actions = [
        ["out", assistant("error", 0, "", message)],
        ["out", {"type": "auto_retry_start", "attempt": 1}],
        ["out", assistant("error", 0, "", message)],
        ["out", {"type": "auto_retry_end", "success": False, "finalError": message}],
    ]
    env = scripted(env, clock, tmp_path, actions)
    add(ol, "Add hello")
    result = once(env, make_adapter("pi", pi_binary=str(fake_pi)))
    assert result.outcome == Outcome.ENVIRONMENT_ERROR
    record = backoff.load(env, "demo")
    assert record.kind == "quota" and record.provider_said
    assert datetime.fromisoformat(record.retry_at) == START + timedelta(seconds=120)
    assert only_task(demo).attempts == 0


def test_a_plain_model_error_still_costs_an_attempt(ol, demo, env, clock, tmp_path, fake_pi):
    actions = [
        ["out", assistant("error", 0, "", "500 Internal server error")],
        ["out", {"type": "auto_retry_start", "attempt": 1}],
        ["out", assistant("error", 0, "", "500 Internal server error")],
        ["out", {"type": "auto_retry_end", "success": False, "finalError": "500 again"}],
    ]
    env = scripted(env, clock, tmp_path, actions)
    add(ol, "Add hello")
    result = once(env, make_adapter("pi", pi_binary=str(fake_pi)))
    assert result.outcome == Outcome.AGENT_ERROR
    assert only_task(demo).attempts == 1
    assert backoff.load(env, "demo") is None
    assert unit_hooks.gate(env, "demo").run


# --- classifying what pi prints --------------------------------------------------------------


def env_result(result: AgentResult) -> tuple[str, str | None]:
    return result.outcome, result.environment.kind if result.environment else None


@pytest.mark.parametrize(
    ("actions", "expected"),
    [
        # 401 and 403 as the errorMessage of the last turn (pi exits 0).
        ([["out", assistant("error", 0, "", "401 Incorrect API key provided")]], "auth"),
        ([["out", assistant("error", 0, "", "403 Forbidden")]], "auth"),
        (
            [
                [
                    "out",
                    assistant(
                        "error",
                        0,
                        "",
                        '401 {"type":"error","error":{"type":"authentication_error",'
                        '"message":"invalid x-api-key"}}',
                    ),
                ]
            ],
            "auth",
        ),
        # 429, also as auto_retry_end's finalError after pi's own retries.
        ([["out", assistant("error", 0, "", "429 Rate limit reached.")]], "quota"),
        (
            [
                ["out", assistant("error", 0, "", "429 insufficient_quota")],
                ["out", {"type": "auto_retry_end", "success": False, "finalError": "429 x"}],
            ],
            "quota",
        ),
        # pi ends before any event: no key, a provider models.json does not define.
        ([["err", "No API key found for anthropic."], ["err", ""], ["exit", 1]], "auth"),
        (
            [
                ["err", 'Error: Unknown provider "mock". Use --list-models to see them.'],
                ["exit", 1],
            ],
            "agent-config",
        ),
        # `#!/usr/bin/env node` without node.
        ([["err", "/usr/bin/env: 'node': No such file or directory"], ["exit", 127]], "node"),
        # node's own crash trailer names its version.
        (
            [
                ["err", "SyntaxError: Unexpected token '?'"],
                ["err", "Node.js v16.20.2"],
                ["exit", 1],
            ],
            "node",
        ),
        # Not the environment: the task's agent-error.
        ([["out", assistant("error", 0, "", "500 scripted failure")]], None),
        ([["out", assistant("error", 0, "", "terminated")]], None),
        ([["out", assistant("error", 0, "", "400 context length exceeded")]], None),
        (
            [
                ["out", assistant("error", 0, "", "503")],
                ["out", {"type": "auto_retry_end", "success": False, "finalError": "503 again"}],
            ],
            None,
        ),
        ([["err", "Error: model 'scripted' not found"], ["exit", 1]], None),
    ],
)
def test_pi_failures_are_classified(fake_pi, tmp_path, actions, expected):
    result = pi_result(fake_pi, tmp_path, actions)
    if expected is None:
        assert env_result(result) == ("agent-error", None)
    else:
        assert env_result(result) == ("environment-error", expected)
        assert result.error == result.environment.message


def node_on_path(tmp_path: Path, version: str) -> str:
    """A PATH whose `node --version` prints `version`."""
    bin_dir = tmp_path / f"node-{version}"
    bin_dir.mkdir()
    node = bin_dir / "node"
    node.write_text(f"#!{sys.executable}\nprint('{version}')\n")
    node.chmod(0o755)
    return f"{bin_dir}:{os.environ['PATH']}"


def test_pi_failing_to_start_under_an_old_node_is_an_environment_error(fake_pi, tmp_path):
    crash = [["err", "SyntaxError: Invalid regular expression flags"], ["exit", 1]]
    old = pi_result(fake_pi, tmp_path, crash, env={"PATH": node_on_path(tmp_path, "v18.19.0")})
    assert env_result(old) == ("environment-error", "node")
    assert "Node.js v18 is too old" in old.error and "install Node.js 20" in old.error
    new = pi_result(fake_pi, tmp_path, crash, env={"PATH": node_on_path(tmp_path, "v22.3.0")})
    assert env_result(new) == ("agent-error", None)


def test_pi_not_executable_is_an_environment_error(fake_pi, tmp_path):
    fake_pi.chmod(0o644)
    result = pi_result(fake_pi, tmp_path, [])
    assert env_result(result) == ("environment-error", "agent-missing")
    assert result.error == f"{fake_pi} is not executable: reinstall pi or set OPENLOOP_PI_BIN"


def test_the_auth_fix_names_the_environment_file_the_units_read(fake_pi, tmp_path):
    actions = [["out", assistant("error", 0, "", "401 Unauthorized")]]
    result = pi_result(fake_pi, tmp_path, actions, env={"OPENLOOP_HOME": str(tmp_path / "ol")})
    assert result.environment.fix == f"set it in {tmp_path / 'ol' / 'environment'}"
    result = pi_result(
        fake_pi, tmp_path, actions, env={"XDG_CONFIG_HOME": str(tmp_path / "home" / "cfg")}
    )
    assert result.environment.fix == "set it in ~/cfg/openloop/environment"


@pytest.mark.parametrize(
    ("message", "seconds"),
    [
        ("429 Rate limit reached. Please try again in 20s.", 20),
        ("429 slow down, retry after 120s", 120),
        ("429 Please retry in 1m30s.", 90),
        ("429 try again in 2 minutes and 5 seconds", 125),
        ("429 Retry-After: 30", 30),
        ("429 quota exceeded; resets at 2030-01-15T13:00:00Z", 3600),
        ("429 Rate limit reached. Please try again later.", None),
        ("429 You exceeded your current quota", None),
    ],
)
def test_the_retry_time_a_provider_names_is_parsed(message, seconds):
    problem = classify_provider_error(message, now=START)
    assert problem is not None and problem.kind == "quota"
    assert problem.retry_after == (pytest.approx(seconds) if seconds is not None else None)
    assert parse_retry(message, START) == problem.retry_after


def test_backoff_schedule():
    minutes = [backoff.delay(n).total_seconds() / 60 for n in range(1, 8)]
    assert minutes == [5, 15, 45, 135, 360, 360, 360]
