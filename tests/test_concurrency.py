"""Concurrent writers never lose an update: real processes, real file locks."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys

from openloop.env import Environment
from openloop.state.ledger import load_ledger

WORKERS = 8
PER_WORKER = 50


def _add_many(config_dir: str, state_dir: str, worker: int) -> None:
    from pathlib import Path

    from openloop.actions import tasks
    from openloop.state import project as projects

    env = Environment(config_dir=Path(config_dir), state_dir=Path(state_dir))
    project = projects.resolve(env, "demo")
    for n in range(PER_WORKER):
        tasks.add_task(env, project, tasks.NewTask(title=f"worker {worker} task {n}"))


def test_eight_processes_adding_fifty_tasks_each_end_with_exactly_400(project, env):
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_add_many, args=(str(env.config_dir), str(env.state_dir), w))
        for w in range(WORKERS)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0
    ledger_file = project / ".openloop/tasks.json"
    ledger = load_ledger(ledger_file)  # parses and validates: the file is intact
    assert len(ledger.tasks) == WORKERS * PER_WORKER
    assert len({t.id for t in ledger.tasks}) == WORKERS * PER_WORKER
    titles = {t.title for t in ledger.tasks}
    assert titles == {f"worker {w} task {n}" for w in range(WORKERS) for n in range(PER_WORKER)}
    assert not list(ledger_file.parent.glob(".tasks.json.*.tmp"))


def test_concurrent_cli_processes(project, env):
    """The same through the real `openloop` entry point (fewer, since each is a new interpreter)."""
    import os

    full_env = {**os.environ, "OPENLOOP_HOME": str(env.config_dir)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "openloop", "task", "add", "-p", "demo", "--title", f"cli {i}"],
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(12)
    ]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    data = json.loads((project / ".openloop/tasks.json").read_text())
    assert sorted(t["title"] for t in data["tasks"]) == sorted(f"cli {i}" for i in range(12))
