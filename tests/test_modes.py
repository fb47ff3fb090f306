"""The modes of an iteration with a scripted in-process agent: baseline health (validated once
per tree), self-healing, judging against the baseline, planning with subtasks, idle discovery,
and what the systemd gate sees of them (the real pi: tests/e2e/test_modes_pi.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from openloop.actions import unit_hooks
from openloop.loop import baseline, scheduler, validation
from openloop.loop.outcomes import Outcome
from openloop.state import baseline as cache
from openloop.state.config import load_config
from openloop.state.ledger import load_ledger
from openloop.state.project import resolve
from tests.conftest import commit_policy, git
from tests.test_iteration import FakeAgent, add, once, set_project, task_of, write

LINT = "! grep -rn BROKEN --include=*.py ."


def commit(repo: Path, rel: str, content: str, message: str = "change") -> None:
    (repo / rel).parent.mkdir(parents=True, exist_ok=True)
    (repo / rel).write_text(content)
    git(repo, "add", rel)
    git(repo, "commit", "-qm", message)


@pytest.fixture
def broken(ol, project):
    """'demo' whose lint check fails on BROKEN, with BROKEN committed on main."""
    set_project(project, validation={"lintCommand": LINT, "typecheckCommand": None})
    assert ol("project", "trust", "demo").code == 0
    commit(project, "src/calc.py", "def add(a, b):\n    return a + b\n\nBROKEN = 1\n")
    return project


def tasks(repo: Path):
    return load_ledger(repo / ".openloop/tasks.json").tasks


def validations(env) -> int:
    return cache.load(env, "demo")["validations"]


def has_work(env):
    return scheduler.has_work(env, resolve(env, "demo"), load_config(env))


# --- baseline and self-healing ------------------------------------------------------------------


def test_a_lint_error_on_main_gets_a_lint_fix_task_that_is_healed_and_merged(ol, broken, env):
    fixed = "def add(a, b):\n    return a + b\n"
    agent = FakeAgent([write("src/calc.py", fixed)])
    result = once(env, agent)
    assert result.outcome == Outcome.COMPLETED, result.reason
    [heal] = tasks(broken)
    assert (heal.kind, heal.risk, heal.source.type) == ("lint-fix", "low-risk", "ci")
    assert heal.scope_paths() == ["src/calc.py"]  # the file the failure names
    assert heal.status == "promoted"
    assert result.record["role"] == "ci-healer"
    # The failure output reached the healer as data.
    assert "src/calc.py:4:BROKEN = 1" in agent.requests[0].prompt
    assert git(broken, "show", "main:src/calc.py") == fixed.strip()
    # The next iteration validates the new tip once: healthy, nothing left to heal.
    once(env, FakeAgent())
    assert cache.latest(env, "demo")["status"] == cache.HEALTHY
    assert [t.id for t in tasks(broken) if t.source.type == "ci"] == [heal.id]


def test_an_unchanged_default_branch_is_validated_once(ol, broken, env):
    set_project(broken, runtime={"maxAttemptsPerTask": 1})
    commit_policy(ol, broken, "selfHealing:\n  enabled: false\ndiscovery:\n  enabled: false\n")
    for _ in range(4):
        assert once(env, FakeAgent()).outcome == Outcome.IDLE
    assert validations(env) == 1
    commit(broken, "README.md", "# moved\n")
    once(env, FakeAgent())
    assert validations(env) == 2


def test_a_healing_task_is_made_once_per_signature_and_blocked_after_its_attempts(ol, broken, env):
    agent = FakeAgent([write("src/calc.py", "BROKEN = 2\n"), write("src/calc.py", "BROKEN = 3\n")])
    once(env, agent)
    once(env, agent)
    [heal] = tasks(broken)
    assert (heal.status, heal.attempts) == ("blocked", 2)  # selfHealing.maxAttemptsPerSignature
    assert once(env, FakeAgent()).outcome == Outcome.IDLE
    assert len(tasks(broken)) == 1  # never made again for the same failure


def test_healing_goes_before_feature_work_and_the_feature_is_not_blocked(ol, broken, env):
    feature = add(ol, "Add sub", "--priority", "9")
    agent = FakeAgent(
        [
            write("src/calc.py", "def add(a, b):\n    return a + b\n"),
            write("src/sub.py", "def sub(a, b):\n    return a - b\n"),
        ]
    )
    first = once(env, agent)
    assert first.record["role"] == "ci-healer" and first.task_id != feature
    second = once(env, agent)
    assert second.task_id == feature and second.outcome == Outcome.COMPLETED
    assert task_of(broken, feature).attempts == 0


def test_a_check_failing_on_the_base_for_the_same_reasons_does_not_fail_the_task(ol, broken, env):
    commit_policy(ol, broken, "selfHealing:\n  enabled: false\n")
    tid = add(ol, "Add sub", "--risk", "low-risk")
    # The agent edits the broken file above the error: its line number moves, same problem.
    agent = FakeAgent([write("src/calc.py", "def sub(a, b):\n    return a - b\n\n\nBROKEN = 1\n")])
    result = once(env, agent)
    assert result.outcome == Outcome.COMPLETED, result.reason
    assert "already fails on the default branch" in result.reason
    record = result.record
    assert record["baseline"]["status"] == "failing"
    assert record["baseline"]["excused"][0]["check"] == "lint"
    assert record["decision"]["autoMergeAllowed"] is False  # not every check passed
    task = task_of(broken, tid)
    assert (task.status, task.attempts) == ("review", 0)
    assert not [t for t in tasks(broken) if t.source.type == "ci"]  # healing is off


def test_a_task_that_makes_the_baseline_worse_still_fails(ol, broken, env):
    commit_policy(ol, broken, "selfHealing:\n  enabled: false\n")
    tid = add(ol, "Add mul")
    result = once(env, FakeAgent([write("src/mul.py", "BROKEN = 'more'\n")]))
    assert result.outcome == Outcome.VALIDATION_FAILED
    assert task_of(broken, tid).attempts == 1
    assert "src/mul.py" in task_of(broken, tid).last_failure


def test_an_unclassifiable_failure_makes_no_task_and_is_reported(ol, project, env):
    set_project(project, validation={"testCommand": "echo 'Segmentation fault'; exit 139"})
    assert ol("project", "trust", "demo").code == 0
    assert once(env, FakeAgent()).outcome == Outcome.IDLE
    assert not [t for t in tasks(project) if t.source.type == "ci"]
    health = cache.summary(env, "demo")
    assert health["status"] == "failing" and health["unhealable"][0]["check"] == "test"
    status = ol("status")
    assert "fails test, not auto-healable (no failing test is named" in status.out
    doctor = json.loads(ol("doctor", "--json").out)
    assert any(c["name"] == "default branch demo" and c["warning"] for c in doctor)


def test_self_healing_disabled_makes_no_task(ol, broken, env):
    commit_policy(ol, broken, "selfHealing:\n  enabled: false\n")
    assert once(env, FakeAgent()).outcome == Outcome.IDLE
    assert not tasks(broken)
    assert cache.latest(env, "demo")["failures"][0]["kind"] == "lint-fix"


def test_a_healing_task_is_cancelled_when_its_failure_is_gone(ol, broken, env):
    commit_policy(ol, broken, "selfHealing:\n  allowedTaskKinds: [type-fix]\n")
    once(env, FakeAgent())
    assert not tasks(broken)  # lint-fix is not an allowed kind
    commit_policy(ol, broken, "selfHealing:\n  allowedTaskKinds: [lint-fix]\n")
    once(env, FakeAgent(outcome="agent-error"))
    [heal] = tasks(broken)
    assert heal.status == "ready"
    commit(broken, "src/calc.py", "ok = 1\n", "fixed by hand")
    once(env, FakeAgent())
    assert task_of(broken, heal.id).status == "cancelled"


# --- classification -----------------------------------------------------------------------------


def _failed(name: str, output: str, tmp_path: Path, code: int = 1) -> validation.CheckResult:
    log = tmp_path / f"{name}.log"
    log.write_text(output)
    return validation.CheckResult(name, "cmd", "failed", code, 0.1, str(log), output[-4000:])


@pytest.mark.parametrize(
    ("output", "names"),
    [
        (
            "tests/test_calc.py:5: AssertionError\n=== short test summary info ===\n"
            "FAILED tests/test_calc.py::test_add - assert 3 == 4\n1 failed, 2 passed in 0.1s\n",
            ["tests/test_calc.py::test_add"],
        ),
        (
            " FAIL  src/calc.test.ts > calc > adds\nAssertionError: expected 3 to be 4\n",
            ["src/calc.test.ts > calc > adds"],
        ),
        (
            "FAIL src/calc.test.js\n  ● calc › adds\n\n    expect(received).toBe(expected)\n",
            ["calc › adds", "src/calc.test.js"],
        ),
        (
            "--- FAIL: TestAdd (0.00s)\n    calc_test.go:9: got 3\nFAIL\texample.com/calc\t0.01s\n",
            ["TestAdd"],
        ),
        (
            "running 2 tests\ntest calc::tests::adds ... FAILED\ntest calc::ok ... ok\n",
            ["calc::tests::adds"],
        ),
    ],
)
def test_failing_tests_are_named_from_each_runner(output, names, tmp_path):
    entry = baseline.classify(_failed("test", output, tmp_path), lambda p: True)
    assert entry["kind"] == "localized-test-fix" and entry["tests"] == names


@pytest.mark.parametrize(
    "output",
    [
        "ERROR collecting tests/test_calc.py\nImportError: no module\n1 error in 0.1s\n",
        "no tests ran in 0.01s\n",
        "FAIL\texample.com/calc [build failed]\n",
        "error: could not compile `calc`\n",
        "Segmentation fault\n",
    ],
)
def test_a_suite_that_does_not_run_is_not_healable(output, tmp_path):
    entry = baseline.classify(_failed("test", output, tmp_path), lambda p: True)
    assert entry["kind"] is None and not entry["healable"] and entry["why"]


def test_lint_and_type_errors_name_files(tmp_path):
    files = {"src/a.py", "src/b.ts"}.__contains__
    lint = baseline.classify(_failed("lint", "./src/a.py:3:1: F401 unused\n", tmp_path), files)
    assert (lint["kind"], lint["files"]) == ("lint-fix", ["src/a.py"])
    types = baseline.classify(
        _failed("typecheck", "src/b.ts(4,2): error TS2322: bad\n", tmp_path), files
    )
    assert (types["kind"], types["files"]) == ("type-fix", ["src/b.ts"])
    missing = baseline.classify(_failed("lint", "sh: ruff: not found\n", tmp_path, 127), files)
    assert missing["kind"] is None
    # Line numbers do not change the signature; another problem does.
    moved = baseline.classify(_failed("lint", "./src/a.py:9:1: F401 unused\n", tmp_path), files)
    assert moved["signature"] == lint["signature"]
    other = baseline.classify(_failed("lint", "./src/a.py:3:1: E711 none\n", tmp_path), files)
    assert other["signature"] != lint["signature"]


# --- planning -----------------------------------------------------------------------------------

SPEC = """# Add a calculator CLI

