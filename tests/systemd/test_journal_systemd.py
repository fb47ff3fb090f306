"""The journal adapter against a real journald: records written as the test user (systemd-python
and the native-protocol fallback) are read back by that user with both readers, a unit's stdout
and its structured records both count as the project's, and follow() sees new records."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest

from tests.systemd.manager import UserManager, systemd_unavailable

REPO = Path(__file__).resolve().parents[2]
PYTHON = Path(sys.executable)

# Runs as the test user. argv[1]: JSON {"no_sd": bool, "sends": [[message, {kwargs}], ...]};
# a value "<BIG>" stands for BIG_LEN x's (too long for one argument).
BIG_LEN = 300_000
SEND = f"""
import json, sys
from openloop.adapters import journal, journal_read
opts = json.loads(sys.argv[1])
if opts["no_sd"]:
    journal._sd = None  # the native-protocol writer
big = lambda kw: {{k: "x" * {BIG_LEN} if v == "<BIG>" else v for k, v in kw.items()}}
print(json.dumps([journal.send(m, **big(kw)) for m, kw in opts["sends"]]))
"""

# argv[1]: JSON {"no_sd": bool, ...read() keyword arguments, since as ISO text}.
READ = """
import json, sys
from datetime import datetime
from openloop.adapters import journal, journal_read
opts = json.loads(sys.argv[1])
if opts.pop("no_sd"):
    journal._sd = None  # the journalctl reader
if opts.get("since"):
    opts["since"] = datetime.fromisoformat(opts["since"])
print(json.dumps([journal_read.entry_to_json(e) for e in journal_read.read(**opts)]))
"""

# argv[1]: JSON {"no_sd": bool, "project": p, "limit": n}. Follows in a thread, then sends two
# records; prints the messages seen and how long each took to arrive.
FOLLOW = """
import json, sys, threading, time
from openloop.adapters import journal, journal_read
opts = json.loads(sys.argv[1])
if opts["no_sd"]:
    journal._sd = None
p = opts["project"]
stop, ready, got = threading.Event(), threading.Event(), []
def consume():
    ready.set()
    for e in journal_read.follow(project=p, limit=opts["limit"], stop=stop, poll=0.2):
        got.append((e.message, time.monotonic()))
        if len(got) == opts["limit"] + 2:
            stop.set()
t = threading.Thread(target=consume, daemon=True)
t.start()
ready.wait()
time.sleep(1.0)  # let follow() reach the tail before the new records are written
sent = time.monotonic()
journal.send("follow-1", project=p)
journal.send("follow-2", project=p, task="other")
journal.send("not ours", project=p + "-x")
t.join(15)
stop.set()
print(json.dumps({"messages": [m for m, _ in got], "latency": [round(w - sent, 3) for _, w in got],
                  "stopped": not t.is_alive()}))
