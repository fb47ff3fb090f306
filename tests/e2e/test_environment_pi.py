"""Environment failures with the real pi: what it prints when the provider refuses the key or
the rate limit is hit, when it has no key or does not know the provider, when node is missing,
and what `openloop run-once` then does (no attempt counted, the project backs off, `status`
and `doctor` say why).

Observed with pi 0.73 (exit code 0 for HTTP failures, the failure in the last assistant
message's errorMessage as "<status> <provider message>"):
    HttpError(401, "Incorrect API key provided: sk-x")  -> "401 Incorrect API key provided: sk-x"
    HttpError(403, "Forbidden")                         -> "403 Forbidden"
    HttpError(429, "Rate limit reached. Please try again in 20s.")
                                  -> "429 Rate limit reached. Please try again in 20s."
    (with pi's retries on, 429 is retried and ends in auto_retry_end.finalError; 401 is not)
before any event, exit 1, on stderr:
    no key for a built-in provider -> "No API key found for anthropic.\\n\\nUse /login ..."
    no models.json for "mock"      -> 'Error: Unknown provider "mock". Use --list-models ...'
and without node on PATH, exit 127: "/usr/bin/env: 'node': No such file or directory".
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from openloop.adapters.agent import AgentResult, make_adapter
from openloop.adapters.supervise import AgentRequest
from tests.support.model_server import (
    NO_RETRIES_SETTINGS,
    HttpError,
    Scenario,
    ScriptedModel,
    pi_env,
    write_pi_models_json,
    write_pi_settings,
)

pytestmark = pytest.mark.e2e


def run_pi(
    pi_bin: str,
    repo: Path,
    home: Path,
    *,
    provider: str = "mock",
    model: str = "scripted",
    env: dict[str, str] | None = None,
) -> AgentResult:
    request = AgentRequest(
        cwd=repo,
        prompt="Say hi.\n",
        system_append="",
        model=model,
        provider=provider,
        run_dir=home.parent / "run",
        run_timeout=60,
        inactivity_timeout=30,
        budget_left_usd=None,
        env=pi_env(home, env),
    )
    return make_adapter("pi", pi_binary=pi_bin).run(request)


def against(pi_bin: str, repo: Path, home: Path, turn: HttpError, settings=NO_RETRIES_SETTINGS):
    write_pi_settings(home, settings)
    with ScriptedModel(Scenario([], after=turn)) as model:
        write_pi_models_json(home, model.url)
        return run_pi(pi_bin, repo, home), model


# --- the adapter against the real pi --------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "message"), [(401, "Incorrect API key provided: sk-x"), (403, "Forbidden")]
)
def test_a_refused_key_is_an_auth_environment_error(pi_bin, repo, home, status, message):
    result, model = against(pi_bin, repo, home, HttpError(status, message))
    assert len(model.requests) == 1
    assert (result.outcome, result.environment.kind) == ("environment-error", "auth")
    assert result.environment.what == f"the provider refused the API key ({status} {message})"
    assert result.environment.fix.startswith("set it in ")


def test_a_rate_limit_is_a_quota_error_with_the_providers_retry_time(pi_bin, repo, home):
    turn = HttpError(429, "Rate limit reached. Please try again in 20s.")
    result, _ = against(pi_bin, repo, home, turn)
    assert (result.outcome, result.environment.kind) == ("environment-error", "quota")
    assert result.environment.retry_after == 20


def test_a_rate_limit_after_pis_own_retries_is_still_a_quota_error(pi_bin, repo, home):
    settings = {"retry": {"maxRetries": 1, "baseDelayMs": 10, "provider": {"maxRetries": 0}}}
    turn = HttpError(429, "You exceeded your current quota (insufficient_quota).")
    result, model = against(pi_bin, repo, home, turn, settings)
    assert len(model.requests) == 2
    assert (result.outcome, result.environment.kind) == ("environment-error", "quota")


def test_a_server_error_is_still_the_tasks_agent_error(pi_bin, repo, home):
    result, _ = against(pi_bin, repo, home, HttpError(500))
    assert (result.outcome, result.environment) == ("agent-error", None)


def test_no_api_key_is_an_auth_environment_error(pi_bin, repo, home):
    write_pi_settings(home, NO_RETRIES_SETTINGS)
    result = run_pi(pi_bin, repo, home, provider="anthropic", model="claude-sonnet-4-5")
    assert (result.outcome, result.environment.kind) == ("environment-error", "auth")
    assert result.environment.what == "No API key found for anthropic"


def test_a_provider_pi_does_not_know_is_an_environment_error(pi_bin, repo, home):
    write_pi_settings(home, NO_RETRIES_SETTINGS)  # and no models.json
    result = run_pi(pi_bin, repo, home)
    assert (result.outcome, result.environment.kind) == ("environment-error", "agent-config")
    assert 'Unknown provider "mock"' in result.error


def test_pi_without_node_is_an_environment_error(pi_bin, repo, home, tmp_path):
    empty = tmp_path / "no-node"
    empty.mkdir()
    result = run_pi(pi_bin, repo, home, env={"PATH": str(empty)})
    assert result.exit_code == 127
    assert (result.outcome, result.environment.kind) == ("environment-error", "node")
    assert result.error.startswith("pi cannot start: Node.js not found: install Node.js 20")


# --- openloop run-once --------------------------------------------------------------------------


def run_once(world) -> tuple[int, dict]:
    proc = world.openloop("run-once", "-p", "demo", "--json")
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def status(world) -> tuple[str, dict]:
    text = world.openloop("status", check=True).stdout
    [row] = json.loads(world.openloop("status", "--json", check=True).stdout)["projects"]
    return text, row


def test_pi_missing_costs_no_attempt_and_the_project_backs_off(world):
    world.env["OPENLOOP_PI_BIN"] = str(world.root / "nowhere" / "pi")
    world.openloop("task", "add", "--title", "Add subtract", check=True)
    code, record = run_once(world)
    assert code == 19 and record["outcome"] == "environment-error"
    assert record["reason"] == "'pi' not found: install it or set OPENLOOP_PI_BIN"
    task = world.task("add-subtract")
    assert (task["status"], task["attempts"]) == ("ready", 0)

    text, row = status(world)
    assert "! 'pi' not found: install it or set OPENLOOP_PI_BIN; retry at " in text
    assert row["environmentError"]["kind"] == "agent-missing"

    code, skipped = run_once(world)  # within the backoff: skipped, nothing run
    assert code == 0 and skipped["outcome"] == "skipped"
    assert skipped["reason"].startswith("'pi' not found: install it or set OPENLOOP_PI_BIN;")
    assert world.task("add-subtract")["attempts"] == 0
    checks = {c["name"]: c for c in json.loads(world.openloop("doctor", "--json").stdout)}
    assert not checks["agent demo"]["ok"]


def test_a_refused_api_key_costs_no_attempt_and_the_project_backs_off(world):
    world.openloop("task", "add", "--title", "Add subtract", check=True)
    scenario = Scenario([], after=HttpError(401, "Incorrect API key provided: sk-x"))
    with ScriptedModel(scenario) as model:
        world.point_at(model.url)
        code, record = run_once(world)
        assert code == 19 and record["outcome"] == "environment-error"
        assert len(model.requests) == 1
        task = world.task("add-subtract")
        assert (task["status"], task["attempts"], task["noProgressStreak"]) == ("ready", 0, 0)

        text, row = status(world)
        assert "! the provider refused the API key (401 Incorrect API key provided: sk-x)" in text
        assert row["environmentError"]["kind"] == "auth"
        key_file = world.root / "openloop" / "environment"
        assert row["environmentError"]["fix"] == f"set it in {key_file}"

        code, skipped = run_once(world)
        assert code == 0 and skipped["outcome"] == "skipped"
        assert len(model.requests) == 1  # the backoff kept pi from calling the model again

        # Fixed (here: nothing to fix, just told so): resume retries at once.
        world.openloop("resume", "-p", "demo", check=True)
        code, again = run_once(world)
        assert code == 19 and len(model.requests) == 2
    assert world.task("add-subtract")["attempts"] == 0
