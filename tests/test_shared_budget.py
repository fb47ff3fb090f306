"""One budget for the day, shared live by every running iteration (real processes, real locks).

A running iteration publishes its spend as pi reports it, checks the day's total after each of
its own cost events and while its agent is silent, and kills its agent at once when a ceiling is
reached. The agent here is tests/support/fake_pi.py: pi's JSON events, a marker line written
before each simulated model request.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import openloop
from openloop.adapters.agent import make_adapter, transcript_cost
from openloop.adapters.supervise import AgentRequest
from openloop.loop import scheduler
from openloop.loop.outcomes import Outcome
from openloop.state import budget, gate
from openloop.state.budget import Ceilings, LiveSpend
from tests.conftest import make_repo
from tests.support import fake_pi
from tests.test_iteration import FakeAgent, nothing

ROOT = Path(openloop.__file__).resolve().parents[1]  # this checkout: subprocesses import it
CALL = 0.47  # each simulated model call


def day(env) -> budget.DaySpend:
    return budget.today(env)


# --- the ledger: publish, fold, totals ------------------------------------------------------


def test_live_spend_counts_in_the_days_total_and_the_final_charge_folds_it(env):
    budget.record_spend(env, "a", 0.30)  # a finished run, charged
    budget.publish_live(env, "run-b", "b", 0.10)
    budget.publish_live(env, "run-b", "b", 0.25)  # cumulative: replaces, never adds
    budget.publish_live(env, "run-c", "a", 0.05)
    assert day(env).live_usd() == pytest.approx(0.30)
    assert budget.spent_today(env) == pytest.approx(0.60)
    assert budget.spent_today(env, "a") == pytest.approx(0.35)
    assert budget.spent_today(env, "b") == pytest.approx(0.25)

    total = budget.record_spend(env, "b", 0.40, run_id="run-b")  # its final cost
    today = day(env)
    assert set(today.live) == {"run-c"}
    assert today.spent_usd == pytest.approx(0.70) and today.runs == 2
    assert today.by_project == {"a": 0.30, "b": 0.40}
    assert total == pytest.approx(0.75) == budget.spent_today(env)  # not 0.25 + 0.40 + ...


def test_a_final_cost_below_what_was_published_loses_nothing(env):
    budget.publish_live(env, "run-a", "a", 0.50)
    budget.record_spend(env, "a", 0.0, run_id="run-a")  # e.g. a result without a cost
    assert (day(env).spent_usd, day(env).live) == (0.50, {})
    # A run with nothing spent and nothing published writes nothing.
    budget.record_spend(env, "a", 0.0, run_id="run-x")
    assert day(env).runs == 1


def test_old_budget_files_without_a_live_map_still_load_gate_and_show(ol, project, env):
    key = budget.day_key(env.now())
    env.budget_file.parent.mkdir(parents=True, exist_ok=True)
    old = {"version": 1, "days": {key: {"spentUsd": 0.75, "runs": 2, "byProject": {"x": 0.75}}}}
    env.budget_file.write_text(json.dumps(old))
    assert budget.spent_today(env) == 0.75
    assert ol("status", "--json").json()["budget"]["spentUsd"] == 0.75
    ol("config", "set", "budgets.dailyCostUsd", "0.75")
    result = scheduler.run_once(env, "demo", adapter_factory=lambda kind: FakeAgent([nothing]))
    assert result.outcome == Outcome.SKIPPED and "daily budget of $0.75 is spent" in result.reason
    budget.publish_live(env, "run-a", "x", 0.1)  # the rewrite keeps the old entry
    assert json.loads(env.budget_file.read_text())["days"][key]["runs"] == 2


def test_status_counts_running_spend(ol, project, env):
    budget.record_spend(env, "demo", 0.20)
    budget.publish_live(env, "run-a", "demo", 0.05)
    shown = ol("status", "--json").json()["budget"]
    assert shown["spentUsd"] == 0.25 and shown["liveUsd"] == 0.05
    assert shown["byProject"] == {"demo": 0.25}
    assert "budget $0.25 / $25.00 today" in ol("status").out


# --- the live check --------------------------------------------------------------------------


def test_live_check_publishes_under_the_ceiling_and_stops_without_publishing_at_it(env):
    live = LiveSpend(env, "run-a", "a", Ceilings(1.0))
    assert live(0.47) is None and live(0.94) is None
    assert day(env).live["run-a"].cost_usd == 0.94
    reason = live(1.41)
    assert reason and "reached the daily budget $1.00" in reason
    assert day(env).live["run-a"].cost_usd == 0.94  # the stop did not wait for a write
    budget.record_spend(env, "a", 1.41, run_id="run-a")
    assert (day(env).spent_usd, day(env).live) == (1.41, {})


def test_live_check_stops_a_run_once_others_spent_the_day(env):
    live = LiveSpend(env, "run-a", "a", Ceilings(1.0))
    assert live(0.10) is None
    budget.publish_live(env, "run-b", "b", 0.60)
    assert live(0.10) is None  # silent: 0.70 in all
    budget.record_spend(env, "c", 0.30)
    assert live(0.10) and "$1.0000 reached" in live(0.10)


def test_project_ceiling_stops_and_gates_only_that_project(ol, project, env):
    ceilings = Ceilings(10.0, project_daily_usd=0.5)
    budget.record_spend(env, "other", 0.4)  # another project's spend is not demo's
    live = LiveSpend(env, "run-a", "demo", ceilings)
    assert live(0.3) is None
    assert "project 'demo' spent $0.6000 today" in (live(0.6) or "")
    assert budget.exhausted_reason(env, "other", ceilings) is None
    budget.record_spend(env, "demo", 0.6, run_id="run-a")

    assert ol("config", "set", "budgets.projectDailyCostUsd", "0.5").code == 0
    result = scheduler.run_once(env, "demo", adapter_factory=lambda kind: FakeAgent([nothing]))
    assert result.outcome == Outcome.SKIPPED
    assert "project 'demo' spent its daily budget of $0.50" in result.reason
    assert ol("config", "set", "budgets.projectDailyCostUsd", "null").code == 0
    assert "budget" not in (gate.gate_reason(env, *_gate_args(env)) or "")


def _gate_args(env):
    from openloop.state.config import load_config
    from openloop.state.project import resolve

    proj = resolve(env, "demo")
    return proj, load_config(env), proj.config()


# --- the real adapter with a pi-like fake: stopping at once ----------------------------------


@pytest.fixture
def pi(tmp_path) -> Path:
    return fake_pi.install(tmp_path / "bin")


def request_for(tmp_path: Path, check, **fake: str) -> AgentRequest:
    (tmp_path / "work").mkdir(exist_ok=True)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    env |= {f"FAKE_PI_{k.upper()}": v for k, v in fake.items()}
    return AgentRequest(
        cwd=tmp_path / "work",
        prompt="work",
        system_append="",
        model=None,
        provider=None,
        run_dir=tmp_path / "run",
        run_timeout=60.0,
        inactivity_timeout=10.0,
        budget_left_usd=None,
        env=env,
        budget_check=check,
    )


def requests_made(markers: Path) -> list[int]:
    text = markers.read_text() if markers.exists() else ""
    return [int(line.split()[1]) for line in text.splitlines()]


def test_no_request_reaches_the_model_after_a_budget_stop(env, pi, tmp_path):
    # The fake finishes its next call when sent SIGTERM (a grace period): only a kill without
    # grace keeps the fourth request from being made once the third call reached the ceiling.
    markers = tmp_path / "markers"
    check = LiveSpend(env, "run-a", "a", Ceilings(1.0))
    request = request_for(
        tmp_path, check, cost=str(CALL), delay="0.05", gap="0.5", graceful="1", markers=markers
    )
    result = make_adapter("pi", pi_binary=str(pi)).run(request)
    assert result.outcome == "budget-stopped", result
    assert "reached the daily budget" in (result.error or "")
    assert requests_made(markers) == [1, 2, 3]
    assert result.exit_code == -signal.SIGKILL and result.duration < 3
    time.sleep(0.8)  # a stopped-but-alive fake would write its next marker by now
    assert requests_made(markers) == [1, 2, 3]
    # Every cent pi reported is in the result, and the transcript is intact.
    transcript = request.run_dir / "transcript.jsonl"
    assert result.cost_usd == pytest.approx(3 * CALL) == transcript_cost(transcript)
    assert all(json.loads(line) for line in transcript.read_text().splitlines())


def test_a_silent_agent_is_stopped_when_another_process_spends_the_day(env, pi, tmp_path):
    markers = tmp_path / "markers"
    check = LiveSpend(env, "run-a", "a", Ceilings(1.0))
    request = request_for(tmp_path, check, cost="0.10", delay="0.05", silent="30", markers=markers)
    spender = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from openloop.env import Environment; "
            "from openloop.state import budget; time.sleep(1.0); "
            "budget.publish_live(Environment.from_os(), 'run-b', 'b', 0.95); "
            "print(time.time(), flush=True)",
        ],
        env={**env.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    result = make_adapter("pi", pi_binary=str(pi)).run(request)
    stopped = time.time()
    pushed = float(spender.communicate(timeout=30)[0])
    assert result.outcome == "budget-stopped", result
    assert "$1.0500 reached the daily budget $1.00" in (result.error or "")
    assert stopped - pushed < 1.5  # a check every 0.5 s while the agent says nothing
    assert result.exit_code == -signal.SIGKILL and requests_made(markers) == [1]
    assert result.cost_usd == pytest.approx(0.10)


# --- real iterations in real processes -------------------------------------------------------


def _projects(ol, tmp_path: Path, count: int) -> list[str]:
    aliases = []
    for n in range(count):
        alias = f"p{n}"
        repo = make_repo(tmp_path / f"repo{n}")
        assert ol("project", "add", alias, str(repo), "--init").code == 0
        assert ol("project", "trust", alias).code == 0
        assert ol("task", "add", "-p", alias, "--title", f"Work {n}").code == 0
        aliases.append(alias)
    return aliases


def _run_once(env, alias: str, pi: Path, **fake: str) -> subprocess.Popen:
    environ = {
        **env.environ,
        "PYTHONPATH": str(ROOT),
        "OPENLOOP_PI_BIN": str(pi),
        **{f"FAKE_PI_{k.upper()}": v for k, v in fake.items()},
    }
    return subprocess.Popen(
        [sys.executable, "-m", "openloop", "run-once", "-p", alias, "--json", "-q"],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _transcripts_cost(tmp_path: Path) -> float:
    return sum(transcript_cost(t) for t in tmp_path.glob("repo*/.openloop/runs/*/transcript.jsonl"))


def test_four_iterations_at_once_stay_within_one_call_each_and_record_what_pi_reported(
    ol, env, pi, tmp_path
):
    aliases = _projects(ol, tmp_path, 4)
    assert ol("config", "set", "budgets.dailyCostUsd", "1").code == 0
    procs = [_run_once(env, a, pi, cost=str(CALL), delay="0.4", calls="12") for a in aliases]
    outcomes = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert out, err
        outcomes.append(json.loads(out)["outcome"])
    today = day(env)
    reported = _transcripts_cost(tmp_path)
    assert today.live == {}
    assert round(today.spent_usd, 2) == round(reported, 2)  # recorded == reported, to the cent
    assert today.spent_usd == pytest.approx(reported)
    assert 1.0 <= today.spent_usd <= 1.0 + len(procs) * CALL + 1e-9, (today, outcomes)
    assert set(outcomes) <= {"budget-stopped", "skipped"} and "budget-stopped" in outcomes
    records = [json.loads(p.read_text()) for p in tmp_path.glob("repo*/.openloop/runs/*.json")]
    assert sum(r["costUsd"] for r in records) == pytest.approx(today.spent_usd)


def test_a_killed_iterations_live_spend_is_folded_by_repair_with_its_transcript_cost(
    ol, env, pi, tmp_path
):
    (alias,) = _projects(ol, tmp_path, 1)
    markers = tmp_path / "markers"
    proc = _run_once(
        env, alias, pi, cost="0.10", delay="0.05", silent="60", silent_after="2", markers=markers
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            live = day(env).live if env.budget_file.exists() else {}
            if any(e.cost_usd >= 0.2 - 1e-9 for e in live.values()):
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"no live spend published: {proc.communicate(timeout=5)}")
        proc.send_signal(signal.SIGKILL)  # OpenLoop dies; the agent lives on, orphaned
        proc.wait(timeout=10)
        assert budget.spent_today(env) == pytest.approx(0.2)  # live spend counts meanwhile
        (run_id,) = day(env).live

        scheduler.repair_after_kill(env, alias, "interrupted", "killed by a test")
    finally:
        for line in markers.read_text().splitlines() if markers.exists() else []:
            try:
                os.kill(int(line.split()[2]), signal.SIGKILL)
            except OSError:
                pass
    today = day(env)
    transcript = tmp_path / "repo0/.openloop/runs" / run_id / "transcript.jsonl"
    assert transcript_cost(transcript) == pytest.approx(0.2)
    assert (today.live, today.runs) == ({}, 1)
    assert today.spent_usd == pytest.approx(0.2)  # folded: not 0.2 charged + 0.2 live
    record = json.loads((tmp_path / f"repo0/.openloop/runs/{run_id}.json").read_text())
    assert record["outcome"] == "interrupted" and record["costUsd"] == pytest.approx(0.2)
