"""What stood in a git setting's place is renamed beside it under a name the agent cannot
predict, and taken away even when that fails; a file of that kind of name planted by the agent
is guarded like any other; and a lock is only held on the file that is at the lock's path."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from openloop.adapters import gitsettings
from openloop.loop.outcomes import Outcome
from openloop.state import storage
from tests.test_iteration import FakeAgent, add, demo, once, task_of  # noqa: F401


def _hook(cwd: Path, hook: Path) -> None:
    hook.write_text("#!/bin/sh\necho planted\n")
    hook.chmod(0o755)
    (cwd / "ok.py").write_text("ok = 1\n")


def test_a_planted_hook_is_taken_away_even_when_it_cannot_be_set_aside(
    ol,
    demo,  # noqa: F811
    env,
    monkeypatch,
):
    import time

    add(ol, "Plant a hook")
    hook = demo / ".git/hooks/pre-commit"
    # The name made predictable for the test; a folder planted at it makes the rename fail.
    monkeypatch.setattr(gitsettings.secrets, "token_hex", lambda n: "fixed")

    def plant_with_blocking_folders(cwd: Path) -> None:
        _hook(cwd, hook)
        now = time.time()
        for s in range(-2, 30):
            stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(now + s))
            (hook.parent / f"pre-commit.openloop-escaped-{stamp}-fixed").mkdir()

    result = once(env, FakeAgent([plant_with_blocking_folders]))
    assert result.outcome == Outcome.ESCAPED, result.reason
    assert not hook.exists()  # taken away all the same: that matters more than keeping it
    assert "took it away" in result.reason


def test_a_hook_set_aside_keeps_its_content_beside_it(ol, demo, env):  # noqa: F811
    add(ol, "Plant a hook")
    hook = demo / ".git/hooks/pre-commit"
    result = once(env, FakeAgent([lambda cwd: _hook(cwd, hook)]))
    assert result.outcome == Outcome.ESCAPED
    kept = list(hook.parent.glob("pre-commit.openloop-escaped-*"))
    assert not hook.exists() and len(kept) == 1
    assert kept[0].read_text() == "#!/bin/sh\necho planted\n"
    assert kept[0].name in result.reason


def test_a_file_planted_under_an_aside_like_name_is_guarded(ol, demo, env):  # noqa: F811
    # A dispatcher hook (`for h in hooks/pre-commit.d/*`) would run it: no name is exempt.
    add(ol, "Plant a hook")
    planted = demo / ".git/hooks/pre-commit.d/lint.openloop-escaped-1"

    def plant(cwd: Path) -> None:
        planted.parent.mkdir()
        _hook(cwd, planted)

    result = once(env, FakeAgent([plant]))
    assert result.outcome == Outcome.ESCAPED, result.reason
    assert "lint.openloop-escaped-1 created" in result.reason
    assert not planted.exists()


def test_the_lock_is_held_on_the_file_at_its_path(tmp_path, monkeypatch):
    # Moved aside between open and flock (another process meeting a planted folder at once):
    # the lock taken on the moved file would exclude nobody, so the one at the path is taken.
    target = tmp_path / "state.json"
    lock = storage.lock_path_for(target)
    real = fcntl.flock
    calls = []

    def flock_then_move(fd, op):
        real(fd, op)
        if not calls:
            os.rename(lock, lock.with_name("moved-aside"))
        calls.append(fd)

    monkeypatch.setattr(storage.fcntl, "flock", flock_then_move)
    with storage.locked(target):
        held = os.stat(f"/proc/self/fd/{calls[-1]}")
        there = os.stat(lock)
        assert (held.st_dev, held.st_ino) == (there.st_dev, there.st_ino)
    assert len(calls) == 2


def test_what_was_set_aside_is_watched_by_later_snapshots(ol, demo, env):  # noqa: F811
    add(ol, "Plant a hook")
    hook = demo / ".git/hooks/pre-commit"
    assert once(env, FakeAgent([lambda cwd: _hook(cwd, hook)])).outcome == Outcome.ESCAPED
    (kept,) = hook.parent.glob("pre-commit.openloop-escaped-*")
    assert kept.stat().st_mode & 0o111 == 0  # a runner of `hooks/*.d/*` would not run it
    add(ol, "Rewrite what was set aside")

    def rewrite(cwd: Path) -> None:
        kept.write_text("#!/bin/sh\necho changed\n")
        (cwd / "ok.py").write_text("ok = 2\n")

    result = once(env, FakeAgent([rewrite]))
    assert result.outcome == Outcome.ESCAPED, result.reason
    assert kept.name in result.reason


def test_a_lock_file_that_keeps_moving_ends_in_busy_not_a_spin(tmp_path, monkeypatch):
    import pytest

    from openloop.errors import BusyError

    target = tmp_path / "state.json"
    lock = storage.lock_path_for(target)
    real = fcntl.flock
    calls = []

    def flock_then_move(fd, op):
        real(fd, op)
        calls.append(fd)
        os.rename(lock, lock.with_name(f"moved-{len(calls)}"))

    monkeypatch.setattr(storage.fcntl, "flock", flock_then_move)
    with pytest.raises(BusyError), storage.locked(target, timeout=0.3):
        pass
    assert 2 <= len(calls) < 100  # retried, with pauses, until the deadline
