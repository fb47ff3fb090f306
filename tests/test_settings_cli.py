"""`config validate`, `config set -p` and durations typed with units."""

from __future__ import annotations

import json

import pytest

from openloop.errors import InputError
from openloop.text import parse_duration
from tests.conftest import git


@pytest.mark.parametrize(
    ("raw", "unit", "expected"),
    [
        ("90s", "seconds", 90),
        ("20m", "seconds", 1200),
        ("1h30m", "seconds", 5400),
        ("1h 30m", "seconds", 5400),
        ("300", "seconds", 300),
        ("20m", "minutes", 20),
        ("2h", "minutes", 120),
        ("15", "minutes", 15),
    ],
)
def test_durations(raw, unit, expected):
    assert parse_duration(raw, "--x", unit) == expected


@pytest.mark.parametrize("raw", ["", "abc", "1x", "-5", "1.5h", "m"])
def test_bad_durations_name_the_option(raw):
    with pytest.raises(InputError, match="--x: .* is not a duration"):
        parse_duration(raw, "--x")


def test_minutes_refuse_seconds_that_do_not_divide():
    with pytest.raises(InputError, match="not a whole number of minutes"):
        parse_duration("90s", "--x", "minutes")


def test_global_config_set_takes_durations(ol):
    assert ol("config", "set", "runtime.runTimeoutSeconds", "20m").code == 0
    assert ol("config", "show").json()["runtime"]["runTimeoutSeconds"] == 1200
    assert ol("config", "set", "runtime.intervalMinutes", "1h").code == 0
    assert ol("config", "show").json()["runtime"]["intervalMinutes"] == 60
    bad = ol("config", "set", "runtime.intervalMinutes", "soon")
    assert bad.code == 2 and "runtime.intervalMinutes" in bad.err


def test_project_set_is_validated_and_says_what_to_do_next(ol, project):
    pfile = project / ".openloop/project.json"
    done = ol("config", "set", "-p", "demo", "schedule.intervalMinutes", "1h")
    assert done.code == 0, done.err
    assert json.loads(pfile.read_text())["schedule"]["intervalMinutes"] == 60
    assert "null -> 60" in done.out and "service install" in done.err
    before = pfile.read_text()
    bad = ol("config", "set", "-p", "demo", "schedule.cpuWeight", "lots")
    assert bad.code == 2 and "schedule.cpuWeight" in bad.err
    assert pfile.read_text() == before  # nothing written
    unknown = ol("config", "set", "-p", "demo", "schedule.intervalMinute", "5")
    assert unknown.code == 2 and "not a project setting" in unknown.err
    # A command is text as typed ('true' is not JSON here) and needs approval.
    cmd = ol("config", "set", "-p", "demo", "validation.testCommand", "true")
    assert cmd.code == 0 and json.loads(pfile.read_text())["validation"]["testCommand"] == "true"
    assert "project trust demo" in cmd.err
    assert ol("project", "trust", "demo", "--check").code == 1
    trusted = ol("config", "set", "-p", "demo", "validation.testCommand", "make test", "--trust")
    assert trusted.code == 0 and "Approved the commands" in trusted.out
    assert ol("project", "trust", "demo", "--check").code == 0


def test_trust_and_apply_need_a_project(ol, project):
    assert ol("config", "set", "budgets.dailyCostUsd", "5", "--trust").code == 2


def test_validate_names_file_line_and_key_for_both_policies(ol, project):
    git(project, "add", ".openloop")
    git(project, "commit", "-qm", "openloop")
    ok = ol("config", "validate", "--json")
    assert ok.code == 0 and ok.json()["ok"] is True
    whats = [f["what"] for f in ok.json()["files"]]
    assert whats == [
        "global config",
        "demo: project.json",
        "demo: policy.yaml (working file)",
        "demo: policy.yaml (committed, governs the runs)",
    ]
    policy = project / ".openloop/policy.yaml"
    policy.write_text("version: 2\nscope:\n  denyGlob: []\n")
    bad = ol("config", "validate", "-p", "demo", "--json")
    assert bad.code == 2
    files = {f["what"]: f for f in bad.json()["files"]}
    working = files["demo: policy.yaml (working file)"]
    assert not working["ok"] and "line 3: scope.denyGlob" in working["problem"]
    assert "denyGlobs" in working["problem"]
    committed = files["demo: policy.yaml (committed, governs the runs)"]
    assert committed["ok"] and "working file differs" in committed["note"]
    # Committed and broken: the runs would skip; validate says so about the committed file.
    git(project, "add", ".openloop/policy.yaml")
    git(project, "commit", "-qm", "bad policy")
    files = {f["what"]: f for f in ol("config", "validate", "-p", "demo", "--json").json()["files"]}
    assert (
        "main:.openloop/policy.yaml: line 3"
        in files["demo: policy.yaml (committed, governs the runs)"]["problem"]
    )
    text = ol("config", "validate", "--format", "text")
    assert text.code == 2 and "FAIL demo: policy.yaml (working file)" in text.out


def test_validate_reports_a_broken_project_json_and_global_config(ol, project, env):
    (project / ".openloop/project.json").write_text('{"version": 2, "schedul": {}}')
    env.config_file.write_text('{"version": 2, "budgets": {"dailyCostUsd": "lots"}}')
    report = ol("config", "validate", "--json").json()
    problems = {f["what"]: f["problem"] for f in report["files"] if not f["ok"]}
    assert "schedul" in problems["demo: project.json"]
    assert "dailyCostUsd" in problems["global config"]
