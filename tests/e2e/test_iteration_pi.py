"""`openloop run-once` end to end: the real pi, real worktrees, real validation, real ledger."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from tests.conftest import git
from tests.e2e.conftest import OPENLOOP
from tests.support.model_server import (
    Hang,
    Reply,
    Scenario,
    ScriptedModel,
    ToolCall,
    ToolCalls,
)

pytestmark = pytest.mark.e2e


def write(path: str, content: str, usage=None) -> ToolCalls:
    return ToolCalls([ToolCall("write", {"path": path, "content": content})], usage=usage)


def run_once(world, *extra):
    proc = world.openloop("run-once", "-p", "demo", "--json", *extra)
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_clean_implementation_is_validated_and_left_for_review(world):
    world.openloop("task", "add", "--title", "Add subtract", "--scope", "src/**", check=True)
    scenario = Scenario(
        [
            write(
                "src/calc.py",
                "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n",
            ),
            Reply("Added sub()."),
        ]
    )
    with ScriptedModel(scenario) as model:
        world.point_at(model.url)
        code, record = run_once(world)
    assert code == 0 and record["outcome"] == "completed"
    assert record["taskStatus"] == "review"
    assert record["changedFiles"] == [{"status": "M", "path": "src/calc.py", "oldPath": None}]
    assert record["validation"][0]["status"] == "passed"
    assert record["toolCalls"] == 1
    assert record["costUsd"] == pytest.approx(2 * (900 * 3 + 30 * 15) / 1e6)
    assert "def sub" in git(world.repo, "show", "openloop/add-subtract:src/calc.py")
    assert "def sub" not in (world.repo / "src/calc.py").read_text()
    task = world.task("add-subtract")
    assert task["status"] == "review" and task["branch"] == "openloop/add-subtract"
    day = next(iter(world.budget()["days"].values()))
    assert day["spentUsd"] == pytest.approx(record["costUsd"])
    transcript = world.repo / ".openloop/runs" / record["runId"] / "transcript.jsonl"
    assert '"type":"agent_end"' in transcript.read_text().replace(" ", "")
    # The prompt reached pi with the task as delimited data and the runtime rules appended.
    system = model.requests[0]["messages"][0]["content"]
    assert "OpenLoop runtime rules" in json.dumps(system)
    assert "<task-data" in json.dumps(model.requests[0]["messages"])


def test_lint_breaking_change_goes_back_with_the_failure_in_the_next_prompt(world):
    world.openloop("task", "add", "--title", "Add mul", check=True)
    scenario = Scenario(
        [
            write("src/mul.py", "BROKEN = True\n"),
            Reply("done"),
            write("src/mul.py", "def mul(a, b):\n    return a * b\n"),
            Reply("fixed"),
        ]
    )
    with ScriptedModel(scenario) as model:
        world.point_at(model.url)
        code, record = run_once(world)
        assert code == 10 and record["outcome"] == "validation-failed"
        task = world.task("add-mul")
        assert (task["status"], task["attempts"]) == ("ready", 1)
        assert "BROKEN" in task["lastFailure"]
        code, record = run_once(world)
        second_prompt = json.dumps(model.requests[2]["messages"])
    assert "The previous attempt failed" in second_prompt and "BROKEN" in second_prompt
    assert code == 0 and world.task("add-mul")["status"] == "review"


def test_no_change_is_no_progress_and_twice_blocks(world):
    world.openloop("task", "add", "--title", "Think only", check=True)
    with ScriptedModel(Scenario([], after=Reply("I looked around; nothing to change."))) as model:
        world.point_at(model.url)
        code, record = run_once(world)
        assert code == 15 and record["outcome"] == "no-progress"
        assert world.task("think-only")["status"] == "ready"
        code, record = run_once(world)
    assert code == 15 and world.task("think-only")["status"] == "blocked"
    assert record["taskStatus"] == "blocked"


def test_repeating_the_same_failing_change_blocks(world):
    world.openloop("config", "set", "runtime.maxAttemptsPerTask", "10", check=True)
    world.openloop("task", "add", "--title", "Stubborn", check=True)
    turns = []
    for _ in range(3):
        turns += [write("src/bad.py", "BROKEN = 1\n"), Reply("done")]
    with ScriptedModel(Scenario(turns)) as model:
        world.point_at(model.url)
        outcomes = [run_once(world)[1]["outcome"] for _ in range(3)]
    assert outcomes == ["validation-failed", "no-progress", "no-progress"]
    task = world.task("stubborn")
    assert task["status"] == "blocked" and task["attempts"] == 3
    assert "no progress in 2 attempts in a row" in task["history"][-1]["reason"]


def test_a_hanging_model_is_stopped_as_stalled(world):
    world.openloop("task", "add", "--title", "Hang", check=True)
    with ScriptedModel(Scenario([Hang()])) as model:
        world.point_at(model.url)
        started = time.monotonic()
        code, record = run_once(world)
        elapsed = time.monotonic() - started
    assert code == 12 and record["outcome"] == "stalled"
    assert elapsed < 30
    task = world.task("hang")
    assert (task["status"], task["attempts"]) == ("ready", 1)
    assert not list((world.root / "openloop" / "state" / "worktrees").glob("*/*"))


def test_a_run_timeout_kills_the_agent(world):
    world.openloop("config", "set", "runtime.runTimeoutSeconds", "3", check=True)
    pfile = world.repo / ".openloop/project.json"
    data = json.loads(pfile.read_text())
    data["runtime"]["inactivityTimeoutSeconds"] = 60
    pfile.write_text(json.dumps(data))
    world.openloop("task", "add", "--title", "Slow", check=True)
    with ScriptedModel(Scenario([Hang()])) as model:
        world.point_at(model.url)
        code, record = run_once(world)
    assert code == 13 and record["outcome"] == "timed-out"


def test_cost_crossing_the_budget_stops_the_agent(world):
    world.openloop("config", "set", "budgets.dailyCostUsd", "0.05", check=True)
    world.openloop("task", "add", "--title", "Expensive", check=True)
    big = (10_000, 1_000)  # $0.045 per turn at 3/15 per million
    scenario = Scenario(
        [
            write("a.txt", "1", usage=big),
            write("b.txt", "2", usage=big),
            write("c.txt", "3", usage=big),
            Reply("done"),
        ]
    )
    with ScriptedModel(scenario) as model:
        world.point_at(model.url)
        code, record = run_once(world)
        assert code == 14 and record["outcome"] == "budget-stopped"
        assert record["costUsd"] == pytest.approx(0.09)
        day = next(iter(world.budget()["days"].values()))
        assert day["spentUsd"] == pytest.approx(0.09)
        code, skipped = run_once(world)
    assert code == 0 and skipped["outcome"] == "skipped" and "budget" in skipped["reason"]
    assert world.task("expensive")["attempts"] == 0


def test_kill_9_mid_agent_then_the_next_run_repairs(world):
    world.openloop("task", "add", "--title", "Survive kill", check=True)
    with ScriptedModel(Scenario([Hang()])) as model:
        world.point_at(model.url)
        proc = subprocess.Popen(
            [OPENLOOP, "run-once", "-p", "demo", "-q"],
            env=world.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while not model.requests and time.monotonic() < deadline:
            time.sleep(0.1)
        assert model.requests, "pi never reached the model"
        assert world.task("survive-kill")["status"] == "in_progress"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        worktrees = world.root / "openloop" / "state" / "worktrees" / "demo"
        assert any(worktrees.iterdir())  # left behind by the killed run

    with ScriptedModel(Scenario([write("src/ok.py", "ok = 1\n"), Reply("done")])) as model:
        world.point_at(model.url)
        code, record = run_once(world)
    assert code == 0, record
    task = world.task("survive-kill")
    assert task["attempts"] == 1  # the killed attempt counted
    assert any("repaired" in h["reason"] for h in task["history"])
    assert task["status"] == "review"
    assert not any(worktrees.iterdir())
    assert "survive-kill" not in git(world.repo, "worktree", "list")
    outcomes = sorted(
        json.loads(p.read_text())["outcome"] for p in (world.repo / ".openloop/runs").glob("*.json")
    )
    assert outcomes == ["completed", "interrupted"]
    # No process of the killed run is left (pi was orphaned by the SIGKILL).
    leftovers = subprocess.run(["pgrep", "-f", str(worktrees)], capture_output=True, text=True)
    assert leftovers.stdout.strip() == ""


def test_dry_run_prints_the_plan_and_writes_nothing(world):
    world.openloop("task", "add", "--title", "Plan me", check=True)
    before = world.ledger()
    proc = world.openloop("run-once", "-p", "demo", "--dry-run", check=True)
    plan = json.loads(proc.stdout)
    assert plan["taskId"] == "plan-me" and plan["role"] == "implementer"
    assert "Plan me" in plan["prompt"]
    assert world.ledger() == before
    assert list((world.repo / ".openloop/runs").glob("*.json")) == []


def test_adhoc_run_uses_a_branch_and_is_accounted(world):
    with ScriptedModel(Scenario([write("NOTES.md", "notes\n"), Reply("wrote notes")])) as model:
        world.point_at(model.url)
        proc = world.openloop("run", "-p", "demo", "--prompt", "Write NOTES.md", "--json")
    record = json.loads(proc.stdout)
    assert proc.returncode == 0 and record["outcome"] == "completed"
    assert record["branch"].startswith("openloop/adhoc-")
    assert git(world.repo, "show", f"{record['branch']}:NOTES.md") == "notes"
    assert not (world.repo / "NOTES.md").exists()
    assert next(iter(world.budget()["days"].values()))["spentUsd"] > 0
