"""The agent adapters against small fake agents: scripts that print events, sleep, fork and exit.

The fake reads a list of [action, argument] pairs from $FAKE_ACTIONS, so each test states the
exact stream the adapter sees. The real pi is covered by tests/e2e/test_agent_pi.py.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from openloop.adapters import supervise
from openloop.adapters.agent import Progress, find_pi_binary, make_adapter
from openloop.adapters.environment import PI_MISSING
from openloop.adapters.supervise import AgentRequest
from openloop.errors import InputError

FAKE = f"""#!{sys.executable}
import json, os, signal, subprocess, sys, time
for kind, arg in json.load(open(os.environ["FAKE_ACTIONS"])):
    if kind == "out":
        print(arg if isinstance(arg, str) else json.dumps(arg), flush=True)
    elif kind == "err":
        print(arg, file=sys.stderr, flush=True)
    elif kind == "sleep":
        time.sleep(arg)
    elif kind == "exit":
        sys.exit(arg)
    elif kind == "ignore_term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    elif kind == "record":
        with open("/proc/self/cmdline", "rb") as f:
            cmdline = f.read().decode()
        facts = {{"argv": sys.argv, "cmdline": cmdline, "stdin": sys.stdin.read(),
                  "env": dict(os.environ), "cwd": os.getcwd()}}
        with open(arg, "w") as f:
            json.dump(facts, f)
    elif kind == "child":
        # A sleeping grandchild, optionally in a session of its own (as pi's bash tool does)
        # and optionally holding our stdout open.
        # The child writes its own pid as the host sees it (/proc is the host's even when the
        # agent runs in a PID namespace of its own).
        child = subprocess.Popen(
            [sys.executable, "-c", "import os, signal, sys, time; "
             + ("signal.signal(signal.SIGTERM, signal.SIG_IGN); " if arg.get("stubborn") else "")
             + "open(sys.argv[1] + '.tmp', 'w').write(os.readlink('/proc/self')); "
             + "os.rename(sys.argv[1] + '.tmp', sys.argv[1]); time.sleep(120)", arg["pidfile"]],
            start_new_session=arg.get("session", False),
            stdout=None if arg.get("hold") else subprocess.DEVNULL,
        )
        for _ in range(200):
            if os.path.exists(arg["pidfile"]):
                break
            time.sleep(0.01)
