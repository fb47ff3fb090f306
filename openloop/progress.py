"""What an iteration tells the outside world while it runs.

The iteration calls a Reporter; which one depends on where it runs: a live status line on a
terminal, plain lines when piped, sd_notify STATUS=/WATCHDOG=1 and journal records under
systemd (see journal.py). Several can be combined.
"""

from __future__ import annotations

import sys
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


class LiveReporter:
    """One status line rewritten in place (a terminal)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.start = time.monotonic()
        self.current = "starting"
        self.tools = 0
        self.cost = 0.0

    def _draw(self) -> None:
        elapsed = int(time.monotonic() - self.start)
        clock = f"{elapsed // 60}:{elapsed % 60:02d}"
        line = f"{self.current} | {clock} | tools {self.tools} | ${self.cost:.4f}"
        self.stream.write("\r\x1b[2K" + line[:200])
        self.stream.flush()

    def phase(self, phase: str, **info: Any) -> None:
        self.current = _describe(phase, info)
        self._draw()

    def agent_event(self, tool_calls: int, cost_usd: float, last_tool: str | None) -> None:
        self.tools, self.cost = tool_calls, cost_usd
        self._draw()

    def finished(self, outcome: str, reason: str, **info: Any) -> None:
        self.stream.write("\r\x1b[2K")
        print(f"{outcome}: {escape(reason)}", file=self.stream, flush=True)
