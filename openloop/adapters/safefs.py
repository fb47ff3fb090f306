"""Putting a file back where the agent could write too: never through a link it planted.

After an escape OpenLoop rewrites or removes files in folders the agent can change (OpenLoop's
records, the git directory). The agent may have replaced a folder on the way with a symbolic
link to somewhere else (`~`, say), so a path is never opened whole: each folder below a trusted
`root` is opened on its own, relative to the one above it, with O_NOFOLLOW. A link on the way
stops the walk (OSError), and nothing is ever written or removed outside `root`. The last
component is replaced by rename or removed by name, so a link there is replaced or removed
itself, never followed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from stat import S_ISDIR, S_ISREG

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Moved(Exception):
    """The file no longer holds what the caller saw: someone changed it again since."""


def put(
    root: Path,
    rel: str,
    data: bytes,
    mode: int,
    unchanged: Callable[[], bool],
    *,
    folders: bool = False,
    aside: str | None = None,
) -> None:
    """`root/rel` holds `data` with `mode`, if `unchanged()` right before the swap. What is in
    its place (file, link, FIFO; a folder too with `folders`) is replaced, or with `aside`
    renamed to `<name>.<aside>` beside it (kept for the user to see); missing folders on the
    way are made. Raises OSError (a link on the way, say) or Moved."""
    with _parent(root, rel, create=True) as (fd, name):
        tmp = f".{name}.{secrets.token_hex(4)}.tmp"  # skipped by the guard, like atomic writes
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=fd)
        try:
            with os.fdopen(out, "wb") as file:
                file.write(data)
                file.flush()
                os.fchmod(file.fileno(), mode)
                os.fsync(file.fileno())
            _clear_folder(fd, name, folders, unchanged, aside)
            os.rename(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=fd)
            raise
        os.fsync(fd)


def put_link(
    root: Path, rel: str, target: str, unchanged: Callable[[], bool], aside: str | None = None
) -> None:
    """`root/rel` is a symbolic link to `target` again (a dotfile link the user had)."""
    with _parent(root, rel, create=True) as (fd, name):
        tmp = f".{name}.{secrets.token_hex(4)}.tmp"
        os.symlink(target, tmp, dir_fd=fd)
        try:
            _clear_folder(fd, name, False, unchanged, aside)
            os.rename(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=fd)
            raise


def make_folder(
    root: Path, rel: str, unchanged: Callable[[], bool], aside: str | None = None
) -> None:
    """`root/rel` is a folder again; what was put in its place (not a folder) is removed, or
    with `aside` renamed beside it."""
    with _parent(root, rel, create=True) as (fd, name):
        with contextlib.suppress(FileNotFoundError):
            if S_ISDIR(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                return
            if not unchanged():
                raise Moved(rel)
            _drop(fd, name, aside)
        os.mkdir(name, 0o755, dir_fd=fd)


def remove(
    root: Path,
    rel: str,
    unchanged: Callable[[], bool],
    *,
    folders: bool = False,
    aside: str | None = None,
) -> bool:
    """Remove what is at `root/rel` (a folder, with all it holds, only with `folders`), if
    `unchanged()`; with `aside`, rename it to `<name>.<aside>` instead. False: there was nothing
    to remove (or no folder on the way to it)."""
    try:
        with _parent(root, rel, create=False) as (fd, name):
            try:
                stat = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                return False
            if not unchanged():
                raise Moved(rel)
            if S_ISDIR(stat.st_mode) and not folders:
                raise IsADirectoryError(f"{rel} is a folder")
            _drop(fd, name, aside)
            return True
    except FileNotFoundError:  # a folder on the way is gone: so is what was in it
        return False


def _clear_folder(
    fd: int, name: str, folders: bool, unchanged: Callable[[], bool], aside: str | None = None
) -> None:
    """Check, last thing before the swap, that the file still holds what the caller saw; a
    folder in its place (which rename cannot replace) is removed first, with `folders`. With
    `aside`, whatever is there is renamed beside it first, folder or not."""
    if not unchanged():
        raise Moved(name)
    with contextlib.suppress(FileNotFoundError):
        if _set_aside(fd, name, aside):
            return
        if S_ISDIR(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
            if not folders:
                raise IsADirectoryError(f"{name} is a folder")
            shutil.rmtree(name, dir_fd=fd)


def _set_aside(fd: int, name: str, aside: str | None) -> bool:
    """Rename `name` to `<name>.<aside>` in the folder `fd`; False when there is no `aside` or
    the rename fails (something planted at that name, say): the caller then removes it, as
    taking it away matters more than keeping it."""
    if aside is None:
        return False
    try:
        os.rename(name, f"{name}.{aside}", src_dir_fd=fd, dst_dir_fd=fd)
    except FileNotFoundError:
        raise
    except OSError:
        return False
    _not_runnable(fd, f"{name}.{aside}")
    return True


def _not_runnable(fd: int, name: str) -> None:
    """A regular file kept aside loses its execute bits: a hook runner that runs whatever is in
    a folder (`pre-commit.d/*`) must not run it. Opened without following a link."""
    try:
        kept = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
    except OSError:
        return  # a link, a FIFO's peer...: nothing to run from here
    try:
        mode = os.fstat(kept).st_mode
        if S_ISREG(mode):
            os.fchmod(kept, mode & 0o666)
    finally:
        os.close(kept)


def _drop(fd: int, name: str, aside: str | None) -> None:
    """Remove `name` in the folder `fd` (a folder by descriptor: links inside are removed, never
    followed), or rename it to `<name>.<aside>` there."""
    if _set_aside(fd, name, aside):
        return
    if S_ISDIR(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
        shutil.rmtree(name, dir_fd=fd)
    else:
        os.unlink(name, dir_fd=fd)


@contextlib.contextmanager
def _parent(root: Path, rel: str, *, create: bool):
    """A descriptor of the folder holding `root/rel`, opened one folder at a time below
    `root` without following links, and the last component's name."""
    *folders, name = rel.split("/")
    if not name or name in (".", "..") or any(p in ("", ".", "..") for p in folders):
        raise ValueError(f"not a plain relative path: {rel!r}")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for folder in folders:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(folder, 0o755, dir_fd=fd)
            inner = os.open(folder, _DIR, dir_fd=fd)
            os.close(fd)
            fd = inner
        yield fd, name
    finally:
        os.close(fd)
