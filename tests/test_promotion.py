"""Policy on the real diff, auto-merge, review, apply and reject, on real repositories."""

from __future__ import annotations

import json

import pytest

from openloop.loop import promotion, scheduler
from openloop.loop.outcomes import Outcome
from openloop.state.project import resolve
from tests.conftest import commit_policy, git
from tests.test_iteration import FakeAgent, add, nothing, once, set_project, task_of, write


def rename(old: str, new: str):
    def action(cwd):
        (cwd / new).parent.mkdir(parents=True, exist_ok=True)
        (cwd / old).rename(cwd / new)

    return action


def policy(ol, repo, text: str) -> None:
    commit_policy(ol, repo, "version: 2\n" + text)


@pytest.fixture
def demo(ol, project):
    set_project(project, validation={"lintCommand": "! grep -rq BROKEN --include=*.py ."})
    (project / "src").mkdir()
    (project / "src/app.py").write_text("x = 1\n")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "app")
    assert ol("project", "trust", "demo").code == 0
    return project


def test_low_risk_in_scope_passing_change_is_merged(ol, demo, env):
    policy(ol, demo, "scope:\n  allowGlobs: ['src/**']\n")
    tid = add(ol, "Tweak app", "--risk", "low-risk", "--scope", "src/**")
    before = git(demo, "rev-parse", "main")
    result = once(env, FakeAgent([write("src/app.py", "x = 2\n")]))
    assert result.outcome == Outcome.COMPLETED
    task = task_of(demo, tid)
    assert task.status == "promoted" and task.promoted_at
    assert git(demo, "rev-parse", "main") == git(demo, "rev-parse", "openloop/tweak-app")
    assert git(demo, "rev-parse", "main~1") == before
    assert (demo / "src/app.py").read_text() == "x = 2\n"  # the checkout moved with main, cleanly
    assert git(demo, "status", "--porcelain", "--untracked-files=no") == ""
    request = promotion.read_request(resolve(env, "demo").plane, tid)
    assert request["status"] == "merged" and request["action"] == "auto-merge"
    history = promotion.read_history(resolve(env, "demo").plane, tid)
    assert history[-1]["status"] == "merged"


@pytest.mark.parametrize(
    ("policy_text", "risk", "change", "expected_reason"),
    [
        (
            "scope:\n  highRiskAreas: ['src/payments/**']\n",
            "low-risk",
            write("src/payments/charge.py", "c = 1\n"),
            "high-risk",
        ),
        (
            "scope:\n  allowGlobs: ['src/**']\n",
            "low-risk",
            write("docs/x.md", "doc\n"),
            "docs/x.md",
        ),
        ("", "medium-risk", write("src/app.py", "x = 3\n"), "medium-risk"),
        ("", "low-risk", write(".openloop/policy.yaml", "version: 2\n# weaker\n"), ".openloop"),
    ],
)
def test_changes_policy_does_not_allow_go_to_review(
    ol, demo, env, policy_text, risk, change, expected_reason
):
    policy(ol, demo, policy_text)
    tid = add(ol, "Change", "--risk", risk)
    main_before = git(demo, "rev-parse", "main")
    result = once(env, FakeAgent([change]))
    assert result.outcome == Outcome.COMPLETED
    assert task_of(demo, tid).status == "review"
    assert git(demo, "rev-parse", "main") == main_before
    request = promotion.read_request(resolve(env, "demo").plane, tid)
    assert request["status"] == "pending" and request["action"] == "review"
    assert expected_reason in json.dumps(request["reasons"]) + request["risk"]


def test_deny_hit_is_blocked_even_for_a_low_risk_task(ol, demo, env):
    policy(ol, demo, "scope:\n  denyGlobs: ['secrets/**']\n")
    tid = add(ol, "Harmless", "--risk", "low-risk")
    main_before = git(demo, "rev-parse", "main")
    result = once(env, FakeAgent([write("secrets/token", "t\n")]))
    assert result.outcome == Outcome.BLOCKED_BY_POLICY
    assert task_of(demo, tid).status == "blocked"
    assert git(demo, "rev-parse", "main") == main_before


def test_rename_from_allowed_into_denied_path_is_caught(ol, demo, env):
    policy(ol, demo, "scope:\n  denyGlobs: ['secrets/**']\n")
    tid = add(ol, "Move app", "--risk", "low-risk")
    result = once(env, FakeAgent([rename("src/app.py", "secrets/app.py")]))
    assert result.outcome == Outcome.BLOCKED_BY_POLICY
    assert "secrets/app.py" in result.reason
    assert task_of(demo, tid).status == "blocked"


