"""Linking, initializing, listing and removing projects through the CLI."""

from __future__ import annotations

import json

import pytest

from openloop.state.registry import alias_problem
from tests.conftest import make_repo


@pytest.mark.parametrize(
    ("alias", "problem"),
    [
        ("web", None),
        ("my-app_2.v1", None),
        ("0day", None),
        ("a" * 64, None),
        ("", "empty"),
        ("a" * 65, "65 characters long"),
        ("-web", "starts with '-'"),
        (".web", "starts with '.'"),
        ("Web", "uppercase letter 'W' (use 'web')"),
        ("my app", "character ' '"),
        ("a/b", "character '/'"),
        ("a@b", "character '@'"),
        ("caf\u00e9", "character"),
    ],
)
def test_alias_rules(alias, problem):
    found = alias_problem(alias)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_add_refuses_bad_alias_and_writes_nothing(ol, repo, env):
    result = ol("project", "add", "Bad Alias", str(repo))
    assert result.code == 2
    assert "alias 'Bad Alias' is not allowed" in result.err
    assert not env.registry_file.exists()


def test_add_requires_a_git_work_tree(ol, tmp_path, env):
    plain = tmp_path / "plain"
    plain.mkdir()
    result = ol("project", "add", "plain", str(plain))
    assert result.code == 2
    assert "not inside a git work tree" in result.err
    missing = ol("project", "add", "gone", str(tmp_path / "nope"))
    assert missing.code == 2 and "does not exist" in missing.err
    assert not env.registry_file.exists()


def test_add_stores_the_absolute_top_level(ol, repo, monkeypatch):
    (repo / "sub").mkdir()
    monkeypatch.chdir(repo / "sub")
    assert ol("project", "add", "demo", ".").code == 0
    entry = ol("project", "list", "--json").json()[0]
    assert entry["path"] == str(repo.resolve())
    assert entry["initialized"] is False


def test_duplicate_alias_needs_force_and_same_path_twice_is_refused(ol, repo, tmp_path):
    assert ol("project", "add", "demo", str(repo)).code == 0
    other = make_repo(tmp_path / "other")
    again = ol("project", "add", "demo", str(other))
    assert again.code == 2 and "already linked" in again.err
    twice = ol("project", "add", "demo2", str(repo))
    assert twice.code == 2 and "already linked as 'demo'" in twice.err
    assert ol("project", "add", "demo", str(other), "--force").code == 0
    assert ol("project", "list", "--json").json()[0]["path"] == str(other.resolve())


def test_init_materializes_the_control_plane(ol, repo):
    result = ol("project", "add", "demo", str(repo), "--init")
    assert result.code == 0, result.err
    for rel in [
        ".openloop/project.json",
        ".openloop/policy.yaml",
        ".openloop/tasks.json",
        ".openloop/README.md",
        ".openloop/.gitignore",
        ".agents/skills/openloop/SKILL.md",
        ".pi/SYSTEM.md",
        ".pi/APPEND_SYSTEM.md",
    ]:
        assert (repo / rel).is_file(), rel
    for sub in ("specs", "runs", "promotions", "promotion-results"):
        assert (repo / ".openloop" / sub).is_dir()
    config = json.loads((repo / ".openloop/project.json").read_text())
    assert config["version"] == 2 and config["project"]["name"] == "demo"


def test_local_state_is_ignored_by_git_but_config_is_not(ol, project, tmp_path):
    from tests.conftest import git

    (project / ".openloop/runs/r1.json").write_text("{}")
    (project / ".openloop/specs/s.md").write_text("spec")
    status = git(project, "status", "--porcelain", "--untracked-files=all")
    assert ".openloop/tasks.json" not in status
    assert ".openloop/runs/" not in status
    assert ".openloop/project.json" in status
    assert ".openloop/policy.yaml" in status
    assert ".openloop/specs/s.md" in status


def test_reinit_keeps_user_edits_and_updates_untouched_files(ol, project):
    skill = project / ".agents/skills/openloop/SKILL.md"
    skill.write_text("my own skill\n")
    readme = project / ".openloop/README.md"
    # Simulate an older template: the file still matches what OpenLoop last wrote.
    manifest_file = project / ".openloop/templates.json"
    manifest = json.loads(manifest_file.read_text())
    import hashlib

    old = "old template text\n"
    readme.write_text(old)
    manifest["files"][".openloop/README.md"] = hashlib.sha256(old.encode()).hexdigest()
    manifest_file.write_text(json.dumps(manifest))
    (project / ".pi/SYSTEM.md").unlink()

    result = ol("project", "init", "demo")
    assert result.code == 0, result.err
    assert "kept (edited by you): .agents/skills/openloop/SKILL.md" in result.err
    assert "updated: .openloop/README.md" in result.err
    assert "added: .pi/SYSTEM.md" in result.err
    assert skill.read_text() == "my own skill\n"
    assert readme.read_text() != old
    assert (project / ".pi/SYSTEM.md").exists()


