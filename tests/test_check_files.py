"""Checks cannot judge their own change: the files the approved commands run are protected, and
no check runs unless it is an approved command (the agent is treated as an adversary)."""

from __future__ import annotations

import json
import shlex

import pytest

from openloop.loop import attempt, promotion
from openloop.loop.outcomes import Outcome
from openloop.state import checkfiles
from openloop.state.judge import Change, assess
from openloop.state.policy import Policy
from openloop.state.project import resolve
from tests.conftest import git
from tests.test_iteration import FakeAgent, add, once, set_project, task_of, write

# --- the pure function -------------------------------------------------------------------------


def files(command: str, existing: frozenset[str] = frozenset()) -> set[str]:
    return set(checkfiles.command_files({"test": command}, existing.__contains__))


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("bash scripts/test.sh", {"scripts/test.sh"}),
        ("./run-tests", {"run-tests"}),
        ("make -f ci.mk test", {"ci.mk"}),
        ("make --file=build/ci test", {"build/ci"}),
        ("pytest -c cfg/pytest.ini", {"cfg/pytest.ini"}),
        ("pytest -c myconf -q", {"myconf"}),  # an option's file, whatever it looks like
        ("pylint --rcfile=lintrc src", {"lintrc"}),
        ("ruff check --config ruff-ci.toml .", {"ruff-ci.toml"}),
        ("npm test", set()),
        ("python -m pytest tests", set()),
        ("python -c 'import a/b' tools/gen.py", {"tools/gen.py"}),  # -c is code, not a file
        ("bash 'scripts/my tests.sh'", {"scripts/my tests.sh"}),
        ('bash "scripts/unterminated.sh', set()),  # a broken quote: nothing, and no crash
        ("bash scripts/a\\", set()),
        ("bash /usr/local/bin/check.sh ../outside.sh a/../../up.sh", set()),
        ("bash ./scripts/../scripts/x.sh", {"scripts/x.sh"}),
        ("sh -c 'bash scripts/inner.sh && node tools/t.mjs'", {"scripts/inner.sh", "tools/t.mjs"}),
        ("cd web && npm test && bash ci/check.sh", {"web/ci/check.sh"}),
        ("CONFIG=conf/ci.toml pytest 2>&1 | tee out.log", {"conf/ci.toml"}),
        ("ruff check . && mypy src", set()),
        ("tsc -p tsconfig.build.json", {"tsconfig.build.json"}),
        ("pytest -k a#b tests/x.py", {"tests/x.py"}),
        ("bash -lc 'make -f ci/x.mk'", {"ci/x.mk"}),
    ],
)
def test_command_files(command, expected):
    assert files(command) == expected


def test_a_plain_word_is_a_file_only_if_the_repository_has_it():
    assert files("run-tests --fast") == set()
    assert files("run-tests --fast", frozenset({"run-tests"})) == {"run-tests"}


def test_reasons_name_the_file_and_the_command():
    found = checkfiles.command_files(
        {
            "validation.lint": None,
            "validation.test": "bash scripts/test.sh",
            "agent.command": "./agent.sh",
        },
        lambda path: False,
    )
    assert set(found) == {"scripts/test.sh", "agent.sh"}
    assert found["scripts/test.sh"].startswith(
        "scripts/test.sh is run or read by the approved test command ('bash scripts/test.sh')"
    )
    assert "approved agent command" in found["agent.sh"]


def judge_paths(paths, **kw):
    return assess(
        [Change("M", p) for p in paths],
        Policy(),
        declared_risk="low-risk",
        declared_scope=None,
        lines_changed=1,
        validations_passed=True,
        **kw,
    )


def test_assess_protects_command_files_even_when_the_policy_drops_check_definitions():
    policy_free = Policy.model_validate({"protectedPaths": []})
    reason = "scripts/test.sh is run or read by the approved test command"
    verdict = assess(
        [Change("D", "src/app.py"), Change("M", "scripts/test.sh")],
        policy_free,
        declared_risk="low-risk",
        declared_scope=None,
        lines_changed=2,
        validations_passed=True,
        command_files={"scripts/test.sh": reason},
    )
    assert not verdict.auto_merge and verdict.protected == ("scripts/test.sh",)
    assert reason in verdict.reasons
    assert judge_paths(["src/app.py"], command_files={"scripts/test.sh": reason}).auto_merge


