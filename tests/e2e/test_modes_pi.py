"""The modes end to end with the real pi against a scripted model: self-healing of a broken
default branch, judging against the baseline, planning with subtasks, idle discovery, and the
baseline validated once per tree."""

from __future__ import annotations

import json

import pytest

from tests.conftest import git
from tests.support.model_server import Reply, Scenario, ScriptedModel, ToolCall, ToolCalls

pytestmark = pytest.mark.e2e

FIXED = "def add(a, b):\n    return a + b\n"


def write(path: str, content: str) -> ToolCalls:
    return ToolCalls([ToolCall("write", {"path": path, "content": content})])


def run_once(world):
    proc = world.openloop("run-once", "-p", "demo", "--json")
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def break_main(world) -> None:
    (world.repo / "src/calc.py").write_text(FIXED + "\nBROKEN = 1\n")
    git(world.repo, "add", "src/calc.py")
    git(world.repo, "commit", "-qm", "a lint error lands on main")


def set_policy(world, text: str) -> None:
    """The policy as the user edits it (working file, not committed yet), then approved."""
    (world.repo / ".openloop/policy.yaml").write_text(text)
    world.openloop("project", "trust", "demo", check=True)


def baseline_cache(world) -> dict:
    path = world.root / "openloop" / "state" / "baseline" / "demo.json"
    return json.loads(path.read_text())


def prompts_of(model) -> list[str]:
    return [json.dumps(r["messages"]) for r in model.requests]


def test_a_lint_error_on_main_is_healed_and_merged_before_the_queued_feature(world):
    break_main(world)
    world.openloop("task", "add", "--title", "Add sub", "--scope", "src/**", check=True)
    scenario = Scenario(
        [
            write("src/calc.py", FIXED),
            Reply("Removed the stray BROKEN assignment."),
            write("src/sub.py", "def sub(a, b):\n    return a - b\n"),
            Reply("Added sub()."),
        ]
    )
    with ScriptedModel(scenario) as model:
        world.point_at(model.url)
        code, healed = run_once(world)
        assert code == 0 and healed["outcome"] == "completed", healed["reason"]
        assert healed["role"] == "ci-healer" and healed["taskStatus"] == "promoted"
        heal = world.task(healed["taskId"])
        assert (heal["kind"], heal["risk"], heal["scope"]["paths"]) == (
            "lint-fix",
            "low-risk",
            ["src/calc.py"],
        )
        assert "BROKEN" not in git(world.repo, "show", "main:src/calc.py")
        code, feature = run_once(world)
    assert "src/calc.py:4:BROKEN = 1" in prompts_of(model)[0]  # the failure, as data
    assert code == 0 and feature["taskId"] == "add-sub" and feature["outcome"] == "completed"
    task = world.task("add-sub")
    assert (task["status"], task["attempts"]) == ("review", 0)
    assert not feature["baseline"]["excused"]  # healed first: nothing to excuse
    # Two tips (broken, healed) validated, once each.
    assert baseline_cache(world)["validations"] == 2


def test_with_healing_off_a_feature_is_judged_against_the_broken_branch(world):
    break_main(world)
    set_policy(world, "selfHealing:\n  enabled: false\n")
    world.openloop("task", "add", "--title", "Add sub", "--scope", "src/**", check=True)
    scenario = Scenario(
        [
            write("src/sub.py", "def sub(a, b):\n    return a - b\n"),
            Reply("Added sub()."),
        ]
    )
    with ScriptedModel(scenario) as model:
        world.point_at(model.url)
        code, record = run_once(world)
    assert len(model.requests) == 2
    assert code == 0 and record["outcome"] == "completed", record["reason"]
    assert "lint already fails on the default branch" in record["reason"]
    assert record["baseline"]["excused"][0]["check"] == "lint"
    assert record["validation"][0]["status"] == "failed"
    task = world.task("add-sub")
    assert (task["status"], task["attempts"]) == ("review", 0)
    # No healing task was made: selfHealing.enabled is false.
    assert [t["id"] for t in world.ledger()["tasks"]] == ["add-sub"]


def test_an_unclassifiable_failure_makes_no_task_and_status_reports_it(world):
    pfile = world.repo / ".openloop/project.json"
    data = json.loads(pfile.read_text())
    data["validation"]["testCommand"] = "echo 'Segmentation fault (core dumped)'; exit 139"
    pfile.write_text(json.dumps(data))
    world.openloop("project", "trust", "demo", check=True)
    code, record = run_once(world)
    assert code == 0 and record["outcome"] == "idle"
    assert not [t for t in world.ledger()["tasks"] if t["source"]["type"] == "ci"]
    status = world.openloop("status", check=True).stdout
    assert "main fails test, not auto-healable" in status


