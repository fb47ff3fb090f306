"""End-to-end fixtures: the real pi, a scripted model on 127.0.0.1, a real repository, and the
real `openloop` command in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import make_repo
from tests.support.model_server import (
    NO_RETRIES_SETTINGS,
    find_pi,
    pi_env,
    write_pi_models_json,
    write_pi_settings,
)

OPENLOOP = str(Path(sys.executable).with_name("openloop"))


@pytest.fixture(scope="session")
def pi_bin() -> str:
    pi = find_pi()
    if pi is not None and pi.exists():
        return str(pi)
    message = "pi not found: run scripts/install-pi.sh (or set OPENLOOP_PI_BIN)"
    # Locally one may opt out; in CI a skipped end-to-end test would be a silent gap.
    if os.environ.get("OPENLOOP_ALLOW_SKIP_E2E") == "1" and os.environ.get("CI", "") != "true":
        pytest.skip(message)
    pytest.fail(message, pytrace=False)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """HOME for pi: its models.json and settings.json go in <home>/.pi/agent/."""
    path = tmp_path / "home"
    path.mkdir()
    return path


@dataclass
class World:
    """A linked project 'demo' whose agent is the real pi talking to a scripted model."""

    root: Path
    repo: Path
    home: Path
    env: dict[str, str]

    def openloop(self, *args: str, timeout: float = 120, check: bool = False):
        proc = subprocess.run(
            [OPENLOOP, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"openloop {' '.join(args)} -> {proc.returncode}\n{proc.stderr}")
        return proc

    def point_at(self, model_url: str) -> None:
        write_pi_models_json(self.home, model_url)

    def ledger(self) -> dict:
        return json.loads((self.repo / ".openloop/tasks.json").read_text())

    def task(self, task_id: str) -> dict:
        return next(t for t in self.ledger()["tasks"] if t["id"] == task_id)

    def record(self, run_id: str) -> dict:
        return json.loads((self.repo / f".openloop/runs/{run_id}.json").read_text())

    def budget(self) -> dict:
        path = self.root / "openloop" / "state" / "budget.json"
        return json.loads(path.read_text()) if path.exists() else {"days": {}}


@pytest.fixture
def world(tmp_path, pi_bin) -> World:
    home = tmp_path / "pihome"
    home.mkdir()
    write_pi_settings(home, NO_RETRIES_SETTINGS)
    repo = make_repo(
        tmp_path / "repo",
        {
            "src/calc.py": "def add(a, b):\n    return a + b\n",
            "README.md": "# calc\n",
        },
    )
    env = pi_env(
        home,
        {
            "OPENLOOP_HOME": str(tmp_path / "openloop"),
            "OPENLOOP_PI_BIN": pi_bin,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "GIT_CONFIG_GLOBAL": os.environ.get("GIT_CONFIG_GLOBAL", ""),
            "GIT_AUTHOR_NAME": "Test",
            "GIT_AUTHOR_EMAIL": "test@example.invalid",
            "GIT_COMMITTER_NAME": "Test",
            "GIT_COMMITTER_EMAIL": "test@example.invalid",
            # The tree under test when one is named (a worktree of the repository, say), not
            # the one the virtualenv installed; unset (CI), nothing changes.
            **({"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}),
        },
    )
    w = World(tmp_path, repo, home, env)
    w.openloop("project", "add", "demo", str(repo), "--init", check=True)
    # The lint check fails while any .py file contains the word BROKEN.
    pfile = repo / ".openloop/project.json"
    data = json.loads(pfile.read_text())
    data["validation"].update(
        lintCommand="! grep -rn BROKEN --include=*.py .", testCommand=None, typecheckCommand=None
    )
    data["runtime"]["inactivityTimeoutSeconds"] = 4
    pfile.write_text(json.dumps(data))
    w.openloop("project", "trust", "demo", check=True)
    w.openloop("config", "set-model", "scripted", "--provider", "mock", check=True)
    return w
