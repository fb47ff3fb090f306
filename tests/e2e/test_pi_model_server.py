"""The real `pi` binary against the scripted model server.

These pin down the pi behaviour OpenLoop relies on (tool calls edit the repo, costs come from the
models.json table, failures show up as `stopReason: "error"` and not as an exit code), so a pi
upgrade that changes any of it fails here first.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

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
    write_file_scenario,
    write_pi_models_json,
    write_pi_settings,
)

pytestmark = pytest.mark.e2e

PI_TIMEOUT = 60  # seconds; a healthy scripted run takes one or two
COST = (3, 15)  # dollars per million input / output tokens
# One request, no retries: pi's defaults would otherwise spend ~20 s retrying a persistent 500.


@dataclass
class PiRun:
    returncode: int
    events: list[dict[str, Any]]
    stderr: str

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == kind]

    def assistant_messages(self) -> list[dict[str, Any]]:
        return [
            e["message"]
            for e in self.of_type("message_end")
            if e["message"].get("role") == "assistant"
        ]


def pi_command(pi: Path, prompt: str) -> list[str]:
    return [
        str(pi),
        "--offline",
        "--provider",
        "mock",
        "--model",
        "scripted",
        "--mode",
        "json",
        "-p",
        prompt,
    ]


def run_pi(pi: Path, repo: Path, home: Path, prompt: str = "Do the task.") -> PiRun:
    # stdin from /dev/null: print mode is known not to exit while stdin stays open.
    proc = subprocess.run(
        pi_command(pi, prompt),
        cwd=repo,
        env=pi_env(home),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=PI_TIMEOUT,
    )
    return PiRun(proc.returncode, parse_events(proc.stdout), proc.stderr)


def parse_events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def expected_cost(prompt_tokens: int, completion_tokens: int) -> float:
    return (prompt_tokens * COST[0] + completion_tokens * COST[1]) / 1_000_000


def test_write_tool_call_edits_repo_and_reports_cost(pi_bin: str, repo: Path, home: Path):
    content = "hello from the scripted model\n"
    scenario = Scenario(
        [
            ToolCalls(
                [ToolCall("write", {"path": "notes/hello.txt", "content": content})],
                usage=(1200, 40),
            ),
            Reply("Wrote the file."),
        ]
    )
    with ScriptedModel(scenario) as model:
        write_pi_models_json(home, model.url, cost=COST)
        run = run_pi(pi_bin, repo, home)

    assert run.returncode == 0, run.stderr
    assert (repo / "notes" / "hello.txt").read_text() == content
    assert run.events[0]["type"] == "session"
    assert Path(run.events[0]["cwd"]).resolve() == repo.resolve()

    [tool_end] = run.of_type("tool_execution_end")
    assert tool_end["toolName"] == "write" and tool_end["isError"] is False

    first, last = run.assistant_messages()
    assert (first["stopReason"], last["stopReason"]) == ("toolUse", "stop")
    assert first["usage"]["input"] == 1200 and first["usage"]["output"] == 40
    assert first["usage"]["cost"]["total"] == pytest.approx(expected_cost(1200, 40), rel=1e-9)
    # 900 / 30 is the server's default usage, the figure the shared notes quote (0.00315).
    assert last["usage"]["cost"]["total"] == pytest.approx(expected_cost(900, 30), rel=1e-9)
    assert run.of_type("agent_end"), "a finished run ends with agent_end"


def test_http_error_ends_with_error_stop_reason_and_exit_zero(pi_bin: str, repo: Path, home: Path):
    scenario = Scenario([HttpError(500)], after=HttpError(500))
    with ScriptedModel(scenario) as model:
        write_pi_models_json(home, model.url, cost=COST)
        write_pi_settings(home, NO_RETRIES_SETTINGS)
        run = run_pi(pi_bin, repo, home)

    # The trap: pi reports a failed run with exit code 0; only the events tell.
    assert run.returncode == 0
    assert len(model.requests) == 1
    last = run.assistant_messages()[-1]
    assert last["stopReason"] == "error"
    assert "500" in last["errorMessage"]
    assert last["usage"]["cost"]["total"] == 0
    assert run.of_type("agent_end")[-1]["messages"][-1]["stopReason"] == "error"


def test_single_http_error_is_retried_silently_by_default(pi_bin: str, repo: Path, home: Path):
    # The OpenAI SDK inside pi retries a 5xx itself (twice by default) before pi's own
    # agent-level retry sees anything, so a one-off 500 leaves no trace in the events.
    with ScriptedModel(Scenario([HttpError(500)])) as model:
        write_pi_models_json(home, model.url, cost=COST)
        run = run_pi(pi_bin, repo, home)

    assert len(model.requests) == 2
    assert not run.of_type("auto_retry_start")
    assert [m["stopReason"] for m in run.assistant_messages()] == ["stop"]


def test_agent_level_retry_emits_retry_events(pi_bin: str, repo: Path, home: Path):
    scenario = Scenario([HttpError(503)], after=HttpError(503))
    with ScriptedModel(scenario) as model:
        write_pi_models_json(home, model.url, cost=COST)
        write_pi_settings(
            home, {"retry": {"maxRetries": 1, "baseDelayMs": 10, "provider": {"maxRetries": 0}}}
        )
        run = run_pi(pi_bin, repo, home)

    assert run.returncode == 0
    assert len(model.requests) == 2
    [start] = run.of_type("auto_retry_start")
    assert (start["attempt"], start["maxAttempts"]) == (1, 1)
    [end] = run.of_type("auto_retry_end")
    assert end["success"] is False
    assert [m["stopReason"] for m in run.assistant_messages()] == ["error", "error"]
    # Each attempt is a whole agent run: a reader of the stream must not stop at the first
    # agent_end, and on final failure the stream ends with auto_retry_end, not agent_end.
    assert len(run.of_type("agent_end")) == 2
    assert run.events[-1]["type"] == "auto_retry_end"


def test_server_records_what_pi_sent(pi_bin: str, repo: Path, home: Path):
    (repo / ".pi").mkdir()
    (repo / ".pi" / "APPEND_SYSTEM.md").write_text("Marker: openloop-e2e-7f3a.\n")
    with ScriptedModel(write_file_scenario("out.txt", "x\n")) as model:
        write_pi_models_json(home, model.url, cost=COST)
        run = run_pi(pi_bin, repo, home, prompt="Write out.txt please.")

    assert run.returncode == 0, run.stderr
    first, second = model.requests
    assert first["stream"] is True and first["model"] == "scripted"
    assert {t["function"]["name"] for t in first["tools"]} >= {"read", "bash", "edit", "write"}
    system = first["messages"][0]
    assert system["role"] == "system" and "openloop-e2e-7f3a" in system["content"]
    assert first["messages"][-1] == {
        "role": "user",
        "content": [{"type": "text", "text": "Write out.txt please."}],
    }

    tool_result = second["messages"][-1]
    [assistant_call] = [m for m in second["messages"] if m.get("tool_calls")]
    assert tool_result["role"] == "tool"
    assert tool_result["tool_call_id"] == assistant_call["tool_calls"][0]["id"]


def test_stalled_stream_is_not_aborted_by_pi(pi_bin: str, repo: Path, home: Path):
    # OpenLoop must bring its own inactivity watchdog: pi waits on a stalled stream forever,
    # even with retry.provider.timeoutMs set, but a SIGTERM ends it at once.
    with ScriptedModel(Scenario([Hang()])) as model:
        write_pi_models_json(home, model.url, cost=COST)
        write_pi_settings(home, {"retry": {"provider": {"timeoutMs": 1000}}})
        proc = subprocess.Popen(
            pi_command(pi_bin, "Do the task."),
            cwd=repo,
            env=pi_env(home),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + PI_TIMEOUT
            while not model.requests and time.monotonic() < deadline:
                time.sleep(0.05)
            assert model.requests, "pi never called the model"
            with pytest.raises(subprocess.TimeoutExpired):
                proc.wait(timeout=3)
            proc.send_signal(signal.SIGTERM)
            stdout, _ = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()

    assert proc.returncode in (143, -signal.SIGTERM)
    events = parse_events(stdout)
    assert not [e for e in events if e["type"] == "agent_end"]


def test_server_lists_model_and_close_unblocks_hang():
    # No pi needed: guards the server's own promises that the tests above rely on.
    # An empty ProxyHandler: a proxy from the environment must not intercept loopback.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with ScriptedModel(Scenario([Hang()])) as model:
        with opener.open(model.url + "/models", timeout=5) as response:
            assert json.load(response)["data"][0]["id"] == "scripted"
        request = urllib.request.Request(
            model.url + "/chat/completions",
            data=b'{"stream": true}',
            headers={"Content-Type": "application/json"},
        )
        received: list[bytes] = []

        def consume() -> None:
            with opener.open(request, timeout=30) as response:
                received.append(response.read())

        client = threading.Thread(target=consume, daemon=True)
        client.start()
        time.sleep(0.3)
        started = time.monotonic()
    client.join(timeout=5)
    assert not client.is_alive() and time.monotonic() - started < 2
    assert received and received[0].startswith(b"data: {") and b"[DONE]" not in received[0]