"""

# ExecStart of openloop@jtest.service: a structured record, an IterationLog line, plain stdout.
UNIT_SCRIPT = """
import sys, time
from openloop.adapters import journal, journal_read
tok = sys.argv[1]
journal.send("structured " + tok, event="unit-test", project="jtest", run="run-" + tok)
log = journal.IterationLog(project="jtest", run="run-" + tok, task="t-9")
log.warning("iteration log " + tok, attempt=2)
print("plain stdout " + tok + " under_systemd=" + str(journal.running_under_systemd()), flush=True)
time.sleep(1)  # journald attributes a line to its unit by the sender's cgroup: stay alive
"""


@pytest.fixture(scope="module")
def python(user_manager: UserManager) -> str:
    problem = user_manager.check_can_execute(
        PYTHON, readable=[REPO / "openloop" / "adapters" / "journal.py"]
    )
    if problem:
        systemd_unavailable(problem)
    return str(PYTHON)


def _py(um: UserManager, python: str, script: str, opts: dict, timeout: float = 30):
    cp = um.run([python, "-c", script, json.dumps(opts)], env={"PYTHONPATH": str(REPO)},
                cwd=REPO, timeout=timeout)  # fmt: skip
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout.splitlines()[-1])


def _read(um: UserManager, python: str, *, no_sd: bool = False, **kw) -> list[dict]:
    return _py(um, python, READ, {"no_sd": no_sd, **kw})


def _token() -> str:
    return uuid.uuid4().hex[:10]


@pytest.mark.parametrize("writer", ["systemd-python", "native"])
def test_records_sent_as_the_user_are_read_back_by_project_task_run_and_event(
    user_manager, python, writer
):
    um, tok = user_manager, _token()
    project = f"jt-{tok}"
    sends = [
        ["first api_key=hunter22", {"project": project, "task": "t-1", "run": "r-1",
                                    "event": "started", "role": "builder", "attempt": "2"}],
        ["second", {"project": project, "task": "t-2", "run": "r-2", "priority": 4,
                    "detail": "line one\nline two"}],
        ["big", {"project": project, "task": "t-2", "blob": "<BIG>"}],  # memfd: > a datagram
        ["elsewhere", {"project": f"{project}-other", "task": "t-1"}],
    ]  # fmt: skip
    t0 = time.monotonic()
    assert _py(um, python, SEND, {"no_sd": writer == "native", "sends": sends}) == [True] * 4

    for no_sd in (False, True):  # systemd.journal.Reader, then journalctl --user -o json
        every = um.wait_for(
            lambda no_sd=no_sd: (r := _read(um, python, no_sd=no_sd, project=project))
            and len(r) >= 3 and r,
            timeout=10, what=f"3 records of {project} (no_sd={no_sd})",
        )  # fmt: skip
        readable_after = time.monotonic() - t0
        assert [e["message"] for e in every] == ["first api_key=***", "second", "big"]
        first, second, third = every
        assert (first["project"], first["task"], first["run"], first["event"], first["role"]) == (
            project, "t-1", "r-1", "started", "builder")  # fmt: skip
        assert first["fields"]["ATTEMPT"] == "2"
        assert first["fields"]["SYSLOG_IDENTIFIER"] == "openloop"
        assert (first["priority"], second["priority"]) == (6, 4)
        assert second["fields"]["DETAIL"] == "line one\nline two"
        assert third["fields"]["BLOB"] == "x" * BIG_LEN
        assert first["unit"] is None  # sent from outside any unit
        assert datetime.fromisoformat(first["time"]).tzinfo is not None

        by_task = _read(um, python, no_sd=no_sd, project=project, task="t-2")
        assert [e["message"] for e in by_task] == ["second", "big"]
        by_run = _read(um, python, no_sd=no_sd, project=project, run="r-1")
        assert [e["message"] for e in by_run] == ["first api_key=***"]
        events = _read(um, python, no_sd=no_sd, project=project, event_only=True)
        assert [e["message"] for e in events] == ["first api_key=***"]
        last = _read(um, python, no_sd=no_sd, project=project, limit=2)
        assert [e["message"] for e in last] == ["second", "big"]
        later = _read(um, python, no_sd=no_sd, project=project,
                      since=datetime.fromisoformat(third["time"]).isoformat())  # fmt: skip
        assert [e["message"] for e in later] == ["big"]
        # project=None: every OpenLoop record, other projects included.
        everything = _read(um, python, no_sd=no_sd, since=first["time"])
        assert {"first api_key=***", "elsewhere"} <= {e["message"] for e in everything}
        print(f"{writer} no_sd={no_sd}: all records readable after {readable_after:.2f}s")


UNIT = """\
[Unit]
Description=OpenLoop journal test %i

