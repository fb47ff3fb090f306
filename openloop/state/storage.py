"""Durable file primitives: atomic replace, advisory locks, and validated reads.

Every control-plane write goes through `atomic_write_text` under `locked`, so a crash leaves either
the old or the new file (never a torn one) and concurrent writers (CLI calls, a running iteration)
serialize instead of overwriting each other.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gc
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from stat import S_ISDIR, S_ISREG
from typing import Any, TypeVar

from openloop.errors import BusyError, ConfigError

T = TypeVar("T")


def atomic_write_text(
    path: Path, text: str, *, mode: int | None = None, durable: bool = True
) -> None:
    """Replace `path` with `text`: temp file in the same directory, fsync, rename, fsync dir.
    durable=False: no fsync, for what only shows progress. A running system still never shows
    a torn file; after a power cut it may be old, empty or gone, which its readers must take
    as "not known"."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        elif path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if not durable:
        return
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def dump_json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def lock_path_for(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


@contextlib.contextmanager
def locked(path: Path, *, timeout: float | None = 30.0, what: str | None = None) -> Iterator[None]:
    """Hold an exclusive flock on the lock file guarding `path`.

    flock (not a pid file) because the kernel drops it when the holder dies, so a killed process
    never leaves a stale lock behind. `timeout=0` means try once and raise BusyError.
    """
    lock_file = lock_path_for(path)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    if lock_file.is_symlink():  # planted (lock files are OpenLoop's own): never followed
        lock_file.unlink()
    fd = _open_lock(lock_file)
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            else:
                if _still_there(fd, lock_file):
                    break
                os.close(fd)  # held a file no longer at the path: take the one there now
                fd = -1
                fd = _open_lock(lock_file)
            if deadline is not None and time.monotonic() >= deadline:
                raise BusyError(f"{what or path} is locked by another process") from None
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        yield
    finally:
        if fd >= 0:
            os.close(fd)


def _open_lock(lock_file: Path) -> int:
    """The lock file, open. Lock files are OpenLoop's own: a folder planted there, or a file
    nobody can open (mode 000), is moved aside (kept for the user to look at), so that no write
    of OpenLoop's fails on it. Such a thing is never a lock someone holds: nobody could open it.
    (Two processes meeting the same planted folder at once could each move aside what the other
    then made; locked() checks, once it holds the lock, that its file is still the one there.)"""
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
    for _ in range(3):
        try:
            return os.open(lock_file, flags, 0o644)
        except (IsADirectoryError, PermissionError):
            if not _planted(lock_file):
                raise
            aside = f"{lock_file.name}.planted-{os.urandom(4).hex()}"
            with contextlib.suppress(FileNotFoundError):
                os.rename(lock_file, lock_file.with_name(aside))
    return os.open(lock_file, flags, 0o644)


def _planted(lock_file: Path) -> bool:
    """A folder, or a file of ours that its owner cannot open (mode 000): never a lock anyone
    holds. A lock file of another user's that we may not open is theirs, and stays."""
    try:
        st = os.lstat(lock_file)
    except FileNotFoundError:
        return True  # gone meanwhile: the next open makes it
    if S_ISDIR(st.st_mode):
        return True
    return S_ISREG(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o600


def _still_there(fd: int, lock_file: Path) -> bool:
    """Whether the file `fd` holds is the one at `lock_file` (not moved aside or replaced)."""
    try:
        held, there = os.fstat(fd), os.lstat(lock_file)
    except OSError:
        return False
    return (held.st_dev, held.st_ino) == (there.st_dev, there.st_ino)


def read_text_or_none(path: Path) -> str | None:
    try:
        raw = read_regular(path, follow=True)
        if raw is None:
            raise ConfigError(f"{path}: not a regular file")
        return raw.decode("utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection in the block. Reading a large file makes hundreds of
    thousands of objects that all stay alive, and the collections their allocation triggers
    walk through all of them again and again: a tenth of `task add` at 10,000 tasks."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def load_json_object(path: Path, text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: line {exc.lineno}: invalid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object at the top level")
    return data


def open_for_writing(path: Path, *, depth: int = 3):
    """A binary file OpenLoop writes in a folder the agent can reach (check logs, run
    artifacts, baseline logs): never through a link. A planted link at the file is removed; a
    link among the last `depth` folders of its path refuses the write (OSError), so the
    output can never land in another file of the user's (~/.bashrc, say)."""
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    for folder in [parent, *parent.parents][:depth]:
        if folder.is_symlink():
            raise OSError(
                errno.ELOOP, "a symbolic link in the path of a file OpenLoop writes", str(folder)
            )
    if path.is_symlink():
        path.unlink()
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.fdopen(os.open(path, flags, 0o644), "wb")


def read_regular(path: Path, *, follow: bool = False) -> bytes | None:
    """A regular file's bytes, or None for anything else (a FIFO, a device; a link too unless
    `follow`), checked on the open file itself: opened without blocking, so a FIFO planted
    where a file was (or swapped in after a caller's check) cannot hang the reader."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow:
            return None  # a link
        raise
    try:
        if not S_ISREG(os.fstat(fd).st_mode):
            return None
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as file:
            return file.read()
    finally:
        os.close(fd)
