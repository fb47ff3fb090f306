"""Every `show` prints a screen on a terminal and the same JSON as before when piped.

The terminal is a real pseudo-terminal (tests/support/tty.py); the piped side is the in-process
runner, whose stdout is not a terminal."""

from __future__ import annotations

import json
import os
import re

import pytest

from tests.conftest import git
from tests.support.tty import ROOT, run_tty
from tests.test_iteration import FakeAgent, add, once, set_project, write

ESC = "\x1b["


@pytest.fixture
def review(ol, project, env):
    """'demo' with one task waiting for review (src/r.py added) and one ready task."""
    set_project(project, validation={"lintCommand": "! grep -rq BROKEN --include=*.py ."})
    (project / "src").mkdir()
    (project / "src/app.py").write_text("x = 1\n")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "app")
    assert ol("project", "trust", "demo").code == 0
    tid = add(
        ol,
        "Reviewed thing",
        "--description",
        "First paragraph, long enough to be wrapped on a narrow terminal " * 3,
        "--accept",
        "it works",
        "--scope",
        "src/**",
    )
    once(env, FakeAgent([write("src/r.py", "r = 1\n")]))
    add(ol, "Next thing")
    return tid


def tty(env, *args, **kw):
    environ = {k: v for k, v in env.environ.items() if k != "NO_COLOR"}
    environ.update(kw.pop("extra", {}))
    return run_tty(list(args), environ, **kw)


def test_task_show_on_a_terminal_is_a_screen_with_sections_and_relative_times(env, review):
    result = tty(env, "task", "show", "-p", "demo", review, columns=60)
    assert result.code == 0, result.out
    out = result.out
    for section in ("Description", "Acceptance criteria", "Last run", "Promotion", "History"):
        assert section in out
    assert "(just now)" in out and not out.lstrip().startswith("{")
    assert ESC in out  # colour on a terminal
    assert all(len(_plain(line)) <= 60 for line in out.splitlines() if "wrapped" in line)
    assert f"openloop promotion show -p demo {review}" in _plain(out)


def test_promotion_show_on_a_terminal_has_reasons_checks_diffstat_and_next_steps(env, review):
    out = _plain(tty(env, "promotion", "show", "-p", "demo", review).out)
    assert "Why it needs a human" in out and "medium-risk is not auto-mergeable" in out
    assert "Checks" in out and "lint" in out
    assert "src/r.py | 1 +" in out and "Changes (1 file, 1 line)" in out
    assert f"openloop promotion apply -p demo {review}" in out
    assert f"openloop promotion diff -p demo {review}" in out


@pytest.mark.parametrize(
    "args",
    [
        ["config", "show"],
        ["config", "project-show", "demo"],
        ["project", "show", "demo"],
        ["run-once", "-p", "demo", "--dry-run"],
    ],
)
def test_other_shows_are_screens_on_a_terminal(env, review, args):
    result = tty(env, *args)
    assert result.code == 0, result.out
    assert not result.out.lstrip().startswith("{")
    first = _plain(result.out).splitlines()[0]
    assert first.split()[0] in {"Global", "Project", "demo", "Next"}


def test_no_color_and_color_never_turn_colour_off(env, review):
    assert ESC not in tty(env, "task", "show", "-p", "demo", review, extra={"NO_COLOR": "1"}).out
    assert ESC not in tty(env, "task", "show", "-p", "demo", review, "--color", "never").out
    assert ESC not in tty(env, "--color", "never", "promotion", "show", "-p", "demo", review).out
    assert ESC in tty(env, "config", "show", "--color", "always", extra={"NO_COLOR": "1"}).out


def test_json_on_a_terminal_with_json_flag(env, review):
    out = tty(env, "task", "show", "-p", "demo", review, "--json").out
    assert json.loads(out)["task"]["id"] == review


def test_piped_output_keeps_its_json_shape(ol, review):
    shown = ol("task", "show", "-p", "demo", "-t", review).json()
    assert set(shown) == {"project", "task", "promotion", "promotionHistory"}
    request = ol("promotion", "show", "-p", "demo", "--task", review).json()
    assert request["branchExists"] and "src/r.py" in request["diffstat"]
    assert request["history"][0]["kind"] == "decision"
    assert "_path" in ol("config", "show").json()
    assert ol("project", "show", "demo").json()["commandsTrusted"] is True
    assert set(ol("config", "project-show", "demo").json()) >= {"config", "detected"}
    assert ol("run-once", "-p", "demo", "--dry-run").json()["taskId"] == "next-thing"