def test_an_unchanged_default_branch_is_validated_once_across_iterations(world):
    break_main(world)
    set_policy(world, "selfHealing:\n  enabled: false\ndiscovery:\n  enabled: false\n")
    for _ in range(5):
        code, record = run_once(world)
        assert code == 0 and record["outcome"] == "idle"
    assert baseline_cache(world)["validations"] == 1
    # The systemd gate reads the verdict and has nothing to start.
    assert world.openloop("gate", "-p", "demo").returncode == 1


SPEC = """# Calculator CLI

## Problem
No command line.

## Approach
A parser first, then the command.

## Files to touch
- `src/cli.py`
- `src/parse.py`

## Acceptance checks
- `python -m src.cli 1 + 2` prints 3

```openloop-subtasks
- id: parser
  title: Parse the expression
  risk: low-risk
  scope: [src/parse.py]
```
"""


def test_a_feature_is_planned_split_and_implemented_with_its_spec(world):
    # Low-risk as a whole: the planner may not lower its subtasks' risk below the parent's.
    world.openloop(
        "task",
        "add",
        "--title",
        "Calculator CLI",
        "--kind",
        "feature",
        "--risk",
        "low-risk",
        check=True,
    )
    assert world.task("calculator-cli")["status"] == "proposed"
    scenario = Scenario(
        [
            write(".openloop/specs/calculator-cli.md", SPEC),
            Reply("Spec written."),
            write("src/parse.py", "def parse(text):\n    return text.split()\n"),
            Reply("Parser added."),
            write("src/cli.py", "from src.parse import parse\n"),
            Reply("CLI added."),
        ]
    )
    with ScriptedModel(scenario) as model:
        world.point_at(model.url)
        code, planned = run_once(world)
        assert code == 0 and planned["outcome"] == "planned", planned["reason"]
        assert planned["role"] == "sdd-planner"
        parent = world.task("calculator-cli")
        # The spec is committed on the task's branch, not left in the user's checkout.
        assert not (world.repo / ".openloop/specs/calculator-cli.md").exists()
        spec_on_branch = git(
            world.repo, "show", f"{parent['specCommit']}:.openloop/specs/calculator-cli.md"
        )
        assert "## Files to touch" in spec_on_branch
        assert git(world.repo, "rev-parse", "openloop/calculator-cli") == parent["specCommit"]
        [sub] = [t for t in world.ledger()["tasks"] if t["source"]["type"] == "spec"]
        assert parent["dependsOn"] == [sub["id"]]
        assert parent["scope"]["paths"] == ["src/cli.py", "src/parse.py"]
        code, first = run_once(world)
        assert first["taskId"] == sub["id"] and first["taskStatus"] == "promoted", first
        code, last = run_once(world)
    prompts = prompts_of(model)
    assert "## Files to touch" in prompts[2] and "## Files to touch" in prompts[4]
    assert last["taskId"] == "calculator-cli" and last["outcome"] == "completed", last
    # Spec and implementation are one change on the branch, for review.
    changed = {c["path"] for c in last["changedFiles"]}
    assert changed == {".openloop/specs/calculator-cli.md", "src/cli.py"}
    assert world.task("calculator-cli")["status"] == "review"


def test_an_idle_healthy_project_proposes_at_most_the_cap_never_twice(world):
    for i in range(5):
        (world.repo / f"src/mod{i}.py").write_text(f"def f{i}():\n    return {i}\n")
    git(world.repo, "add", "-A", "src")
    git(world.repo, "commit", "-qm", "modules")
    set_policy(world, "discovery:\n  maxProposalsPerDay: 3\n")
    outcomes = [run_once(world)[1] for _ in range(4)]
    assert all(r["outcome"] == "idle" for r in outcomes)
    proposals = [t for t in world.ledger()["tasks"] if t["source"]["type"] == "discovery"]
    assert len(proposals) == 3
    assert len({t["source"]["ref"] for t in proposals}) == 3
    assert all(t["status"] == "proposed" for t in proposals)
    assert "discovery proposed 3" in outcomes[0]["reason"]
    assert world.openloop("gate", "-p", "demo").returncode == 1  # nothing left for today
