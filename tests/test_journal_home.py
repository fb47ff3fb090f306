"""`logs` and `events` show this OpenLoop home's records only: every record OpenLoop writes is
tagged with the home's id (OPENLOOP_HOME_ID); untagged ones (the units' output, an older
OpenLoop) only for a project linked here, with a note once; --since takes relative and
absolute times."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from openloop import env as envmod
from openloop.adapters import journal, journal_read
from tests.test_journal import NOW, _no_real_journal, _rec, berlin, sink  # noqa: F401


def test_records_carry_the_home_id_the_cli_serves(ol, env, monkeypatch):
    assert "OPENLOOP_HOME_ID" not in journal.make_record("before any command")
    assert ol("task", "list", "--json").code in (0, 2)  # any command: the CLI serves the home
    assert journal.make_record("x")["OPENLOOP_HOME_ID"] == env.home_id
    assert len(env.home_id) == 12
    # The id is of the resolved config directory: the same home through a symlink is the same.
    link = env.config_dir.parent / "home-link"
    env.config_dir.mkdir(parents=True, exist_ok=True)
    link.symlink_to(env.config_dir)
    assert envmod.home_id(link) == env.home_id
    assert envmod.home_id(env.config_dir.parent / "other") != env.home_id


def test_a_record_sent_by_a_command_is_tagged(ol, env, sink):  # noqa: F811
    from tests.test_journal import _fields

    assert ol("pause").code == 0
    record = _fields(sink.recv(65536))
    assert record["OPENLOOP_HOME_ID"] == env.home_id and record["OPENLOOP_EVENT"] == "paused"


MINE, OTHER = "aaaaaaaaaaaa", "bbbbbbbbbbbb"
OUTPUT = "\n".join([
    _rec(1, "mine, tagged", SYSLOG_IDENTIFIER="openloop", OPENLOOP_PROJECT="web",
         OPENLOOP_HOME_ID=MINE, OPENLOOP_EVENT="paused"),
    _rec(2, "other home, same alias", SYSLOG_IDENTIFIER="openloop", OPENLOOP_PROJECT="web",
         OPENLOOP_HOME_ID=OTHER, OPENLOOP_EVENT="paused"),
    _rec(3, "old version, linked alias", SYSLOG_IDENTIFIER="openloop", OPENLOOP_PROJECT="web",
         OPENLOOP_EVENT="skipped"),
    _rec(4, "old version, alias not linked here", SYSLOG_IDENTIFIER="openloop",
         OPENLOOP_PROJECT="api", OPENLOOP_EVENT="skipped"),
    _rec(5, "unit output", _SYSTEMD_USER_UNIT="openloop@web.service"),
    _rec(6, "global pause, tagged", SYSLOG_IDENTIFIER="openloop", OPENLOOP_HOME_ID=MINE,
         OPENLOOP_EVENT="paused"),
])  # fmt: skip


@pytest.fixture
def canned(monkeypatch):
    def run(argv):
        field = next((a.split("=", 1)[1] for a in argv if a.startswith("--field=")), None)
        if field is not None:
            return {"_SYSTEMD_USER_UNIT": "openloop@web.service\n",
                    "OPENLOOP_PROJECT": "web\napi\n"}.get(field, "")  # fmt: skip
        return OUTPUT

    monkeypatch.setattr(journal, "_sd", None)
    monkeypatch.setattr(journal_read.shutil, "which", lambda name, *a, **k: f"/usr/bin/{name}")
    monkeypatch.setattr(journal_read, "_run", run)


def test_reading_keeps_this_homes_records_only(canned):
    got = [e.message for e in journal_read.read(home=MINE, aliases=["web"])]
    assert got == ["mine, tagged", "old version, linked alias", "unit output",
                   "global pause, tagged"]  # fmt: skip
    got = [e.message for e in journal_read.read(project="web", home=MINE, aliases=["web"])]
    assert got == ["mine, tagged", "old version, linked alias", "unit output"]
    # Without a home (library callers): everything, as before.
    assert len(journal_read.read()) == 6


def test_the_cli_filters_on_its_home_and_notes_untagged_records_once(ol, env, canned, monkeypatch):
    repo = env.config_dir.parent / "web"
    from tests.conftest import make_repo

    make_repo(repo)
    assert ol("project", "add", "web", str(repo), "--init").code == 0
    monkeypatch.setattr(type(env), "home_id", property(lambda self: MINE))
    result = ol("logs")
    assert result.code == 0, result.err
    assert "other home" not in result.out and "not linked here" not in result.out
    assert "mine, tagged" in result.out and "old version, linked alias" in result.out
    assert result.err.count("older OpenLoop") == 1
    events = ol("events", "--since", "2026-01-01", "--json")
    assert events.code == 0 and "older OpenLoop" in events.err
    assert [e["message"] for e in json.loads(events.out)] == [
        "mine, tagged", "old version, linked alias", "global pause, tagged"]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("-1h", NOW - timedelta(hours=1)),
        ("1h", NOW - timedelta(hours=1)),
        ("90m", NOW - timedelta(minutes=90)),
        ("1h30m", NOW - timedelta(minutes=90)),
        ("2h ago", NOW - timedelta(hours=2)),
        ("-15m", NOW - timedelta(minutes=15)),
        ("2026-11-30 10:00", datetime(2026, 11, 30, 9, 0, tzinfo=UTC)),
        ("2026-11-30T10:00:00Z", datetime(2026, 11, 30, 10, 0, tzinfo=UTC)),
        ("2026-11-30T10:00:00+01:00", datetime(2026, 11, 30, 9, 0, tzinfo=UTC)),
    ],
)
def test_since_relative_and_absolute(berlin, text, expected):  # noqa: F811
    assert journal_read.parse_since(text, NOW) == expected


@pytest.mark.parametrize("text", ["-1h ago", "--1h", "1 hour", "h30m", "-", "ago"])
def test_since_still_refuses_what_it_cannot_read(text):
    with pytest.raises(Exception, match="is not a duration"):
        journal_read.parse_since(text, NOW)
