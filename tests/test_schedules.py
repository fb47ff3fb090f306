"""Calendar schedules (`schedule.onCalendar`) and `service start/stop/status -p ALIAS` for one
project, against a fake systemctl that keeps the state a user manager would."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from pydantic import ValidationError

from openloop.actions import service
from openloop.adapters import manager as user_manager_mod
from openloop.adapters import units
from openloop.state.config import GlobalConfig
from openloop.state.projectconfig import ProjectConfig
from tests.conftest import make_repo
from tests.test_iteration import set_project

HAVE_ANALYZE = shutil.which("systemd-analyze") is not None


def test_a_calendar_schedule_replaces_the_interval_in_the_timer_dropin():
    pconf = ProjectConfig.model_validate({"schedule": {"onCalendar": "Mon..Fri 09:00"}})
    timer = units.timer_dropin(GlobalConfig(), pconf, "web")
    # The one empty OnActiveSec= resets every trigger of the template, the interval's included.
    assert timer.count("OnActiveSec=\n") == 1
    assert "OnCalendar=Mon..Fri 09:00\n" in timer and "Persistent=yes" in timer
    assert "OnUnitInactiveSec" not in timer and "OnActiveSec=3" not in timer
    # An interval schedule keeps its per-project offset.
    interval = units.timer_dropin(GlobalConfig(), ProjectConfig(), "web")
    assert "OnCalendar" not in interval and "OnUnitInactiveSec=" in interval


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ({"onCalendar": "daily", "intervalMinutes": 5}, "exclude each other"),
        ({"onCalendar": "daily\nExecStart=/bin/evil"}, "calendar"),
        ({"onCalendar": "%h"}, "calendar"),
        ({"onCalendar": ""}, "at least 1"),
    ],
)
def test_a_calendar_schedule_is_checked_by_the_model(schedule, message):
    with pytest.raises(ValidationError, match=message):
        ProjectConfig.model_validate({"schedule": schedule})


@pytest.mark.skipif(not HAVE_ANALYZE, reason="systemd-analyze not installed")
def test_systemd_analyze_judges_the_expression():
    assert units.check_calendar("Mon..Fri 09:00") is None
    assert units.check_calendar("hourly") is None
    assert "bogus" in (units.check_calendar("bogus") or "")


def test_without_systemd_analyze_the_light_check_is_all(monkeypatch):
    monkeypatch.setattr(units.shutil, "which", lambda name, *a, **k: None)
    assert units.check_calendar("bogus") is None


def test_config_set_and_validate_take_a_calendar(ol, project, monkeypatch):
    set_project(project, schedule={"intervalMinutes": 30})
    both = ol("config", "set", "-p", "demo", "schedule.onCalendar", "daily")
    assert both.code == 2 and "exclude each other" in both.err
    assert ol("config", "set", "-p", "demo", "schedule.intervalMinutes", "null").code == 0
    ok = ol("config", "set", "-p", "demo", "schedule.onCalendar", "Mon..Fri 09:00")
    assert ok.code == 0, ok.err
    assert (
        json.loads((project / ".openloop/project.json").read_text())["schedule"]["onCalendar"]
        == "Mon..Fri 09:00"
    )
    assert "service install" in ol("config", "set", "-p", "demo", "schedule.onCalendar",
                                   "hourly").err  # fmt: skip
    if HAVE_ANALYZE:
        bad = ol("config", "set", "-p", "demo", "schedule.onCalendar", "Fooday 25:00")
        assert bad.code == 2 and "schedule.onCalendar" in bad.err
        set_project(project, schedule={"onCalendar": "Fooday 25:00"})
        checked = ol("config", "validate", "-p", "demo", "--json")
        assert checked.code == 2
        problems = [f["problem"] for f in checked.json()["files"] if not f["ok"]]
        assert any("onCalendar" in p for p in problems)


class FakeManager:
    """systemctl --user, as far as start/stop/status -p need it."""

    def __init__(self):
        self.enabled: set[str] = set()
        self.active: set[str] = set()
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, env, *args, check=True, timeout=60):
        self.calls.append(args)
        words = [a for a in args if not a.startswith("--")]
        verb, names = words[0], words[1:]
        out = ""
        if verb == "enable":
            self.enabled |= set(names)
        elif verb == "disable":
            self.enabled -= set(names)
        elif verb == "start":
            self.active |= set(names)
        elif verb == "stop":
            self.active -= set(names)
        elif verb == "list-timers":
            out = json.dumps([{"unit": n, "next": 1} for n in sorted(self.active)
                              if n.endswith(".timer") and n.startswith("openloop@")])  # fmt: skip
        elif verb == "list-units":
            out = "\n".join(f"{n} loaded active running x" for n in sorted(self.active))
        elif verb == "is-enabled":
            out = "enabled" if names[0] in self.enabled else "disabled"
        return subprocess.CompletedProcess(["systemctl", *args], 0, out, "")


@pytest.fixture
def manager(monkeypatch):
    fake = FakeManager()
    monkeypatch.setattr(user_manager_mod, "systemctl", fake)
    monkeypatch.setattr(user_manager_mod, "check_unit_dir_seen", lambda env: None)
    return fake


@pytest.fixture
def two(ol, tmp_path):
    for alias in ("web", "api"):
        repo = make_repo(tmp_path / alias)
        assert ol("project", "add", alias, str(repo), "--init").code == 0
    return tmp_path


def test_start_stop_and_status_of_one_project(ol, env, two, manager):
    started = ol("service", "start", "-p", "web")
    assert started.code == 0, started.err
    assert "openloop@web.timer" in manager.active and "openloop@api.timer" not in manager.active
    assert "openloop@web.timer" in manager.enabled and "openloop.target" not in manager.enabled
    assert "openloop.target is not enabled" in started.err
    assert (units.user_unit_dir(env) / "openloop@web.timer.d/50-openloop.conf").is_file()

    status = ol("service", "status", "-p", "web", "--json")
    assert status.code == 0 and [p["project"] for p in status.json()["projects"]] == ["web"]

    assert ol("service", "start").code == 0
    assert {"openloop@web.timer", "openloop@api.timer"} <= manager.active
    manager.active.add("openloop@web.service")  # an iteration running now
    stopped = ol("service", "stop", "-p", "web")
    assert stopped.code == 0, stopped.err
    assert "openloop@web.timer" not in manager.active | manager.enabled
    assert "openloop@web.service" not in manager.active
    assert "openloop@api.timer" in manager.active  # the other project's schedule runs on


def test_one_projects_commands_refuse_an_unknown_alias(ol, two, manager):
    result = ol("service", "start", "-p", "nope")
    assert result.code == 2 and "nope" in result.err


def test_the_calendar_goes_into_the_installed_dropin(ol, env, two, manager):
    set_project(two / "web", schedule={"onCalendar": "*-*-* 02:30:00"})
    r = ol("service", "start", "-p", "web")
    assert r.code == 0, r.err + r.out
    text = (units.user_unit_dir(env) / "openloop@web.timer.d/50-openloop.conf").read_text()
    assert "OnCalendar=*-*-* 02:30:00" in text


@pytest.mark.skipif(not HAVE_ANALYZE, reason="systemd-analyze not installed")
def test_install_skips_a_project_whose_calendar_systemd_refuses(ol, env, two, manager):
    set_project(two / "web", schedule={"onCalendar": "Fooday 25:00"})
    report = service.install(env, reload=False)
    assert any(s.startswith("web: schedule.onCalendar") for s in report.skipped)
    refused = ol("service", "start", "-p", "web")
    assert refused.code != 0 and "Fooday" in refused.err
    assert "openloop@web.timer" not in manager.active
