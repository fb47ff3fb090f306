"""Run the project's lint, typecheck and test commands in a worktree.

Commands are shell lines the user approved (see trust.py), so they run under /bin/sh. Each has
its own timeout and runs in its own session with a marker in its environment, and is stopped
the way the agent is (supervise.stop_tree: the group and every process carrying the marker)
when it overruns, when the iteration is told to stop by a signal, or when OpenLoop itself fails.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from openloop.adapters.popen import Popen
from openloop.adapters.supervise import (
    MARKER_VAR,
    STOP_REQUESTED,
    contained,
    die_with_parent,
    stop_tree,
)
from openloop.state.storage import open_for_writing

ORDER = ("lint", "typecheck", "test")
TAIL_CHARS = 4000


@dataclass(frozen=True)
class CheckResult:
    name: str
    command: str | None
    status: str  # "passed", "failed", "timed-out", "not-configured"
    exit_code: int | None = None
    duration: float = 0.0
    log: str | None = None  # path of the full output
    tail: str = ""  # the end of the output, for the next prompt

    def to_data(self) -> dict:
        data = asdict(self)
        data["exitCode"] = data.pop("exit_code")
        return data


def run_check(
    name: str, command: str, cwd: Path, log_path: Path, timeout: float, env: Mapping[str, str]
) -> CheckResult:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start, marker = time.monotonic(), os.urandom(16).hex()
    code: int | None = None
    with open_for_writing(log_path) as log:
        argv = contained(["/bin/sh", "-c", command], env)
        proc = Popen(
            argv,
            preexec_fn=die_with_parent if argv[0] != "/bin/sh" else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**env, MARKER_VAR: marker},
            start_new_session=True,
        )
        status = "timed-out"
        try:
            while time.monotonic() - start < timeout:
                if STOP_REQUESTED.is_set():
                    status = "interrupted"
                    break
                try:
                    code = proc.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    continue
                status = "passed" if code == 0 else "failed"
                break
        finally:
            # Whatever ended the wait (done, timeout, a signal, an error of ours): nothing the
            # check started outlives it.
            stop_tree(proc, marker, grace=2.0 if status != "timed-out" else 5.0)
    output = log_path.read_bytes()[-TAIL_CHARS:].decode("utf-8", "replace")
    if status == "timed-out":
        output += f"\n[openloop: '{name}' killed after {timeout:.0f}s]"
    elif status == "interrupted":
        output += f"\n[openloop: '{name}' stopped: the iteration was interrupted]"
    return CheckResult(
        name, command, status, code, round(time.monotonic() - start, 3), str(log_path), output
    )


def run_all(
    commands: Mapping[str, str | None],
    cwd: Path,
    run_dir: Path,
    timeout: float,
    env: Mapping[str, str],
    on_start=None,
) -> list[CheckResult]:
    """Every configured check, in ORDER. All run (not stop-at-first) so the next attempt sees
    every failure at once."""
    results = []
    for name in ORDER:
        command = commands.get(name)
        if not command:
            results.append(CheckResult(name, None, "not-configured"))
            continue
        if on_start:
            on_start(name)
        if STOP_REQUESTED.is_set():
            results.append(CheckResult(name, command, "interrupted"))
            continue
        results.append(run_check(name, command, cwd, run_dir / f"{name}.log", timeout, env))
    return results


def all_passed(results: list[CheckResult]) -> bool | None:
    """True if every configured check passed, False if one did not, None if none is configured."""
    configured = [r for r in results if r.status != "not-configured"]
    if not configured:
        return None
    return all(r.status == "passed" for r in configured)


# What changes between two runs of the same failure: durations, clock times, addresses and
# temporary paths. Plain numbers stay: "test_1 failed" and "test_2 failed" are different.
_VOLATILE = re.compile(
    r"\b\d+(\.\d+)?\s?(ms|s|sec|secs|seconds|µs|us|ns)\b"
    r"|\b\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?\b"
    r"|\b\d{4}-\d{2}-\d{2}([T ][\d:.]+Z?)?"
    r"|0x[0-9a-f]+"
    r"|/tmp/\S+",
    re.IGNORECASE,
)


def mask_volatile(text: str) -> str:
    """Output with what changes between two runs of the same failure masked."""
    return _VOLATILE.sub("#", text)


def failure_signature(results: list[CheckResult]) -> str | None:
    """A stable fingerprint of what failed: same checks failing with the same output (timings,
    addresses and temp paths masked) give the same signature across attempts."""
    failed = [r for r in results if r.status in ("failed", "timed-out")]
    if not failed:
        return None
    digest = hashlib.sha256()
    for r in failed:
        digest.update(f"{r.name}:{r.status}\n".encode())
        digest.update(_VOLATILE.sub("#", r.tail).encode())
    names = "+".join(r.name for r in failed)
    return f"validation-{names}:{digest.hexdigest()[:12]}"


def failure_summary(results: list[CheckResult], limit: int = 6000) -> str:
    """The failing checks' output tails, for the next attempt's prompt."""
    parts = []
    for r in results:
        if r.status in ("failed", "timed-out"):
            parts.append(f"$ {r.command}  (exit {r.exit_code}, {r.status})\n{r.tail.strip()}")
    text = "\n\n".join(parts)
    return text[-limit:]
