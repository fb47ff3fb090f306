"""openloop.adapters.agent driving the real pi against the scripted model server.

What the fake agents in tests/test_agent.py assume about pi is checked here: the prompt arrives
through stdin, the system append through a file, costs match the models.json table, a failing
provider still exits 0, and a stalled stream is ours to stop, bash leftovers included.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from openloop.adapters.agent import AgentResult, Progress, make_adapter
from openloop.adapters.supervise import AgentRequest
from tests.support.model_server import (
    NO_RETRIES_SETTINGS,
    Hang,
    HttpError,
    Reply,
    Scenario,
    ScriptedModel,
    ToolCall,
    ToolCalls,
    pi_env,
    write_pi_models_json,
    write_pi_settings,
)

pytestmark = pytest.mark.e2e

COST = (3, 15)  # dollars per million input / output tokens
PROMPT = "Write hello.txt, then say done.\nSecond line: --not-a-flag @not-a-file\n"
RULES = "OpenLoop rule marker 5c1e: never push.\n"


def cost_of(prompt_tokens: int, completion_tokens: int) -> float:
    return (prompt_tokens * COST[0] + completion_tokens * COST[1]) / 1_000_000


def run(
    pi_bin: str,
    scenario: Scenario,
    repo: Path,
    home: Path,
    *,
    inactivity: float = 30,
    budget: float | None = None,
    events: list[Progress] | None = None,
) -> tuple[AgentResult, ScriptedModel]:
    with ScriptedModel(scenario) as model:
        write_pi_models_json(home, model.url, cost=COST)
        request = AgentRequest(
            cwd=repo,
            prompt=PROMPT,
            system_append=RULES,
            model="scripted",
            provider="mock",
            run_dir=home.parent / "run",
            run_timeout=60,
            inactivity_timeout=inactivity,
            budget_left_usd=budget,
            env=pi_env(home),
        )
        adapter = make_adapter("pi", pi_binary=pi_bin)
        result = adapter.run(request, events.append if events is not None else None)
    return result, model


def processes_with(needle: bytes) -> list[int]:
    """Live processes whose environment contains needle (each test has its own HOME)."""
    found = []
    for name in os.listdir("/proc"):
        try:
            if (
                not name.isdigit()
                or Path(f"/proc/{name}/stat").read_bytes().rsplit(b")")[-1].split()[0] == b"Z"
            ):
                continue
            if needle in Path(f"/proc/{name}/environ").read_bytes().split(b"\0"):
                found.append(int(name))
        except OSError:
            continue
    return found


def test_write_tool_call_completes_with_exact_cost(pi_bin, repo, home):
    (repo / ".pi").mkdir()
    (repo / ".pi" / "APPEND_SYSTEM.md").write_text("Project marker 9d2b.\n")
    scenario = Scenario(
        [
            ToolCalls(
                [ToolCall("write", {"path": "hello.txt", "content": "hi\n"})], usage=(1200, 40)
            ),
            Reply("All done.", usage=(1500, 20)),
        ]
    )
    events: list[Progress] = []
    result, model = run(pi_bin, scenario, repo, home, events=events)

    assert result.outcome == "completed", result
    assert (result.stop_reason, result.error, result.exit_code) == ("stop", None, 0)
    assert (repo / "hello.txt").read_text() == "hi\n"
    assert result.cost_usd == pytest.approx(cost_of(1200, 40) + cost_of(1500, 20), rel=1e-9)
    assert result.tokens == {
        "input": 2700,
        "output": 60,
        "cacheRead": 0,
        "cacheWrite": 0,
        "total": 2760,
    }
    assert (result.tool_calls, result.tool_errors) == (1, 0)
    assert result.final_text == "All done."

    # The prompt came through stdin verbatim (pi trims it), the rules through system.md, and
    # the project's own APPEND_SYSTEM.md survived our --append-system-prompt.
    first = model.requests[0]["messages"]
    assert first[-1]["content"] == [{"type": "text", "text": PROMPT.strip()}]
    system = first[0]["content"]
    assert "Project marker 9d2b." in system and RULES.strip() in system
    assert system.index("Project marker 9d2b.") < system.index(RULES.strip())

    transcript = (home.parent / "run" / "transcript.jsonl").read_text().splitlines()
    assert len(transcript) == len(events) and '"type":"session"' in transcript[0]
    assert events[-1].tool_calls == 1 and events[-1].last_tool == "write"
    print(f"\ncompleted run: {result.duration:.2f}s, {len(events)} events")


def test_persistent_http_error_is_agent_error(pi_bin, repo, home):
    write_pi_settings(home, NO_RETRIES_SETTINGS)
    result, model = run(pi_bin, Scenario([], after=HttpError(500)), repo, home)
    assert len(model.requests) == 1
    assert (result.outcome, result.stop_reason, result.exit_code) == ("agent-error", "error", 0)
    assert "500" in result.error and "scripted failure" in result.error
    assert result.cost_usd == 0
    print(f"\nhttp error run: {result.duration:.2f}s: {result.error}")


def test_exhausted_agent_retries_are_agent_error(pi_bin, repo, home):
    settings = {"retry": {"maxRetries": 1, "baseDelayMs": 10, "provider": {"maxRetries": 0}}}
    write_pi_settings(home, settings)
    result, model = run(pi_bin, Scenario([], after=HttpError(503)), repo, home)
    assert len(model.requests) == 2
    assert result.outcome == "agent-error"
    assert result.error.startswith("model failed after retries: ") and "503" in result.error


def test_hang_is_stalled_and_leaves_no_process_behind(pi_bin, repo, home):
    # The bash tool starts a background sleep in a session of its own before the model hangs:
    # killing pi's process group alone would leave it running.
    background = "nohup sleep 321 >/dev/null 2>&1 &\necho started"
    scenario = Scenario([ToolCalls([ToolCall("bash", {"command": background})]), Hang()])
    started = time.monotonic()
    result, _ = run(pi_bin, scenario, repo, home, inactivity=3)
    took = time.monotonic() - started

    assert (result.outcome, result.error) == ("stalled", "no event for 3s")
    assert result.exit_code == 143  # pi handles SIGTERM itself and exits 128 + 15
    assert took < 3 + 5
    assert processes_with(f"HOME={home}".encode()) == []
    print(f"\nstalled run: {result.duration:.2f}s (inactivity 3s)")


def test_cost_above_budget_left_is_budget_stopped(pi_bin, repo, home):
    def write(n: int) -> ToolCalls:
        call = ToolCall("write", {"path": f"f{n}.txt", "content": f"{n}\n"})
        return ToolCalls([call], usage=(10_000, 100))

    per_turn = cost_of(10_000, 100)  # $0.0315
    scenario = Scenario([write(n) for n in range(1, 6)] + [Reply("done")])
    result, model = run(pi_bin, scenario, repo, home, budget=0.05)

    assert result.outcome == "budget-stopped"
    assert result.cost_usd == pytest.approx(2 * per_turn, rel=1e-9)
    assert result.error == f"spent ${2 * per_turn:.4f}, exceeded budget left $0.0500"
    assert len(model.requests) <= 3
    assert not (repo / "f3.txt").exists() and not (repo / "f5.txt").exists()
    assert processes_with(f"HOME={home}".encode()) == []
    print(f"\nbudget run: {result.duration:.2f}s, {len(model.requests)} model requests")