def test_format_text_and_color_always_when_piped(ol, review):
    result = ol("promotion", "show", "-p", "demo", review, "--format", "text", "--color", "always")
    assert result.code == 0 and ESC in result.out and "Why it needs a human" in result.out
    plain = ol("promotion", "show", "-p", "demo", review, "--format", "text")
    assert ESC not in plain.out  # auto: not a terminal


def test_task_id_is_positional_or_an_option(ol, review):
    assert ol("task", "show", "-p", "demo", review).json()["task"]["id"] == review
    assert ol("task", "show", "-p", "demo", "--task", review).json()["task"]["id"] == review
    both = ol("task", "show", "-p", "demo", "next-thing", "--task", review)
    assert both.code == 2 and "two tasks" in both.err
    missing = ol("task", "show", "-p", "demo")
    assert missing.code == 2 and "Missing task" in missing.err


def test_control_characters_in_a_file_are_escaped_on_the_screen(env, review, project):
    ledger = project / ".openloop/tasks.json"
    data = json.loads(ledger.read_text())
    for task in data["tasks"]:
        if task["id"] == review:
            task["title"] = "evil\x1b]0;pwned\x07title"
            task["description"] = "line\x1b[2Jcleared"
    ledger.write_text(json.dumps(data))
    out = tty(env, "task", "show", "-p", "demo", review, "--color", "never").out
    assert "\x1b" not in out and "\\x1b]0;pwned" in out and "\\x1b[2Jcleared" in out


def test_promotion_diff_uses_gits_pager_and_colours_and_runs_no_planted_program(
    env, review, project, tmp_path
):
    marker = tmp_path / "ran"
    tool = tmp_path / "extdiff.sh"
    tool.write_text(f"#!/bin/sh\ntouch {marker}\n")
    tool.chmod(0o755)
    git(project, "config", "diff.external", str(tool))
    git(project, "config", "core.hooksPath", str(tmp_path))
    extra = {"GIT_PAGER": "cat"}
    out = tty(env, "promotion", "diff", "-p", "demo", review, extra=extra).out
    assert "+r = 1" in _plain(out) and ESC in out
    assert not marker.exists()
    shown = tty(env, "promotion", "show", "-p", "demo", review, "--diff", extra=extra).out
    assert "Why it needs a human" in _plain(shown) and "+r = 1" in _plain(shown)
    nocolor = tty(env, "promotion", "diff", "-p", "demo", review, extra={**extra, "NO_COLOR": "1"})
    assert "\x1b[3" not in nocolor.out  # no colour codes (git may still reset attributes)
    assert not marker.exists()


def test_promotion_diff_when_piped_is_a_plain_diff(ol, review, capfd):
    # In-process, git inherits the real file descriptor 1 (not the redirected sys.stdout).
    result = ol("promotion", "diff", "-p", "demo", review, "--stat")
    assert result.code == 0
    assert "src/r.py" in capfd.readouterr().out


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z=>]|\x1b[=>]", "", text)


def test_tty_helper_sees_a_terminal(env, review):
    out = tty(env, "project", "list").out
    assert "ALIAS" in out  # a table, not JSON: the helper really is a terminal


def test_relative_times():
    from datetime import UTC, datetime, timedelta

    from openloop.cli.render import relative

    now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    assert relative(now - timedelta(seconds=10), now) == "just now"
    assert relative(now - timedelta(minutes=4), now) == "4 min ago"
    assert relative(now - timedelta(hours=3), now) == "3 h ago"
    assert relative(now - timedelta(days=3), now) == "3 days ago"
    assert relative(now + timedelta(minutes=5), now) == "in 5 min"


# --- item 2: positional ids, unfetchable refs, purge, doctor ---------------------------------


