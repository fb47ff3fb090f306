"""Run the `openloop` CLI on a pseudo-terminal, as a person at a terminal would."""

from __future__ import annotations

import os
import pty
import select
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class TtyResult:
    code: int
    out: str  # stdout and stderr together, as the terminal shows them (CRLF -> LF)


def run_tty(
    args: list[str], environ: Mapping[str, str], *, columns: int = 100, timeout: float = 60
) -> TtyResult:
    env = {
        **environ,
        "PYTHONPATH": str(ROOT),
        "COLUMNS": str(columns),
        "LINES": "40",
        "TERM": "xterm-256color",
    }
    pid, fd = pty.fork()
    if pid == 0:  # the child: stdin, stdout and stderr are the terminal
        try:
            os.execve(sys.executable, [sys.executable, "-m", "openloop", *args], env)
        finally:
            os._exit(127)
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            continue
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    text = b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")
    return TtyResult(os.waitstatus_to_exitcode(status), text)
