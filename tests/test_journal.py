"""The journal adapter without journald: --since parsing, records and field names, redaction, the
native-protocol writer against a socket of our own, journalctl JSON, filters, formatting."""

from __future__ import annotations

import array
import fcntl
import io
import json
import os
import socket
import struct
import time
from datetime import UTC, datetime, timedelta

import pytest

from openloop.adapters import journal, journal_read
from openloop.errors import InputError, MissingFeatureError

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)  # 13:00 in Berlin


@pytest.fixture(autouse=True)
def _no_real_journal(monkeypatch, tmp_path):
    # A unit test never writes to the machine's journal, whatever is installed.
    monkeypatch.setattr(journal, "JOURNAL_SOCKET", str(tmp_path / "no-journal-here"))


@pytest.fixture
def berlin(monkeypatch):
    # Local time matters for dates; a zone with DST makes the offsets visible.
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def sink(monkeypatch, tmp_path):
    """A datagram socket standing in for journald; send() writes there, natively."""
    path = str(tmp_path / "journal.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    monkeypatch.setattr(journal, "JOURNAL_SOCKET", path)
    monkeypatch.setattr(journal, "_sd", None)
    yield sock
    sock.close()


def _fields(data: bytes) -> dict[str, str]:
    """Decodes the native protocol, both forms, the way journald does."""
    out, i = {}, 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            key, value = line.split(b"=", 1)
            i = nl + 1
        else:
            key, (size,) = line, struct.unpack("<Q", data[nl + 1 : nl + 9])
            value = data[nl + 9 : nl + 9 + size]
            assert data[nl + 9 + size : nl + 10 + size] == b"\n"
            i = nl + 10 + size
        out[key.decode()] = value.decode()
    return out


# ---------------------------------------------------------------------------------- since


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", NOW - timedelta(seconds=30)),
        ("15m", NOW - timedelta(minutes=15)),
        ("1h", NOW - timedelta(hours=1)),
        (" 2D ", NOW - timedelta(days=2)),
        ("1w", NOW - timedelta(weeks=1)),
        ("0m", NOW),
        ("today", datetime(2026, 11, 24, 23, 0, tzinfo=UTC)),
        ("Yesterday", datetime(2026, 11, 23, 23, 0, tzinfo=UTC)),
        ("2026-11-25", datetime(2026, 11, 24, 23, 0, tzinfo=UTC)),
        ("2026-11-25T10:00", datetime(2026, 11, 25, 9, 0, tzinfo=UTC)),
        ("2026-11-25 10:00:30", datetime(2026, 11, 25, 9, 0, 30, tzinfo=UTC)),
        ("2026-07-01T10:00", datetime(2026, 7, 1, 8, 0, tzinfo=UTC)),  # summer time: +02:00
        ("2026-11-25T10:00Z", datetime(2026, 11, 25, 10, 0, tzinfo=UTC)),
        ("2026-11-25T10:00+05:00", datetime(2026, 11, 25, 5, 0, tzinfo=UTC)),
    ],
)
def test_parse_since(berlin, text, expected):
    got = journal_read.parse_since(text, NOW)
    assert got == expected
    assert got.tzinfo is not None


@pytest.mark.parametrize(
    "text",
    ["", "1", "h", "1x", "1 hour", "1.5h", "soon", "tomorrow", "2026-13-01",
     "2026-11-32", "20261125", "2026-11-25T25:00", "99999999999d", "999999999w"],
)  # fmt: skip
def test_parse_since_rejects_anything_else(text):
    with pytest.raises(InputError, match=r"^--since: .* is not a duration"):
        journal_read.parse_since(text, NOW)


def test_parse_since_keeps_a_naive_now_naive(berlin):
    naive = datetime(2026, 11, 25, 13, 0)
    assert journal_read.parse_since("today", naive) == datetime(2026, 11, 25)
    assert journal_read.parse_since("2026-11-25T10:00", naive) == datetime(2026, 11, 25, 10, 0)
    assert journal_read.parse_since("2026-11-25T10:00Z", naive) == datetime(2026, 11, 25, 11, 0)
    assert journal_read.parse_since("1h", naive) == datetime(2026, 11, 25, 12, 0)


# ------------------------------------------------------------------------ records, redaction


