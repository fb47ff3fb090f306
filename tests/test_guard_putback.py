"""What the guard puts back after an escape, and what it never touches while doing so (fast; the
real pi plays the same attacks in tests/e2e/test_containment_pi.py): git's settings files (a
broken or changed config, includes, config.worktree, hooks), OpenLoop's records replaced by a
folder, a link or another mode, and earlier runs' transcripts and logs."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from openloop.adapters import guard, runfolders, safefs
from openloop.loop.outcomes import Outcome
from tests.conftest import git
from tests.test_iteration import FakeAgent, add, demo, once, task_of, write  # noqa: F401


def _and_a_change(act):
    """The agent's action, plus a change of its own (so the run would otherwise complete)."""

    def action(cwd: Path) -> None:
        act(cwd)
        (cwd / "ok.py").write_text("ok = 1\n")

    return action


# --- 1. git's settings --------------------------------------------------------------------------


def test_a_broken_config_ends_the_run_escaped_and_is_put_back_before_the_refs(ol, demo, env):  # noqa: F811
    tid = add(ol, "Break config", "--risk", "low-risk")
    config = demo / ".git/config"
    before, main = config.read_bytes(), git(demo, "rev-parse", "main")

    def break_it(cwd: Path) -> None:
        git(demo, "commit", "--allow-empty", "-qm", "agent")  # moves the user's main
        config.write_text("[core\n\tbroken = \n")  # every git command fails from now on

    result = once(env, FakeAgent([_and_a_change(break_it)]))
    assert result.outcome == Outcome.ESCAPED, result.reason
    put_back = f"git setting {config} changed; OpenLoop put it back; what was there is now"
    assert put_back in result.reason
    assert "ref refs/heads/main" in result.reason and "put back" in result.reason
    assert config.read_bytes() == before
    assert git(demo, "rev-parse", "main") == main
    assert task_of(demo, tid).status == "blocked"
    # The next iteration works as if nothing had happened.
    other = add(ol, "Next", "--risk", "low-risk")
    assert once(env, FakeAgent([write("next.py", "n = 1\n")])).outcome == Outcome.COMPLETED
    assert task_of(demo, other).status == "promoted"


def test_a_valid_config_that_runs_a_program_is_put_back(ol, demo, env, tmp_path):  # noqa: F811
    add(ol, "Plant fsmonitor", "--risk", "low-risk")
    config = demo / ".git/config"
    before = config.read_bytes()
    mode = stat.S_IMODE(config.stat().st_mode)

    def plant(cwd: Path) -> None:
        git(demo, "config", "core.fsmonitor", str(tmp_path / "evil"))
        config.chmod(0o666)

    result = once(env, FakeAgent([_and_a_change(plant)]))
    assert result.outcome == Outcome.ESCAPED
    put_back = f"git setting {config} changed; OpenLoop put it back; what was there is now"
    assert put_back in result.reason
    assert config.read_bytes() == before
    assert stat.S_IMODE(config.stat().st_mode) == mode


def test_included_config_files_and_config_worktree_are_guarded_and_put_back(ol, demo, env):  # noqa: F811
    local = demo / ".git/local.cfg"  # an include of the user's that exists
    local.write_text("[user]\n\tname = Me\n")
    missing = demo.parent / "dotfiles.cfg"  # an include of the user's that does not (yet)
    git(demo, "config", "--add", "include.path", "local.cfg")
    git(demo, "config", "--add", "include.path", str(missing))
    conditional = demo.parent / "on-main.cfg"  # read while main is checked out
    git(demo, "config", "includeIf.onbranch:main.path", str(conditional))
    add(ol, "Plant in includes", "--risk", "low-risk")
    config, worktree = demo / ".git/config", demo / ".git/config.worktree"
    before = config.read_bytes()

    def plant(cwd: Path) -> None:
        local.write_text("[core\n")  # broken
        missing.write_text("[core]\n\tfsmonitor = /tmp/evil\n")
        conditional.write_text("[core]\n\tfsmonitor = /tmp/evil\n")
        worktree.write_text("[core]\n\thooksPath = /tmp/evil\n")
        with config.open("a") as fh:
            fh.write("[extensions]\n\tworktreeConfig = true\n")

    result = once(env, FakeAgent([_and_a_change(plant)]))
    assert result.outcome == Outcome.ESCAPED, result.reason
    put_back = f"git setting {local} changed; OpenLoop put it back; what was there is now"
    assert put_back in result.reason
    assert f"git setting {missing} created; OpenLoop took it away" in result.reason
    assert f"git setting {worktree} created; OpenLoop took it away" in result.reason
    assert local.read_text() == "[user]\n\tname = Me\n"
    assert f"git setting {conditional} created; OpenLoop took it away" in result.reason
    assert not missing.exists() and not worktree.exists() and not conditional.exists()
    assert config.read_bytes() == before


