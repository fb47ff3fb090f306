"""What an iteration tells the outside world while it runs.

The iteration calls a Reporter; which one depends on where it runs: a live status line on a
terminal, plain lines when piped, sd_notify STATUS=/WATCHDOG=1 and journal records under
systemd (see journal.py). Several can be combined.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Protocol, TextIO

from openloop.text import escape


class Reporter(Protocol):
    def phase(self, phase: str, **info: Any) -> None: ...
    def agent_event(self, tool_calls: int, cost_usd: float, last_tool: str | None) -> None: ...
    def finished(self, outcome: str, reason: str, **info: Any) -> None: ...


class NullReporter:
    def phase(self, phase: str, **info: Any) -> None:
        pass

    def agent_event(self, tool_calls: int, cost_usd: float, last_tool: str | None) -> None:
        pass

    def finished(self, outcome: str, reason: str, **info: Any) -> None:
        pass


def _describe(phase: str, info: dict[str, Any]) -> str:
    parts = [phase]
    for key in ("task", "role", "attempt", "check"):
        if info.get(key) is not None:
            parts.append(f"{key}={info[key]}")
    return escape(" ".join(parts))


class LineReporter:
    """Plain lines, one per phase (pipes, logs)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr

    def phase(self, phase: str, **info: Any) -> None:
        print(f"openloop: {_describe(phase, info)}", file=self.stream, flush=True)

    def agent_event(self, tool_calls: int, cost_usd: float, last_tool: str | None) -> None:
        pass

    def finished(self, outcome: str, reason: str, **info: Any) -> None:
        # The reason may quote the agent's own words (its error text): never raw to a terminal.
        print(f"openloop: {outcome}: {escape(reason)}", file=self.stream, flush=True)


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 60}:{whole % 60:02d}"


class LiveReporter:
    """One status line rewritten in place (a terminal): phase, total and phase clocks (ticking
    every second from a small thread, so a silent agent does not look frozen), the tool pi is
    running, tool calls and spend so far."""

    def __init__(self, stream: TextIO | None = None, *, tick: float = 1.0) -> None:
        self.stream = stream or sys.stderr
        self.start = time.monotonic()
        self.phase_start = self.start
        self.current = "starting"
        self.tools = 0
        self.cost = 0.0
        self.tool: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._tick = tick
        self._thread: threading.Thread | None = None

    def line(self) -> str:
        now = time.monotonic()
        parts = [
            self.current,
            f"{_clock(now - self.start)} (phase {_clock(now - self.phase_start)})",
        ]
        if self.tool:
            parts.append(f"tool {escape(self.tool)[:40]}")
        parts.append(f"tools {self.tools}")
        parts.append(f"${self.cost:.4f}")
        return " | ".join(parts)

    def _draw(self) -> None:
        with self._lock:
            if self._stop.is_set():
                return
            width = 200
            try:
                import shutil

                width = max(20, shutil.get_terminal_size((200, 24)).columns - 1)
            except OSError:
                pass
            self.stream.write("\r\x1b[2K" + self.line()[:width])
            self.stream.flush()

    def _ticker(self) -> None:
        while not self._stop.wait(self._tick):
            self._draw()

    def _ensure_ticking(self) -> None:
        if self._thread is None and self._tick > 0:
            self._thread = threading.Thread(target=self._ticker, name="openloop-clock", daemon=True)
            self._thread.start()

    def phase(self, phase: str, **info: Any) -> None:
        self.current = _describe(phase, info)
        self.phase_start = time.monotonic()
        if phase != "agent":
            self.tool = None
        self._ensure_ticking()
        self._draw()

    def agent_event(self, tool_calls: int, cost_usd: float, last_tool: str | None) -> None:
        self.tools, self.cost = tool_calls, cost_usd
        if last_tool:
            self.tool = last_tool
        self._draw()

    def finished(self, outcome: str, reason: str, **info: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        with self._lock:
            self.stream.write("\r\x1b[2K")
            elapsed = _clock(time.monotonic() - self.start)
            print(f"{outcome} after {elapsed}: {escape(reason)}", file=self.stream, flush=True)