def test_record_has_the_openloop_fields_and_upper_cased_extras():
    record = journal.make_record("started", priority=5, event="iteration-started", project="web",
                                 task="t-1", role="builder", run="r-1", attempt=2, cost_usd=0.5,
                                 skipped=None)  # fmt: skip
    assert record == {
        "MESSAGE": "started", "PRIORITY": "5", "SYSLOG_IDENTIFIER": "openloop",
        "OPENLOOP_EVENT": "iteration-started", "OPENLOOP_PROJECT": "web", "OPENLOOP_TASK": "t-1",
        "OPENLOOP_ROLE": "builder", "OPENLOOP_RUN": "r-1", "ATTEMPT": "2", "COST_USD": "0.5",
    }  # fmt: skip
    assert journal.make_record("x") == {"MESSAGE": "x", "PRIORITY": "6",
                                        "SYSLOG_IDENTIFIER": "openloop"}  # fmt: skip


@pytest.mark.parametrize("name", ["_hidden", "1abc", "a-b", "a.b", "é", "a b", "", "A" * 65])
def test_bad_field_names_are_refused(name):
    with pytest.raises(ValueError, match="not a journal field name"):
        journal.make_record("x", **{name: "v"})


def test_field_names_up_to_64_characters_and_with_digits_are_fine():
    record = journal.make_record("x", **{"a" * 64: "1", "exit_code_2": "0"})
    assert record["A" * 64] == "1" and record["EXIT_CODE_2"] == "0"


@pytest.mark.parametrize(
    "kwargs",
    [{"project": "a", "OPENLOOP_PROJECT": "b"}, {"MESSAGE": "again"}, {"Priority": "3"},
     {"priority": 8}, {"priority": -1}],
)  # fmt: skip
def test_duplicate_fields_and_bad_priorities_are_refused(kwargs):
    with pytest.raises(ValueError):
        journal.make_record("x", **kwargs)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("key sk-ant-api03-AbCdEf123456789xyz end", "key sk-*** end"),
        ("OPENAI sk-proj-1234567890abcdefghij", "OPENAI sk-***"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.abc", "Authorization: Bearer ***"),
        ("api_key=abc123secret&x=1", "api_key=***&x=1"),
        ('{"apiKey": "abc123secret", "n": 1}', '{"apiKey": "***", "n": 1}'),
        ("ANTHROPIC_API_KEY=sk-ant-xyz", "ANTHROPIC_API_KEY=***"),
        ("password: hunter22", "password: ***"),
        ("GITHUB_TOKEN=ghp_abcdefghijklmnop1234", "GITHUB_TOKEN=***"),
        ("pushed with ghp_abcdefghijklmnop1234", "pushed with gh***"),
        ("aws AKIAABCDEFGHIJKLMNOP", "aws AKIA***"),
        # What must stay as it is:
        ("task-1234567890abcdefghij done", "task-1234567890abcdefghij done"),
        ("sk-learn-compatibility-layer", "sk-learn-compatibility-layer"),
        ("used max_tokens=4096 and 812 input_tokens", "used max_tokens=4096 and 812 input_tokens"),
        ("the bearer of bad news", "the bearer of bad news"),
    ],
)
def test_redact(text, expected):
    assert journal.redact(text) == expected


def test_messages_and_values_are_redacted_in_records():
    record = journal.make_record("token=abc123", detail="Bearer abcdefghijk")
    assert (record["MESSAGE"], record["DETAIL"]) == ("token=***", "Bearer ***")


# ---------------------------------------------------------------------------------- writing


def test_native_encoding_uses_the_length_prefixed_form_for_newlines():
    data = journal.encode_native({"MESSAGE": "héllo", "DETAIL": "a\nb", "EMPTY": ""})
    assert data == b"MESSAGE=h\xc3\xa9llo\nDETAIL\n" + struct.pack("<Q", 3) + b"a\nb\nEMPTY=\n"


def test_send_writes_one_datagram_in_the_native_protocol(sink):
    assert journal.send("two\nlines", priority=4, project="web", task="t-1", detail="x=y")
    data = sink.recv(65536)
    assert data.startswith(b"MESSAGE\n" + struct.pack("<Q", 9) + b"two\nlines\nPRIORITY=4\n")
    assert _fields(data) == {
        "MESSAGE": "two\nlines", "PRIORITY": "4", "SYSLOG_IDENTIFIER": "openloop",
        "OPENLOOP_PROJECT": "web", "OPENLOOP_TASK": "t-1", "DETAIL": "x=y",
    }  # fmt: skip


