"""The folders of earlier runs (`.openloop/runs/<run-id>/`: transcript, prompt, check logs),
guarded while code of the agent's runs: they are what the user reads to learn what an agent
did, so an agent must not rewrite another run's story.

They are too many to read (a year of runs holds tens of thousands of files, and a snapshot is
taken four times an iteration), and OpenLoop never changes them once their run has ended. So
each file is judged by what lstat says of it: kind, mode, size, inode, modification and change
time. The change time cannot be set by a process of the user's (utime sets the other two), and
every write, rename, chmod or replacement sets it: a file forged with its old size and mtime
still shows. Nothing is ever opened but folders, so a FIFO planted there cannot block, and
links are never followed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from stat import S_ISDIR

from openloop.state.runs import RUN_ID, RUNNING

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def fingerprints(runs: Path, label: str, skip: Iterable[str]) -> dict[str, str]:
    """`<label><name>/` -> a digest of every entry in that folder, for each run's folder in
    `runs` but those named in `skip` (the running run's own, written while the agent runs).
    Other folders there are not runs': the check logs of a promotion (`apply-<task>/`), which
    the merge being guarded writes, and records (`*.json`), compared by content elsewhere."""
    skipped = set(skip)
    found: dict[str, str] = {}
    try:
        # Through a link there: the user may keep the runs on another disk (a link planted
        # there instead shows as a changed control file). Nothing below is followed.
        top = os.open(runs, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:  # no runs yet, or not a folder: the control files show that
        return found
    try:
        with os.scandir(top) as entries:
            folders = [
                e.name
                for e in entries
                if e.is_dir(follow_symlinks=False)
                and RUN_ID.fullmatch(e.name)
                and e.name not in skipped
            ]
        for name in folders:
            digest = hashlib.blake2b(digest_size=16)
            try:
                inner = os.open(name, _DIR, dir_fd=top)
            except OSError as exc:  # replaced meanwhile: compares as changed
                found[f"{label}{name}/"] = f"unreadable:{exc.errno}"
                continue
            try:
                _digest(inner, "", digest)
            except OSError as exc:
                digest.update(f"unreadable:{exc.errno}".encode())
            finally:
                os.close(inner)
            found[f"{label}{name}/"] = digest.hexdigest()
    finally:
        os.close(top)
    return found


def _digest(fd: int, prefix: str, digest) -> None:
    with os.scandir(fd) as listing:
        entries = sorted(listing, key=lambda e: e.name)
    for entry in entries:
        st = entry.stat(follow_symlinks=False)
        line = (
            f"{prefix}{entry.name}\0{st.st_mode:o} {st.st_size} {st.st_ino} "
            f"{st.st_mtime_ns} {st.st_ctime_ns}\n"
        )
        digest.update(line.encode("utf-8", "surrogateescape"))
        if S_ISDIR(st.st_mode):
            inner = os.open(entry.name, _DIR, dir_fd=fd)
            try:
                _digest(inner, f"{prefix}{entry.name}/", digest)
            finally:
                os.close(inner)


def running(records: Iterable[tuple[str, bytes | None]]) -> set[str]:
    """The run ids whose record (name, content) says the run is still going: the run of the
    snapshot's own iteration (a dead one's is closed by the next iteration's repair)."""
    found = set()
    for name, data in records:
        if data is None or b'"running"' not in data:  # most are finished: no JSON parsed
            continue
        try:
            record = json.loads(data)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("outcome") == RUNNING:
            found.add(name.removesuffix(".json"))
    return found
