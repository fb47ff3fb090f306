"""A distro package's units in the vendor directory (OPENLOOP_VENDOR_UNIT_DIR stands for
/usr/lib/systemd/user, so no root is needed): install writes only drop-ins, uninstall leaves the
vendor files alone, doctor names the files in use; and the journal commands without
systemd-python or journalctl (a plain pipx install on a host without systemd)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from openloop.actions import doctor, service
from openloop.adapters import journal, journal_read, manager, units
from openloop.resources import data_dir
from tests.test_service import demo  # noqa: F401  (fixture)


@pytest.fixture
def vendor(env, tmp_path, monkeypatch):
    folder = tmp_path / "usr-lib-systemd-user"
    folder.mkdir()
    for name in units.TEMPLATES:
        shutil.copy(data_dir("units") / name, folder / name)
    monkeypatch.setitem(env.environ, units.VENDOR_DIR_VAR, str(folder))
    return folder


def _snapshot(folder):
    return {p.name: p.read_text() for p in sorted(folder.iterdir())}


def test_install_with_vendor_units_writes_only_dropins(ol, demo, env, vendor):  # noqa: F811
    before = _snapshot(vendor)
    report = service.install(env, reload=False)
    unit_dir = units.user_unit_dir(env)
    assert report.packaged == vendor
    assert sorted(report.written) == [
        "openloop-failure@.service.d/10-environment.conf",
        "openloop@.service.d/10-environment.conf",
        "openloop@demo.service.d/50-openloop.conf",
        "openloop@demo.timer.d/50-openloop.conf",
    ]
    assert not any((unit_dir / name).exists() for name in units.TEMPLATES)
    assert service.installed(env)
    assert _snapshot(vendor) == before
    assert units.unit_sources(env) == {name: vendor / name for name in units.TEMPLATES}


def test_install_replaces_its_own_old_copies_but_not_edited_ones(ol, demo, env, vendor):  # noqa: F811
    unit_dir = units.user_unit_dir(env)
    unit_dir.mkdir(parents=True)
    rendered = units.render_templates(["/home/me/.local/bin/openloop"])
    for name, text in rendered.items():
        (unit_dir / name).write_text(text)
    edited = rendered["openloop@.timer"].replace("OnUnitInactiveSec=15min", "OnCalendar=hourly")
    (unit_dir / "openloop@.timer").write_text(edited)
    assert units.is_rendered_copy("openloop@.service", rendered["openloop@.service"])
    assert not units.is_rendered_copy("openloop@.timer", edited)
    report = service.install(env, reload=False)
    assert sorted(report.removed) == sorted(set(units.TEMPLATES) - {"openloop@.timer"})
    assert (unit_dir / "openloop@.timer").read_text() == edited
    sources = units.unit_sources(env)
    assert sources["openloop@.timer"] == unit_dir / "openloop@.timer"
    assert sources["openloop@.service"] == vendor / "openloop@.service"
    check = doctor.check_units(env)
    assert check.ok and check.warning
    assert "hide the packaged ones" in check.detail and str(unit_dir / "openloop@.timer") in (
        check.detail
    )


def test_uninstall_leaves_vendor_units_alone(ol, demo, env, vendor, monkeypatch):  # noqa: F811
    calls = []

    def systemctl(env, *args, **kw):
        calls.append(args)
        return subprocess.CompletedProcess(["systemctl", *args], 0, "", "")

    monkeypatch.setattr(manager, "systemctl", systemctl)
    service.install(env, reload=False)
    before = _snapshot(vendor)
    service.uninstall(env)
    assert _snapshot(vendor) == before
    unit_dir = units.user_unit_dir(env)
    assert not list(unit_dir.glob("openloop*")), list(unit_dir.iterdir())
    assert ("daemon-reload",) in calls


def test_doctor_says_which_units_are_in_use_and_from_where(ol, demo, env, vendor):  # noqa: F811
    assert doctor.check_units(env).fix == "openloop service install"
    service.install(env, reload=False)
    check = doctor.check_units(env)
    assert check.ok and not check.warning
    assert f"packaged units from {vendor}" in check.detail
    assert f"openloop@.service: {vendor / 'openloop@.service'}" in check.detail


def test_without_vendor_units_doctor_names_the_copies(ol, demo, env, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setitem(env.environ, units.VENDOR_DIR_VAR, str(tmp_path / "nothing-here"))
    assert units.packaged_units(env) is None
    service.install(env, reload=False)
    check = doctor.check_units(env)
    unit_dir = units.user_unit_dir(env)
    assert check.ok and f"copies in {unit_dir}" in check.detail
    assert f"openloop@.timer: {unit_dir / 'openloop@.timer'}" in check.detail


def test_doctor_points_at_a_pi_that_is_not_on_path(env, tmp_path, monkeypatch):
    home = tmp_path / "user"
    (home / ".local/bin").mkdir(parents=True)
    pi = home / ".local/bin/pi"
    pi.write_text("#!/bin/sh\necho 0.0\n")
    pi.chmod(0o755)
    monkeypatch.setitem(env.environ, "HOME", str(home))
    monkeypatch.setitem(env.environ, "PATH", "/nonexistent")
    monkeypatch.delitem(env.environ, "OPENLOOP_PI_BIN", raising=False)
    monkeypatch.setattr(units, "tool_path", lambda env: ["/nonexistent"])
    check = doctor.check_pi(env)
    assert not check.ok
    assert str(pi) in check.detail and f"OPENLOOP_PI_BIN={pi}" in check.fix
    pi.unlink()
    check = doctor.check_pi(env)
    assert "OPENLOOP_PI_BIN" in check.detail and "npm install -g" in check.fix


@pytest.fixture
def no_journal_reader(monkeypatch):
    monkeypatch.setattr(journal, "_sd", None)
    monkeypatch.setattr(journal_read.shutil, "which", lambda name, *a, **kw: None)


@pytest.mark.parametrize(
    "argv",
    [["logs"], ["logs", "-p", "demo"], ["logs", "--follow"], ["events"], ["events", "--json"]],
)
def test_journal_commands_say_what_is_missing(ol, demo, no_journal_reader, argv):  # noqa: F811
    result = ol(*argv)
    assert result.code != 0
    assert result.out == ""
    assert "needs systemd-python" in result.err and "journalctl" in result.err
    assert "openloop[journal]" in result.err


def test_doctor_reports_the_missing_journal_reader(ol, demo, no_journal_reader):  # noqa: F811
    checks = {c["name"]: c for c in json.loads(ol("doctor", "--json").out)}
    assert not checks["journal"]["ok"]
    assert "systemd-python" in checks["journal"]["detail"]
