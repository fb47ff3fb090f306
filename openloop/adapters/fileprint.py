"""Files as the guard sees them: a fingerprint from one lstat and at most one read (never
through a link, never opening a FIFO), the content of small ones, and a walk that lists
without following links.

A file read once is read again in the same process only when its lstat changed: an iteration
takes three snapshots, and a project holds hundreds of records. That is sound because nobody
but root can set a file's ctime: any write sets it to the current time. As in git's "racy"
rule, a file changed less than SETTLED_NS before it was read is not kept: a write in the same
tick of the (coarse) file-system clock could leave its ctime unchanged. Only file systems known
to keep the ctime so are trusted (CTIME_KEEPING): on FAT the ctime is the mtime, which `touch`
sets; NFS may answer lstat from a cache while another client writes.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from stat import S_ISDIR, S_ISLNK, S_ISREG

from openloop.state.storage import read_regular

HASH_LIMIT = 8 * 1024 * 1024  # bytes of one file hashed; a bigger one is judged by its lstat
RECORD_LIMIT = 2 * 1024 * 1024  # bytes of content returned (records are far smaller)
Look = tuple[str | None, bytes | None]  # a file's fingerprint and content (see look)
ABSENT: Look = (None, None)


def walk(top: Path, skip: Path | None = None):
    """Every file and link under `top`; nothing below the folders inside `skip` (the runs'
    own folders: all they hold is skipped by the caller anyway, and they are many). A folder
    that cannot be listed is passed over, as os.walk does. The entries' types come with the
    listing (no stat per entry): runs/ alone holds a thousand of them."""
    if top.is_symlink() or not top.exists():
        if top.is_symlink():
            yield top
        return
    if not top.is_dir():
        yield top
        return
    folders, stop = [str(top)], None if skip is None else str(skip)
    while folders:
        root = folders.pop()
        try:
            with os.scandir(root) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError:
            continue
        below = []
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                below.append(entry.path)
            else:
                yield Path(entry.path)
        if root != stop:
            folders.extend(reversed(below))


def fingerprint(path: Path) -> str | None:
    return look(path, content=False)[0]


# What was read of a file, by path, with the lstat it had then (see the module's doc).
# Contents are kept up to _SEEN_BYTES in all (records are small; a big untracked file in the
# checkout is kept by fingerprint only, and read again if its content is asked for).
_SEEN: dict[str, tuple[tuple[int, ...], str | None, bytes | None | object]] = {}
SETTLED_NS = 2_000_000_000
_SEEN_LIMIT = 50_000
_SEEN_BYTES = 64 * 1024 * 1024
_KEPT = [0]  # bytes of content in _SEEN
_NOT_KEPT = object()
CTIME_KEEPING = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "f2fs"})
_FS_TYPES: dict[int, str] = {}  # st_dev -> file system type, from /proc/self/mountinfo


def forget_mounts() -> None:
    """Read the mount table again at the next question: a device number is reused after an
    unmount (a long-running `service run` outlives many). Each snapshot starts with it."""
    _FS_TYPES.clear()


def _keeps_ctime(dev: int) -> bool:
    if not _FS_TYPES:
        try:
            with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as listing:
                lines = listing.read().splitlines()
        except OSError:
            lines = []
        _FS_TYPES[-1] = ""  # read once, even if empty
        for line in lines:
            # "36 35 98:0 /root /mnt rw master:1 - ext4 /dev/root rw": the type follows " - ".
            fields, _, after = line.partition(" - ")
            numbers, kind = fields.split()[2:3], after.split()[:1]
            if not numbers or not kind:
                continue
            major, _, minor = numbers[0].partition(":")
            if major.isdigit() and minor.isdigit():
                _FS_TYPES[os.makedev(int(major), int(minor))] = kind[0]
    return _FS_TYPES.get(dev) in CTIME_KEEPING


def look(path: Path, content: bool = True) -> tuple[str | None, bytes | None]:
    """The file's fingerprint (None: it does not exist) and, for a record, its content: None
    for a link, a folder, what cannot be read, and what is bigger than RECORD_LIMIT (and
    whenever `content` is False)."""
    # One lstat answers what is_symlink, is_dir and stat would (for what is not a link, stat
    # and lstat agree); an error any of them would meet, lstat meets first.
    try:
        stat = os.lstat(path)
        if S_ISREG(stat.st_mode):
            key = (
                stat.st_dev,
                stat.st_ino,
                stat.st_mode,
                stat.st_size,
                stat.st_mtime_ns,
                stat.st_ctime_ns,
            )
            seen = _SEEN.get(str(path))
            if seen is not None and seen[0] == key:
                if not content:
                    return seen[1], None
                if seen[2] is not _NOT_KEPT:
                    return seen[1], seen[2]  # type: ignore[return-value]
            reading_at = time.time_ns()
            found = _read_look(path, stat)
            settled = stat.st_ctime_ns < reading_at - SETTLED_NS
            if settled and found[0] is not None and found[0] != "changing" and _keeps_ctime(key[0]):
                _remember(str(path), key, found)
            return found if content else (found[0], None)
        if S_ISLNK(stat.st_mode):
            return "link:" + os.readlink(path), None
        if S_ISDIR(stat.st_mode):
            return "dir", None
        # A FIFO, socket or device planted where a file was: never opened (a FIFO would block
        # the snapshot, and with it every later iteration, for ever).
        return f"special:{stat.st_mode:o}", None
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return f"unreadable:{exc.errno}", None


def _remember(path: str, key: tuple[int, ...], found: tuple[str | None, bytes | None]) -> None:
    data = found[1]
    size = len(data) if data is not None else 0
    kept: bytes | None | object = data
    if size > RECORD_LIMIT // 32:  # 64 KiB: a record is far smaller
        kept, size = _NOT_KEPT, 0
    if len(_SEEN) >= _SEEN_LIMIT or _KEPT[0] + size > _SEEN_BYTES:
        _SEEN.clear()
        _KEPT[0] = 0
    previous = _SEEN.get(path)
    if previous is not None and isinstance(previous[2], bytes):
        _KEPT[0] -= len(previous[2])
    _SEEN[path] = (key, found[0], kept)
    _KEPT[0] += size


def _read_look(path: Path, stat: os.stat_result) -> tuple[str | None, bytes | None]:
    """_look of a regular file, read."""
    if stat.st_size > HASH_LIMIT:
        # Not hashed: known by its lstat. The ctime is in it because the mtime can be set
        # back (`touch -d`) after a same-size rewrite; the ctime cannot.
        return (
            f"big:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}:{stat.st_ino}"
            f":{stat.st_mode:o}",
            None,
        )
    try:
        data = read_regular(path)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return f"unreadable:{exc.errno}", None
    if data is None:  # swapped for something else since the lstat
        return "changing", None
    digest = hashlib.sha256(data).hexdigest()
    return f"{stat.st_mode:o}:{digest}", data if len(data) <= RECORD_LIMIT else None


def read_text(path: Path) -> str:
    try:
        data = read_regular(path)
    except OSError:
        return ""
    return "" if data is None else data.decode("utf-8", "replace").strip()
