"""A pi-like fake agent for budget tests and benchmarks: it makes simulated model calls, each
preceded by a marker line (the request reached the "model") and followed by pi's `message_end`
event carrying `message.usage.cost.total`, as `pi --mode json` prints it.

Settings come from the environment (all optional):
  FAKE_PI_CALLS     how many calls before the final answer (default 10)
  FAKE_PI_COST      each call's cost in USD (default 0.47)
  FAKE_PI_DELAY     seconds a call takes (default 0.2)
  FAKE_PI_GAP       seconds between a call's event and the next request (tool time; default 0)
  FAKE_PI_SILENT    seconds of silence after a call (default 0)...
  FAKE_PI_SILENT_AFTER  ...after this call (default 1)
  FAKE_PI_MARKERS   file that gets a line "request N <pid>" before each call
  FAKE_PI_GRACEFUL  "1": on SIGTERM finish the next call before exiting, as a process given a
                    grace period may

`install(directory)` writes it as an executable (shebang: this Python) and returns its path.
"""

from __future__ import annotations

import sys
from pathlib import Path

SCRIPT = r"""
import json, os, signal, sys, time

calls = int(os.environ.get("FAKE_PI_CALLS", "10"))
cost = float(os.environ.get("FAKE_PI_COST", "0.47"))
delay = float(os.environ.get("FAKE_PI_DELAY", "0.2"))
gap = float(os.environ.get("FAKE_PI_GAP", "0"))
silent = float(os.environ.get("FAKE_PI_SILENT", "0"))
silent_after = int(os.environ.get("FAKE_PI_SILENT_AFTER", "1"))
markers = os.environ.get("FAKE_PI_MARKERS")
terminating = []
if os.environ.get("FAKE_PI_GRACEFUL") == "1":
    signal.signal(signal.SIGTERM, lambda *_: terminating.append(True))


def emit(event):
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def message(stop, total, text=""):
    usage = {"input": 1000, "output": 50, "cacheRead": 0, "cacheWrite": 0,
             "totalTokens": 1050, "cost": {"input": total, "output": 0, "total": total}}
    content = [{"type": "text", "text": text}] if text else []
    return {"type": "message_end", "message": {"role": "assistant", "content": content,
            "usage": usage, "stopReason": stop}}


sys.stdin.read()
emit({"type": "session", "id": "fake"})
emit({"type": "agent_start"})
for n in range(1, calls + 2):
    if markers:
        with open(markers, "a") as f:
            f.write(f"request {n} {os.getpid()}\n")
    time.sleep(delay)
    final = n == calls + 1
    emit(message("stop" if final else "toolUse", cost, "done" if final else ""))
    if final or terminating:
        break
    if n == silent_after and silent:
        time.sleep(silent)
    emit({"type": "tool_execution_start", "toolName": "bash", "args": {}})
    time.sleep(gap)
    emit({"type": "tool_execution_end", "toolName": "bash", "isError": False})
emit({"type": "agent_end", "messages": []})
"""


def install(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "fake-pi"
    path.write_text(f"#!{sys.executable}\n{SCRIPT}")
    path.chmod(0o755)
    return path
