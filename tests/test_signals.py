"""SIGTERM, SIGHUP and SIGINT to a real `openloop run-once` process, mid-agent and mid-check:
the same clean end each time (exit 17, no process left, no workspace, the spend pi reported
charged, the run closed, the task back in the queue). And `kill -9` mid-check, after which the
next run-once stops the leftover check. Processes are real; the agent is a pi stand-in that
prints pi's JSON events (the real pi: tests/e2e/test_signals_pi.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from openloop.adapters.supervise import pid_namespace_prefix
from tests.conftest import git
from tests.support.procs import processes_of
from tests.test_iteration import add, set_project, task_of

OPENLOOP = str(Path(sys.executable).with_name("openloop"))

# A stand-in for pi: one priced assistant turn, then it runs a tool that never ends.
FAKE_PI = f"""#!{sys.executable}
import json, subprocess, sys, time
sys.stdin.read()
turn = {{"type": "message_end", "message": {{"role": "assistant", "stopReason": "toolUse",
    "content": [], "usage": {{"input": 900, "output": 30, "totalTokens": 930,
    "cost": {{"total": 0.00375}}}}}}}}
print(json.dumps({{"type": "session"}}), flush=True)
print(json.dumps(turn), flush=True)
print(json.dumps({{"type": "tool_execution_start", "toolName": "bash"}}), flush=True)
# pi runs bash in a session of its own: out of reach of a process-group kill.
subprocess.Popen(["sleep", "300"], start_new_session=True)
time.sleep(300)
"""


@pytest.fixture
def world(ol, project, env, tmp_path):
    pi = tmp_path / "fake-pi"
    pi.write_text(FAKE_PI)
    pi.chmod(0o755)
    set_project(
        project,
        # Never ends once the agent wrote new.py (the default branch itself passes at once).
        validation={
            "lintCommand": "test ! -e new.py || { sleep 300 & sleep 300; }",
            "typecheckCommand": None,
        },
        runtime={"inactivityTimeoutSeconds": 600, "runTimeoutSeconds": 600},
    )
    assert ol("project", "trust", "demo").code == 0
    environ = {**env.environ, "OPENLOOP_PI_BIN": str(pi)}
    return project, environ


def _start(environ) -> subprocess.Popen:
    return subprocess.Popen(
        [OPENLOOP, "run-once", "-p", "demo", "--quiet"],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a signal to us must not reach it, and the reverse
    )


def _running_record(repo: Path, deadline: float = 20.0) -> dict:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        for path in (repo / ".openloop/runs").glob("*.json"):
            record = json.loads(path.read_text())
            if record.get("outcome") == "running":
                return record
        time.sleep(0.05)
    raise AssertionError("no running iteration appeared")


def _wait_for(predicate, deadline: float = 20.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def _check_started(repo: Path, run_id: str) -> bool:
    return (repo / ".openloop/runs" / run_id / "lint.log").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
@pytest.mark.parametrize("phase", ["agent", "check"])
def test_a_signal_ends_the_iteration_cleanly(world, ol, env, sig, phase):
    repo, environ = world
    if phase == "check":  # an agent that finishes at once, so the checks run
        environ = {
            **environ,
            "OPENLOOP_PI_BIN": str(Path(environ["OPENLOOP_PI_BIN"]).parent / "quick-pi"),
        }
        quick = Path(environ["OPENLOOP_PI_BIN"])
        quick.write_text(
            FAKE_PI.replace('"toolUse"', '"stop"').split("# pi runs bash")[0]
            + "open('new.py', 'w').write('x = 1\\n')\n"
        )
        quick.chmod(0o755)
    tid = add(ol, "Long task")
    status_before = git(repo, "status", "--porcelain")
    proc = _start(environ)
    record = _running_record(repo)
    run_id = record["runId"]
    if phase == "agent":
        _wait_for(lambda: len(processes_of(run_id)) >= 2)  # pi and its bash command
        _wait_for(
            lambda: b"0.00375" in (repo / f".openloop/runs/{run_id}/transcript.jsonl").read_bytes()
        )
    else:
        _wait_for(lambda: _check_started(repo, run_id))
        _wait_for(lambda: len(processes_of(run_id)) >= 2)
    os.kill(proc.pid, sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 17, (out, err)
    assert processes_of(run_id) == []
    assert not (env.worktrees_dir / "demo" / tid).exists()
    closed = json.loads((repo / f".openloop/runs/{run_id}.json").read_text())
    assert closed["outcome"] == "interrupted" and closed["endedAt"]
    assert sig.name in closed["reason"]
    assert closed["costUsd"] == pytest.approx(0.00375)
    budget = json.loads((env.state_dir / "budget.json").read_text())
    assert sum(d["spentUsd"] for d in budget["days"].values()) == pytest.approx(0.00375)
    task = task_of(repo, tid)
    assert task.status == "ready" and task.attempts == 1
    assert git(repo, "status", "--porcelain") == status_before


@pytest.mark.parametrize("namespace", [True, False], ids=["pid-namespace", "no-namespace"])
def test_kill_9_mid_check_then_the_next_run_stops_the_leftover_check(world, ol, env, namespace):
    repo, environ = world
    if namespace and pid_namespace_prefix() is None:
        pytest.skip("this host allows no PID namespace (the other case covers it)")
    if not namespace:
        environ = {**environ, "OPENLOOP_PID_NAMESPACE": "0"}
    quick = Path(environ["OPENLOOP_PI_BIN"]).parent / "quick-pi"
    quick.write_text(
        FAKE_PI.replace('"toolUse"', '"stop"').split("# pi runs bash")[0]
        + "open('new.py', 'w').write('x = 1\\n')\n"
    )
    quick.chmod(0o755)
    environ = {**environ, "OPENLOOP_PI_BIN": str(quick)}
    tid = add(ol, "Long check")
    proc = _start(environ)
    run_id = _running_record(repo)["runId"]
    _wait_for(lambda: _check_started(repo, run_id))
    _wait_for(lambda: len(processes_of(run_id)) >= 2)
    proc.kill()
    proc.communicate(timeout=10)
    if namespace:
        # The namespace dies with OpenLoop (its parent-death signal): nothing is left at all.
        _wait_for(lambda: processes_of(run_id) == [], deadline=5)
    else:
        assert processes_of(run_id), "without a namespace the check outlives a SIGKILL"
    # The next run-once repairs first (the leftover check dies), then works the task again.
    set_project(repo, validation={"lintCommand": "true"})
    assert ol("project", "trust", "demo").code == 0
    again = subprocess.run(
        [OPENLOOP, "run-once", "-p", "demo", "--quiet"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert processes_of(run_id) == [], again.stderr
    closed = json.loads((repo / f".openloop/runs/{run_id}.json").read_text())
    assert closed["outcome"] == "interrupted"
    task = task_of(repo, tid)
    # The killed attempt counted; the next one passed and reused the task's own branch.
    assert task.attempts == 1 and task.status == "review", again.stdout
    assert task.branch == "openloop/long-check"