def test_failing_validation_never_merges(ol, demo, env):
    tid = add(ol, "Break", "--risk", "low-risk")
    main_before = git(demo, "rev-parse", "main")
    assert once(env, FakeAgent([write("src/app.py", "BROKEN\n")])).outcome == (
        Outcome.VALIDATION_FAILED
    )
    assert git(demo, "rev-parse", "main") == main_before
    assert promotion.read_request(resolve(env, "demo").plane, tid) is None


def test_no_validation_configured_means_no_auto_merge(ol, demo, env):
    set_project(demo, validation={"lintCommand": None})
    ol("project", "trust", "demo")
    tid = add(ol, "Unchecked", "--risk", "low-risk")
    once(env, FakeAgent([write("src/app.py", "x = 5\n")]))
    assert task_of(demo, tid).status == "review"


def test_dirty_user_checkout_is_never_modified_and_the_merge_waits(ol, demo, env):
    tid = add(ol, "Tweak", "--risk", "low-risk")
    (demo / "src/app.py").write_text("x = 'my work in progress'\n")
    main_before = git(demo, "rev-parse", "main")
    result = once(env, FakeAgent([write("src/app.py", "x = 9\n")]))
    assert result.outcome == Outcome.COMPLETED
    assert task_of(demo, tid).status == "review"
    assert (demo / "src/app.py").read_text() == "x = 'my work in progress'\n"
    assert git(demo, "rev-parse", "main") == main_before
    request = promotion.read_request(resolve(env, "demo").plane, tid)
    assert request["status"] == "deferred" and "checkout busy" in request["note"]

    # The user commits their work elsewhere and cleans up; the next iteration retries.
    git(demo, "checkout", "--", "src/app.py")
    once(env, FakeAgent())
    assert task_of(demo, tid).status == "promoted"
    assert (demo / "src/app.py").read_text() == "x = 9\n"


def test_unrelated_uncommitted_work_survives_a_merge(ol, demo, env):
    tid = add(ol, "Other file", "--risk", "low-risk")
    (demo / "notes.txt").write_text("untracked notes\n")
    (demo / "README.md").write_text("# my unsaved edit\n")
    once(env, FakeAgent([write("src/app.py", "x = 7\n")]))
    assert task_of(demo, tid).status == "promoted"
    assert (demo / "src/app.py").read_text() == "x = 7\n"
    assert (demo / "README.md").read_text() == "# my unsaved edit\n"
    assert (demo / "notes.txt").read_text() == "untracked notes\n"
    assert git(demo, "diff", "--name-only") == "README.md"


def test_base_moved_since_the_branch_was_cut_is_rebased_and_revalidated(ol, demo, env, monkeypatch):
    tid = add(ol, "Add b", "--risk", "low-risk")
    handover = promotion.prepare_handover

    def user_commits_then_handover(it, now):
        # The user commits on main after the agent and its checks ended (a commit while they
        # run would be indistinguishable from the agent's, and end the run as escaped).
        (demo / "src/other.py").write_text("o = 1\n")
        git(demo, "add", "src/other.py")
        git(demo, "commit", "-qm", "user work")
        return handover(it, now)

    monkeypatch.setattr(promotion, "prepare_handover", user_commits_then_handover)
    result = once(env, FakeAgent([write("src/b.py", "b = 1\n")]))
    assert result.outcome == Outcome.COMPLETED
    assert task_of(demo, tid).status == "promoted"
    log = git(demo, "log", "--format=%s", "main").splitlines()
    assert log[:2] == ["openloop: Add b", "user work"]
    assert (demo / "src/b.py").exists() and (demo / "src/other.py").exists()


def test_main_not_checked_out_moves_by_compare_and_swap(ol, demo, env):
    git(demo, "checkout", "-q", "-b", "feature")
    tid = add(ol, "Elsewhere", "--risk", "low-risk")
    set_project(demo, runtime={"defaultBranch": "main"})
    once(env, FakeAgent([write("src/c.py", "c = 1\n")]))
    assert task_of(demo, tid).status == "promoted"
    assert git(demo, "rev-parse", "main") == git(demo, "rev-parse", "openloop/elsewhere")
    assert git(demo, "branch", "--show-current") == "feature"
    assert not (demo / "src/c.py").exists()


