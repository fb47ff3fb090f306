"""Running an agent process under OpenLoop's clocks, and stopping it with everything it started.

The agent runs in a session of its own with a per-run marker variable in its environment;
stopping it signals the process group and every process still carrying the marker (pi starts
each bash command in a new session, out of reach of a group kill): SIGTERM, then SIGKILL. A
budget stop gets no grace: SIGKILL at once, so the agent cannot send another model request.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from openloop.adapters.popen import Popen

if TYPE_CHECKING:
    from openloop.adapters.supervise import AgentRequest

TRANSCRIPT, STDERR = "transcript.jsonl", "agent.stderr"
MARKER_VAR = "OPENLOOP_AGENT_RUN"
# Set by a signal handler (SIGTERM, SIGHUP, SIGINT during an iteration: loop/interrupt.py). The
# supervisor and the checks poll it and stop their process trees; the handler itself only sets
# it, so no exception lands in the middle of a ledger write.
STOP_REQUESTED = threading.Event()
KILL_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
EXIT_DRAIN = 2.0  # seconds a leftover process may hold stdout open after the agent exited
POLL_INTERVAL = 0.5  # seconds between budget checks while the agent is silent


@dataclass(frozen=True)
class AgentRequest:
    """What an agent run needs; defined here, beside the supervisor that reads it, so the
    adapters in agent.py import it downward."""

    cwd: Path  # the task's worktree
    prompt: str  # reaches the agent through a file or stdin, never argv
    system_append: str  # runtime rules added to the agent's system prompt
    model: str | None
    provider: str | None
    run_dir: Path  # receives prompt.md, system.md, transcript.jsonl, agent.stderr
    run_timeout: float  # wall-clock seconds
    inactivity_timeout: float  # seconds without an output line
    budget_left_usd: float | None  # pi only: stop once the run's cost exceeds this
    env: Mapping[str, str]  # the agent's whole environment
    command: str | None = None  # the custom adapter's command line (shlex syntax)
    # The shared daily budget: called with the run's cost so far after each cost event and every
    # POLL_INTERVAL while the agent is silent; returns a reason to stop the agent now, or None.
    budget_check: Callable[[float], str | None] | None = None


# --- running and stopping the process ---------------------------------------------------------


@dataclass(frozen=True)
class Ended:
    forced: str | None  # "stalled", "timed-out" or "budget-stopped" when we stopped the agent
    error: str | None
    exit_code: int | None
    duration: float


_PIDNS: list[list[str] | None] = []  # cached probe: the unshare prefix that works, or None


def pid_namespace_prefix() -> list[str] | None:
    """The command prefix that runs a program as the first process of a PID namespace of its
    own, or None where the host does not allow one (no unshare, user namespaces restricted).

    Why: a process the agent started can leave its session and drop the run's marker (`env -i
    setsid ...`) and would then outlive the run. In a PID namespace it cannot: when the
    namespace's first process exits, the kernel kills every process left in it. The first
    process is a shell that runs the real command and waits for it, so the command itself is
    not PID 1 (which ignores signals it has no handler for)."""
    if os.environ.get("OPENLOOP_PID_NAMESPACE") == "0":  # opt out (debugging, or to compare)
        return None
    if not _PIDNS:
        probe_soon()
        prefix, started, proc = _PROBE.pop()
        try:
            if proc is None:
                raise OSError("the probe did not start")
            ok = proc.wait(timeout=max(0.0, started + 10 - time.monotonic())) == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        finally:
            if proc is not None and proc.returncode is None:
                proc.kill()
                proc.wait()
        _PIDNS.append(prefix if ok else None)
    return _PIDNS[0]


# The probe, started ahead of need: (prefix, start time, process or None when it failed to start).
_PROBE: list[tuple[list[str], float, subprocess.Popen | None]] = []


def probe_soon() -> None:
    """Start pid_namespace_prefix's probe now, so that it runs while the caller goes on (an
    iteration takes its snapshot meanwhile); pid_namespace_prefix() waits for its answer."""
    if _PIDNS or _PROBE or os.environ.get("OPENLOOP_PID_NAMESPACE") == "0":
        return
    user = [] if os.geteuid() == 0 else ["--user", "--map-current-user"]
    unshare = shutil.which("unshare") or shutil.which("unshare", path="/usr/bin:/bin")
    prefix = [unshare or "unshare", *user, "--pid", "--fork", "--kill-child", "--"]
    started = time.monotonic()
    try:
        proc: subprocess.Popen | None = Popen(
            [*prefix, "/bin/sh", "-c", "exit 0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    except OSError:
        proc = None
    _PROBE.append((prefix, started, proc))


# The namespace's first process: runs the command in the background (so the command is not PID
# 1) with the original stdin (a background job would get /dev/null), waits, passes on its status.
_INIT = 'exec 3<&0; "$@" <&3 3<&- & exec 3<&-; wait $!'


def _prctl():
    import ctypes

    return ctypes.CDLL(None, use_errno=True).prctl


def die_with_parent() -> None:
    """In the child before exec: SIGKILL it when OpenLoop dies (even by SIGKILL). For unshare
    that ends the whole PID namespace (--kill-child), so an agent cannot outlive a killed
    OpenLoop and go on spending with no budget or clock watching it. Only a call into libc
    here: the function was looked up in the parent (an import in a forked child of a process
    with threads could deadlock on the import lock)."""
    _PRCTL[0](1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG


_PRCTL: list = []


def _ready_for_children() -> None:
    if not _PRCTL:
        _PRCTL.append(_prctl())


def contained(argv: list[str], env: Mapping[str, str]) -> list[str]:
    """argv run inside a PID namespace of its own where the host allows it (see above). The
    program is looked up first, so a missing one is still FileNotFoundError, as without."""
    prefix = pid_namespace_prefix()
    if prefix is None or not argv:
        return argv
    _ready_for_children()
    program = _resolve(argv[0], env.get("PATH", os.defpath))
    return [*prefix, "/bin/sh", "-c", _INIT, "openloop-run", program, *argv[1:]]


def _resolve(name: str, path: str) -> str:
    """The program exec would run, with the errors exec would raise (the namespace's shell would
    only print them): FileNotFoundError when there is none, PermissionError when not runnable."""
    if "/" in name:
        target = Path(name)
        if not target.exists():
            raise FileNotFoundError(2, "No such file or directory", name)
        if target.is_dir() or not os.access(target, os.X_OK):
            raise PermissionError(13, "Permission denied", name)
        return name
    program = shutil.which(name, path=path)
    if program is None:
        raise FileNotFoundError(2, "No such file or directory", name)
    return program


def supervise(
    argv: list[str],
    request: AgentRequest,
    stdin: Path,
    env: Mapping[str, str],
    on_line: Callable[[bytes, float], str | None],
    frame: bool = False,
    poll: Callable[[], str | None] | None = None,
) -> Ended:
    """Runs argv to its end or until a limit hits, recording stdout line by line as it comes.

    on_line sees each line (and the seconds elapsed) and returns a reason to stop, or None; an
    exception from it stops the agent and propagates. poll, every POLL_INTERVAL, may return a
    reason to stop too (the budget, spent by others while this agent is silent). Either reason
    is a budget stop: the agent is killed at once, without a grace period. With frame, plain
    output lines are recorded as {"type": "output"} events, so every transcript.jsonl is JSON
    lines."""
    marker, start = os.urandom(16).hex(), time.monotonic()
    with (
        open(stdin, "rb") as stdin_file,
        open(request.run_dir / STDERR, "wb") as stderr_file,
        open(request.run_dir / TRANSCRIPT, "wb") as transcript,
    ):
        command = contained(argv, env)
        _ready_for_children()
        proc = Popen(
            command,
            preexec_fn=die_with_parent if command is not argv else None,
            cwd=request.cwd,
            env={**env, MARKER_VAR: marker},
            stdin=stdin_file,
            stdout=subprocess.PIPE,
            stderr=stderr_file,
            start_new_session=True,
        )
        assert proc.stdout is not None
        lines: queue.Queue[bytes | None] = queue.Queue()
        reader = threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True)
        reader.start()

        def record(line: bytes) -> str | None:
            kept = line
            if frame:
                text = line.decode("utf-8", "replace").rstrip("\n")
                kept = json.dumps({"type": "output", "text": text}).encode()
            transcript.write(kept if kept.endswith(b"\n") else kept + b"\n")
            transcript.flush()
            return on_line(line, time.monotonic() - start)

        forced: str | None = None
        try:
            forced, error = _watch(proc, lines, request, start, record, poll)
        finally:
            _stop(proc, marker, grace=0.0 if forced == "budget-stopped" else KILL_GRACE)
            reader.join(timeout=KILL_GRACE)
            if not reader.is_alive():  # closing under a blocked read would block us too
                proc.stdout.close()
        # Lines already on their way when the agent stopped still belong to the run.
        while not lines.empty() and (line := lines.get()) is not None:
            record(line)
    # Through the namespace's shell a death by signal N is status 128+N (as pi's own exit on
    # SIGTERM is 143): the status is not judged by its value, only recorded.
    return Ended(forced, error, proc.returncode, time.monotonic() - start)


def _watch(
    proc: subprocess.Popen[bytes],
    lines: queue.Queue[bytes | None],
    request: AgentRequest,
    start: float,
    record: Callable[[bytes], str | None],
    poll: Callable[[], str | None] | None = None,
) -> tuple[str | None, str | None]:
    last_line, exited_at, eof, polled = start, None, False, start
    while True:
        now = time.monotonic()
        if poll is not None and now - polled >= POLL_INTERVAL:
            polled = now
            if (reason := poll()) is not None:
                return "budget-stopped", reason
        if now - start >= request.run_timeout:
            return "timed-out", f"still running after {request.run_timeout:g}s"
        if now - last_line >= request.inactivity_timeout:
            return "stalled", f"no event for {request.inactivity_timeout:g}s"
        if STOP_REQUESTED.is_set():
            return "interrupted", "stopped by a signal"
        deadline = min(start + request.run_timeout, last_line + request.inactivity_timeout)
        wait = min(deadline - now, 0.25)
        if eof:  # stdout closed: the agent is exiting, or carries on without it
            try:
                proc.wait(timeout=wait)
                return None, None
            except subprocess.TimeoutExpired:
                continue
        try:
            line = lines.get(timeout=wait)
        except queue.Empty:
            # A descendant may hold stdout open after the agent itself is gone.
            if proc.poll() is not None:
                exited_at = exited_at or now
                if now - exited_at >= EXIT_DRAIN:
                    return None, None
            continue
        if line is None:
            eof = True
            continue
        last_line = time.monotonic()
        if (reason := record(line)) is not None:
            return "budget-stopped", reason


def _pump(stream: IO[bytes], lines: queue.Queue[bytes | None]) -> None:
    try:
        for line in iter(stream.readline, b""):
            lines.put(line)
    except (OSError, ValueError):
        pass  # the pipe was closed under us while stopping
    finally:
        lines.put(None)


def _stop(proc: subprocess.Popen[bytes], marker: str, grace: float = KILL_GRACE) -> None:
    stop_tree(proc, marker, grace)


def stop_tree(proc: subprocess.Popen, marker: str, grace: float | None = None) -> None:
    """SIGTERM to everything the process started (its process group, and every process
    carrying its marker: pi starts bash commands in sessions of their own, out of reach of a
    group kill), SIGKILL to what is left after the grace period. After a normal exit this
    sweeps up leftovers. The agent and the checks are stopped the same way. With no grace (a
    budget stop) the group gets SIGKILL before anything else: a process given time to exit
    could still start a model request."""
    grace = KILL_GRACE if grace is None else grace
    if grace <= 0:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass  # already gone
    deadline = time.monotonic() + grace
    survivors = _members(proc.pid, marker)
    if survivors and grace > 0:
        _signal(proc.pid, survivors, signal.SIGTERM)
    while survivors and time.monotonic() < deadline:
        time.sleep(0.05)
        proc.poll()  # reap the leader, or its zombie would count as alive
        survivors = _members(proc.pid, marker)
    for _ in range(3):  # again, in case something forked while we were killing
        if not survivors:
            break
        _signal(proc.pid, survivors, signal.SIGKILL)
        time.sleep(0.05)
        survivors = _members(proc.pid, marker)
    proc.wait()


def _members(pgid: int, marker: str) -> set[int]:
    """Live processes in the agent's process group or carrying the run's marker (Linux /proc)."""
    needle, found = f"{MARKER_VAR}={marker}".encode(), set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            # The command name in parentheses may itself contain spaces or parentheses.
            stat = Path("/proc", name, "stat").read_bytes().rsplit(b")")[-1].split()
            if stat[0] == b"Z":
                continue  # dead; an orphan's zombie may never be reaped in a container
            if int(stat[2]) == pgid or needle in _environ(name):
                found.add(int(name))
        except (OSError, ValueError):
            continue  # gone meanwhile, or another user's
    return found


def _environ(pid: str) -> list[bytes]:
    return Path("/proc", pid, "environ").read_bytes().split(b"\0")


def _signal(pgid: int, pids: set[int], sig: signal.Signals) -> None:
    for send, target in [(os.killpg, pgid)] + [(os.kill, pid) for pid in pids]:
        try:
            send(target, sig)
        except OSError:
            pass  # already gone
