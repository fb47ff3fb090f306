"""SIGTERM, SIGHUP and SIGINT to `openloop run-once` while the real pi runs a long bash command:
exit 17, no process of the run left (pi and the bash command it started in its own session),
no workspace, the cost pi reported charged to the run and the day, the task requeued."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import OPENLOOP
from tests.support.model_server import Scenario, ScriptedModel, ToolCall, ToolCalls
from tests.support.procs import processes_of

pytestmark = pytest.mark.e2e


def _transcript_cost(path: Path) -> float:
    total = 0.0
    for line in path.read_text().splitlines():
        event = json.loads(line)
        message = event.get("message") or {}
        if event.get("type") == "message_end" and message.get("role") == "assistant":
            total += message["usage"]["cost"]["total"]
    return total


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signal_mid_agent_ends_the_run_cleanly(world, sig):
    world.openloop("task", "add", "--title", "Long bash", check=True)
    runs = world.repo / ".openloop/runs"
    scenario = Scenario([ToolCalls([ToolCall("bash", {"command": "sleep 300"})])])
    with ScriptedModel(scenario) as model:
        world.point_at(model.url)
        proc = subprocess.Popen(
            [OPENLOOP, "run-once", "-p", "demo", "-q"],
            env=world.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        run_id = None
        while time.monotonic() < deadline:
            records = (
                [json.loads(p.read_text()) for p in runs.glob("*.json")] if runs.is_dir() else []
            )
            run_id = next((r["runId"] for r in records if r["outcome"] == "running"), None)
            # pi has started the bash command: the model turn's cost is in the transcript.
            if run_id and any(
                b"sleep" in Path("/proc", str(p), "cmdline").read_bytes()
                for p in processes_of(run_id)
                if Path("/proc", str(p)).exists()
            ):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"pi never started the bash command; {proc.poll()}")
        os.kill(proc.pid, sig)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 17, (out, err)
    assert processes_of(run_id) == []
    assert not (world.root / "openloop/state/worktrees/demo/long-bash").exists()
    record = json.loads((runs / f"{run_id}.json").read_text())
    reported = _transcript_cost(runs / run_id / "transcript.jsonl")
    assert reported > 0
    assert record["outcome"] == "interrupted" and sig.name in record["reason"]
    assert record["costUsd"] == pytest.approx(reported)
    day = next(iter(world.budget()["days"].values()))
    assert day["spentUsd"] == pytest.approx(reported)
    task = world.task("long-bash")
    assert task["status"] == "ready" and task["attempts"] == 1