def test_apply_merges_a_review_branch(ol, demo, env):
    tid = add(ol, "Reviewed")  # medium risk -> review
    once(env, FakeAgent([write("src/r.py", "r = 1\n")]))
    assert task_of(demo, tid).status == "review"
    shown = ol("promotion", "show", "-t", tid).json()
    assert shown["branchExists"] and "src/r.py" in shown["diffstat"]
    assert [r["taskId"] for r in ol("promotion", "list", "--json").json()] == [tid]
    result = ol("promotion", "apply", "-t", tid)
    assert result.code == 0, result.err
    assert task_of(demo, tid).status == "promoted"
    assert (demo / "src/r.py").read_text() == "r = 1\n"
    again = ol("promotion", "apply", "-t", tid)
    assert again.code == 1 and "already applied" in again.err
    kinds = [h["kind"] for h in ol("task", "show", "-t", tid).json()["promotionHistory"]]
    assert kinds == ["decision", "applied"]


def test_apply_refuses_on_conflict_and_changes_nothing(ol, demo, env):
    tid = add(ol, "Conflicting")
    once(env, FakeAgent([write("src/app.py", "x = 'agent'\n")]))
    (demo / "src/app.py").write_text("x = 'user'\n")
    git(demo, "commit", "-qam", "user edit")
    main_before = git(demo, "rev-parse", "main")
    branch_before = git(demo, "rev-parse", "openloop/conflicting")
    result = ol("promotion", "apply", "-t", tid)
    assert result.code == 1 and "conflicts" in result.err and "nothing was changed" in result.err
    assert git(demo, "rev-parse", "main") == main_before
    assert git(demo, "rev-parse", "openloop/conflicting") == branch_before
    assert task_of(demo, tid).status == "review"
    assert git(demo, "status", "--porcelain", "--untracked-files=no") == ""


def test_apply_refuses_when_checks_fail_on_the_merged_result(ol, demo, env):
    tid = add(ol, "Fine alone")
    once(env, FakeAgent([write("src/f.py", "f = 1\n")]))
    (demo / "src/g.py").write_text("BROKEN = True\n")  # main breaks lint meanwhile
    git(demo, "add", "-A")
    git(demo, "commit", "-qm", "break main")
    result = ol("promotion", "apply", "-t", tid)
    assert result.code == 1 and "validation failed" in result.err
    assert task_of(demo, tid).status == "review"


def test_reject_cancels_or_retries_with_the_reason(ol, demo, env):
    first = add(ol, "Wrong idea")
    second = add(ol, "Try again")
    agent = FakeAgent([write("src/w.py", "w = 1\n"), write("src/t.py", "t = 1\n"), nothing])
    once(env, agent)
    once(env, agent)
    assert ol("promotion", "reject", "-t", first, "--delete-branch").code == 0
    assert task_of(demo, first).status == "cancelled"
    assert "openloop/wrong-idea" not in git(demo, "branch", "--list")
    result = ol("promotion", "reject", "-t", second, "--retry", "--reason", "use helpers.py")
    assert result.code == 0 and "ready" in result.out
    assert "openloop/try-again" in git(demo, "branch", "--list")
    retry = FakeAgent([write("src/t.py", "t = 2\n")])
    once(env, retry)
    assert "use helpers.py" in retry.requests[0].prompt
    missing = ol("promotion", "reject", "-t", "nope")
    assert missing.code == 2 and "no promotion request" in missing.err


def test_one_auto_merge_per_iteration(ol, demo, env):
    a = add(ol, "First", "--risk", "low-risk")
    once(env, FakeAgent([write("src/a.py", "a = 1\n")]))
    assert task_of(demo, a).status == "promoted"
    it = scheduler._load(env, resolve(env, "demo"), None, None, scheduler.NullReporter(), None)
    it.merges_done = 1
    b = add(ol, "Second", "--risk", "low-risk")
    scheduler.select(it)
    it.adapter_factory = lambda kind: FakeAgent([write("src/b.py", "b = 1\n")])
    from openloop.loop.attempt import execute

    execute(it)
    assert task_of(demo, b).status == "review"
    request = promotion.read_request(resolve(env, "demo").plane, b)
    assert request["status"] == "deferred" and "one auto-merge per iteration" in request["note"]


def test_a_change_to_how_checks_run_is_never_auto_merged(ol, demo, env):
    tid = add(ol, "Tweak the build", "--risk", "low-risk")
    once(env, FakeAgent([write("Makefile", "test:\n\ttrue\n")]))
    assert task_of(demo, tid).status == "review"
    request = promotion.read_request(resolve(env, "demo").plane, tid)
    assert any("Makefile" in r for r in request["reasons"])
