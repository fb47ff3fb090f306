"""Processes as the tests see them: /proc, read directly (no ps parsing)."""

from __future__ import annotations

import os
from pathlib import Path


def processes_of(run_id: str) -> list[int]:
    """Live processes (zombies excluded) that inherited OPENLOOP_RUN_ID=<run_id>."""
    needle = f"OPENLOOP_RUN_ID={run_id}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if needle in Path("/proc", name, "environ").read_bytes().split(b"\0"):
                if Path("/proc", name, "stat").read_bytes().rsplit(b")")[-1].split()[0] != b"Z":
                    found.append(int(name))
        except OSError:
            continue
    return found
