"""Symlinks in the agent's diff are judged by their target, read from git, never from disk.

A link adds one harmless-looking path, yet everything that reads or writes through it reaches
its target: `src/pw -> /etc/passwd` must not auto-merge as a low-risk one-file change.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from openloop.adapters import gitops
from openloop.loop import promotion
from openloop.loop.outcomes import Outcome
from openloop.state.judge import Change, assess, resolve_link_target
from openloop.state.policy import Policy
from openloop.state.project import resolve
from tests.conftest import git, make_repo
from tests.test_iteration import FakeAgent, add, once, set_project, task_of

# --- resolving a target lexically --------------------------------------------------------------


@pytest.mark.parametrize(
    ("link", "target", "expected"),
    [
        ("src/pw", "/etc/passwd", None),  # absolute: outside, whatever it names
        ("src/pw", "//etc/passwd", None),
        ("src/k", "../secrets/key.txt", "secrets/key.txt"),
        ("src/k", "../../secrets/key.txt", None),  # one '..' too many: above the root
        ("x", "a/../../x", None),  # climbs out through a directory it first enters
        ("src/x", "a/../../x", "x"),
        ("src/deep/x", "./../.././/y", "y"),
        ("src/x", "app.py", "src/app.py"),
        ("x", "y", "y"),
        ("src/up", "..", ""),  # the repository root itself is inside
        ("up", "..", None),
        ("l", "..\0/x", None),  # the kernel stops at NUL: this link is '..'
        ("src/l", "ok\0/../../../../etc", "src/ok"),
    ],
)
def test_resolve_link_target(link: str, target: str, expected: str | None) -> None:
    assert resolve_link_target(link, target) == expected


# --- reading links from git -------------------------------------------------------------------


def commit(repo: Path, message: str = "change") -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)
    return git(repo, "rev-parse", "HEAD")


def link(repo: Path, rel: str, target: str) -> None:
    path = repo / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        path.unlink()
    path.symlink_to(target)


@pytest.fixture
def linked(tmp_path: Path) -> tuple[Path, str]:
    """A repository whose first commit already has a link, a file and a link to be removed."""
    repo = make_repo(tmp_path / "r", {"src/app.py": "x = 1\n", "src/plain.txt": "p\n"})
    link(repo, "src/old", "app.py")
    link(repo, "src/gone", "app.py")
    link(repo, "src/moved", "app.py")
    return repo, commit(repo, "links")


def test_changed_symlinks_lists_new_changed_and_retyped_links_only(linked) -> None:
    repo, base = linked
    link(repo, "src/pw", "/etc/passwd")  # added
    link(repo, "src/old", "../secrets/key.txt")  # target changed
    (repo / "src/plain.txt").unlink()
    link(repo, "src/plain.txt", "../..")  # a file turned into a link
    (repo / "src/gone").unlink()  # deleted: nothing left to point anywhere
    (repo / "lib").mkdir()
    (repo / "src/moved").rename(repo / "lib/moved")
    (repo / "src/app.py").write_text("x = 2\n")  # a regular file: not a link
    head = commit(repo)
    found = gitops.changed_symlinks(repo, base, head)
    assert sorted(found) == [
        ("lib/moved", "app.py"),  # a renamed link is judged afresh at its new place
        ("src/old", "../secrets/key.txt"),
        ("src/plain.txt", "../.."),
        ("src/pw", "/etc/passwd"),
    ]


def test_targets_come_from_git_not_from_the_disk(linked) -> None:
    repo, base = linked
    link(repo, "src/pw", "/etc/passwd")
    head = commit(repo)
    link(repo, "src/pw", "app.py")  # a later edit on disk (checks run after commit): not judged
    assert gitops.changed_symlinks(repo, base, head) == [("src/pw", "/etc/passwd")]


def _crafted_link(repo: Path, rel: str, content: bytes) -> str:
    """Commit a link blob no file system would create (only plumbing can make it)."""
    proc = subprocess.run(
        ["git", "-C", str(repo), "hash-object", "-w", "--stdin"],
        input=content,
        capture_output=True,
        check=True,
    )
    blob = proc.stdout.decode().strip()
    git(repo, "update-index", "--add", "--cacheinfo", f"120000,{blob},{rel}")
    git(repo, "commit", "-qm", "crafted")
    return git(repo, "rev-parse", "HEAD")


def test_a_crafted_oversized_link_blob_is_not_read_and_blocks(linked) -> None:
    repo, base = linked
    head = _crafted_link(repo, "src/huge", b"a/" * 5000)
    found = gitops.changed_symlinks(repo, base, head)
    assert found == [("src/huge", None)]
    verdict = judge(repo, base, head, Policy())
    assert verdict.blocked and verdict.symlinks_blocked == ("src/huge",)
    assert "symlink src/huge has a target too long to be a path" in " ".join(verdict.reasons)


def test_a_crafted_link_with_a_nul_is_judged_as_the_kernel_reads_it(linked) -> None:
    repo, base = linked
    head = _crafted_link(repo, "l", b"..\0/src/app.py")
    verdict = judge(repo, base, head, Policy())
    assert verdict.blocked
    assert "symlink l points outside the repository ('..\\x00/src/app.py')" in verdict.reasons


# --- judging a real diff ----------------------------------------------------------------------


def judge(repo: Path, base: str, head: str, policy: Policy, risk: str = "low-risk"):
    changes = [Change(*c) for c in gitops.name_status(repo, base, head)]
    return assess(
        changes,
        policy,
        declared_risk=risk,
        declared_scope=["src/**"],
        lines_changed=gitops.diff_summary(repo, base, head).lines,
        validations_passed=True,
        symlinks=gitops.changed_symlinks(repo, base, head),
    )


POLICY = Policy.model_validate(
    {"scope": {"denyGlobs": ["secrets/**"], "highRiskAreas": ["src/payments/**"]}}
)


@pytest.mark.parametrize(
    ("rel", "target", "reason"),
    [
        ("src/pw", "/etc/passwd", "symlink src/pw points outside the repository (/etc/passwd)"),
        ("src/k", "../../k", "symlink src/k points outside the repository (../../k)"),
        ("src/k", "a/../../../x", "symlink src/k points outside the repository (a/../../../x)"),
        (
            "src/k",
            "../secrets/key.txt",
            "symlink src/k points into a denied path: secrets/key.txt (denyGlobs 'secrets/**')",
        ),
        (
            "src/k",
            "../secrets",  # the directory: every file under it is reachable through the link
            "symlink src/k points into a denied path: secrets (denyGlobs 'secrets/**')",
        ),
        (
            "src/pay",
            "payments/charge.py",
            "symlink src/pay points into a high-risk area: src/payments/charge.py "
            "(highRiskAreas 'src/payments/**')",
        ),
        (
            "src/cfg",
            "../.openloop/policy.yaml",
            "symlink src/cfg points into a protected path: .openloop/policy.yaml "
            "(protectedPaths '.openloop/**')",
        ),
    ],
)
def test_a_link_to_a_forbidden_target_blocks(linked, rel, target, reason) -> None:
    repo, base = linked
    link(repo, rel, target)
    verdict = judge(repo, base, commit(repo), POLICY)
    assert verdict.blocked and not verdict.auto_merge
    assert verdict.risk == "high-risk"
    assert verdict.symlinks_blocked == (rel,)
    assert reason in verdict.reasons
    assert "blocked by a symlink's target: never promoted" in verdict.reasons


def test_a_harmless_link_is_at_least_medium_risk_never_low(linked) -> None:
    repo, base = linked
    (repo / "src/app.py").write_text("x = 2\n")
    plain = judge(repo, base, commit(repo), POLICY)
    assert (plain.risk, plain.auto_merge) == ("low-risk", True)  # the same diff without a link
    link(repo, "src/alias.py", "app.py")
    verdict = judge(repo, base, commit(repo), POLICY)
    assert not verdict.blocked and not verdict.auto_merge
    assert verdict.risk == "medium-risk" and verdict.symlinks == ("src/alias.py",)
    assert "symlink src/alias.py -> app.py: links are never auto-merged as low-risk" in (
        verdict.reasons
    )


def test_control_characters_in_a_target_are_escaped_in_the_reason(linked) -> None:
    # Reasons reach the journal and the terminal: a newline in a target must not forge a line.
    repo, base = linked
    link(repo, "src/nl", "x\nrisk: low-risk")
    verdict = judge(repo, base, commit(repo), POLICY)
    assert not any("\n" in reason for reason in verdict.reasons)
    assert (
        "symlink src/nl -> 'x\\nrisk: low-risk': links are never auto-merged as low-risk"
        in verdict.reasons
    )


def test_a_link_to_another_link_is_judged_as_written(linked) -> None:
    # The repository already had src/esc -> /etc (the user's own link). A new link to it is
    # judged by the path 'src/esc' as written, not chased to /etc: not blocked, but like every
    # link it keeps the change out of low-risk, so a human sees it before it merges.
    repo, _ = linked
    link(repo, "src/esc", "/etc")
    base = commit(repo, "the user's link")
    link(repo, "src/chain", "esc")
    verdict = judge(repo, base, commit(repo), POLICY)
    assert (verdict.blocked, verdict.risk, verdict.auto_merge) == (False, "medium-risk", False)
    assert "symlink src/chain -> esc: links are never auto-merged as low-risk" in verdict.reasons


def test_a_link_needs_policy_consent_even_at_medium_risk(linked) -> None:
    # Policies that auto-merge medium-risk may merge a harmless link; a bad one never.
    repo, base = linked
    lenient = Policy.model_validate({"autoMerge": {"riskLevels": ["low-risk", "medium-risk"]}})
    link(repo, "src/alias.py", "app.py")
    head = commit(repo)
    assert judge(repo, base, head, lenient).auto_merge
    link(repo, "src/pw", "/etc/passwd")
    assert not judge(repo, base, commit(repo), lenient).auto_merge


# --- a whole iteration with an adversarial agent --------------------------------------------


@pytest.fixture
def demo(ol, project):
    set_project(project, validation={"lintCommand": "! grep -rq BROKEN --include=*.py ."})
    (project / "src").mkdir()
    (project / "src/app.py").write_text("x = 1\n")
    (project / ".openloop/policy.yaml").write_text(
        "version: 2\nscope:\n  allowGlobs: ['src/**']\n  denyGlobs: ['secrets/**']\n"
    )
    git(project, "add", "-A")
    git(project, "commit", "-qm", "app")
    assert ol("project", "trust", "demo").code == 0
    return project


def make_link(rel: str, target: str):
    def action(cwd: Path) -> None:
        (cwd / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, cwd / rel)

    return action


@pytest.mark.parametrize(
    ("rel", "target", "reason"),
    [
        ("src/pw", "/etc/passwd", "symlink src/pw points outside the repository (/etc/passwd)"),
        (
            "src/k",
            "../secrets/key.txt",
            "symlink src/k points into a denied path: secrets/key.txt (denyGlobs 'secrets/**')",
        ),
    ],
)
def test_an_agent_linking_to_a_forbidden_target_is_blocked(ol, demo, env, rel, target, reason):
    tid = add(ol, "Tidy", "--risk", "low-risk", "--scope", "src/**")
    main_before = git(demo, "rev-parse", "main")
    result = once(env, FakeAgent([make_link(rel, target)]))
    assert result.outcome == Outcome.BLOCKED_BY_POLICY
    assert reason in result.reason
    assert git(demo, "rev-parse", "main") == main_before
    assert not (demo / rel).is_symlink()
    task = task_of(demo, tid)
    assert task.status == "blocked" and reason in task.last_failure
    record = json.loads((demo / f".openloop/runs/{result.run_id}.json").read_text())
    assert record["decision"]["blocked"] is True
    assert reason in record["decision"]["reasons"]
    assert promotion.read_request(resolve(env, "demo").plane, tid) is None


def test_an_agent_adding_a_harmless_link_goes_to_review(ol, demo, env):
    tid = add(ol, "Alias", "--risk", "low-risk", "--scope", "src/**")
    main_before = git(demo, "rev-parse", "main")
    result = once(env, FakeAgent([make_link("src/alias.py", "app.py")]))
    assert result.outcome == Outcome.COMPLETED
    assert task_of(demo, tid).status == "review"
    assert git(demo, "rev-parse", "main") == main_before
    request = promotion.read_request(resolve(env, "demo").plane, tid)
    assert request["action"] == "review" and request["risk"] == "medium-risk"
    reason = "symlink src/alias.py -> app.py: links are never auto-merged as low-risk"
    assert reason in request["reasons"]
    record = json.loads((demo / f".openloop/runs/{result.run_id}.json").read_text())
    assert reason in record["decision"]["reasons"]
