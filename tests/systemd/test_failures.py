"""Failures under a real user manager: a gate that cannot read the project's state fails the
unit (exit 255; 1-254 would be a silent skip), OnFailure= notifies once per distinct failure and
not again until the project recovered; a user's stop is `interrupted`, costs no attempt and
sends no notice."""

from __future__ import annotations

import json
from pathlib import Path

from tests.systemd.test_openloop_units import WRITE_FILE, site  # noqa: F401 - the fixture


def _notices(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _wait_inactive(site, unit: str) -> dict:  # noqa: F811
    return site.um.wait_for(
        lambda: (
            (p := site.um.show(unit, "ActiveState", "Result"))["ActiveState"]
            in ("inactive", "failed")
            and p
        ),
        timeout=30,
        what=f"{unit} to end",
    )


def _failure_handlers_done(site) -> bool:  # noqa: F811
    out = site.um.systemctl("list-units", "--all", "--plain", "--no-legend", "openloop-failure@*")
    return all(" activating " not in f" {line} " for line in out.stdout.splitlines())


def test_a_corrupt_ledger_fails_the_unit_and_notifies_once_until_recovered(site):  # noqa: F811
    notices = site.root / "notices.log"
    repo = site.make_project("corrupt", WRITE_FILE)
    site.ol("config", "set", "notifications.onTaskFailed", f"echo $OPENLOOP_PROJECT >> {notices}")
    # A healthy project runs (its default branch is validated once) or skips: no failure, no
    # notice. Wait for that run to end before breaking the ledger under it.
    site.ol("service", "install")
    unit = "openloop@corrupt.service"
    assert site.um.systemctl("start", unit).returncode == 0
    assert _wait_inactive(site, unit)["ActiveState"] == "inactive"
    ledger = repo / ".openloop/tasks.json"
    good = ledger.read_text()
    ledger.write_text("{broken")
    for _ in range(3):
        site.um.systemctl("start", unit)
        props = _wait_inactive(site, unit)
        assert props["ActiveState"] == "failed", props
        site.um.wait_for(lambda: _failure_handlers_done(site), what="the OnFailure handler")
        site.um.systemctl("reset-failed", unit)
    site.um.wait_for(lambda: _notices(notices), what="a failure notice")
    assert _notices(notices) == ["corrupt"]
    status = json.loads(site.ol("service", "status", "--json").stdout)["projects"][0]
    assert status["lastResult"] == "gate-error" and "tasks.json" in status["broken"]
    doctor = site.ol("doctor", check=False)
    assert "corrupt" in doctor.stdout + doctor.stderr and doctor.returncode != 0

    ledger.write_text(good)  # recovered: skips again (nothing to do), the unit is fine
    site.um.systemctl("start", unit)
    assert _wait_inactive(site, unit)["ActiveState"] == "inactive"
    status = json.loads(site.ol("service", "status", "--json").stdout)["projects"][0]
    assert status["broken"] is None
    assert _notices(notices) == ["corrupt"]  # recovery itself sends nothing

    ledger.write_text("{broken again")  # a new failure after recovery notifies again
    site.um.systemctl("start", unit)
    _wait_inactive(site, unit)
    site.um.wait_for(lambda: len(_notices(notices)) == 2, what="a second notice")


def test_a_user_stop_is_interrupted_costs_no_attempt_and_sends_no_notice(site):  # noqa: F811
    notices = site.root / "notices.log"
    repo = site.make_project("stopme", "cat > /dev/null\nsleep 60\n")
    tid = site.ol("task", "add", "-p", "stopme", "--title", "Long", "--json", check=True)
    site.ol("config", "set", "notifications.onTaskFailed", f"echo $OPENLOOP_PROJECT >> {notices}")
    site.ol("service", "install")
    site.ol("service", "start")
    site.um.systemctl("start", "--no-block", "openloop@stopme.service")
    site.um.wait_for(
        lambda: any(r["outcome"] == "running" for r in site.records(repo)),
        timeout=20,
        what="the iteration to run",
    )
    cp = site.ol("service", "stop", timeout=120)
    assert cp.returncode == 0, cp.stderr
    records = site.records(repo)
    assert [r["outcome"] for r in records] == ["interrupted"], records
    assert "stopped by the user" in records[0]["reason"]
    task = site.ledger(repo)["tasks"][0]
    assert (task["status"], task["attempts"]) == ("ready", 0), (task, tid.stdout)
    assert _notices(notices) == []
    props = site.um.show("openloop@stopme.service", "ActiveState")
    assert props["ActiveState"] == "inactive"
