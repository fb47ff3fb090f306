"""Run one coding agent (pi, or another CLI) on one task, unattended, and judge how it ended.

pi exits 0 even when the run failed and never gives up on a stalled model stream, so its outcome
comes from its `--mode json` events and the clocks are ours. Other agents are plain commands:
exit code and output lines only.

Stopping an agent kills its process group and every process still carrying this run's marker
variable: pi starts each bash command in a session of its own, out of reach of a group kill.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from openloop.adapters.environment import (
    EnvironmentProblem,
    classify_pi_failure,
    pi_missing,
    unstartable,
)
from openloop.adapters.supervise import STDERR, AgentRequest, Ended, supervise
from openloop.errors import InputError

OUTCOMES = (
    "completed",
    "agent-error",
    "stalled",
    "timed-out",
    "budget-stopped",
    "environment-error",
    "interrupted",
)
AGENT_TYPES = ("pi", "claude", "codex", "aider", "custom")
PROMPT, SYSTEM = "prompt.md", "system.md"
TOKEN_KEYS = ("input", "output", "cacheRead", "cacheWrite", "total")


@dataclass(frozen=True)
class Progress:
    event_type: str  # pi's event type; "output" for other agents
    tool_calls: int
    cost_usd: float
    elapsed: float
    last_tool: str | None


@dataclass(frozen=True)
class AgentResult:
    outcome: str  # one of OUTCOMES
    stop_reason: str | None  # the last assistant message's stopReason (pi only)
    error: str | None  # why the outcome is not "completed"
    exit_code: int | None  # negative: killed by that signal
    cost_usd: float
    tokens: dict[str, int]  # TOKEN_KEYS
    tool_calls: int
    tool_errors: int
    duration: float
    final_text: str | None  # pi: the last assistant text; others: the output's tail
    environment: EnvironmentProblem | None = None  # set when outcome is "environment-error"


OnEvent = Callable[[Progress], None]


class AgentAdapter(Protocol):
    name: str
    reports_cost: bool
    reports_progress: bool

    def run(self, request: AgentRequest, on_event: OnEvent | None = None) -> AgentResult: ...


def make_adapter(agent_type: str, *, pi_binary: str | None = None) -> AgentAdapter:
    if agent_type == "pi":
        return PiAdapter(pi_binary)
    if agent_type in AGENT_TYPES:
        return CommandAdapter(agent_type)
    raise InputError(f"unknown agent type {agent_type!r}: expected one of {', '.join(AGENT_TYPES)}")


def find_pi_binary(env: Mapping[str, str]) -> str | None:
    # The agent's PATH, not ours: it is the environment pi will run in.
    return env.get("OPENLOOP_PI_BIN") or shutil.which("pi", path=env.get("PATH", ""))


# --- pi ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PiAdapter:
    binary: str | None = None  # None: find_pi_binary(request.env) at run time
    name: str = "pi"
    reports_cost: bool = True
    reports_progress: bool = True

    def run(self, request: AgentRequest, on_event: OnEvent | None = None) -> AgentResult:
        prompt, system = _write_inputs(request, request.prompt)
        binary = self.binary or find_pi_binary(request.env)
        if not binary:
            return _environment_result(pi_missing())
        argv = [binary, "--mode", "json", "-p"]
        argv += ["--provider", request.provider] if request.provider else []
        argv += ["--model", request.model] if request.model else []
        for source in _append_sources(request, system):
            argv += ["--append-system-prompt", str(source)]
        tally, budget, check = _PiTally(), request.budget_left_usd, request.budget_check

        def on_line(raw: bytes, elapsed: float) -> str | None:
            event = _parse_event(raw)
            if event is None:
                return None  # kept in the transcript, otherwise not ours to interpret
            before = tally.cost
            _tally(tally, event)
            # The shared budget first: a stop must not wait for anything (on_event is a UI).
            if check is not None and tally.cost != before and (reason := check(tally.cost)):
                return reason
            if on_event is not None:
                kind = str(event["type"])
                on_event(Progress(kind, tally.tool_calls, tally.cost, elapsed, tally.last_tool))
            if budget is not None and tally.cost > budget:
                return f"spent ${tally.cost:.4f}, exceeded budget left ${budget:.4f}"
            return None

        def poll() -> str | None:
            return check(tally.cost) if check is not None else None

        # pi reads a non-TTY stdin to its end and takes it verbatim as the prompt: out of argv
        # (ps, ARG_MAX) and, unlike `@file`, not wrapped in <file name=...> tags.
        try:
            ended = supervise(argv, request, prompt, request.env, on_line, poll=poll)
        except OSError as err:
            if problem := unstartable(err, binary):
                return _environment_result(problem)
            return _result("agent-error", f"cannot start pi: {err}")
        last = tally.last_assistant or {}
        outcome, error, problem = ended.forced, ended.error, None
        if outcome is None:
            outcome, error = _judge_pi(tally, ended.exit_code, _stderr_tail(request))
            # Only pi's own account of a provider failure counts as the environment's fault: a
            # pi that was killed, or a stream with events written while a tool ran (the agent
            # can write to pi's stdout through /proc), is the task's failure, not a free retry.
            own_end = ended.exit_code == 0 and not tally.forged
            no_turn = tally.last_assistant is None  # failed before any tool could run
            if (
                outcome == "agent-error"
                and (own_end or no_turn)
                and (problem := _pi_environment(tally, request))
            ):
                outcome, error = "environment-error", problem.message
        return _result(
            outcome,
            error,
            ended,
            environment=problem,
            stop_reason=last.get("stopReason"),
            cost_usd=tally.cost,
            tokens=dict(tally.tokens),
            tool_calls=tally.tool_calls,
            tool_errors=tally.tool_errors,
            final_text=_message_text(last),
        )


@dataclass
class _PiTally:
    """Running totals of one pi event stream (mutable: it changes with every event)."""

    tool_calls: int = 0
    tool_errors: int = 0
    cost: float = 0.0
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TOKEN_KEYS, 0))
    last_tool: str | None = None
    last_assistant: dict[str, Any] | None = None
    retry_failure: str | None = None
    tools_running: int = 0  # pi emits no assistant message while one of its tools runs
    forged: bool = False  # an assistant message arrived while a tool ran: not pi's


def _tally(tally: _PiTally, event: dict[str, Any]) -> None:
    kind, message = event["type"], event.get("message")
    if kind == "tool_execution_start":
        tally.tool_calls += 1
        tally.tools_running += 1
        tally.last_tool = event.get("toolName")
    elif kind == "tool_execution_end":
        tally.tools_running = max(0, tally.tools_running - 1)
        tally.tool_errors += 1 if event.get("isError") else 0
    elif kind == "message_end" and isinstance(message, dict) and message.get("role") == "assistant":
        # The agent's tools can write lines into pi's stdout (/proc/<pi>/fd/1). A line can only
        # add cost (negative or non-finite figures count as 0), so the budget errs on the safe
        # side; one written while a tool runs never speaks for pi (its stop reason and error).
        if tally.tools_running:
            tally.forged = True
        else:
            tally.last_assistant = message
        usage = message.get("usage") if isinstance(message.get("usage"), dict) else {}
        cost = usage.get("cost") if isinstance(usage.get("cost"), dict) else {}
        tally.cost += _number(cost.get("total"))
        for key, source in zip(TOKEN_KEYS, TOKEN_KEYS[:4] + ("totalTokens",), strict=True):
            tally.tokens[key] += int(_number(usage.get(source)))
        if message.get("stopReason") != "error":
            tally.retry_failure = None  # a retry succeeded after all
    elif kind == "auto_retry_end" and event.get("success") is False:
        tally.retry_failure = str(event.get("finalError") or "retries exhausted")


def _judge_pi(tally: _PiTally, exit_code: int | None, stderr: str) -> tuple[str, str | None]:
    last = tally.last_assistant
    if last is None:
        detail = f": {stderr}" if stderr else ""
        return "agent-error", f"agent produced no answer (exit code {exit_code}){detail}"
    reason = last.get("stopReason")
    if tally.retry_failure is not None:
        return "agent-error", f"model failed after retries: {tally.retry_failure}"
    if reason == "stop":
        return "completed", None
    if reason in ("error", "aborted"):
        return "agent-error", str(last.get("errorMessage") or f"model turn {reason}")
    # "length": the answer was cut off, maybe mid-tool-call; not a task the agent finished.
    if reason == "length":
        return "agent-error", "output truncated: the model hit its output token limit"
    return "agent-error", f"agent ended after a {reason!r} turn (exit code {exit_code})"


def _pi_environment(tally: _PiTally, request: AgentRequest) -> EnvironmentProblem | None:
    stderr = _stderr_tail(request, limit=4000, lines=20) if tally.last_assistant is None else ""
    return classify_pi_failure(tally.last_assistant, tally.retry_failure, stderr, request.env)


def _environment_result(problem: EnvironmentProblem, ended: Ended | None = None) -> AgentResult:
    return _result("environment-error", problem.message, ended, environment=problem)


def _append_sources(request: AgentRequest, system: Path | None) -> list[Path]:
    """pi ignores its usual APPEND_SYSTEM.md once --append-system-prompt is given, so pass that
    file on too: our rules then add to the project's instead of replacing them."""
    if system is None:
        return []
    home_dir = Path(request.env.get("HOME", "~")) / ".pi" / "agent"
    agent_dir = Path(request.env.get("PI_CODING_AGENT_DIR") or home_dir).expanduser()
    for found in (request.cwd / ".pi" / "APPEND_SYSTEM.md", agent_dir / "APPEND_SYSTEM.md"):
        if found.is_file():
            return [found.resolve(), system]
    return [system]


