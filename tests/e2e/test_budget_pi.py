"""The shared daily budget with the real pi: a budget stop kills pi before it sends another
request, and two projects running at once share one ceiling."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import make_repo
from tests.e2e.conftest import OPENLOOP
from tests.support.model_server import Reply, Scenario, ScriptedModel, ToolCall, ToolCalls

pytestmark = pytest.mark.e2e

BIG = (10_000, 1_000)  # $0.045 per turn at 3/15 per million
PER_TURN = (BIG[0] * 3 + BIG[1] * 15) / 1e6


def slow_tool(n: int) -> ToolCalls:
    # A tool that takes a moment, as real ones do: pi sends its next request after it.
    return ToolCalls([ToolCall("bash", {"command": f"sleep 0.3; echo {n}"})], usage=BIG)


def transcript_costs(repo) -> float:
    total = 0.0
    for path in repo.glob(".openloop/runs/*/transcript.jsonl"):
        for line in path.read_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            message = event.get("message") or {}
            if event.get("type") == "message_end" and message.get("role") == "assistant":
                total += message["usage"]["cost"]["total"]
    return total


def test_no_request_reaches_the_model_after_the_budget_stop(world):
    world.openloop("config", "set", "budgets.dailyCostUsd", "0.05", check=True)
    world.openloop("task", "add", "--title", "Expensive", check=True)
    scenario = Scenario([slow_tool(n) for n in range(6)] + [Reply("done")])
    with ScriptedModel(scenario) as model:
        world.point_at(model.url)
        proc = world.openloop("run-once", "-p", "demo", "--json")
        record = json.loads(proc.stdout)
        requests = len(model.requests)
    assert record["outcome"] == "budget-stopped", record
    # The second turn reached $0.09 >= $0.05: pi was killed before its third request.
    assert requests == 2
    day = next(iter(world.budget()["days"].values()))
    assert day.get("live", {}) == {}
    assert day["spentUsd"] == pytest.approx(2 * PER_TURN)
    assert day["spentUsd"] == pytest.approx(record["costUsd"])
    assert day["spentUsd"] == pytest.approx(transcript_costs(world.repo))


def test_two_projects_at_once_share_one_daily_budget(world, tmp_path):
    other = make_repo(tmp_path / "other", {"README.md": "# other\n"})
    world.openloop("project", "add", "other", str(other), "--init", check=True)
    world.openloop("project", "trust", "other", check=True)
    world.openloop("config", "set", "budgets.dailyCostUsd", "0.1", check=True)
    for alias in ("demo", "other"):
        world.openloop("task", "add", "-p", alias, "--title", "Spend", check=True)
    scenario = Scenario([slow_tool(n) for n in range(20)] + [Reply("done")] * 2)
    with ScriptedModel(scenario) as model:
        world.point_at(model.url)
        procs = [
            subprocess.Popen(
                [OPENLOOP, "run-once", "-p", alias, "--json"],
                env=world.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                stdin=subprocess.DEVNULL,
            )
            for alias in ("demo", "other")
        ]
        records = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    day = next(iter(world.budget()["days"].values()))
    reported = transcript_costs(world.repo) + transcript_costs(other)
    assert day.get("live", {}) == {}
    assert day["spentUsd"] == pytest.approx(reported)  # recorded == what pi reported
    assert 0.1 <= day["spentUsd"] <= 0.1 + 2 * PER_TURN + 1e-9, records
    assert sum(r.get("costUsd", 0) for r in records) == pytest.approx(day["spentUsd"])
