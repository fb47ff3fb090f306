"""A control plane written by the original TypeScript OpenLoop (version 1) is read and migrated
without losing anything, through the real CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from openloop.state.policy import load_policy
from tests.conftest import git

FIXTURE = Path(__file__).parent / "fixtures" / "v1"


@pytest.fixture
def legacy(tmp_path, env):
    repo = tmp_path / "legacy"
    shutil.copytree(FIXTURE / "repo", repo)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "legacy")
    env.config_dir.mkdir(parents=True)
    shutil.copy(FIXTURE / "home" / "config.json", env.config_file)
    registry = (FIXTURE / "home" / "projects.json").read_text().replace("REPO_PATH", str(repo))
    env.registry_file.write_text(registry)
    return repo


def test_v1_ledger_is_read_and_every_field_survives_a_rewrite(ol, legacy):
    before = json.loads((legacy / ".openloop/tasks.json").read_text())
    listed = ol("task", "list", "--json")
    assert listed.code == 0, listed.err
    assert {t["id"] for t in listed.json()["tasks"]} == {"issue-123", "fix-lint", "old-blocked"}

    # Any write migrates the file to version 2.
    assert ol("task", "add", "--title", "New work").code == 0
    after = json.loads((legacy / ".openloop/tasks.json").read_text())
    assert after["version"] == 2
    old_by_id = {t["id"]: t for t in before["tasks"]}
    for task in after["tasks"]:
        if task["id"] in old_by_id:
            for key, value in old_by_id[task["id"]].items():
                assert task[key] == value, (task["id"], key)
    fix = next(t for t in after["tasks"] if t["id"] == "fix-lint")
    assert fix["lastRun"]["promotionAction"] == "queue-auto-merge"


def test_v1_global_config_and_registry_migrate(ol, legacy, env):
    shown = ol("config", "show").json()
    assert shown["version"] == 2
    assert shown["activeProject"] == "legacy"
    assert shown["model"] == "gpt-4.1"
    assert shown["budgets"] == {
        "dailyCostUsd": 12.5,
        "projectDailyCostUsd": None,  # new in v2, unset: no per-project ceiling
        "estimatedCostPerRunUsd": 0.1,
    }
    assert shown["notifications"]["onBudgetExhausted"] == "notify-send budget"
    assert shown["runtime"]["tickIntervalSeconds"] == 5  # unknown to us, kept

    assert ol("config", "set", "budgets.dailyCostUsd", "20").code == 0
    raw = json.loads(env.config_file.read_text())
    assert raw["budgets"] == {
        "dailyCostUsd": 20,
        "projectDailyCostUsd": None,
        "estimatedCostPerRunUsd": 0.1,
    }
    assert raw["runtime"]["projectSelectionStrategy"] == "round-robin"
    assert "activeProjectAlias" not in raw

    assert ol("project", "list", "--json").json()[0]["alias"] == "legacy"


def test_v1_project_config_keeps_its_extra_keys_through_set_model(ol, legacy):
    assert ol("config", "project-set-model", "legacy", "claude-opus").code == 0
    data = json.loads((legacy / ".openloop/project.json").read_text())
    assert data["version"] == 2
    assert data["pi"]["model"] == "claude-opus"
    assert data["pi"]["promptFiles"][0] == ".agents/skills/openloop/SKILL.md"
    assert data["runtime"]["autoCommit"] is True
    assert data["risk"] == {
        "defaultUnknownAreaClassification": "medium-risk",
        "requirePolicyForAutoMerge": True,
    }
    assert data["project"]["repoRoot"] == "/home/me/src/legacy"
    assert data["validation"]["lintCommand"] == "npm run lint"


def test_v1_policy_loads(legacy):
    policy = load_policy(legacy / ".openloop/policy.yaml")
    assert policy.scope.deny_globs == ["src/secrets/**"]
    assert list(policy.auto_merge.risk_levels) == ["low-risk"]


def test_v1_model_resolution_uses_project_then_global(ol, legacy):
    shown = ol("config", "project-show", "legacy").json()
    assert shown["effectiveModel"] == {
        "model": "claude-sonnet-4",
        "provider": None,
        "source": "project",
    }