def test_a_record_too_big_for_a_datagram_goes_as_a_sealed_memfd(sink):
    big = "y" * 400_000
    assert journal.send("big", blob=big)
    fds = array.array("i")
    msg, anc, _flags, _addr = sink.recvmsg(16, socket.CMSG_LEN(fds.itemsize))
    assert msg == b""
    (level, kind, payload), = anc  # fmt: skip
    assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
    fds.frombytes(payload)
    with os.fdopen(fds[0], "rb") as f:
        f.seek(0)  # shared with the sender, whose writes left the offset at the end
        assert _fields(f.read())["BLOB"] == big
        seals = fcntl.fcntl(f.fileno(), fcntl.F_GET_SEALS)
        assert seals & fcntl.F_SEAL_WRITE and seals & fcntl.F_SEAL_SEAL


def test_send_returns_false_without_a_journal(monkeypatch, tmp_path):
    assert journal.send("nobody listens") is False  # the path does not exist
    # A socket file that nobody serves any more.
    path = tmp_path / "dead.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(path))
    monkeypatch.setattr(journal, "JOURNAL_SOCKET", str(path))
    monkeypatch.setattr(journal, "_sd", None)
    assert journal.send("still nobody") is False


def test_running_under_systemd_needs_invocation_id_and_stderr_being_the_journal():
    r, w = os.pipe()
    try:
        st = os.fstat(w)
        stream = f"{st.st_dev}:{st.st_ino}"
        assert journal.running_under_systemd({"INVOCATION_ID": "x", "JOURNAL_STREAM": stream}, w)
        assert not journal.running_under_systemd({"JOURNAL_STREAM": stream}, w)
        # Inherited by a child whose stderr went elsewhere:
        other = f"{st.st_dev}:{st.st_ino + 1}"
        assert not journal.running_under_systemd({"INVOCATION_ID": "x", "JOURNAL_STREAM": other}, w)
        assert not journal.running_under_systemd({"INVOCATION_ID": "x", "JOURNAL_STREAM": "bad"}, w)
        assert not journal.running_under_systemd({"INVOCATION_ID": "x"}, w)
    finally:
        os.close(r)
        os.close(w)


def test_iteration_log_writes_stderr_lines_outside_systemd():
    out = io.StringIO()
    log = journal.IterationLog("web", run="r-1", task="t-1", role="builder", to_journal=False,
                               stream=out)  # fmt: skip
    log.info("starting")
    log.warning("slow, api_key=abc123")
    log.error("failed", exit_code=2)
    log.event("iteration-finished", "done")
    assert out.getvalue().splitlines() == [
        "openloop: [t-1] starting",
        "openloop: [t-1] warning: slow, api_key=***",
        "openloop: [t-1] error: failed",
        "openloop: [t-1] done",
    ]
    with pytest.raises(ValueError):
        log.info("bad field", **{"bad-name": "x"})


def test_iteration_log_sends_records_under_systemd(sink):
    out = io.StringIO()
    log = journal.IterationLog("web", run="r-1", task="t-1", role="builder", to_journal=True,
                               stream=out)  # fmt: skip
    log.event("iteration-started", "go", attempt=1)
    log.warning("careful")
    first, second = _fields(sink.recv(65536)), _fields(sink.recv(65536))
    assert first == {
        "MESSAGE": "go", "PRIORITY": "5", "SYSLOG_IDENTIFIER": "openloop",
        "OPENLOOP_EVENT": "iteration-started", "OPENLOOP_PROJECT": "web",
        "OPENLOOP_TASK": "t-1", "OPENLOOP_ROLE": "builder", "OPENLOOP_RUN": "r-1", "ATTEMPT": "1",
    }  # fmt: skip
    assert (second["MESSAGE"], second["PRIORITY"]) == ("careful", "4")
    assert out.getvalue() == ""


def test_iteration_log_falls_back_to_prefixed_stderr_when_the_journal_is_gone():
    out = io.StringIO()
    journal.IterationLog("web", task="t-1", to_journal=True, stream=out).error("boom")
    assert out.getvalue() == "<3>openloop: [t-1] error: boom\n"


# ---------------------------------------------------------------------------------- reading

T0 = 1_795_600_800_000_000  # 2026-11-25T10:00:00Z in µs


