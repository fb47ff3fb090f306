"""Shared fixtures: an isolated OpenLoop home, real git repositories, and a CLI runner."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from openloop.cli import run
from openloop.env import Environment

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


@pytest.fixture(autouse=True)
def _git_identity(monkeypatch, tmp_path_factory):
    # Real git, but never the developer's own config or identity.
    home = tmp_path_factory.mktemp("githome")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / "gitconfig"))
    for key, value in GIT_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("OPENLOOP_PROJECT", raising=False)
    monkeypatch.delenv("OPENLOOP_DEBUG", raising=False)
    # The home the CLI last served tags journal records: never one of an earlier test's.
    monkeypatch.setattr("openloop.env._serving", None)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def make_repo(path: Path, files: dict[str, str] | None = None, branch: str = "main") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", branch)
    for rel, content in (files or {"README.md": "# demo\n"}).items():
        target = path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


@pytest.fixture
def repo(tmp_path) -> Path:
    return make_repo(tmp_path / "repo")


@pytest.fixture
def env(tmp_path) -> Environment:
    # The same layout a subprocess gets with OPENLOOP_HOME=<env.config_dir>.
    # XDG_CONFIG_HOME too: `project add/remove` keep installed systemd units in step, and a test
    # must never touch the developer's own ~/.config/systemd/user.
    environ = {
        **os.environ,
        "OPENLOOP_HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
    }
    return replace(Environment.from_os(environ), stdout_isatty=False)


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


@pytest.fixture
def ol(env):
    """Run the CLI in-process with the test environment: ol('task', 'list', ...)."""

    def invoke(*args: str, environment: Environment | None = None) -> Result:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = run(list(args), environment or env)
        return Result(code, out.getvalue(), err.getvalue())

    return invoke


@pytest.fixture
def project(ol, repo):
    """A linked, initialized project 'demo' with no tasks."""
    result = ol("project", "add", "demo", str(repo), "--init")
    assert result.code == 0, result.err
    return repo


def commit_policy(ol, repo: Path, text: str, alias: str = "demo") -> None:
    """Write policy.yaml, commit it on the default branch (the policy is read from there) and
    approve it, as a user changing their policy does."""
    (repo / ".openloop/policy.yaml").write_text(text)
    git(repo, "add", ".openloop/policy.yaml")
    git(repo, "commit", "-qm", "policy")
    assert ol("project", "trust", alias).code == 0
