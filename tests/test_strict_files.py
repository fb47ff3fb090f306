"""policy.yaml and project.json are strict: a misspelled key or a wrongly typed value is an error
naming the file, the key and the closest known key, not a silently dropped rule. Real files in
temporary repositories, through the real CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from openloop.loop import scheduler
from openloop.loop.outcomes import Outcome
from openloop.state.projectconfig import branch_name_problem
from tests.conftest import git
from tests.test_iteration import FakeAgent, add, set_project, task_of, write

V1 = Path(__file__).parent / "fixtures" / "v1" / "repo" / ".openloop"


def one_line_error(result) -> str:
    assert result.code == 2, (result.code, result.out, result.err)
    assert result.err.count("\n") == 1, result.err
    return result.err.strip()


def edit_json(path: Path, change) -> bytes:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2))
    return path.read_bytes()


# --- project.json -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "key", "expected"),
    [
        (None, "valdation", "valdation: unknown key (did you mean validation?)"),
        ("project", "nme", "project.nme: unknown key (did you mean name?)"),
        ("pi", "modle", "pi.modle: unknown key (did you mean model?)"),
        ("agent", "typ", "agent.typ: unknown key (did you mean type?)"),
        (
            "runtime",
            "runTimeoutSecond",
            "runtime.runTimeoutSecond: unknown key (did you mean runTimeoutSeconds?)",
        ),
        (
            "validation",
            "testComand",
            "validation.testComand: unknown key (did you mean testCommand?)",
        ),
        (
            "schedule",
            "intervalMinute",
            "schedule.intervalMinute: unknown key (did you mean intervalMinutes?)",
        ),
        ("ledger", "versionned", "ledger.versionned: unknown key (did you mean versioned?)"),
    ],
)
def test_project_json_misspelled_key_in_each_section(ol, project, section, key, expected):
    pfile = project / ".openloop/project.json"

    def change(data):
        (data.setdefault(section, {}) if section else data)[key] = {} if section is None else 1

    before = edit_json(pfile, change)
    message = one_line_error(ol("config", "project-set-model", "demo", "other-model"))
    assert message.endswith(f"{pfile}: {expected}"), message
    assert pfile.read_bytes() == before


def test_project_json_unknown_key_with_nothing_close_gets_no_suggestion(ol, project):
    pfile = project / ".openloop/project.json"
    before = edit_json(pfile, lambda d: d["runtime"].update(zzz=1))
    message = one_line_error(ol("config", "project-show", "demo"))
    assert message.endswith(f"{pfile}: runtime.zzz: unknown key"), message
    assert pfile.read_bytes() == before


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        (
            "runtime",
            "runTimeoutSeconds",
            True,
            "runtime.runTimeoutSeconds: Input should be a valid",
        ),
        ("runtime", "maxAttemptsPerTask", "5", "runtime.maxAttemptsPerTask: Input should be a val"),
        ("schedule", "cpuWeight", 1.0, "schedule.cpuWeight: Input should be a valid integer"),
        ("ledger", "versioned", 1, "ledger.versioned: Input should be a valid boolean"),
        ("validation", "testCommand", 5, "validation.testCommand: Input should be a valid string"),
    ],
)
def test_project_json_values_are_not_coerced(ol, project, section, key, value, expected):
    pfile = project / ".openloop/project.json"
    before = edit_json(pfile, lambda d: d.setdefault(section, {}).update({key: value}))
    message = one_line_error(ol("project", "trust", "demo"))
    assert f"{pfile}: {expected}" in message
    assert pfile.read_bytes() == before


@pytest.mark.parametrize(
    ("prefix", "problem"),
    [
        ("", "must not be empty"),
        ("a..b/", "cannot start a git branch name: contains '..'"),
        ("my branch/", "contains ' '"),
        ("-x/", "starts with '-'"),
        ("work//", "contains '//'"),
        ("tasks.lock/", "ends with '.lock'"),
    ],
)
def test_branch_prefix_must_make_valid_branch_names(ol, project, prefix, problem):
    pfile = project / ".openloop/project.json"
    before = edit_json(pfile, lambda d: d["runtime"].update(branchPrefix=prefix))
    message = one_line_error(ol("config", "project-set-model", "demo", "m"))
    assert f"{pfile}: runtime.branchPrefix: " in message and problem in message, message
    assert pfile.read_bytes() == before


def test_a_valid_branch_prefix_is_accepted(ol, project):
    pfile = project / ".openloop/project.json"
    edit_json(pfile, lambda d: d["runtime"].update(branchPrefix="bot/openloop-"))
    assert ol("config", "project-set-model", "demo", "m").code == 0
    assert json.loads(pfile.read_text())["runtime"]["branchPrefix"] == "bot/openloop-"


@pytest.mark.parametrize(
    "name",
    [
        "openloop/x",
        "x",
        "a.b/x",
        "a./x",
        "a@x",
        "a.lockx",
        "a..bx",
        "a@{x",
        "a b/x",
        "a\tx",
        "a\x7fx",
        "a~x",
        "a^x",
        "a:x",
        "a?x",
        "a*x",
        "a[x",
        "a\\x",
        ".a/x",
        "a/.x",
        "a.lock/x",
        "/ax",
        "-ax",
        "a//x",
    ],
)
def test_branch_rules_agree_with_git(name):
    git_ok = (
        subprocess.run(
            ["git", "check-ref-format", "--branch", name], capture_output=True
        ).returncode
        == 0
    )
    assert (branch_name_problem(name) is None) == git_ok, branch_name_problem(name)


def test_new_project_json_carries_no_legacy_keys(ol, project):
    data = json.loads((project / ".openloop/project.json").read_text())
    assert "risk" not in data
    assert "promptFiles" not in data["pi"] and "repoRoot" not in data["project"]
    assert not {"autoCommit", "useWorktree", "prCommand"} & data["runtime"].keys()


# --- policy.yaml ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "version: 2\nscope:\n  denyGlob: ['secrets/**']\n",
            "line 3: scope.denyGlob: unknown key (did you mean denyGlobs?)",
        ),
        (
            "version: 2\nautoMerge:\n  enabled: true\n  maxFile: 3\n",
            "line 4: autoMerge.maxFile: unknown key (did you mean maxFiles?)",
        ),
        (
            "version: 2\nselfHealing:\n  enable: false\n",
            "line 3: selfHealing.enable: unknown key (did you mean enabled?)",
        ),
        (
            "version: 2\nprotectedPath:\n  - secrets/**\n",
            "line 2: protectedPath: unknown key (did you mean protectedPaths?)",
        ),
        ("version: 2\nscope:\n  zzz: 1\n", "line 3: scope.zzz: unknown key"),
        (
            "version: 2\nriskClasses: {}\n",
            "line 2: riskClasses: unknown key (version 1 only;",
        ),
        (
            "version: 1\npromotion:\n  lowRiskmode: auto-merge\n",
            "line 3: promotion.lowRiskmode: unknown key (did you mean lowRiskMode?)",
        ),
        (
            "version: 1\nriskClasses:\n  low-risk: {autoMergeAllowd: true}\n",
            "line 3: riskClasses.low-risk.autoMergeAllowd: unknown key "
            "(did you mean autoMergeAllowed?)",
        ),
        (
            "version: 1\nscope:\n  denyGlob: ['secrets/**']\n",
            "line 3: scope.denyGlob: unknown key (did you mean denyGlobs?)",
        ),
        (
            "version: 2\nautoMerge:\n  maxFiles: true\n",
            "line 3: autoMerge.maxFiles: Input should be a valid integer",
        ),
        (
            "version: 2\nautoMerge:\n  maxLines: '5'\n",
            "line 3: autoMerge.maxLines: Input should be a valid integer",
        ),
        (
            "version: 2\nautoMerge:\n  enabled: 1\n",
            "line 3: autoMerge.enabled: Input should be a valid boolean",
        ),
    ],
)
def test_policy_errors_through_init_name_file_key_and_suggestion(ol, project, text, expected):
    # init keeps a policy the user edited: it checks it first and writes nothing when invalid.
    policy = project / ".openloop/policy.yaml"
    policy.write_text(text)
    before = {p: p.read_bytes() for p in (project / ".openloop").rglob("*") if p.is_file()}
    message = one_line_error(ol("project", "init", "demo"))
    assert f"openloop: error: {policy}: {expected}" in message, message
    after = {p: p.read_bytes() for p in (project / ".openloop").rglob("*") if p.is_file()}
    assert after == before


def test_the_template_policy_passes_the_strict_check(ol, project):
    policy = project / ".openloop/policy.yaml"
    policy.write_text(policy.read_text().replace("maxFiles: 20", "maxFiles: 5"))
    assert ol("project", "init", "demo").code == 0


# --- version 1 files ----------------------------------------------------------------------------


@pytest.fixture
def legacy(ol, project):
    """'demo' whose .openloop holds the original tool's policy.yaml and project.json."""
    for name in ("policy.yaml", "project.json"):
        shutil.copy(V1 / name, project / ".openloop" / name)
    return project


