"""The guard's file primitives (adapters/fileprint.py). The walk lists what os.walk-based
listing did (every file, link, FIFO; links to folders as entries, never followed; nothing
below `skip`'s subfolders), on random trees; a file is read again only when its lstat says it
may have changed."""

from __future__ import annotations

import os
import random
from pathlib import Path

from openloop.adapters.fileprint import walk as _walk


def reference(top: Path, skip: Path | None = None) -> set[Path]:
    if top.is_symlink():
        return {top}
    if not top.exists():
        return set()
    if not top.is_dir():
        return {top}
    found: set[Path] = set()
    for root, dirs, names in os.walk(top):
        found.update(Path(root) / n for n in names)
        found.update(Path(root) / d for d in dirs if (Path(root) / d).is_symlink())
        if skip is not None and Path(root) == skip:
            dirs.clear()
    return found


def random_tree(top: Path, rng: random.Random) -> None:
    folders = [top]
    top.mkdir()
    for i in range(rng.randint(5, 60)):
        parent = rng.choice(folders)
        kind = rng.random()
        path = parent / f"e{i}"
        if kind < 0.25:
            path.mkdir()
            folders.append(path)
        elif kind < 0.7:
            path.write_text(str(i))
        elif kind < 0.8:
            path.symlink_to(rng.choice(folders))  # a link to a folder: listed, not followed
        elif kind < 0.9:
            path.symlink_to(top / "nowhere")
        else:
            os.mkfifo(path)
    (top / "runs").mkdir()
    for i in range(rng.randint(0, 5)):
        (top / "runs" / f"r{i}.json").write_text("{}")
        (top / "runs" / f"r{i}").mkdir()
        (top / "runs" / f"r{i}" / "transcript").write_text("x")


def test_the_walk_lists_what_os_walk_listed(tmp_path):
    rng = random.Random(1234)
    for n in range(40):
        top = tmp_path / f"t{n}"
        random_tree(top, rng)
        skip = top / "runs"
        walked = list(_walk(top, skip=skip))
        assert len(walked) == len(set(walked))
        assert set(walked) == reference(top, skip)
        assert set(_walk(top)) == reference(top)


def test_the_walk_of_a_link_a_fifo_or_nothing(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "link").symlink_to(tmp_path)
    for name in ("fifo", "link", "absent"):
        assert set(_walk(tmp_path / name)) == reference(tmp_path / name)


# --- reading a file once per process --------------------------------------------------------


def _rewrite_keeping_size_and_mtime(path: Path, text: str) -> None:
    before = path.stat()
    path.write_text(text)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size and path.stat().st_mtime_ns == before.st_mtime_ns


def test_a_file_read_before_is_read_again_only_when_its_lstat_changed(tmp_path, monkeypatch):
    import time

    from openloop.adapters import fileprint

    monkeypatch.setattr(fileprint, "SETTLED_NS", 0)  # files written by the test count as settled
    monkeypatch.setattr(fileprint, "_keeps_ctime", lambda dev: True)  # whatever the tmp fs is
    monkeypatch.setattr(fileprint, "_SEEN", {})
    monkeypatch.setattr(fileprint, "_KEPT", [0])
    path = tmp_path / "record.json"
    path.write_text('{"cost": 1}')
    time.sleep(0.05)  # past the file system's clock tick: a rewrite gets a new ctime
    reads = []
    real = fileprint.read_regular
    monkeypatch.setattr(fileprint, "read_regular", lambda p, **k: reads.append(p) or real(p, **k))
    first = fileprint.look(path)
    assert fileprint.look(path) == first and len(reads) == 1  # unchanged: not read again
    # Same size, mtime set back: only the ctime (which nobody but root can set) tells.
    _rewrite_keeping_size_and_mtime(path, '{"cost": 0}')
    assert fileprint.look(path) != first and len(reads) == 2


def test_a_file_changed_just_before_it_was_read_is_read_again(tmp_path, monkeypatch):
    from openloop.adapters import fileprint

    monkeypatch.setattr(fileprint, "_SEEN", {})
    monkeypatch.setattr(fileprint, "_KEPT", [0])
    path = tmp_path / "record.json"
    path.write_text("{}")
    reads = []
    real = fileprint.read_regular
    monkeypatch.setattr(fileprint, "read_regular", lambda p, **k: reads.append(p) or real(p, **k))
    fileprint.look(path)
    fileprint.look(path)
    assert len(reads) == 2  # within SETTLED_NS of its change: never trusted by its lstat


def test_a_big_file_rewritten_with_its_size_and_mtime_is_a_change(tmp_path, monkeypatch):
    import time

    from openloop.adapters import fileprint

    monkeypatch.setattr(fileprint, "HASH_LIMIT", 10)
    monkeypatch.setattr(fileprint, "_SEEN", {})
    monkeypatch.setattr(fileprint, "_KEPT", [0])
    path = tmp_path / "big.bin"
    path.write_text("a" * 100)
    time.sleep(0.05)
    first = fileprint.look(path)[0]
    assert first is not None and first.startswith("big:")
    _rewrite_keeping_size_and_mtime(path, "b" * 100)
    assert fileprint.look(path)[0] != first


def test_on_a_file_system_not_known_to_keep_ctime_every_look_reads(tmp_path, monkeypatch):
    # FAT's ctime is its mtime (which `touch` sets); NFS may answer lstat from a cache.
    import time

    from openloop.adapters import fileprint

    monkeypatch.setattr(fileprint, "SETTLED_NS", 0)
    monkeypatch.setattr(fileprint, "_SEEN", {})
    monkeypatch.setattr(fileprint, "CTIME_KEEPING", frozenset())
    path = tmp_path / "record.json"
    path.write_text("{}")
    time.sleep(0.05)
    reads = []
    real = fileprint.read_regular
    monkeypatch.setattr(fileprint, "read_regular", lambda p, **k: reads.append(p) or real(p, **k))
    fileprint.look(path)
    fileprint.look(path)
    assert len(reads) == 2
