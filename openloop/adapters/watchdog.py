"""Talking to systemd while an iteration runs: READY=1, STATUS= lines, WATCHDOG=1 pings.

While the agent runs, pings come only from its own events, so an agent that goes silent stops
the pings and systemd's WatchdogSec kills the unit. Between agent phases (worktree, validation,
bookkeeping) a background thread keeps pinging, since there is no agent to go silent.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from openloop.progress import _describe


def under_systemd(environ: dict[str, str] | os._Environ = os.environ) -> bool:
    return bool(environ.get("NOTIFY_SOCKET") or environ.get("INVOCATION_ID"))


class Notifier:
    """sd_notify via the sdnotify package (silently a no-op without $NOTIFY_SOCKET)."""

    def __init__(self) -> None:
        import sdnotify

        self._n = sdnotify.SystemdNotifier()

    def send(self, *lines: str) -> None:
        self._n.notify("\n".join(lines))


def _watchdog_interval() -> float | None:
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec or (os.environ.get("WATCHDOG_PID") not in (None, str(os.getpid()))):
        return None
    return max(int(usec) / 1_000_000 / 3, 0.2)


class SystemdReporter:
    """A progress Reporter for units: STATUS= says what happens; the journal gets a record with
    OPENLOOP_* fields for every phase and the outcome."""

    def __init__(self, project: str, notifier: Notifier | None = None) -> None:
        from openloop.adapters import journal

        self.project = project
        self.journal = journal
        self.notifier = notifier or Notifier()
        self.interval = _watchdog_interval()
        self.in_agent = False
        self.task: str | None = None
        self.last_status = 0.0
        self._stop = threading.Event()
        self.notifier.send("READY=1", f"STATUS=starting iteration for {project}")
        if self.interval:
            threading.Thread(target=self._keepalive, daemon=True).start()

    def _keepalive(self) -> None:
        while not self._stop.wait(self.interval):
            if not self.in_agent:
                self.notifier.send("WATCHDOG=1")

    def phase(self, phase: str, **info: Any) -> None:
        self.in_agent = phase == "agent"
        self.task = info.get("task") or self.task
        # Every phase record carries the run id once it is known: `logs --run` shows them all.
        self.run = info.get("run") or getattr(self, "run", None)
        text = _describe(phase, info)
        self.notifier.send(f"STATUS={self.project}: {text}", "WATCHDOG=1")
        self.journal.send(
            f"{self.project}: {text}",
            event=None,
            project=self.project,
            task=self.task,
            role=info.get("role"),
            run=self.run,
        )

    def agent_event(self, tool_calls: int, cost_usd: float, last_tool: str | None) -> None:
        now = time.monotonic()
        lines = ["WATCHDOG=1"]
        if now - self.last_status >= 1.0:  # STATUS at most once a second
            self.last_status = now
            tool = f", last {last_tool}" if last_tool else ""
            lines.append(
                f"STATUS={self.project}: agent on {self.task}: {tool_calls} tool calls"
                f"{tool}, ${cost_usd:.4f}"
            )
        self.notifier.send(*lines)

    def finished(self, outcome: str, reason: str, **info: Any) -> None:
        self._stop.set()
        self.notifier.send(f"STATUS={self.project}: {outcome}: {reason}", "STOPPING=1")
