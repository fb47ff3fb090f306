"""`openloop demo` through the real units: with a user manager it schedules OpenLoop's units
under a name of its own (openloop_demo_XXXXXX), the timer fires the iterations, their records
are followed in the journal, and the user's own OpenLoop units, drop-ins (also an
override.conf with secrets and hooks) and pi directory come out as they were."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def users_own_install(user_manager, openloop_exe, user_tmp_path):
    """The user's own OpenLoop (a project named like the direct demo's, its units installed),
    uninstalled again after the test."""
    mine = {"OPENLOOP_HOME": str(user_tmp_path / "mine")}
    yield mine
    user_manager.run([str(openloop_exe), "service", "uninstall"], env=mine, timeout=300)


def test_the_demo_runs_through_its_own_units_and_leaves_the_users_alone(
    user_manager, openloop_exe, pi_for_units, user_tmp_path, users_own_install
):
    um = user_manager
    # The user's own OpenLoop: a project named like the demo's, units installed.
    mine = {
        **users_own_install,
        "GIT_AUTHOR_NAME": "U",
        "GIT_AUTHOR_EMAIL": "u@example.invalid",
        "GIT_COMMITTER_NAME": "U",
        "GIT_COMMITTER_EMAIL": "u@example.invalid",
    }
    repo = user_tmp_path / "sample"
    um.make_user_dir(repo)
    for argv in (
        ["git", "init", "-q", "-b", "main"],
        ["sh", "-c", "echo hi > README.md"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "init"],
    ):
        assert um.run(argv, env=mine, cwd=repo).returncode == 0
    for args in (["project", "add", "sample", str(repo), "--init"], ["service", "install"]):
        cp = um.run([str(openloop_exe), *args], env=mine, timeout=120)
        assert cp.returncode == 0, cp.stderr
    # What `systemctl --user edit openloop@.service` would leave: it sorts after any drop-in
    # of the demo's, so the demo must not be an instance of this template at all.
    hook = um.home / "hook.log"
    um.write_unit(
        "openloop@.service.d/override.conf",
        "[Service]\nEnvironment=OPENAI_API_KEY=sk-user-secret\n"
        f"ExecStartPre=/bin/sh -c 'echo ran-for-%n >> {hook}'\n",
    )
    # The manager's own environment points pi at the user's directory.
    users_pi = um.home / "users-pi"
    um.systemctl("set-environment", f"PI_CODING_AGENT_DIR={users_pi}")
    um.daemon_reload()
    before = _files(um.unit_dir)
    assert any("OPENLOOP_HOME" in text for text in before.values())

    where = user_tmp_path / "demo"
    try:
        cp = um.run(
            [str(openloop_exe), "demo", "--ci", "--units", "--keep", "--dir", str(where)],
            env={"OPENLOOP_PI_BIN": str(pi_for_units)},
            timeout=600,
        )
    finally:
        um.systemctl("unset-environment", "PI_CODING_AGENT_DIR")
    out = cp.stdout + cp.stderr
    print(out)  # shown with -s, and on failure
    assert cp.returncode == 0, out[-6000:]
    assert "iterations by systemd" in cp.stdout
    assert cp.stdout.count("\nok      ") == 5, out[-4000:]
    name = re.search(r"(openloop_demo_[0-9a-f]{6})\.timer", cp.stdout).group(1)
    alias, service = name.replace("openloop_demo_", "demo-"), f"{name}.service"

    # The journal's records, followed while the demo ran and read back by `openloop logs`.
    assert "  journal: " in cp.stdout
    assert f"== the journal: openloop logs -p {alias}" in cp.stdout
    records = um.journal_json(service)
    tasks = {r.get("OPENLOOP_TASK") for r in records}
    assert {"add-subtract", "add-multiply", "add-safe-divide"} <= tasks
    assert any(str(t).startswith("fix-lint-") for t in tasks)

    # The iterations were the unit's: each run record's pid is one the journal saw under it.
    runs = [json.loads(p.read_text()) for p in (where / "sample/.openloop/runs").glob("*.json")]
    unit_pids = {r.get("_PID") for r in records}
    assert runs and all(str(r["pid"]) in unit_pids for r in runs), (runs, unit_pids)

    # The user's units are exactly as they were; the demo's are gone; no drop-in of the
    # user's ran or reached it; pi never touched the user's directory.
    assert _files(um.unit_dir) == before
    assert um.show(service, "LoadState")["LoadState"] == "not-found"
    assert um.show(f"{name}.timer", "LoadState")["LoadState"] == "not-found"
    assert not hook.exists()
    assert not users_pi.exists()
    # Nothing of the demo still runs (the scripted model is gone with it).
    ps = um.run(["ps", "-u", str(um.uid), "-o", "args="]).stdout
    assert str(where) not in ps


def test_without_a_user_manager_the_demo_says_so_and_runs_iterations_directly(
    user_manager, openloop_exe, user_tmp_path
):
    """--units refuses with the reason when there is no manager to talk to (here: a runtime
    directory with no manager in it), before creating anything."""
    where = user_tmp_path / "nodemo"
    cp = user_manager.run(
        [str(openloop_exe), "demo", "--ci", "--units", "--dir", str(where)],
        env={"XDG_RUNTIME_DIR": str(user_tmp_path)},
        timeout=60,
    )
    assert cp.returncode != 0
    assert "--units:" in cp.stderr and "user manager" in cp.stderr, cp.stderr
    assert not where.exists()


def _start_demo(um, exe, pi, where: Path):
    """The demo as the test user, in the background; returns the process once its timer runs,
    with the output so far."""
    proc = subprocess.Popen(
        um.command(
            [str(exe), "demo", "--ci", "--units", "--dir", str(where)], {"OPENLOOP_PI_BIN": str(pi)}
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "started openloop_demo_" in line:
            return proc, "".join(seen)
    proc.wait()
    raise AssertionError("the demo ended before its timer started:\n" + "".join(seen))


def test_a_killed_demo_leaves_nothing_running_for_long(
    user_manager, openloop_exe, pi_for_units, user_tmp_path
):
    """SIGTERM ends the demo through its clean-up; after a SIGKILL, which allows none, the next
    demo removes the orphaned instance first."""
    um = user_manager
    before = _files(um.unit_dir)

    killed, out = _start_demo(um, openloop_exe, pi_for_units, user_tmp_path / "one")
    orphan = re.search(r"started (openloop_demo_[0-9a-f]{6}\.timer)", out).group(1)
    # setpriv's own pid is the demo's after its exec.
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait(timeout=30)
    # The orphan's next run finds the demo's lock free: it stops its own timer and skips.
    um.wait_for(
        lambda: um.show(orphan, "ActiveState")["ActiveState"] == "inactive",
        timeout=240,
        what="the orphaned timer to stop itself",
    )
    assert (um.unit_dir / orphan).exists()  # its files wait for the next demo

    second, out = _start_demo(um, openloop_exe, pi_for_units, user_tmp_path / "two")
    assert f"removed {orphan}: left behind by a demo that was killed" in out
    assert um.show(orphan, "ActiveState")["ActiveState"] == "inactive"
    second.send_signal(signal.SIGTERM)
    rest, _ = second.communicate(timeout=180)
    assert second.returncode != 0
    assert _files(um.unit_dir) == before, out + rest
    assert not (user_tmp_path / "two").exists()  # no --keep: removed on SIGTERM too