def test_v1_files_still_load_and_keep_their_legacy_keys(ol, legacy):
    shown = ol("config", "project-show", "demo")
    assert shown.code == 0, shown.err
    assert shown.json()["config"]["project"]["name"] == "legacy"
    assert ol("config", "project-set-model", "demo", "m").code == 0
    data = json.loads((legacy / ".openloop/project.json").read_text())
    assert data["version"] == 2
    assert data["runtime"]["useWorktree"] is False and data["runtime"]["autoCommit"] is True
    # The rewritten (now version 2) file reads back.
    assert ol("config", "project-show", "demo").code == 0
    # The v1 policy is kept by init and passes its check.
    init = ol("project", "init", "demo")
    assert init.code == 0, init.err


def test_v1_project_json_without_a_version_key_loads(ol, legacy):
    pfile = legacy / ".openloop/project.json"
    edit_json(pfile, lambda d: d.pop("version"))
    assert ol("config", "project-show", "demo").code == 0


def test_v1_project_json_still_refuses_a_misspelled_key(ol, legacy):
    pfile = legacy / ".openloop/project.json"
    before = edit_json(pfile, lambda d: d["validation"].update(lintComand="make lint"))
    message = one_line_error(ol("config", "project-set-model", "demo", "m"))
    assert message.endswith(
        f"{pfile}: validation.lintComand: unknown key (did you mean lintCommand?)"
    )
    assert pfile.read_bytes() == before