# --- other agents -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CommandAdapter:
    """claude, codex, aider or a custom command: exit code 0 is success, output is progress."""

    name: str
    reports_cost: bool = False
    reports_progress: bool = False

    def run(self, request: AgentRequest, on_event: OnEvent | None = None) -> AgentResult:
        # codex and aider have no system-prompt option: the rules go first in the prompt.
        folded = self.name in ("codex", "aider") and request.system_append.strip()
        text = f"{request.system_append}\n\n---\n\n{request.prompt}" if folded else request.prompt
        prompt, system = _write_inputs(request, text)
        argv, stdin, env = self._command(request, prompt, system)
        if not argv:
            return _result("agent-error", "the custom agent needs a command")
        tail: list[str] = []

        def on_line(raw: bytes, elapsed: float) -> None:
            tail.append(raw.decode("utf-8", "replace"))
            del tail[:-200]
            if on_event is not None:
                on_event(Progress("output", 0, 0.0, elapsed, None))

        try:
            # No cost reported: the shared budget can only stop it once others spent the day's.
            poll = (lambda: request.budget_check(0.0)) if request.budget_check else None
            ended = supervise(argv, request, stdin, env, on_line, frame=True, poll=poll)
        except OSError as err:
            if isinstance(err, FileNotFoundError) and err.filename == argv[0]:
                return _environment_result(
                    EnvironmentProblem(
                        "agent-missing", f"{argv[0]!r} not found", "install it or put it on PATH"
                    )
                )
            return _result("agent-error", f"cannot start {argv[0]!r}: {err}")
        outcome, error = ended.forced, ended.error
        if outcome is None and ended.exit_code == 0:
            outcome = "completed"
        elif outcome is None:
            code = ended.exit_code or 0
            how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
            stderr = _stderr_tail(request)
            outcome, error = "agent-error", f"{how}: {stderr}" if stderr else how
        return _result(outcome, error, ended, final_text="".join(tail).strip()[-4000:] or None)

    def _command(
        self, request: AgentRequest, prompt: Path, system: Path | None
    ) -> tuple[list[str], Path, dict[str, str]]:
        """(argv, stdin, env); none of these agents reports cost or tool calls."""
        model = ["--model", request.model] if request.model else []
        env = dict(request.env)
        if self.name == "claude":
            rules = ["--append-system-prompt", request.system_append] if system else []
            return ["claude", "-p", "--output-format", "text", *model, *rules], prompt, env
        if self.name == "codex":
            return ["codex", "exec", *model, "-"], prompt, env
        if self.name == "aider":
            argv = ["aider", "--yes", "--no-auto-commits", *model, "--message-file", str(prompt)]
            return argv, Path(os.devnull), env
        env["OPENLOOP_PROMPT_FILE"] = str(prompt)
        for var, value in (
            ("OPENLOOP_SYSTEM_FILE", system),
            ("OPENLOOP_MODEL", request.model),
            ("OPENLOOP_PROVIDER", request.provider),
        ):
            if value:
                env[var] = str(value)
        return shlex.split(request.command or ""), prompt, env