@pytest.mark.parametrize(
    "path",
    [
        "tsconfig.json",
        "packages/web/tsconfig.build.json",
        ".pre-commit-config.yaml",
        "setup.py",
        "sub/setup.cfg",
        "tox.ini",
        "noxfile.py",
        "web/.eslintrc.cjs",
        "eslint.config.mjs",
        ".prettierrc",
        "jest.config.ts",
        "vitest.config.ts",
        "babel.config.js",
        "pytest.ini",
        ".coveragerc",
        "go.mod",
        ".golangci.yml",
        "rust-toolchain.toml",
        "Justfile",
        "justfile",
        "Taskfile.yml",
        ".gitattributes",
        ".gitmodules",
        ".envrc",
        "tests/unit/conftest.py",
        "apps/api/package.json",
    ],
)
def test_check_definitions_are_protected_by_default(path):
    verdict = judge_paths([path])
    assert verdict.protected == (path,) and not verdict.auto_merge


def test_ordinary_files_are_not_check_definitions():
    assert judge_paths(["src/app.py", "docs/setup.md", "src/tsconfig_helper.py"]).auto_merge


# --- iterations and promotions on real repositories ----------------------------------------------


@pytest.fixture
def scripted(ol, project):
    """'demo' whose approved test command is `bash scripts/test.sh`, a script that fails when
    src/app.py is missing."""
    (project / "scripts").mkdir()
    (project / "scripts/test.sh").write_text("test -f src/app.py\n")
    (project / "src").mkdir()
    (project / "src/app.py").write_text("x = 1\n")
    set_project(
        project,
        validation={
            "lintCommand": None,
            "typecheckCommand": None,
            "testCommand": "bash scripts/test.sh",
        },
    )
    git(project, "add", "-A")
    git(project, "commit", "-qm", "app and its test script")
    assert ol("project", "trust", "demo").code == 0
    return project


def delete(rel: str):
    def action(cwd):
        (cwd / rel).unlink()

    return action


def both(*actions):
    def action(cwd):
        for one in actions:
            one(cwd)

    return action


def test_an_agent_that_rewrites_the_test_script_is_never_auto_merged(ol, scripted, env):
    tid = add(ol, "Simplify app", "--risk", "low-risk")
    main_before = git(scripted, "rev-parse", "main")
    agent = FakeAgent([both(write("scripts/test.sh", "exit 0\n"), delete("src/app.py"))])
    result = once(env, agent)
    assert result.outcome == Outcome.COMPLETED  # the rewritten script "passed"
    assert task_of(scripted, tid).status == "review"
    assert git(scripted, "rev-parse", "main") == main_before
    assert (scripted / "src/app.py").exists()
    request = promotion.read_request(resolve(env, "demo").plane, tid)
    assert request["status"] == "pending" and request["action"] == "review"
    assert any(
        r.startswith("scripts/test.sh is run or read by the approved test command")
        for r in request["reasons"]
    ), request["reasons"]


def test_the_same_setup_still_auto_merges_an_ordinary_change(ol, scripted, env):
    tid = add(ol, "Tweak app", "--risk", "low-risk")
    once(env, FakeAgent([write("src/app.py", "x = 2\n")]))
    assert task_of(scripted, tid).status == "promoted"


def test_a_tsconfig_change_goes_to_review(ol, scripted, env):
    tid = add(ol, "Loosen types", "--risk", "low-risk")
    once(env, FakeAgent([write("tsconfig.json", '{"compilerOptions": {"strict": false}}\n')]))
    assert task_of(scripted, tid).status == "review"
    request = promotion.read_request(resolve(env, "demo").plane, tid)
    assert any("tsconfig.json" in r for r in request["reasons"])


@pytest.fixture
def marked(ol, project, tmp_path):
    """'demo' whose approved test command creates a marker file: proof that a check ran."""
    marker = tmp_path / "check-ran"
    set_project(
        project,
        validation={
            "lintCommand": None,
            "typecheckCommand": None,
            "testCommand": f"touch {shlex.quote(str(marker))}",
        },
    )
    git(project, "add", "-A")
    git(project, "commit", "-qm", "checks")
    assert ol("project", "trust", "demo").code == 0
    return project, marker