"""


def assistant(
    stop: str = "stop", cost: float = 0.001, text: str = "done", error: str | None = None
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": [{"type": "text", "text": text}],
        "usage": {
            "input": 100,
            "output": 10,
            "cacheRead": 5,
            "cacheWrite": 1,
            "totalTokens": 116,
            "cost": {"total": cost},
        },
        "stopReason": stop,
    }
    if error:
        message["errorMessage"] = error
    return {"type": "message_end", "message": message}


def tool(name: str = "write", error: bool = False) -> list[list[Any]]:
    return [
        ["out", {"type": "tool_execution_start", "toolName": name, "args": {}}],
        ["out", {"type": "tool_execution_end", "toolName": name, "isError": error}],
    ]


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_dead(pid: int, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    path = tmp_path / "bin" / "fake-agent"
    path.parent.mkdir()
    path.write_text(FAKE)
    path.chmod(0o755)
    return path


@pytest.fixture
def make_request(tmp_path: Path):
    cwd = tmp_path / "work"
    cwd.mkdir()

    def build(actions: list[list[Any]], **overrides: Any) -> AgentRequest:
        script = tmp_path / "actions.json"
        script.write_text(json.dumps(actions))
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path / "home")}
        env.update(overrides.pop("env", {}))
        fields: dict[str, Any] = {
            "cwd": cwd,
            "prompt": "Fix the bug in main.py.\n",
            "system_append": "Never push.\n",
            "model": "scripted",
            "provider": "mock",
            "run_dir": tmp_path / "run",
            "run_timeout": 30.0,
            "inactivity_timeout": 10.0,
            "budget_left_usd": None,
            "env": {**env, "FAKE_ACTIONS": str(script)},
        }
        fields.update(overrides)
        return AgentRequest(**fields)

    return build


def run_pi(fake: Path, request: AgentRequest, events: list[Progress] | None = None):
    adapter = make_adapter("pi", pi_binary=str(fake))
    return adapter.run(request, events.append if events is not None else None)


# --- outcomes from the pi event stream --------------------------------------------------------


def test_completed_run_tallies_events_and_keeps_raw_transcript(fake, make_request):
    actions = [
        ["out", {"type": "session", "cwd": "x"}],
        ["out", "some warning that is not JSON"],
        ["out", assistant("toolUse", cost=0.002, text="")],
        *tool("write"),
        *tool("bash", error=True),
        ["out", assistant("stop", cost=0.003, text="All fixed.")],
        ["out", {"type": "agent_end", "messages": []}],
    ]
    request = make_request(actions)
    events: list[Progress] = []
    result = run_pi(fake, request, events)

    assert result.outcome == "completed" and result.error is None
    assert result.stop_reason == "stop" and result.exit_code == 0
    assert result.final_text == "All fixed."
    assert result.cost_usd == pytest.approx(0.005)
    assert result.tokens == {
        "input": 200,
        "output": 20,
        "cacheRead": 10,
        "cacheWrite": 2,
        "total": 232,
    }
    assert (result.tool_calls, result.tool_errors) == (2, 1)
    # Every line, JSON or not, in order; the callback only for events.
    transcript = (request.run_dir / "transcript.jsonl").read_text().splitlines()
    assert transcript[1] == "some warning that is not JSON"
    assert [json.loads(line)["type"] for i, line in enumerate(transcript) if i != 1] == [
        "session",
        "message_end",
        "tool_execution_start",
        "tool_execution_end",
        "tool_execution_start",
        "tool_execution_end",
        "message_end",
        "agent_end",
    ]
    assert len(events) == 8
    assert [e.tool_calls for e in events][2:5] == [1, 1, 2]
    assert events[-1].last_tool == "bash" and events[-1].cost_usd == pytest.approx(0.005)
    assert all(a.elapsed <= b.elapsed for a, b in zip(events, events[1:], strict=False))


def test_transcript_is_written_while_the_agent_runs(fake, make_request):
    seen: list[str] = []
    request = make_request([["out", {"type": "agent_start"}], ["sleep", 0.2], ["out", assistant()]])

    def peek(progress: Progress) -> None:
        seen.append((request.run_dir / "transcript.jsonl").read_text())

    make_adapter("pi", pi_binary=str(fake)).run(request, peek)
    assert seen[0].count("\n") == 1 and "agent_start" in seen[0]


def test_prompt_goes_through_a_file_not_argv(fake, make_request, tmp_path):
    facts_path = tmp_path / "facts.json"
    request = make_request([["record", str(facts_path)], ["out", assistant()]])
    result = run_pi(fake, request)
    assert result.outcome == "completed"

    facts = json.loads(facts_path.read_text())
    assert "Fix the bug" not in facts["cmdline"]
    assert facts["stdin"] == "Fix the bug in main.py.\n"
    assert Path(facts["cwd"]) == request.cwd
    system = (request.run_dir / "system.md").resolve()
    assert facts["argv"][1:] == [
        "--mode",
        "json",
        "-p",
        "--provider",
        "mock",
        "--model",
        "scripted",
        "--append-system-prompt",
        str(system),
    ]
    assert system.read_text() == "Never push.\n"
    assert (request.run_dir / "prompt.md").read_text() == "Fix the bug in main.py.\n"
    assert facts["env"]["FAKE_ACTIONS"] and facts["env"]["OPENLOOP_AGENT_RUN"]


def test_project_append_system_file_is_kept_before_ours(fake, make_request, tmp_path):
    facts_path = tmp_path / "facts.json"
    request = make_request(
        [["record", str(facts_path)], ["out", assistant()]], model=None, provider=None
    )
    (request.cwd / ".pi").mkdir()
    (request.cwd / ".pi" / "APPEND_SYSTEM.md").write_text("project rules\n")
    run_pi(fake, request)
    argv = json.loads(facts_path.read_text())["argv"]
    assert argv[1:] == [
        "--mode",
        "json",
        "-p",
        "--append-system-prompt",
        str((request.cwd / ".pi" / "APPEND_SYSTEM.md").resolve()),
        "--append-system-prompt",
        str((request.run_dir / "system.md").resolve()),
    ]


def test_empty_system_append_passes_no_option(fake, make_request, tmp_path):
    facts_path = tmp_path / "facts.json"
    request = make_request([["record", str(facts_path)], ["out", assistant()]], system_append="")
    run_pi(fake, request)
    assert "--append-system-prompt" not in json.loads(facts_path.read_text())["argv"]
    assert not (request.run_dir / "system.md").exists()


@pytest.mark.parametrize(
    ("actions", "stop_reason", "error"),
    [
        ([["out", assistant("error", 0, "", "500 scripted failure")]], "error", "500 scripted"),
        ([["out", assistant("aborted", 0, "", "Request aborted")]], "aborted", "Request aborted"),
        ([["out", assistant("length", text="half an ans")]], "length", "output truncated"),
        ([["out", assistant("toolUse")], *tool()], "toolUse", "'toolUse' turn"),
        (
            [
                ["out", assistant("error", 0, "", "503")],
                ["out", {"type": "auto_retry_start", "attempt": 1}],
                ["out", assistant("error", 0, "", "503 again")],
                ["out", {"type": "auto_retry_end", "success": False, "finalError": "503 again"}],
            ],
            "error",
            "after retries: 503 again",
        ),
    ],
)
def test_failed_model_turns_are_agent_errors_despite_exit_zero(
    fake, make_request, actions, stop_reason, error
):
    result = run_pi(fake, make_request(actions))
    assert result.exit_code == 0
    assert (result.outcome, result.stop_reason) == ("agent-error", stop_reason)
    assert error in result.error


def test_retry_that_succeeds_is_completed(fake, make_request):
    actions = [
        ["out", assistant("error", 0, "", "503")],
        ["out", {"type": "auto_retry_start", "attempt": 1}],
        ["out", assistant("stop")],
        ["out", {"type": "auto_retry_end", "success": True}],
    ]
    assert run_pi(fake, make_request(actions)).outcome == "completed"


def test_no_answer_reports_exit_code_and_stderr_tail(fake, make_request):
    actions = [
        ["err", "loading..."],
        ["err", "Error: model 'scripted' not found"],
        ["exit", 1],
    ]
    result = run_pi(fake, make_request(actions))
    assert result.outcome == "agent-error" and result.exit_code == 1
    assert result.error.startswith("agent produced no answer (exit code 1)")
    assert "model 'scripted' not found" in result.error
    assert result.final_text is None and result.stop_reason is None


def test_missing_pi_is_an_environment_error_not_an_exception(make_request, tmp_path):
    request = make_request([], env={"PATH": str(tmp_path / "empty")})
    result = make_adapter("pi").run(request)
    assert (result.outcome, result.error) == ("environment-error", PI_MISSING)
    assert result.environment is not None and result.environment.kind == "agent-missing"
    result = make_adapter("pi", pi_binary=str(tmp_path / "nope" / "pi")).run(request)
    assert (result.outcome, result.error) == ("environment-error", PI_MISSING)


def test_find_pi_binary_uses_the_agent_environment(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    pi = bin_dir / "pi"
    pi.write_text("#!/bin/sh\n")
    pi.chmod(0o755)
    assert find_pi_binary({"PATH": str(bin_dir)}) == str(pi)
    assert find_pi_binary({"PATH": str(bin_dir), "OPENLOOP_PI_BIN": "/opt/pi"}) == "/opt/pi"
    assert find_pi_binary({"PATH": str(tmp_path)}) is None
    assert find_pi_binary({}) is None


def test_unknown_agent_type_is_an_input_error():
    with pytest.raises(InputError, match="unknown agent type 'vim'"):
        make_adapter("vim")


# --- limits and stopping ----------------------------------------------------------------------


def test_silence_is_stalled_and_the_grandchild_dies(fake, make_request, tmp_path):
    pidfile = tmp_path / "child.pid"
    actions = [
        ["child", {"pidfile": str(pidfile)}],
        ["out", {"type": "agent_start"}],
        ["sleep", 60],
    ]
    started = time.monotonic()
    result = run_pi(fake, make_request(actions, inactivity_timeout=0.5))
    took = time.monotonic() - started
    assert (result.outcome, result.error) == ("stalled", "no event for 0.5s")
    assert took < 3 and result.exit_code in (-15, 143)  # 143: through a PID namespace's shell
    assert wait_dead(int(pidfile.read_text()))


def test_wall_clock_is_timed_out_even_while_events_flow(fake, make_request):
    actions = [["out", {"type": "message_update"}], ["sleep", 0.05]] * 200
    result = run_pi(fake, make_request(actions, run_timeout=0.8, inactivity_timeout=5))
    assert result.outcome == "timed-out" and result.error == "still running after 0.8s"
    assert 0.8 <= result.duration < 3


def test_budget_stop_kills_as_soon_as_the_total_exceeds_it(fake, make_request):
    actions = [
        ["out", assistant("toolUse", cost=0.01)],
        ["out", assistant("toolUse", cost=0.01)],
        ["sleep", 30],
        ["out", assistant("stop", cost=0.01)],
    ]
    request = make_request(actions, budget_left_usd=0.015)
    started = time.monotonic()
    result = run_pi(fake, request)
    assert result.outcome == "budget-stopped"
    assert result.error == "spent $0.0200, exceeded budget left $0.0150"
    assert result.cost_usd == pytest.approx(0.02) and result.stop_reason == "toolUse"
    assert time.monotonic() - started < 5


def test_sigterm_ignored_means_sigkill_after_grace(fake, make_request, tmp_path, monkeypatch):
    monkeypatch.setattr(supervise, "KILL_GRACE", 0.5)
    pidfile = tmp_path / "child.pid"
    actions = [
        ["ignore_term", None],
        ["child", {"pidfile": str(pidfile), "stubborn": True}],
        ["out", {"type": "agent_start"}],
        ["sleep", 60],
    ]
    result = run_pi(fake, make_request(actions, inactivity_timeout=0.3))
    assert result.outcome == "stalled" and result.exit_code == -9
    assert result.duration < 3
    assert wait_dead(int(pidfile.read_text()))


def test_leftover_in_its_own_session_is_swept_after_a_normal_exit(fake, make_request, tmp_path):
    # pi's bash tool starts every command in a new session: a process-group kill misses it.
    pidfile = tmp_path / "child.pid"
    actions = [["child", {"pidfile": str(pidfile), "session": True}], ["out", assistant()]]
    result = run_pi(fake, make_request(actions))
    assert result.outcome == "completed"
    assert wait_dead(int(pidfile.read_text()))


def test_grandchild_holding_stdout_does_not_keep_the_run_open(
    fake, make_request, tmp_path, monkeypatch
):
    monkeypatch.setattr(supervise, "EXIT_DRAIN", 0.3)
    pidfile = tmp_path / "child.pid"
    actions = [["child", {"pidfile": str(pidfile), "hold": True}], ["out", assistant()]]
    result = run_pi(fake, make_request(actions, inactivity_timeout=20))
    assert result.outcome == "completed" and result.duration < 3
    assert wait_dead(int(pidfile.read_text()))


def test_raising_callback_stops_the_agent_and_propagates(fake, make_request, tmp_path):
    pidfile = tmp_path / "child.pid"
    actions = [
        ["child", {"pidfile": str(pidfile)}],
        ["out", {"type": "agent_start"}],
        ["sleep", 60],
    ]

    def explode(progress: Progress) -> None:
        raise RuntimeError("watchdog broke")

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="watchdog broke"):
        make_adapter("pi", pi_binary=str(fake)).run(make_request(actions), explode)
    assert time.monotonic() - started < 5
    assert wait_dead(int(pidfile.read_text()))


# --- other agents -----------------------------------------------------------------------------


def install(fake: Path, name: str) -> Path:
    link = fake.parent / name
    link.symlink_to(fake)
    return link


def test_custom_command_gets_prompt_on_stdin_and_env(fake, make_request, tmp_path):
    facts_path = tmp_path / "facts.json"
    actions = [["record", str(facts_path)], ["out", "working"], ["out", "finished ok"]]
    request = make_request(actions, command=f"{fake} --flag 'two words'")
    events: list[Progress] = []
    adapter = make_adapter("custom")
    assert (adapter.reports_cost, adapter.reports_progress) == (False, False)
    result = adapter.run(request, events.append)

    assert result.outcome == "completed" and result.exit_code == 0
    assert result.final_text == "working\nfinished ok" and result.cost_usd == 0
    assert len(events) == 2 and events[0].event_type == "output"
    facts = json.loads(facts_path.read_text())
    assert facts["argv"][1:] == ["--flag", "two words"]
    assert facts["stdin"] == "Fix the bug in main.py.\n"
    assert facts["env"]["OPENLOOP_PROMPT_FILE"] == str((request.run_dir / "prompt.md").resolve())
    assert Path(facts["env"]["OPENLOOP_SYSTEM_FILE"]).read_text() == "Never push.\n"
    assert facts["env"]["OPENLOOP_MODEL"] == "scripted"
    # Plain output is framed as events, so the transcript is JSON lines for every agent.
    transcript = (request.run_dir / "transcript.jsonl").read_text().splitlines()
    assert json.loads(transcript[1]) == {"type": "output", "text": "finished ok"}


def test_custom_command_failure_and_stall(fake, make_request):
    request = make_request([["err", "boom"], ["exit", 3]], command=str(fake))
    result = make_adapter("custom").run(request)
    assert (result.outcome, result.exit_code) == ("agent-error", 3)
    assert result.error == "exited with code 3: boom"

    request = make_request([["out", "x"], ["sleep", 60]], command=str(fake), inactivity_timeout=0.4)
    assert make_adapter("custom").run(request).outcome == "stalled"

    assert make_adapter("custom").run(make_request([])).error == "the custom agent needs a command"
    missing = make_adapter("custom").run(make_request([], command="no-such-agent --x"))
    assert missing.outcome == "environment-error"
    assert missing.error == "'no-such-agent' not found: install it or put it on PATH"


@pytest.mark.parametrize(
    ("name", "argv_tail", "stdin"),
    [
        (
            "claude",
            ["-p", "--output-format", "text", "--model", "scripted"]
            + ["--append-system-prompt", "Never push.\n"],
            "Fix the bug in main.py.\n",
        ),
        ("codex", ["exec", "--model", "scripted", "-"], "Never push.\n\n\n---\n\nFix the bug"),
        ("aider", ["--yes", "--no-auto-commits", "--model", "scripted", "--message-file"], ""),
    ],
)
def test_known_agents_command_lines(fake, make_request, tmp_path, name, argv_tail, stdin):
    install(fake, name)
    facts_path = tmp_path / "facts.json"
    request = make_request(
        [["record", str(facts_path)]], env={"PATH": f"{fake.parent}:{os.environ['PATH']}"}
    )
    result = make_adapter(name).run(request)
    assert result.outcome == "completed", result.error
    facts = json.loads(facts_path.read_text())
    assert facts["argv"][1 : 1 + len(argv_tail)] == argv_tail
    assert facts["stdin"].startswith(stdin)
    assert "Fix the bug" not in facts["cmdline"]
    if name == "aider":
        prompt = Path(facts["argv"][-1]).read_text()
        assert prompt.startswith("Never push.") and prompt.endswith("Fix the bug in main.py.\n")


def test_known_agent_missing_binary(make_request, tmp_path):
    request = make_request([], env={"PATH": str(tmp_path)})
    result = make_adapter("claude").run(request)
    assert result.outcome == "environment-error"
    assert result.error == "'claude' not found: install it or put it on PATH"