def _rec(n: int, message: str, **fields) -> str:
    base = {"__CURSOR": f"c{n}", "__REALTIME_TIMESTAMP": str(T0 + n * 1_000_000), "_UID": "1000",
            "MESSAGE": message}  # fmt: skip
    return json.dumps({**base, **fields})


JOURNALCTL_OUTPUT = "\n".join([
    _rec(1, "hello from the unit", _SYSTEMD_USER_UNIT="openloop@web.service", PRIORITY="6"),
    _rec(2, "started", _SYSTEMD_USER_UNIT="openloop@web.service", SYSLOG_IDENTIFIER="openloop",
         OPENLOOP_PROJECT="web", OPENLOOP_TASK="t-1", OPENLOOP_RUN="r-1",
         OPENLOOP_EVENT="iteration-started", PRIORITY="5"),
    _rec(3, "from the CLI", SYSLOG_IDENTIFIER="openloop", OPENLOOP_PROJECT="web",
         OPENLOOP_TASK="t-2", PRIORITY="4"),
    _rec(4, "Started openloop@web.service.", _SYSTEMD_USER_UNIT="init.scope",
         USER_UNIT="openloop@web.service", PRIORITY="6"),
    _rec(5, "other project", SYSLOG_IDENTIFIER="openloop", OPENLOOP_PROJECT="api"),
    _rec(6, "unrelated", _SYSTEMD_USER_UNIT="pipewire.service"),
    "-- No entries --",
    "{not json",
    json.dumps({"MESSAGE": "no timestamp"}),
])  # fmt: skip


def test_journalctl_json_lines_become_entries(berlin):
    entries = journal_read.parse_json_lines(JOURNALCTL_OUTPUT)
    assert [e.message for e in entries][:4] == [
        "hello from the unit",
        "started",
        "from the CLI",
        "Started openloop@web.service.",
    ]
    unit_line, started, cli, manager = entries[:4]
    assert (unit_line.unit, unit_line.project, unit_line.task) == ("openloop@web.service", "web",
                                                                   None)  # fmt: skip
    assert (started.project, started.task, started.run, started.event, started.priority) == (
        "web", "t-1", "r-1", "iteration-started", 5)  # fmt: skip
    assert (cli.unit, cli.project, cli.priority) == (None, "web", 4)
    assert (manager.unit, manager.project) == ("openloop@web.service", "web")
    assert started.time == datetime(2026, 11, 25, 10, 0, 2, tzinfo=UTC)
    assert started.time.utcoffset() == timedelta(hours=1)  # local time
    assert started.fields["__CURSOR"] == "c2"


def test_journalctl_binary_repeated_and_null_values():
    line = json.dumps({"__REALTIME_TIMESTAMP": str(T0), "MESSAGE": list(b"caf\xc3\xa9 \xff"),
                       "TAG": ["a", "b"], "GONE": None})  # fmt: skip
    (entry,) = journal_read.parse_json_lines(line)
    assert entry.message == "café \ufffd"
    assert entry.fields["TAG"] == "b"
    assert "GONE" not in entry.fields
    assert entry.priority == 6 and entry.unit is None and entry.project is None