def test_from_ref_without_gh_says_so_and_adds_a_proposed_task(ol, project, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no gh, no glab
    added = ol("task", "add", "--from-ref", "https://github.com/acme/web/issues/42", "--json")
    assert added.code == 0, added.err
    assert added.json()["status"] == "proposed"
    assert "could not fetch acme/web#42 (gh is not installed)" in added.err
    titled = ol("task", "add", "--from-ref", "acme/web#43", "--title", "Mine", "--json")
    assert titled.json()["status"] == "ready" and "keeps your title" in titled.err
    strict = ol("enqueue", "--ref", "acme/web#44", "--strict")
    assert strict.code == 1 and "could not fetch acme/web#44" in strict.err
    assert "acme-web-44" not in ol("task", "list", "--json").out


def test_purge_asks_first_and_removes_only_openloops_branches(ol, env, review, project):
    git(project, "branch", "openloop/not-ours")
    refused = ol("project", "remove", "demo", "--purge")  # no terminal to ask on
    assert refused.code == 2 and "--yes" in refused.err
    assert (project / ".openloop").is_dir()
    environ = dict(env.environ)
    answered_no = _tty_with_input(
        ["project", "remove", "demo", "--purge", "--branches"], environ, b"n\n"
    )
    assert "1 pending review(s)" in answered_no and "openloop/reviewed-thing" in answered_no
    assert (project / ".openloop").is_dir()
    done = ol("project", "remove", "demo", "--purge", "--branches", "--yes")
    assert done.code == 0, done.err
    assert not (project / ".openloop").exists()
    branches = git(project, "branch", "--format=%(refname:short)").split()
    assert "openloop/reviewed-thing" not in branches and "openloop/not-ours" in branches


def _tty_with_input(args, environ, data: bytes) -> str:
    import pty
    import sys
    import time

    pid, fd = pty.fork()
    if pid == 0:
        env = {**environ, "PYTHONPATH": str(ROOT)}
        os.execve(sys.executable, [sys.executable, "-m", "openloop", *args], env)
    out = b""
    deadline = time.monotonic() + 30
    sent = False
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
        if not sent and b"Delete?" in out:
            os.write(fd, data)
            sent = True
    os.close(fd)
    os.waitpid(pid, 0)
    return out.decode("utf-8", "replace")


def test_doctor_reads_pis_version_from_stderr_too():
    from openloop.actions.doctor import version_line

    assert version_line("", "0.73.1\n") == "0.73.1"
    assert version_line("pi 1.2.3\n", "warning\n") == "pi 1.2.3"
    assert version_line("", "") == "version unknown"


# --- item 4: progress a person can trust ----------------------------------------------------


def test_live_progress_clock_ticks_while_the_agent_is_silent_and_shows_the_tool():
    import io
    import time

    from openloop.progress import LiveReporter

    stream = io.StringIO()
    live = LiveReporter(stream, tick=0.05)
    live.phase("agent", task="t", role="implementer", attempt=1)
    live.agent_event(3, 0.25, "bash\x1b[31m")
    before = stream.getvalue().count("\r")
    time.sleep(0.3)  # no event at all: the clock still redraws
    assert stream.getvalue().count("\r") >= before + 3
    line = live.line()
    assert "agent task=t" in line and "tool bash\\x1b[31m" in line
    assert "tools 3" in line and "$0.2500" in line and "(phase 0:00)" in line
    live.finished("completed", "ok")
    after = stream.getvalue()
    time.sleep(0.15)
    assert stream.getvalue() == after  # the clock stops with the run
    assert after.rstrip().endswith("completed after 0:00: ok")


def test_a_failed_check_prints_its_last_lines_and_log_path(ol, project, env):
    from tests.test_iteration import once as run_once

    set_project(project, validation={"lintCommand": "echo first; echo 'E501 too long'; exit 1"})
    assert ol("project", "trust", "demo").code == 0
    add(ol, "Break it")
    from openloop.cli.run_cmds import _failed_checks

    result = run_once(env, FakeAgent([write("x.py", "x = 1\n")]))
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        _failed_checks(result.record)
    text = err.getvalue()
    assert "check lint failed" in text and "| E501 too long" in text
    assert "full log: " in text and "lint.log" in text


def test_readme_review_walkthrough_from_list_to_apply_on_a_terminal(env, review, project):
    """The README's review, as typed: every step is a screen, none is JSON."""
    extra = {"GIT_PAGER": "cat"}
    steps = [
        (["promotion", "list", "-p", "demo"], "TASK"),
        (["promotion", "show", "-p", "demo", review], "Why it needs a human"),
        (["promotion", "diff", "-p", "demo", review], "+r = 1"),
        (["task", "show", "-p", "demo", review], "History"),
        (["promotion", "apply", "-p", "demo", review], f"Applied {review}"),
        (["task", "show", "-p", "demo", review], "promoted"),
    ]
    for args, expected in steps:
        result = tty(env, *args, extra=extra)
        assert result.code == 0, (args, result.out)
        assert expected in _plain(result.out), (args, result.out)
        assert not result.out.lstrip().startswith(("{", "["))
    assert (project / "src/r.py").read_text() == "r = 1\n"