def test_a_hooks_folder_swapped_for_a_link_is_made_a_folder_again_nothing_written_there(
    ol,
    demo,  # noqa: F811
    env,
    tmp_path,
):
    hooks = demo / ".git/hooks"
    (hooks / "pre-commit").write_text("#!/bin/sh\nexit 0\n")  # the user's own hook
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "pre-commit").write_text("not a hook: a file of the user's\n")
    add(ol, "Swap hooks", "--risk", "low-risk")

    def swap(cwd: Path) -> None:
        for path in hooks.iterdir():
            path.unlink()
        hooks.rmdir()
        hooks.symlink_to(elsewhere)

    result = once(env, FakeAgent([_and_a_change(swap)]))
    assert result.outcome == Outcome.ESCAPED
    assert hooks.is_dir() and not hooks.is_symlink()
    assert (hooks / "pre-commit").read_text() == "#!/bin/sh\nexit 0\n"
    assert (elsewhere / "pre-commit").read_text() == "not a hook: a file of the user's\n"
    assert sorted(p.name for p in elsewhere.iterdir()) == ["pre-commit"]


def test_a_setting_changed_again_after_the_agent_is_never_overwritten(demo, monkeypatch):  # noqa: F811
    config = demo / ".git/config"
    before = guard.take(demo)
    config.write_text(config.read_text() + "[core]\n\tfsmonitor = /tmp/evil\n")
    theirs = config.read_text() + "[user]\n\tname = Someone else\n"
    put = safefs.put

    def a_writer_comes_first(root, name, *args, **kw):
        config.write_text(theirs)  # between OpenLoop's look and its swap
        return put(root, name, *args, **kw)

    monkeypatch.setattr(safefs, "put", a_writer_comes_first)
    found = "; ".join(guard.verify(demo, before))
    assert f"git setting {config} changed; OpenLoop could not put it back" in found
    assert config.read_text() == theirs


# --- 2. OpenLoop's records ----------------------------------------------------------------------


def _a_request(demo: Path) -> Path:  # noqa: F811
    path = demo / ".openloop/promotions/earlier.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"status": "pending"}\n')
    path.chmod(0o640)
    return path


@pytest.mark.parametrize("how", ["folder", "link", "mode", "link-to-folder"])
def test_a_record_replaced_or_chmodded_is_put_back_with_its_mode(ol, demo, env, tmp_path, how):  # noqa: F811
    request = _a_request(demo)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("the user's\n")
    add(ol, "Replace a record", "--risk", "low-risk")

    def replace(cwd: Path) -> None:
        if how == "mode":
            request.chmod(0o666)
            return
        request.unlink()
        if how == "folder":
            request.mkdir()
            (request / "inner.txt").write_text("planted\n")
        elif how == "link":
            request.symlink_to(outside / "keep.txt")
        else:
            request.symlink_to(outside)

    result = once(env, FakeAgent([_and_a_change(replace)]))
    assert result.outcome == Outcome.ESCAPED, result.reason
    assert "OpenLoop restored .openloop/promotions/earlier.json" in result.reason
    assert request.is_file() and not request.is_symlink()
    assert request.read_text() == '{"status": "pending"}\n'
    assert stat.S_IMODE(request.stat().st_mode) == 0o640
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"]
    assert (outside / "keep.txt").read_text() == "the user's\n"


