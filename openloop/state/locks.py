"""The per-project iteration lock: one iteration (or one merge, or one purge) per project at a
time, systemd or not; and the host-wide iteration slots. Here, below both the iteration and the
actions that must wait for it."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from openloop.env import Environment
from openloop.errors import BusyError
from openloop.state.storage import locked


def iteration_lock_target(env: Environment, alias: str) -> Path:
    return env.locks_dir / f"{alias}.iteration"


class iteration_lock:  # noqa: N801 - used as a context manager
    """One iteration per project at a time, systemd or not. flock dies with its holder."""

    def __init__(self, env: Environment, alias: str) -> None:
        self.target = iteration_lock_target(env, alias)
        self.alias = alias

    def __enter__(self) -> None:
        self._lock = locked(self.target, timeout=0, what=f"project '{self.alias}'")
        try:
            self._lock.__enter__()
        except BusyError:
            raise BusyError(
                f"another iteration of project '{self.alias}' is running; try again when it ends"
            ) from None

    def __exit__(self, *exc: object) -> None:
        self._lock.__exit__(*exc)


# --- the host-wide cap on iterations ----------------------------------------------------------


def slot_files(env: Environment, limit: int) -> list[Path]:
    return [env.locks_dir / "slots" / f"slot-{i}" for i in range(limit)]


class iteration_slot:  # noqa: N801 - used as a context manager
    """One of `runtime.maxConcurrentIterations` slots, held for a whole iteration.

    systemd has no "at most N instances of a template" setting, and a slice can only cap
    resources, not count; so the cap is N flock'ed files under the state directory: an
    iteration takes the first free one and the kernel frees it when the holder exits, however
    it exits. Raises BusyError when every slot is taken."""

    def __init__(self, env: Environment, limit: int) -> None:
        self.files = slot_files(env, limit)
        self.limit = limit
        self.fd: int | None = None

    def __enter__(self) -> int:
        slot = _take_free_slot(self.files)
        if slot is None:
            raise BusyError(
                f"{self.limit} iteration(s) already running on this host "
                "(runtime.maxConcurrentIterations); this project's turn comes at its next tick"
            )
        self.fd, index = slot
        return index

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def slots_in_use(env: Environment, limit: int) -> int:
    """How many slots are held right now (try each, release at once): what the gate asks."""
    busy = 0
    for path in slot_files(env, limit):
        if not path.exists():
            continue
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            busy += 1
        finally:
            os.close(fd)
    return busy


def _take_free_slot(files: list[Path]) -> tuple[int, int] | None:
    for index, path in enumerate(files):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        return fd, index
    return None


# --- who holds a lock, without taking it ------------------------------------------------

PROC_LOCKS = Path("/proc/locks")


def held_locks(path: Path | None = None) -> dict[tuple[int, int], int] | None:
    """Every flock held on this host right now, as {(device, inode): holder pid}, read once from
    /proc/locks (None where it cannot be read). For `status`: trying a lock to see whether it is
    free would, for that instant, make a starting iteration fail as busy."""
    try:
        text = (path or PROC_LOCKS).read_text()
    except OSError:
        return None
    held: dict[tuple[int, int], int] = {}
    for line in text.splitlines():
        # "1: FLOCK  ADVISORY  WRITE 23831 fe:00:2673228 0 EOF" ("->" marks a waiter: skipped)
        parts = line.split()
        if len(parts) < 6 or parts[1] != "FLOCK" or parts[2] == "->":
            continue
        try:
            major, minor, inode = parts[5].split(":")
            held[(os.makedev(int(major, 16), int(minor, 16)), int(inode))] = int(parts[4])
        except ValueError:
            continue
    return held


def iteration_lock_holder(
    env: Environment, alias: str, held: dict[tuple[int, int], int] | None
) -> int | None:
    """The pid holding the project's iteration lock (0 when held but the holder is not known),
    or None when it is free. `held` comes from held_locks(); None there means: unknown, free."""
    from openloop.state.storage import lock_path_for

    if not held:
        return None
    try:
        st = lock_path_for(iteration_lock_target(env, alias)).stat()
    except OSError:
        return None
    return held.get((st.st_dev, st.st_ino))