# --- small helpers ----------------------------------------------------------------------------


def _write_inputs(request: AgentRequest, prompt_text: str) -> tuple[Path, Path | None]:
    """prompt.md (what the agent gets as its task) and system.md (the rules, if any)."""
    run_dir = request.run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / PROMPT).write_text(prompt_text)
    if not request.system_append.strip():
        return run_dir / PROMPT, None
    (run_dir / SYSTEM).write_text(request.system_append)
    return run_dir / PROMPT, run_dir / SYSTEM


def _result(
    outcome: str, error: str | None, ended: Ended | None = None, **fields: Any
) -> AgentResult:
    blank = {"stop_reason": None, "cost_usd": 0.0, "tokens": dict.fromkeys(TOKEN_KEYS, 0)}
    blank |= {"tool_calls": 0, "tool_errors": 0, "final_text": None, "environment": None}
    exit_code, duration = (ended.exit_code, ended.duration) if ended else (None, 0.0)
    return AgentResult(
        outcome=outcome, error=error, exit_code=exit_code, duration=duration, **(blank | fields)
    )


def _parse_event(raw: bytes) -> dict[str, Any] | None:
    try:
        event = json.loads(raw)
    except ValueError:
        return None
    return event if isinstance(event, dict) and "type" in event else None


def _number(value: object) -> float:
    """A cost or token figure: finite and not negative, else 0 (a forged -1000 must not erase
    what was spent)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return 0.0
    number = float(value)
    return number if math.isfinite(number) and number > 0 else 0.0


def _message_text(message: Mapping[str, Any]) -> str | None:
    parts = message.get("content") or []
    texts = [p.get("text", "") for p in parts if isinstance(p, dict) and p.get("type") == "text"]
    return "".join(texts) or None


def _stderr_tail(request: AgentRequest, limit: int = 800, lines: int = 5) -> str:
    """The last few stderr lines, joined into one line for an error message."""
    try:
        with open(request.run_dir / STDERR, "rb") as file:
            file.seek(max(0, file.seek(0, os.SEEK_END) - limit))
            text = file.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text.splitlines()[-lines:] if line.strip())


def transcript_cost(path: Path) -> float:
    """What a run's saved pi event stream says it cost: how a killed run (no result) is still
    charged to the budget."""
    tally = _PiTally()
    try:
        with open(path, "rb") as stream:
            for line in stream:
                event = _parse_event(line)
                if event is not None:
                    _tally(tally, event)
    except OSError:
        return 0.0
    return tally.cost