def reviewed_then_base_moved(ol, env, repo, marker) -> str:
    tid = add(ol, "Add feature")  # medium risk: waits for review
    once(env, FakeAgent([write("feature.py", "f = 1\n")]))
    assert task_of(repo, tid).status == "review" and marker.exists()
    marker.unlink()
    (repo / "other.py").write_text("o = 1\n")
    git(repo, "add", "other.py")
    git(repo, "commit", "-qm", "user work")
    return tid


def test_apply_no_validate_after_the_base_moved_runs_no_check(ol, marked, env):
    repo, marker = marked
    tid = reviewed_then_base_moved(ol, env, repo, marker)
    result = ol("promotion", "apply", "-t", tid, "--no-validate")
    assert result.code == 0, result.err
    assert not marker.exists()
    assert "rebased onto main" in result.out and "without validation" in result.out
    assert git(repo, "log", "--format=%s", "-2", "main").splitlines() == [
        "openloop: Add feature",
        "user work",
    ]
    assert task_of(repo, tid).status == "promoted"
    plane = resolve(env, "demo").plane
    assert promotion.read_request(plane, tid)["validated"] is False
    assert promotion.read_history(plane, tid)[-1]["validated"] is False


def test_apply_no_validate_never_runs_a_changed_unapproved_command(ol, marked, env, tmp_path):
    repo, marker = marked
    tid = reviewed_then_base_moved(ol, env, repo, marker)
    changed = tmp_path / "changed-command-ran"
    set_project(repo, validation={"testCommand": f"touch {shlex.quote(str(changed))}"})
    result = ol("promotion", "apply", "-t", tid, "--no-validate")
    assert result.code == 0, result.err
    assert not changed.exists() and not marker.exists()


def test_apply_refuses_a_changed_unapproved_command(ol, marked, env, tmp_path):
    repo, marker = marked
    tid = reviewed_then_base_moved(ol, env, repo, marker)
    changed = tmp_path / "changed-command-ran"
    set_project(repo, validation={"testCommand": f"touch {shlex.quote(str(changed))}"})
    main_before = git(repo, "rev-parse", "main")
    result = ol("promotion", "apply", "-t", tid)
    assert result.code == 1 and "changed since you approved" in result.err
    assert not changed.exists() and not marker.exists()
    assert git(repo, "rev-parse", "main") == main_before
    assert task_of(repo, tid).status == "review"


def test_revalidation_after_a_rebase_refuses_unapproved_commands(ol, marked, env, tmp_path):
    """The re-check inside merge_branch itself (auto-merge and deferred merges reach it with a
    configuration read before the approval changed)."""
    repo, marker = marked
    tid = reviewed_then_base_moved(ol, env, repo, marker)
    changed = tmp_path / "changed-command-ran"
    set_project(repo, validation={"testCommand": f"touch {shlex.quote(str(changed))}"})
    project = resolve(env, "demo")
    main_before = git(repo, "rev-parse", "main")
    result = promotion.merge_branch(
        env,
        project,
        project.config(),
        f"openloop/{tid}",
        base="main",
        check_dir=tmp_path / "checks",
        check_env=dict(env.environ),
        timeout=60,
    )
    assert not result.merged and result.untrusted and "not approved" in result.reason
    assert not changed.exists()
    assert git(repo, "rev-parse", "main") == main_before


def test_an_iteration_whose_commands_lost_their_approval_skips_its_checks(
    ol, marked, env, monkeypatch
):
    repo, marker = marked
    tid = add(ol, "Add feature", "--risk", "low-risk")
    collect = attempt.collect

    def collect_while_user_approves_other_commands(it):
        # After the agent's guarded run: a change during it would end the run as escaped.
        collect(it)
        marker.unlink(missing_ok=True)  # the default branch's validation ran it, approved
        set_project(repo, validation={"testCommand": "true"})
        assert ol("project", "trust", "demo").code == 0

    monkeypatch.setattr(attempt, "collect", collect_while_user_approves_other_commands)
    result = once(env, FakeAgent([write("feature.py", "f = 1\n")]))
    assert result.outcome == Outcome.SKIPPED and "not approved" in result.reason
    assert not marker.exists()
    task = task_of(repo, tid)
    assert task.status == "ready" and task.attempts == 0 and task.last_diff_hash is None
    record = json.loads((repo / f".openloop/runs/{result.run_id}.json").read_text())
    assert record["outcome"] == "skipped" and record["validation"] == []
