"""The fixture gives a real user manager + journald: templated timers fire, RuntimeMaxSec kills
the whole unit, stdout reaches the journal with the unit attached, and unit linting works."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.systemd import manager
from tests.systemd.manager import UserManager

PROBE_SERVICE = """\
[Unit]
Description=OpenLoop fixture probe %i

[Service]
Type=exec
ExecStart=/bin/sh -c 'echo hello-%i; sleep 30'
RuntimeMaxSec=2
"""

PROBE_TIMER = """\
[Unit]
Description=OpenLoop fixture probe timer %i

[Timer]
OnActiveSec=1
AccuracySec=100ms
"""


def _unit_pids(um: UserManager, unit: str) -> list[int]:
    cgroup = um.show(unit, "ControlGroup")["ControlGroup"]
    if not cgroup:
        return []
    for hierarchy in manager.cgroup_hierarchies():
        procs = hierarchy / cgroup.lstrip("/") / "cgroup.procs"
        if procs.exists():
            return [int(p) for p in procs.read_text().split()]
    return []


def _comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def test_templated_timer_fires_service_and_runtime_cap_kills_its_tree(user_manager):
    um = user_manager
    um.write_unit("probe@.service", PROBE_SERVICE)
    um.write_unit("probe@.timer", PROBE_TIMER)
    um.daemon_reload()
    since_us = time.time_ns() // 1000

    started = um.systemctl("start", "probe@x.timer")
    assert started.returncode == 0, started.stderr

    # The timer fires the service after ~1 s; while it runs, find the shell's `sleep` child.
    unit = "probe@x.service"
    sleep_pids = um.wait_for(
        lambda: [p for p in _unit_pids(um, unit) if _comm(p) == "sleep"],
        timeout=10,
        interval=0.05,
        what=f"{unit} to run `sleep`",
    )
    assert um.show(unit, "ActiveState")["ActiveState"] == "active"

    # RuntimeMaxSec=2 ends it with Result=timeout, and the whole cgroup is killed.
    props = um.wait_for(
        lambda: (
            (p := um.show(unit, "Result", "ActiveState"))["ActiveState"] in ("failed", "inactive")
            and p
        ),
        timeout=15,
        what=f"{unit} to be stopped by RuntimeMaxSec",
    )
    assert props["Result"] == "timeout", props
    um.wait_for(lambda: all(_comm(p) is None for p in sleep_pids), timeout=5, what="sleep gone")
    assert _unit_pids(um, unit) == []

    # Its stdout is in the journal, attributed to the user unit, readable by the user.
    records = um.wait_for(
        lambda: [
            r
            for r in um.journal_json(_SYSTEMD_USER_UNIT=unit)
            if r.get("MESSAGE") == "hello-x" and int(r["__REALTIME_TIMESTAMP"]) >= since_us
        ],
        timeout=10,
        what="hello-x in the journal",
    )
    assert records[0]["_UID"] == str(um.uid)
    # --user-unit (journal_json's unit=) finds it too, plus the manager's messages about it.
    by_unit = um.journal_json(unit, f"--since=@{since_us // 1_000_000}")
    assert any(r.get("MESSAGE") == "hello-x" for r in by_unit)


GOOD_UNIT = """\
[Unit]
Description=OpenLoop fixture verify probe

[Service]
Type=exec
ExecStart=/bin/true
"""


def test_analyze_verify_is_silent_for_a_good_unit_and_not_for_a_bogus_key(user_manager):
    um = user_manager
    good = um.write_unit("verify-good.service", GOOD_UNIT)
    bad = um.write_unit("verify-bad.service", GOOD_UNIT + "BogusKey=1\n")

    ok = um.run(["systemd-analyze", "--user", "verify", "--man=no", str(good)])
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "", "")

    flagged = um.run(["systemd-analyze", "--user", "verify", "--man=no", str(bad)])
    # The exit code stays 0 for unknown keys: any output is the failure signal.
    assert "BogusKey" in flagged.stdout + flagged.stderr


def test_runs_as_the_unprivileged_test_user(user_manager, user_tmp_path):
    um = user_manager
    cp = um.run(["sh", "-c", 'id -u; echo "$HOME $XDG_RUNTIME_DIR"; touch "$1/x"', "sh",
                 str(user_tmp_path)])  # fmt: skip
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.split() == [str(um.uid), str(um.home), f"/run/user/{um.uid}"]
    assert (user_tmp_path / "x").stat().st_uid == um.uid
    assert um.uid >= 1000 and um.uid != os.getuid()


def test_openloop_is_executable_by_the_test_user(user_manager, openloop_exe, user_tmp_path):
    cp = user_manager.run(
        [str(openloop_exe), "--help"], env={"OPENLOOP_HOME": str(user_tmp_path / "home")}
    )
    assert cp.returncode == 0, cp.stderr


# ---------------------------------------------------------------- the skip/fail policy


@pytest.mark.parametrize(
    ("environ", "required"),
    [
        ({}, False),
        ({"CI": "false"}, False),
        ({"CI": "true"}, True),
        ({"CI": "TRUE"}, True),
        ({"OPENLOOP_REQUIRE_SYSTEMD": "1"}, True),
        ({"OPENLOOP_REQUIRE_SYSTEMD": "0"}, False),
    ],
)
def test_policy_requires_systemd_only_in_ci(environ, required):
    assert manager.systemd_required(environ) is required


def test_policy_skips_locally_and_fails_in_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("OPENLOOP_REQUIRE_SYSTEMD", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no systemd here"):
        manager.systemd_unavailable("no systemd here")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no systemd here"):
        manager.systemd_unavailable("no systemd here")


def test_not_root_is_reported_as_unavailable(monkeypatch):
    monkeypatch.setattr(manager.os, "geteuid", lambda: 1000)
    with pytest.raises(manager.Unavailable, match="need root"):
        manager.requirements()
