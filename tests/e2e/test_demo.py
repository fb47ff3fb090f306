"""`openloop demo --ci`, the README's first command, end to end: the real pi, the demo's own
scripted model, the five outcomes in the ledger and the git history. (Its run through the
systemd units is tests/systemd/test_demo_units.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import git
from tests.e2e.conftest import OPENLOOP

pytestmark = pytest.mark.e2e

OUTCOMES = (
    "broken default branch healed first",
    "low-risk task auto-merged",
    "medium-risk task left for review",
    "denied path blocked by policy",
    "failed check retried, then passing",
)


def _demo(tmp_path: Path, pi_bin: str, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    """Runs the demo with a HOME that must stay untouched (the user's, as far as it knows)."""
    user_home = tmp_path / "user-home"
    user_home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENLOOP_", "XDG_"))}
    env.update(
        HOME=str(user_home),
        OPENLOOP_PI_BIN=pi_bin,
        # pi would read and write here: the demo must point it at its own directory.
        PI_CODING_AGENT_DIR=str(user_home / ".pi" / "agent"),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    proc = subprocess.run(
        [OPENLOOP, "demo", "--ci", "--no-units", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    return proc, user_home


def test_demo_ci_produces_the_four_outcomes(tmp_path, pi_bin):
    where = tmp_path / "demo"
    proc, user_home = _demo(tmp_path, pi_bin, "--keep", "--dir", str(where))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in OUTCOMES:
        assert f"ok      {name}:" in proc.stdout
    assert "MISSING" not in proc.stdout
    assert "Demo passed" in proc.stdout and "(iterations by run-once)" in proc.stdout
    assert "systemd is not used because not asked for (--no-units)" in proc.stdout
    # The exact review commands, with the demo's OPENLOOP_HOME spelled out.
    home = where / "openloop"
    for verb in ("show", "apply", "reject"):
        assert f"OPENLOOP_HOME={home} " in proc.stdout
        assert f"promotion {verb} -p sample --task add-safe-divide" in proc.stdout

    repo = where / "sample"
    tasks = {t["id"]: t for t in json.loads((repo / ".openloop/tasks.json").read_text())["tasks"]}
    heal = [k for k in tasks if k.startswith("fix-lint-")]
    assert len(heal) == 1 and tasks[heal[0]]["source"]["type"] == "ci"
    demo = {"add-subtract", "add-multiply", "add-safe-divide", "raise-production-workers", *heal}
    assert {k: t["status"] for k, t in tasks.items() if k in demo} == {
        heal[0]: "promoted",
        "add-subtract": "promoted",
        "add-multiply": "promoted",
        "add-safe-divide": "review",
        "raise-production-workers": "blocked",
    }
    # Anything else is discovery's, proposed when the backlog ran dry, never run unaccepted.
    assert all(t["status"] == "proposed" for k, t in tasks.items() if k not in demo)
    ops = git(repo, "show", "main:calc/ops.py")
    assert "def subtract" in ops and "def multiply" in ops and "def divide" not in ops
    assert "print(" not in ops
    assert "def divide" in git(repo, "show", "openloop/add-safe-divide:calc/ops.py")
    assert "workers = 2" in git(repo, "show", "main:deploy/production.ini")
    runs = sorted(
        (json.loads(p.read_text()) for p in (repo / ".openloop/runs").glob("*.json")),
        key=lambda r: r["startedAt"],
    )
    assert [(r["taskId"], r["outcome"]) for r in runs] == [
        (heal[0], "completed"),
        ("add-subtract", "completed"),
        ("add-multiply", "validation-failed"),
        ("add-multiply", "completed"),
        ("add-safe-divide", "completed"),
        ("raise-production-workers", "blocked-by-policy"),
    ]
    assert runs[0]["role"] == "ci-healer"
    assert "print(" not in git(repo, "show", "main:calc/stats.py")
    retry_prompt = (repo / ".openloop/runs" / runs[3]["runId"] / "prompt.md").read_text()
    assert "The previous attempt failed" in retry_prompt and "print(" in retry_prompt
    assert all(r["costUsd"] > 0 for r in runs)
    # The policy that blocked the deploy change is committed on main and approved.
    assert "deploy/**" in git(repo, "show", "main:.openloop/policy.yaml")
    # pi's configuration went into the demo's own HOME, nothing into the caller's.
    assert (where / "home/.pi/agent/models.json").is_file()
    assert list(user_home.iterdir()) == []


def test_demo_cleans_up_without_keep_and_refuses_a_busy_directory(tmp_path, pi_bin):
    where = tmp_path / "empty"
    where.mkdir()
    proc, user_home = _demo(tmp_path, pi_bin, "--dir", str(where))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert list(where.iterdir()) == []
    assert list(user_home.iterdir()) == []

    (where / "mine.txt").write_text("keep me\n")
    proc, _ = _demo(tmp_path, pi_bin, "--dir", str(where))
    assert proc.returncode == 2 and "not empty" in proc.stderr
    assert (where / "mine.txt").read_text() == "keep me\n"