## Problem
There is no command line.

## Approach
A parser, then the command.

## Files to touch
- `src/cli.py`
- `src/parse.py`

## Acceptance checks
- `calc 1 + 2` prints 3

```openloop-subtasks
- id: parser
  title: Parse the expression
  scope: [src/parse.py]
  risk: low-risk
- title: Wire the command
  dependsOn: [parser]
  scope: [src/cli.py]
```
"""


def test_a_feature_is_planned_split_into_subtasks_and_implemented_with_the_spec(ol, project, env):
    tid = add(ol, "Calculator CLI", "--kind", "feature")
    assert task_of(project, tid).status == "proposed"
    planner = FakeAgent([write(f".openloop/specs/{tid}.md", SPEC)])
    result = once(env, planner)
    assert result.outcome == Outcome.PLANNED, result.reason
    assert result.record["role"] == "sdd-planner"
    parent = task_of(project, tid)
    assert parent.status == "ready" and parent.spec_commit
    assert parent.scope_paths() == ["src/cli.py", "src/parse.py"]  # the spec's file list
    subs = [t for t in tasks(project) if t.source.type == "spec"]
    assert [t.title for t in subs] == ["Parse the expression", "Wire the command"]
    assert subs[1].depends_on == [subs[0].id]
    assert sorted(parent.depends_on) == sorted(t.id for t in subs)
    assert not (project / ".openloop/specs").exists() or not any(
        (project / ".openloop/specs").iterdir()
    )
    # The first subtask runs next, with the spec in its prompt, as the implementer.
    implementer = FakeAgent([write("src/parse.py", "def parse(s):\n    return s\n")])
    second = once(env, implementer)
    assert second.task_id == subs[0].id and second.record["role"] == "implementer"
    assert "Parse the expression" in implementer.requests[0].prompt
    assert "## Files to touch" in implementer.requests[0].prompt


def test_an_invalid_subtask_block_sends_the_planner_back(ol, project, env):
    tid = add(ol, "Big thing", "--kind", "epic")
    bad = SPEC.replace("dependsOn: [parser]", "dependsOn: [nowhere]")
    good = SPEC
    planner = FakeAgent(
        [write(f".openloop/specs/{tid}.md", bad), write(f".openloop/specs/{tid}.md", good)]
    )
    first = once(env, planner)
    assert first.outcome == Outcome.VALIDATION_FAILED and "nowhere" in first.reason
    assert task_of(project, tid).status == "proposed"
    assert once(env, planner).outcome == Outcome.PLANNED
    assert "nowhere" in planner.requests[1].prompt  # the previous failure


def test_a_long_description_asks_for_a_plan(ol, project):
    long = "x" * 1600
    assert ol("task", "add", "--title", "Long", "--description", long, "--json").json()[
        "status"
    ] == ("proposed")


# --- discovery ----------------------------------------------------------------------------------


def test_idle_discovery_proposes_at_most_the_cap_and_never_twice(ol, project, env):
    for i in range(6):
        commit(project, f"pkg/mod{i}.py", f"def f{i}():\n    return {i}\n")
    commit(project, "pkg/todo.py", "# TODO a\n# TODO b\n# FIXME c\n")
    commit_policy(ol, project, "discovery:\n  maxProposalsPerDay: 4\n")
    results = [once(env, FakeAgent()) for _ in range(3)]
    assert all(r.outcome == Outcome.IDLE for r in results)
    proposed = [t for t in tasks(project) if t.source.type == "discovery"]
    assert len(proposed) == 4
    assert len({t.source.ref for t in proposed}) == 4
    assert all(t.status == "proposed" for t in proposed)
    titles = [t.title for t in proposed]
    assert "Deny secrets and CI files in the policy" in titles
    assert "Resolve the TODO/FIXME notes in pkg/todo.py" in titles
    assert "discovery proposed 4" in results[0].reason
    # Proposals wait for a human: nothing runs them, and the gate has nothing to do.
    assert has_work(env) is None
    assert not unit_hooks.gate(env, "demo").run
    # Accepted, one runs (as the repo-improver).
    tid = next(t.id for t in proposed if t.kind == "test")
    assert ol("task", "accept", "--task", tid).code == 0
    agent = FakeAgent([write("tests/test_x.py", "def test_x():\n    assert True\n")])
    run = once(env, agent)
    assert run.task_id == tid and run.record["role"] == "repo-improver"
    # Removing a proposal does not bring it back.
    other = next(t.id for t in proposed if t.status == "proposed" and t.id != tid)
    assert ol("task", "remove", "--task", other).code == 0
    for _ in range(2):
        once(env, FakeAgent())
    refs = [t.source.ref for t in tasks(project) if t.source.type == "discovery"]
    assert len(refs) == len(set(refs))
    assert next((t for t in tasks(project) if t.id == other), None) is None


def test_low_risk_proposals_can_be_auto_accepted(ol, project, env):
    commit(project, "pkg/mod.py", "def f():\n    return 1\n")
    commit_policy(
        ol,
        project,
        "scope:\n  denyGlobs: ['.env*', '*.pem', '*.key', 'id_rsa*', '.github/**', "
        "'.gitlab-ci.yml', 'keys/**', 'config/**']\n"
        "discovery:\n  autoAcceptLowRisk: true\n",
    )
    set_project(project, validation={"lintCommand": "true"})
    assert ol("project", "trust", "demo").code == 0
    once(env, FakeAgent())
    [proposal] = [t for t in tasks(project) if t.source.type == "discovery"]
    assert (proposal.title, proposal.status) == ("Add tests for pkg/mod.py", "ready")


# --- the gate -----------------------------------------------------------------------------------


def test_the_gate_lets_healing_and_discovery_through_and_skips_when_nothing_is_left(
    ol, broken, env
):
    assert "not validated yet" in has_work(env)
    # The tip validated (as an iteration does first), no healing task made yet: work.
    it = scheduler._load(env, resolve(env, "demo"), None, None, scheduler.NullReporter(), None)
    scheduler.govern(it)
    assert baseline.ensure(it)["status"] == cache.FAILING
    assert "a lint-fix task is due" in unit_hooks.gate(env, "demo").reason
    once(env, FakeAgent([write("src/calc.py", "ok = 1\n")]))  # healed and merged
    assert validations(env) == 1
    assert "not validated yet" in has_work(env)  # a new tip
    once(env, FakeAgent())  # validates it, discovery proposes
    assert has_work(env) is None
    decision = unit_hooks.gate(env, "demo")
    assert not decision.run and "no eligible task" in decision.reason


def test_the_gate_skips_a_failing_branch_it_may_not_heal(ol, broken, env):
    commit_policy(ol, broken, "selfHealing:\n  enabled: false\n")
    assert once(env, FakeAgent()).outcome == Outcome.IDLE  # validated: failing, no healing
    assert has_work(env) is None  # and discovery waits for a healthy branch


def test_only_the_same_named_failures_are_excused(tmp_path):
    base_out = "FAILED tests/test_a.py::test_one - assert 1 == 2\n1 failed in 0.1s\n"
    entry = {
        "status": cache.FAILING,
        "failures": [baseline.classify(_failed("test", base_out, tmp_path), lambda p: True)],
    }

    def judged(output: str) -> list:
        (tmp_path / "now").mkdir(exist_ok=True)
        return baseline.compare([_failed("test", output, tmp_path / "now")], entry, lambda p: True)

    assert judged("FAILED tests/test_a.py::test_one - assert 1 == 3\n1 failed in 0.3s\n")
    assert not judged("FAILED tests/test_a.py::test_two - boom\nFAILED tests/test_a.py::test_one\n")
    assert not judged("ERROR collecting tests/test_a.py\n1 error in 0.1s\n")
    assert not judged("")
    # What a healing task is there to fix is never excused.
    same = [_failed("test", base_out, tmp_path / "now")]
    assert not baseline.compare(same, entry, lambda p: True, must_fix=frozenset({"test"}))