@pytest.mark.parametrize("folder", ["promotions", "runs"])
def test_a_records_folder_swapped_for_a_link_is_rebuilt_never_written_through(
    ol,
    demo,  # noqa: F811
    env,
    tmp_path,
    folder,
):
    record = demo / ".openloop" / folder / "earlier.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text('{"status": "pending"}\n')
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "earlier.json").write_text("the user's own file\n")
    add(ol, "Swap records folder", "--risk", "low-risk")

    def swap(cwd: Path) -> None:
        os.rename(record.parent, tmp_path / "moved-away")
        record.parent.symlink_to(outside)

    result = once(env, FakeAgent([_and_a_change(swap)]))
    assert result.outcome == Outcome.ESCAPED, result.reason
    assert record.parent.is_dir() and not record.parent.is_symlink()
    assert record.read_text() == '{"status": "pending"}\n'
    assert (outside / "earlier.json").read_text() == "the user's own file\n"
    assert sorted(p.name for p in outside.iterdir()) == ["earlier.json"]


def test_a_folder_planted_among_the_records_is_removed(ol, demo, env):  # noqa: F811
    add(ol, "Plant a folder", "--risk", "low-risk")
    planted = demo / ".openloop/promotion-results/x.jsonl"

    def plant(cwd: Path) -> None:
        planted.mkdir(parents=True)

    result = once(env, FakeAgent([_and_a_change(plant)]))
    assert result.outcome == Outcome.ESCAPED, result.reason
    assert not planted.exists()


def test_putting_back_never_removes_or_writes_through_a_link(tmp_path):
    root, outside = tmp_path / "repo", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "x").write_text("keep\n")
    (root / "a").symlink_to(outside)
    with pytest.raises(OSError):
        safefs.remove(root, "a/x", lambda: True, folders=True)
    with pytest.raises(OSError):
        safefs.put(root, "a/x", b"overwritten", 0o644, lambda: True)
    with pytest.raises(ValueError):
        safefs.remove(root, "../outside/x", lambda: True)
    assert (outside / "x").read_text() == "keep\n"
    assert safefs.remove(root, "a", lambda: True, folders=True)  # the link itself, not its target
    assert not (root / "a").exists() and (outside / "x").exists()


# --- 3. earlier runs' transcripts and logs ------------------------------------------------------


def _earlier_run(demo: Path, run_id: str = "20250101T000000Z-old-abcd") -> Path:  # noqa: F811
    runs = demo / ".openloop/runs"
    folder = runs / run_id
    folder.mkdir(parents=True)
    (folder / "transcript.jsonl").write_text('{"said": "the truth"}\n')
    (runs / f"{run_id}.json").write_text(json.dumps({"runId": run_id, "outcome": "completed"}))
    return folder


@pytest.mark.parametrize("how", ["rewrite-same-size-same-mtime", "add", "delete", "new-run"])
def test_an_earlier_runs_transcript_forged_is_an_escape(ol, demo, env, how):  # noqa: F811
    folder = _earlier_run(demo)
    transcript = folder / "transcript.jsonl"
    add(ol, "Forge history", "--risk", "low-risk")

    def forge(cwd: Path) -> None:
        if how == "rewrite-same-size-same-mtime":
            times = transcript.stat()
            transcript.write_text('{"said": "all is fine"}\n'[: len('{"said": "the truth"}\n')])
            os.utime(transcript, ns=(times.st_atime_ns, times.st_mtime_ns))
        elif how == "add":
            (folder / "note.txt").write_text("forged\n")
        elif how == "delete":
            transcript.unlink()
        else:
            (folder.parent / "20250102T000000Z-old-beef").mkdir()

    result = once(env, FakeAgent([_and_a_change(forge)]))
    assert result.outcome == Outcome.ESCAPED, result.reason
    assert "earlier run's files .openloop/runs/2025010" in result.reason


def test_the_running_runs_folder_and_promotion_logs_are_not_compared(demo):  # noqa: F811
    _earlier_run(demo)
    running = _earlier_run(demo, "20250103T000000Z-now-abcd")
    (running.parent / f"{running.name}.json").write_text(
        json.dumps({"runId": running.name, "outcome": "running"})
    )
    before = guard.take(demo)
    (running / "transcript.jsonl").write_text("the agent talks\n")
    (running.parent / "apply-some-task").mkdir()  # a promotion's check logs, written meanwhile
    (running.parent / "apply-some-task" / "lint.log").write_text("ok\n")
    assert before.differences(guard.take(demo)) == []
    labels = runfolders.fingerprints(running.parent, "", {running.name})
    assert list(labels) == ["20250101T000000Z-old-abcd/"]