@pytest.fixture
def fake_journalctl(monkeypatch):
    """read() through the journalctl reader, with journalctl's answers canned."""
    calls: list[list[str]] = []

    def run(argv: list[str]) -> str:
        calls.append(argv)
        field = next((a.split("=", 1)[1] for a in argv if a.startswith("--field=")), None)
        if field is not None:
            return {"_SYSTEMD_USER_UNIT": "openloop@web.service\ninit.scope\npipewire.service\n",
                    "USER_UNIT": "openloop@web.service\n",
                    "OPENLOOP_PROJECT": "web\napi\n"}.get(field, "")  # fmt: skip
        return JOURNALCTL_OUTPUT

    monkeypatch.setattr(journal, "_sd", None)
    monkeypatch.setattr(journal_read.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(journal_read, "_run", run)
    return calls


def _messages(entries):
    return [e.message for e in entries]


def test_read_a_project_matches_its_unit_or_its_field(fake_journalctl):
    entries = journal_read.read(project="web")
    assert _messages(entries) == ["hello from the unit", "started", "from the CLI",
                                  "Started openloop@web.service."]  # fmt: skip
    uid = f"_UID={os.getuid()}"
    assert fake_journalctl[-1] == [
        "/usr/bin/journalctl", "--user", "--no-pager", "--output=json", "--all",
        "_SYSTEMD_USER_UNIT=openloop@web.service", uid, "+",
        "USER_UNIT=openloop@web.service", uid, "+", "OPENLOOP_PROJECT=web", uid,
    ]  # fmt: skip


def test_read_filters_by_task_run_event_since_and_limit(fake_journalctl):
    assert _messages(journal_read.read(project="web", task="t-2")) == ["from the CLI"]
    assert fake_journalctl[-1][-3:] == ["OPENLOOP_PROJECT=web", f"_UID={os.getuid()}",
                                        "OPENLOOP_TASK=t-2"]  # fmt: skip
    assert _messages(journal_read.read(project="web", run="r-1")) == ["started"]
    assert _messages(journal_read.read(project="web", event_only=True)) == ["started"]
    assert _messages(journal_read.read(project="web", limit=2)) == [
        "from the CLI", "Started openloop@web.service."]  # fmt: skip
    assert journal_read.read(project="web", limit=0) == []
    since = datetime.fromtimestamp((T0 + 3_000_000) / 1e6, UTC)
    assert _messages(journal_read.read(project="web", since=since)) == [
        "from the CLI", "Started openloop@web.service."]  # fmt: skip
    assert f"--since=@{since.timestamp():.6f}" in fake_journalctl[-1]


def test_read_all_projects_lists_the_units_and_projects_the_journal_holds(fake_journalctl):
    entries = journal_read.read()
    assert _messages(entries) == ["hello from the unit", "started", "from the CLI",
                                  "Started openloop@web.service.", "other project"]  # fmt: skip
    query = fake_journalctl[-1]
    assert "_SYSTEMD_USER_UNIT=openloop@web.service" in query
    assert "OPENLOOP_PROJECT=api" in query and "SYSLOG_IDENTIFIER=openloop" in query
    assert not any("pipewire" in a or "init.scope" in a for a in query)
    assert _messages(journal_read.read(unit_prefix="nothing@")) == [
        "started", "from the CLI", "other project"]  # fmt: skip


def test_reading_without_systemd_python_or_journalctl_says_what_is_missing(monkeypatch):
    monkeypatch.setattr(journal, "_sd", None)
    monkeypatch.setattr(journal_read.shutil, "which", lambda name: None)
    with pytest.raises(MissingFeatureError, match="systemd-python .* or journalctl"):
        journal_read.read(project="web")


# ------------------------------------------------------------------------------- for humans


def _entry(when: datetime, **kw) -> journal_read.Entry:
    base = dict(
        time=when,
        message="hello",
        priority=6,
        unit=None,
        project="web",
        task="t-1",
        run=None,
        event=None,
        fields={"MESSAGE": "hello", "_PID": "1", "DETAIL": "d"},
    )
    return journal_read.Entry(**{**base, **kw})  # type: ignore[arg-type]


def test_format_entry(berlin):
    today = datetime(2026, 11, 25, 9, 5, 7, tzinfo=UTC)  # 10:05:07 in Berlin
    assert journal_read.format_entry(_entry(today), now=NOW) == "10:05:07 web [t-1] hello"
    bare = journal_read.format_entry(_entry(today), with_project=False, now=NOW)
    assert bare == "10:05:07 [t-1] hello"
    earlier = _entry(today - timedelta(days=1), task=None, message="line\n")
    assert journal_read.format_entry(earlier, now=NOW) == "2026-11-24 10:05:07 web line"
    assert journal_read.format_entry(_entry(today, project=None), now=NOW) == "10:05:07 [t-1] hello"


def test_entry_to_json_leaves_out_journald_fields():
    when = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    e = _entry(
        when,
        run="r-1",
        event="x",
        fields={
            "MESSAGE": "hello",
            "PRIORITY": "6",
            "_PID": "1",
            "__CURSOR": "c",
            "OPENLOOP_ROLE": "builder",
            "DETAIL": "d",
        },
    )
    assert journal_read.entry_to_json(e) == {
        "time": "2026-11-25T09:00:00+00:00", "priority": 6, "message": "hello", "unit": None,
        "project": "web", "task": "t-1", "role": "builder", "run": "r-1", "event": "x",
        "fields": {"OPENLOOP_ROLE": "builder", "DETAIL": "d"},
    }  # fmt: skip
    json.dumps(journal_read.entry_to_json(e))