[Service]
Type=exec
Environment=PYTHONPATH={repo}
WorkingDirectory={repo}
ExecStart={python} {script} {token}
"""


def test_unit_output_and_structured_records_are_the_projects(user_manager, python, user_tmp_path):
    um, tok = user_manager, _token()
    since = datetime.now().astimezone()
    script = user_tmp_path / "unit_script.py"
    script.write_text(UNIT_SCRIPT)
    script.chmod(0o644)
    um.write_unit("openloop@jtest.service",
                  UNIT.format(repo=REPO, python=python, script=script, token=tok))  # fmt: skip
    um.daemon_reload()
    started = um.systemctl("start", "openloop@jtest.service")
    assert started.returncode == 0, started.stderr

    def found(no_sd: bool) -> list[dict]:
        entries = _read(um, python, no_sd=no_sd, project="jtest", since=since.isoformat())
        return [e for e in entries if tok in e["message"]]

    for no_sd in (False, True):
        entries = um.wait_for(lambda no_sd=no_sd: len(r := found(no_sd)) >= 3 and r,
                              timeout=15, what=f"the unit's 3 lines (no_sd={no_sd})")  # fmt: skip
        by_message = {e["message"].split(" " + tok)[0]: e for e in entries}
        assert set(by_message) == {"structured", "iteration log", "plain stdout"}, entries
        # All three are attributed to the unit (the script outlives its lines; see UNIT_SCRIPT).
        assert {e["unit"] for e in entries} == {"openloop@jtest.service"}, entries
        plain = by_message["plain stdout"]
        assert plain["project"] == "jtest"  # from the unit name: stdout lines carry no fields
        assert plain["message"].endswith("under_systemd=True")
        assert plain["fields"]["SYSLOG_IDENTIFIER"] == "python"
        assert by_message["structured"]["event"] == "unit-test"
        assert by_message["structured"]["run"] == f"run-{tok}"
        # IterationLog sent a record (not a "<4>openloop: ..." stderr line).
        logged = by_message["iteration log"]
        assert (
            logged["priority"],
            logged["task"],
            logged["run"],
            logged["fields"]["ATTEMPT"],
            logged["fields"]["SYSLOG_IDENTIFIER"],
        ) == (4, "t-9", f"run-{tok}", "2", "openloop")
        # And a task filter keeps only the records that carry the task.
        by_task = _read(um, python, no_sd=no_sd, project="jtest", task="t-9",
                        since=since.isoformat())  # fmt: skip
        assert [e["message"] for e in by_task] == [f"iteration log {tok}"]


@pytest.mark.parametrize("reader", ["systemd-python", "journalctl"])
def test_follow_yields_the_backlog_then_new_records_and_stops(user_manager, python, reader):
    um, tok = user_manager, _token()
    project = f"jf-{tok}"
    assert _py(um, python, SEND, {"no_sd": False, "sends": [["backlog", {"project": project}]]})
    um.wait_for(lambda: _read(um, python, project=project), timeout=10, what="the backlog record")
    out = _py(um, python, FOLLOW, {"no_sd": reader == "journalctl", "project": project,
                                   "limit": 1})  # fmt: skip
    assert out["messages"] == ["backlog", "follow-1", "follow-2"]
    assert out["stopped"]
    print(f"follow ({reader}) latency after send: {out['latency'][1:]}")


# argv[1]: JSON {"no_sd": bool}. Follows until Ctrl-C, as `openloop logs -f` does.
INTERRUPTED = """
import json, sys
from openloop.adapters import journal, journal_read
if json.loads(sys.argv[1])["no_sd"]:
    journal._sd = None
print("following", flush=True)
try:
    for e in journal_read.follow(project="nobody-writes-here"):
        pass
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


@pytest.mark.parametrize("reader", ["systemd-python", "journalctl"])
def test_follow_stops_promptly_on_ctrl_c(user_manager, python, reader):
    argv = user_manager.command([python, "-c", INTERRUPTED,
                                 json.dumps({"no_sd": reader == "journalctl"})],
                                env={"PYTHONPATH": str(REPO)})  # fmt: skip
    # setpriv and env exec, so the pid is the Python process's: SIGINT reaches it alone.
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        assert proc.stdout.readline() == "following\n"
        time.sleep(1.0)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (proc.returncode, out) == (0, "interrupted\n"), err
    assert took < 3, took
    print(f"follow ({reader}) stopped {took:.2f}s after SIGINT")
