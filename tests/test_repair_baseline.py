"""A validation of the default branch killed with OpenLoop (SIGKILL outside systemd) leaves its
checks running and its scratch checkout behind: the next iteration's repair stops those checks
(found by the run marker they inherited) and removes the checkout. With no scratch checkout
left, no process is looked for: the search reads every process's environment."""

from __future__ import annotations

import os
import subprocess
import time

from tests.test_iteration import FakeAgent, add, demo, once  # noqa: F401


def _orphan(alias: str) -> subprocess.Popen:
    env = {**os.environ, "OPENLOOP_RUN_ID": f"baseline:{alias}:0123456789ab"}
    return subprocess.Popen(["sleep", "60"], env=env, start_new_session=True)


def _gone(proc: subprocess.Popen, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return True
        time.sleep(0.05)
    return False


def test_checks_of_a_killed_baseline_run_are_stopped_and_its_checkout_removed(ol, demo, env):  # noqa: F811
    scratch = env.worktrees_dir / "demo" / "_baseline-0123456789ab"
    scratch.mkdir(parents=True)
    orphan = _orphan("demo")
    try:
        add(ol, "Anything")
        once(env, FakeAgent())
        assert _gone(orphan)
        assert not scratch.exists()
    finally:
        orphan.kill()
        orphan.wait()


def test_without_a_scratch_checkout_no_process_is_searched_for(ol, demo, env, monkeypatch):  # noqa: F811
    from openloop.loop import steps

    searched = []
    monkeypatch.setattr(steps, "_kill_run_processes", lambda *a, **k: searched.append(a))
    add(ol, "Anything")
    once(env, FakeAgent())
    assert searched == []
