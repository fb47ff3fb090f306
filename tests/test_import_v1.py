"""An original (TypeScript) OpenLoop home, its files written in its format from the fixtures,
imports with nothing lost: projects linked, tasks migrated, the pending review reviewable and
applied, run summaries shown, prompt files replaced with backups, the original home untouched."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from openloop.state.ledger import load_ledger
from tests.conftest import git
from tests.support.tty import run_tty

FIXTURE = Path(__file__).parent / "fixtures" / "v1"
STAMP = "2026-03-10T08-59-00-000Z"
OLD_SKILL = (
    "---\nname: openloop\n---\nRead .openloop/tasks.json. Commit with a descriptive message.\n"
)
RUN_SUMMARY = """# Run Summary

- project: legacy
- task: fix-lint
- mode: implement
- role: ci-healer
- reason: selected ready low-risk task
- model: claude-sonnet-4
- exitCode: 0
- taskStatus: done
- promotionDecision: auto-merge-eligible
- promotionAction: queue-auto-merge
- createdAt: 2026-03-10T08:59:00.000Z

## Validation
- lint: npm run lint => 0

## Prompt
You are working on fix-lint.
"""


@pytest.fixture
def original(tmp_path):
    """~/.openloop and a repository as the original tool left them: a lint fix done on its
    branch openloop/fix-lint, its promotion request pending."""
    repo = tmp_path / "legacy"
    shutil.copytree(FIXTURE / "repo", repo)
    (repo / "src").mkdir()
    (repo / "src/core.py").write_text("x = 1\n")
    for rel in (".agents/skills/openloop/SKILL.md", ".pi/SYSTEM.md", ".pi/APPEND_SYSTEM.md"):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(OLD_SKILL if "SKILL" in rel else "Stage and commit your work.\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "legacy")
    git(repo, "checkout", "-qb", "openloop/fix-lint")
    (repo / "src/core.py").write_text("x = 2\n")
    git(repo, "commit", "-qam", "fix lint")
    git(repo, "checkout", "-q", "main")
    plane = repo / ".openloop"
    (plane / "promotions").mkdir()
    request = {
        "version": 1, "createdAt": "2026-03-10T08:59:00.000Z", "projectAlias": "legacy",
        "taskId": "fix-lint", "baseBranch": "main", "decision": "auto-merge-eligible",
        "action": "queue-auto-merge", "effectivePromotionMode": "auto-merge",
        "validation": [{"name": "lint", "command": "npm run lint", "exitCode": 0}],
        "piExitCode": 0, "outcome": "completed", "status": "pending", "processedAt": None,
        "note": None,
    }  # fmt: skip
    (plane / "promotions" / f"{STAMP}-fix-lint.json").write_text(json.dumps(request, indent=2))
    (plane / "runs").mkdir()
    (plane / "runs" / f"{STAMP}-fix-lint.md").write_text(RUN_SUMMARY)
    home = tmp_path / "old-home"
    home.mkdir()
    shutil.copy(FIXTURE / "home" / "config.json", home / "config.json")
    registry = (FIXTURE / "home" / "projects.json").read_text().replace("REPO_PATH", str(repo))
    (home / "projects.json").write_text(registry)
    return home, repo


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_an_original_home_imports_with_nothing_lost(ol, env, original):
    home, repo = original
    home_before = _tree(home)
    ledger_before = json.loads((repo / ".openloop/tasks.json").read_text())
    result = ol("project", "import-v1", "--home", str(home), "--json")
    assert result.code == 0, result.err
    report = result.json()
    assert report["config"] == "copied"
    (item,) = report["projects"]
    assert item["linked"] and item["alias"] == "legacy" and item["tasks"] == 3
    assert item["promotions"] == ["fix-lint"] and item["runSummaries"] == 1
    assert sorted(item["promptsReplaced"]) == sorted(
        [".agents/skills/openloop/SKILL.md", ".pi/SYSTEM.md", ".pi/APPEND_SYSTEM.md"]
    )
    assert _tree(home) == home_before  # the original home is read, never changed

    # Projects linked; the global config as the original had it.
    assert [p["alias"] for p in ol("project", "list", "--json").json()] == ["legacy"]
    assert ol("config", "show", "--json").json()["budgets"]["dailyCostUsd"] == 12.5
    # Tasks: every one, every field the original wrote, now in the current format.
    after = json.loads((repo / ".openloop/tasks.json").read_text())
    assert after["version"] == 2
    assert {t["id"] for t in after["tasks"]} == {t["id"] for t in ledger_before["tasks"]}
    old_fix = next(t for t in ledger_before["tasks"] if t["id"] == "fix-lint")
    new_fix = next(t for t in after["tasks"] if t["id"] == "fix-lint")
    assert new_fix["notes"] == old_fix["notes"] and new_fix["scope"] == old_fix["scope"]
    assert (
        new_fix["lastRun"]["promotionArtifactPath"] == old_fix["lastRun"]["promotionArtifactPath"]
    )
    # Prompt files: the current ones, the originals backed up.
    backup = Path(item["backup"])
    assert (backup / ".agents/skills/openloop/SKILL.md").read_text() == OLD_SKILL
    assert (
        "Commit with a descriptive message"
        not in (repo / ".agents/skills/openloop/SKILL.md").read_text()
    )
    # The original request is kept, byte for byte; the review is the current format's.
    kept = repo / f".openloop/promotions/v1/{STAMP}-fix-lint.json"
    assert json.loads(kept.read_text())["projectAlias"] == "legacy"
    listed = ol("promotion", "list", "-p", "legacy", "--json").json()
    assert [r["taskId"] for r in listed] == ["fix-lint"]
    shown = ol("promotion", "show", "-p", "legacy", "fix-lint", "--json").json()
    assert shown["branch"] == "openloop/fix-lint" and shown["changedFiles"] == ["src/core.py"]
    # The run summary is in task show.
    task = ol("task", "show", "-p", "legacy", "fix-lint", "--json").json()
    assert task["task"]["status"] == "review"
    assert task["v1Runs"][0]["exitCode"] == "0" and task["v1Runs"][0]["mode"] == "implement"

    # The pending review applies: trust the (original's) commands, then merge.
    assert ol("project", "trust", "legacy").code == 0
    applied = ol("promotion", "apply", "-p", "legacy", "fix-lint", "--no-validate")
    assert applied.code == 0, applied.err
    assert git(repo, "show", "main:src/core.py") == "x = 2"
    assert load_ledger(repo / ".openloop/tasks.json").get("fix-lint").status == "promoted"


def test_importing_twice_links_nothing_twice(ol, original):
    home, _repo = original
    assert ol("project", "import-v1", "--home", str(home)).code == 0
    again = ol("project", "import-v1", "--home", str(home), "--json")
    assert again.code == 1
    assert "already linked" in again.json()["projects"][0]["skipped"]


def test_a_review_without_its_branch_is_said_and_kept(ol, original):
    home, repo = original
    git(repo, "branch", "-D", "openloop/fix-lint")
    report = ol("project", "import-v1", "--home", str(home), "--json").json()
    (item,) = report["projects"]
    assert (
        item["promotions"] == [] and "no branch openloop/fix-lint" in item["promotionsNotMapped"][0]
    )
    assert ol("promotion", "list", "-p", "legacy", "--json").json() == []


def test_project_list_hints_at_an_original_home(ol, env, original, monkeypatch):
    home, _repo = original
    fake_home = home.parent / "user"
    fake_home.mkdir()
    shutil.copytree(home, fake_home / ".openloop")
    monkeypatch.setitem(env.environ, "HOME", str(fake_home))
    listed = ol("project", "list", "--json")
    assert listed.json() == [] and "openloop project import-v1" in listed.err
    assert ol("project", "import-v1").code == 0  # ~/.openloop by default
    assert "import-v1" not in ol("project", "list", "--json").err


def test_the_import_summary_on_a_terminal(env, original):
    home, _repo = original
    environ = {k: v for k, v in env.environ.items() if k != "NO_COLOR"}
    result = run_tty(["project", "import-v1", "--home", str(home)], environ)
    assert result.code == 0, result.out
    assert "legacy -> " in result.out and "3 task(s) migrated" in result.out
    assert "review waiting: openloop promotion show -p legacy fix-lint" in result.out
    assert "next: openloop project trust legacy" in result.out