def test_reinit_never_overwrites_user_commands_or_the_ledger(ol, project):
    pfile = project / ".openloop/project.json"
    config = json.loads(pfile.read_text())
    config["validation"]["testCommand"] = "make my-tests"
    config["runtime"]["maxAttemptsPerTask"] = 5
    pfile.write_text(json.dumps(config))
    assert ol("project", "trust", "demo").code == 0
    assert ol("task", "add", "-p", "demo", "--title", "Keep me").code == 0
    (project / "pyproject.toml").write_text("[tool.pytest.ini_options]\n")

    assert ol("project", "init", "demo").code == 0
    after = json.loads(pfile.read_text())
    assert after["validation"]["testCommand"] == "make my-tests"
    assert after["runtime"]["maxAttemptsPerTask"] == 5
    assert [t["id"] for t in ol("task", "list", "--json").json()["tasks"]] == ["keep-me"]


def test_force_backs_up_edited_files_and_keeps_the_ledger(ol, project):
    skill = project / ".agents/skills/openloop/SKILL.md"
    skill.write_text("mine\n")
    assert ol("task", "add", "--title", "Survive force").code == 0
    result = ol("project", "init", "demo", "--force")
    assert result.code == 0, result.err
    assert skill.read_text() != "mine\n"
    backups = list((project / ".openloop/backup").rglob("SKILL.md"))
    assert len(backups) == 1 and backups[0].read_text() == "mine\n"
    assert ol("task", "list", "--json").json()["summary"]["total"] == 1


def test_init_over_invalid_project_json_fails_and_changes_nothing(ol, project):
    pfile = project / ".openloop/project.json"
    pfile.write_text('{"version": 2, "agent": {"type": "robot"}}')
    (project / ".pi/SYSTEM.md").unlink()
    result = ol("project", "init", "demo")
    assert result.code == 2
    assert "project.json: agent.type:" in result.err
    assert "\n" not in result.err.strip()
    assert not (project / ".pi/SYSTEM.md").exists()
    assert pfile.read_text() == '{"version": 2, "agent": {"type": "robot"}}'


def test_versioned_ledger_option_changes_the_gitignore(ol, project):
    pfile = project / ".openloop/project.json"
    config = json.loads(pfile.read_text())
    config["ledger"]["versioned"] = True
    pfile.write_text(json.dumps(config))
    assert ol("project", "init", "demo").code == 0
    assert "tasks.json" not in (project / ".openloop/.gitignore").read_text()


def test_show_remove_purge_and_activate(ol, project, tmp_path, env):
    shown = ol("project", "show", "demo").json()
    assert shown["controlPlaneExists"] is True and shown["commandsTrusted"] is True
    assert ol("project", "activate", "demo").code == 0
    assert ol("config", "show").json()["activeProject"] == "demo"
    unknown = ol("project", "activate", "nope")
    assert unknown.code == 2 and "unknown project 'nope'" in unknown.err

    assert ol("project", "remove", "demo").code == 0
    assert (project / ".openloop").is_dir()
    assert ol("project", "list", "--json").json() == []
    assert ol("config", "show").json()["activeProject"] is None

    assert ol("project", "add", "demo", str(project)).code == 0
    assert ol("project", "remove", "demo", "--purge", "--yes").code == 0
    assert not (project / ".openloop").exists()


def test_project_defaults_to_active_or_only_project(ol, project, tmp_path):
    assert ol("task", "add", "--title", "Only one").code == 0  # the only project
    other = make_repo(tmp_path / "other")
    assert ol("project", "add", "other", str(other), "--init").code == 0
    ambiguous = ol("task", "add", "--title", "Which")
    assert ambiguous.code == 2 and "--project" in ambiguous.err
    assert ol("project", "activate", "other").code == 0
    assert ol("task", "add", "--title", "Goes to other").code == 0
    assert ol("task", "list", "-p", "other", "--json").json()["summary"]["total"] == 1


def test_table_output(ol, project):
    out = ol("project", "list", "--format", "table").out
    assert out.splitlines()[0].split() == ["ALIAS", "INITIALIZED", "PAUSED", "PATH"]
    assert "demo" in out.splitlines()[1]