# --- run-once and the gate skip a project whose own files are invalid -------------------------


@pytest.fixture
def demo(ol, project):
    """'demo' that would auto-merge a low-risk validated change, with one such task ready."""
    set_project(project, validation={"lintCommand": "true"})
    assert ol("project", "trust", "demo").code == 0
    add(ol, "Harmless", "--risk", "low-risk")
    return project


def test_run_once_skips_a_project_whose_policy_has_a_misspelled_key(ol, demo, env):
    policy = demo / ".openloop/policy.yaml"
    policy.write_text("version: 2\nscope:\n  denyGlob: ['secrets/**']\n")
    main_before = git(demo, "rev-parse", "main")
    reason = f"{policy}: line 3: scope.denyGlob: unknown key (did you mean denyGlobs?)"

    agent = FakeAgent([write("secrets/token", "t\n")])
    result = scheduler.run_once(env, "demo", adapter_factory=lambda kind: agent)
    assert (result.outcome, result.reason) == (Outcome.SKIPPED, reason)
    assert agent.requests == []

    cli = ol("run-once", "-p", "demo")
    assert cli.code == 0, cli.err
    assert cli.out.strip() == f"demo task harmless: skipped: {reason}"
    assert task_of(demo, "harmless").status == "ready"
    assert task_of(demo, "harmless").attempts == 0
    assert git(demo, "rev-parse", "main") == main_before
    assert git(demo, "branch", "--list", "openloop/*") == ""

    # Under the timer the unit fails instead (exit 255: OnFailure= fires, status shows it).
    gate = ol("gate", "-p", "demo")
    assert gate.code == 255 and reason in gate.err
    dry = ol("run-once", "-p", "demo", "--dry-run")
    assert dry.json() == {"mode": "skip", "outcome": "skipped", "reason": reason}


def test_with_the_key_spelled_right_the_same_run_is_blocked(ol, demo, env):
    # The control for the test above: the fake agent does reach the denied file.
    (demo / ".openloop/policy.yaml").write_text("version: 2\nscope:\n  denyGlobs: ['secrets/**']\n")
    agent = FakeAgent([write("secrets/token", "t\n")])
    result = scheduler.run_once(env, "demo", adapter_factory=lambda kind: agent)
    assert result.outcome == Outcome.BLOCKED_BY_POLICY
    assert len(agent.requests) == 1


def test_run_once_skips_a_project_whose_project_json_is_invalid(ol, demo, env):
    pfile = demo / ".openloop/project.json"
    edit_json(pfile, lambda d: d["runtime"].update(runTimeoutSeconds=True))
    agent = FakeAgent([write("a.txt", "a\n")])
    result = scheduler.run_once(env, "demo", adapter_factory=lambda kind: agent)
    assert result.outcome == Outcome.SKIPPED
    assert result.reason.startswith(f"{pfile}: runtime.runTimeoutSeconds: Input should be")
    assert agent.requests == []
    assert task_of(demo, "harmless").status == "ready"
    gate = ol("gate", "-p", "demo")
    assert gate.code == 255 and f"{pfile}: runtime.runTimeoutSeconds" in gate.err
