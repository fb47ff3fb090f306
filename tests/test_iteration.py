"""The iteration pipeline on real git repositories, with a scripted in-process agent.

The real pi runs in tests/e2e/; here the agent is a fake that edits the worktree, so every
branch of the pipeline (outcomes, attempts, no-progress, policy, gates, repair) runs in
milliseconds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from openloop.adapters.agent import AgentResult
from openloop.adapters.supervise import AgentRequest
from openloop.errors import BusyError
from openloop.loop import attempt, scheduler
from openloop.loop.outcomes import Outcome
from openloop.state import budget, pause
from openloop.state.ledger import load_ledger
from tests.conftest import commit_policy, git


@dataclass
class FakeAgent:
    """Plays one action per run: a function that edits the worktree, plus a cost."""

    actions: list[Callable[[Path], None]] = field(default_factory=list)
    outcome: str = "completed"
    cost: float = 0.01
    requests: list[AgentRequest] = field(default_factory=list)
    name: str = "fake"
    reports_cost: bool = True
    reports_progress: bool = True

    def run(self, request: AgentRequest, on_event=None) -> AgentResult:
        self.requests.append(request)
        if self.actions:
            self.actions.pop(0)(request.cwd)
        return AgentResult(
            outcome=self.outcome,
            stop_reason="stop" if self.outcome == "completed" else "error",
            error=None if self.outcome == "completed" else "model failed",
            exit_code=0,
            cost_usd=self.cost,
            tokens={"input": 10, "output": 5},
            tool_calls=1,
            tool_errors=0,
            duration=0.01,
            final_text="done",
        )


def write(rel: str, content: str) -> Callable[[Path], None]:
    def action(cwd: Path) -> None:
        target = cwd / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)

    return action


def nothing(cwd: Path) -> None:
    pass


def set_project(repo: Path, **sections) -> None:
    path = repo / ".openloop/project.json"
    data = json.loads(path.read_text())
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    path.write_text(json.dumps(data))


@pytest.fixture
def demo(ol, project):
    """'demo' with a lint check that fails on the word BROKEN in any .py file."""
    set_project(
        project,
        validation={
            "lintCommand": "! grep -rq BROKEN --include=*.py .",
            "typecheckCommand": None,
            "testCommand": None,
        },
    )
    assert ol("project", "trust", "demo").code == 0
    return project


def once(env, agent: FakeAgent, **kw):
    return scheduler.run_once(env, "demo", adapter_factory=lambda kind: agent, **kw)


def task_of(repo: Path, task_id: str):
    return load_ledger(repo / ".openloop/tasks.json").get(task_id)


def add(ol, title, *extra):
    result = ol("task", "add", "--title", title, "--json", *extra)
    assert result.code == 0, result.err
    return result.json()["id"]


def test_clean_change_is_committed_on_the_task_branch_and_goes_to_review(ol, demo, env):
    tid = add(ol, "Add hello")  # medium risk: never auto-merged
    agent = FakeAgent([write("hello.py", "print('hi')\n")])
    result = once(env, agent)
    assert result.outcome == Outcome.COMPLETED and result.exit_code == 0
    task = task_of(demo, tid)
    assert task.status == "review"
    assert task.branch == "openloop/add-hello"
    assert git(demo, "show", "openloop/add-hello:hello.py") == "print('hi')"
    assert "Task: add-hello" in git(demo, "log", "-1", "--format=%B", "openloop/add-hello")
    assert git(demo, "rev-parse", "main") != git(demo, "rev-parse", "openloop/add-hello")
    assert not (demo / "hello.py").exists()  # the user's checkout is untouched
    record = json.loads((demo / f".openloop/runs/{result.run_id}.json").read_text())
    assert record["outcome"] == "completed" and record["taskStatus"] == "review"
    assert record["changedFiles"] == [{"status": "A", "path": "hello.py", "oldPath": None}]
    assert record["validation"][0]["status"] == "passed"
    assert record["costUsd"] == 0.01
    assert budget.spent_today(env) == pytest.approx(0.01)
    assert (demo / ".openloop/promotions/add-hello.json").is_file()
    assert "worktree" not in git(demo, "worktree", "list").split("\n", 1)[-1]
    assert [c.to for c in task.history] == ["ready", "in_progress", "validating", "review"]
    # The agent worked in a separate worktree on the task branch, never in the user's checkout.
    assert agent.requests[0].cwd != demo and "openloop" not in str(agent.requests[0].cwd.name)


def test_failed_validation_requeues_with_the_failure_in_the_next_prompt(ol, demo, env):
    tid = add(ol, "Add code")
    agent = FakeAgent([write("a.py", "BROKEN = 1\n"), write("a.py", "fixed = 1\n")])
    first = once(env, agent)
    assert first.outcome == Outcome.VALIDATION_FAILED and first.exit_code == 10
    task = task_of(demo, tid)
    assert (task.status, task.attempts) == ("ready", 1)
    assert "lint" in task.last_failure_signature
    second = once(env, agent)
    assert "The previous attempt failed" in agent.requests[1].prompt
    assert "grep -rq BROKEN" in agent.requests[1].prompt
    assert second.outcome == Outcome.COMPLETED
    assert task_of(demo, tid).status == "review"


def test_no_change_twice_blocks_the_task(ol, demo, env):
    tid = add(ol, "Do nothing")
    agent = FakeAgent([nothing, nothing])
    first = once(env, agent)
    assert first.outcome == Outcome.NO_PROGRESS and first.exit_code == 15
    assert (task_of(demo, tid).status, task_of(demo, tid).no_progress_streak) == ("ready", 1)
    once(env, agent)
    task = task_of(demo, tid)
    assert task.status == "blocked"
    assert "no progress in 2 attempts" in task.history[-1].reason


def test_same_failing_change_repeated_blocks_the_task(ol, demo, env):
    ol("config", "set", "runtime.maxAttemptsPerTask", "10")
    tid = add(ol, "Loop")
    agent = FakeAgent([write("a.py", "BROKEN\n")] * 3)
    assert once(env, agent).outcome == Outcome.VALIDATION_FAILED
    assert once(env, agent).outcome == Outcome.NO_PROGRESS  # identical diff: 1 in a row
    assert task_of(demo, tid).status == "ready"
    assert once(env, agent).outcome == Outcome.NO_PROGRESS  # 2 in a row
    task = task_of(demo, tid)
    assert (task.status, task.attempts) == ("blocked", 3)
    assert "no progress in 2 attempts in a row" in task.history[-1].reason


def test_same_failure_signature_counts_as_no_progress(ol, demo, env):
    ol("config", "set", "runtime.maxAttemptsPerTask", "10")
    tid = add(ol, "Different diffs, same failure")
    agent = FakeAgent(
        [write("a.py", "BROKEN\n"), write("b.py", "BROKEN\n"), write("c.py", "BROKEN\n")]
    )
    assert once(env, agent).outcome == Outcome.VALIDATION_FAILED
    assert once(env, agent).outcome == Outcome.VALIDATION_FAILED  # same signature: 1 in a row
    last = once(env, agent)  # 2 in a row: the task blocks, and every record says no-progress
    assert (last.outcome, last.exit_code) == (Outcome.NO_PROGRESS, 15)
    assert last.record["outcome"] == "no-progress"
    assert task_of(demo, tid).status == "blocked"


def test_max_attempts_blocks(ol, demo, env):
    ol("config", "set", "runtime.maxAttemptsPerTask", "2")
    ol("config", "set", "runtime.noProgressRepeatLimit", "5")
    tid = add(ol, "Hard")
    agent = FakeAgent([write("a.py", "BROKEN 1\n"), write("b.py", "BROKEN 2\n")])
    once(env, agent)
    once(env, agent)
    task = task_of(demo, tid)
    assert (task.status, task.attempts) == ("blocked", 2)
    assert "maximum of 2 attempts" in task.history[-1].reason
    assert once(env, FakeAgent()).outcome == Outcome.IDLE


def test_agent_failure_outcomes_are_recorded(ol, demo, env):
    tid = add(ol, "Flaky model")
    result = once(env, FakeAgent([nothing], outcome="agent-error"))
    assert result.outcome == Outcome.AGENT_ERROR and result.exit_code == 11
    task = task_of(demo, tid)
    assert (task.status, task.attempts) == ("ready", 1)
    assert "agent-error" in task.last_failure


def test_budget_stop_does_not_count_an_attempt_and_exhaustion_skips(ol, demo, env):
    ol("config", "set", "budgets.dailyCostUsd", "0.5")
    tid = add(ol, "Pricey")
    result = once(env, FakeAgent([nothing], outcome="budget-stopped", cost=0.6))
    assert result.outcome == Outcome.BUDGET_STOPPED
    assert task_of(demo, tid).attempts == 0
    skipped = once(env, FakeAgent())
    assert skipped.outcome == Outcome.SKIPPED and "budget" in skipped.reason


def test_pause_and_untrusted_commands_skip_without_touching_tasks(ol, demo, env):
    tid = add(ol, "Wait")
    pause.set_global_pause(env, True)
    assert once(env, FakeAgent()).outcome == Outcome.SKIPPED
    pause.set_global_pause(env, False)
    pause.set_project_pause(env, "demo", True)
    assert "paused" in once(env, FakeAgent()).reason
    pause.set_project_pause(env, "demo", False)
    set_project(demo, validation={"testCommand": "curl x | sh"})
    untrusted = once(env, FakeAgent())
    assert untrusted.outcome == Outcome.SKIPPED and "not approved" in untrusted.reason
    assert task_of(demo, tid).status == "ready" and task_of(demo, tid).attempts == 0


def test_denied_declared_scope_blocks_before_the_agent_runs(ol, demo, env):
    commit_policy(ol, demo, "version: 2\nscope:\n  denyGlobs: ['secrets/**']\n")
    tid = add(ol, "Touch secrets", "--scope", "secrets/key.pem")
    agent = FakeAgent([write("secrets/key.pem", "x")])
    result = once(env, agent)
    assert result.outcome == Outcome.BLOCKED_BY_POLICY and result.exit_code == 16
    assert agent.requests == []
    assert task_of(demo, tid).status == "blocked"


def test_a_denied_path_in_the_real_diff_is_blocked(ol, demo, env):
    commit_policy(ol, demo, "version: 2\nscope:\n  denyGlobs: ['secrets/**']\n")
    tid = add(ol, "Innocent", "--scope", "src/**")
    result = once(env, FakeAgent([write("secrets/key.pem", "x")]))
    assert result.outcome == Outcome.BLOCKED_BY_POLICY
    assert "secrets/key.pem" in result.reason
    assert task_of(demo, tid).status == "blocked"


def test_dependencies_and_priority_order_selection(ol, demo, env):
    first = add(ol, "Base", "--priority", "1")
    add(ol, "On top", "--priority", "9", "--depends-on", first)
    urgent = add(ol, "Urgent", "--priority", "5")
    plan = scheduler.dry_run(env, "demo")
    assert plan["taskId"] == urgent and plan["mode"] == "implement"
    assert plan["role"] == "implementer"


def test_dry_run_writes_nothing(ol, demo, env):
    add(ol, "Look only")
    before = {p: p.read_bytes() for p in (demo / ".openloop").rglob("*") if p.is_file()}
    plan = scheduler.dry_run(env, "demo")
    assert plan["mode"] == "implement" and "Look only" in plan["prompt"]
    after = {p: p.read_bytes() for p in (demo / ".openloop").rglob("*") if p.is_file()}
    assert before == after
    assert not env.worktrees_dir.exists()


def test_plan_mode_writes_a_spec_then_the_task_is_ready(ol, demo, env):
    tid = add(ol, "Big change", "--plan")
    agent = FakeAgent([write(".openloop/specs/big-change.md", "# Spec\nDo it.\n")])
    result = once(env, agent)
    assert result.outcome == Outcome.PLANNED
    assert agent.requests[0].prompt.count(".openloop/specs/big-change.md") >= 1
    task = task_of(demo, tid)
    assert task.status == "ready" and task.spec_id == ".openloop/specs/big-change.md"
    # The spec is committed on the task's branch, never copied into the user's checkout.
    assert not (demo / ".openloop/specs/big-change.md").exists()
    assert git(demo, "show", f"{task.spec_commit}:.openloop/specs/big-change.md") == (
        "# Spec\nDo it."
    )
    implement = FakeAgent([write("x.py", "ok = 1\n")])
    once(env, implement)
    assert "# Spec" in implement.requests[0].prompt
    # Implemented on top of the spec: both are on the branch, reviewed and merged together.
    files = git(demo, "diff", "--name-only", "main", f"openloop/{tid}").split()
    assert files == [".openloop/specs/big-change.md", "x.py"]


def test_a_second_concurrent_iteration_is_refused(ol, demo, env):
    add(ol, "One at a time")
    with scheduler.iteration_lock(env, "demo"):
        with pytest.raises(BusyError, match="another iteration of project 'demo' is running"):
            once(env, FakeAgent())
    cli = None
    with scheduler.iteration_lock(env, "demo"):
        cli = ol("run-once", "-p", "demo")
    assert cli.code == 1 and "another iteration" in cli.err


def test_repair_after_a_killed_iteration(ol, demo, env):
    tid = add(ol, "Interrupted")

    class Crash(Exception):
        pass

    def crash(cwd: Path) -> None:
        (cwd / "half.py").write_text("half\n")
        raise Crash  # as if the process died mid-agent: nothing after this runs

    # Simulate the kill: run the steps up to the agent, then stop without cleanup.
    it = scheduler._load(
        env,
        scheduler.resolve(env, "demo"),
        None,
        None,
        scheduler.NullReporter(),
        lambda kind: FakeAgent([crash]),
    )
    scheduler.select(it)
    attempt.start(it)
    attempt.prepare_worktree(it)
    assert task_of(demo, tid).status == "in_progress"
    assert it.worktree.exists()
    # What pi had reported before the kill: the repair must still charge it.
    event = {
        "type": "message_end",
        "message": {
            "role": "assistant",
            "stopReason": "toolUse",
            "usage": {"cost": {"total": 0.25}},
        },
    }
    (it.run_dir / "transcript.jsonl").write_text(json.dumps(event) + "\n")

    result = once(env, FakeAgent([write("done.py", "ok = 1\n")]))
    assert result.outcome == Outcome.COMPLETED
    task = task_of(demo, tid)
    assert task.attempts == 1  # the interrupted attempt counted
    interrupted = [c for c in task.history if "repaired" in c.reason]
    assert interrupted and interrupted[0].to == "ready"
    records = [json.loads(p.read_text()) for p in (demo / ".openloop/runs").glob("*.json")]
    assert sorted(r["outcome"] for r in records) == ["completed", "interrupted"]
    assert not it.worktree.exists()
    assert budget.spent_today(env) == pytest.approx(0.25 + 0.01)


def test_old_run_records_are_pruned(ol, demo, env):
    ol("config", "set", "runtime.keepRuns", "2")
    for n in range(3):
        add(ol, f"Task {n}")
        once(env, FakeAgent([write(f"f{n}.py", "x = 1\n")]))
    runs_dir = demo / ".openloop/runs"
    summaries = sorted(p.name for p in runs_dir.glob("*.json"))
    assert len(summaries) == 2
    assert sorted(p.name for p in runs_dir.iterdir() if p.is_dir()) == [
        s.removesuffix(".json") for s in summaries
    ]
    assert "task-0" not in " ".join(summaries)


def test_a_repository_without_commits_is_skipped_not_failed(ol, env, tmp_path):
    repo = tmp_path / "empty"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    assert ol("project", "add", "empty", str(repo), "--init").code == 0
    tid = add(ol, "First commit", "-p", "empty")
    result = scheduler.run_once(env, "empty", adapter_factory=lambda kind: FakeAgent())
    assert result.outcome == Outcome.SKIPPED and "no default branch" in result.reason
    task = load_ledger(repo / ".openloop/tasks.json").get(tid)
    assert (task.status, task.attempts) == ("ready", 0)


def test_a_planner_spec_that_is_a_symlink_is_not_copied(ol, demo, env, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET=hunter2\n")
    tid = add(ol, "Plan it", "--plan")

    def link_spec(cwd: Path) -> None:
        spec = cwd / ".openloop/specs/plan-it.md"
        spec.parent.mkdir(parents=True, exist_ok=True)
        spec.symlink_to(secret)

    result = once(env, FakeAgent([link_spec]))
    assert result.outcome == Outcome.NO_PROGRESS
    assert not (demo / ".openloop/specs/plan-it.md").exists()
    assert task_of(demo, tid).status == "proposed"
