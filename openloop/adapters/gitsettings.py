"""git's settings files after an escape: which config files git may read beyond the ones it
names, and putting them all back.

They are put back (not only reported, as the user's checkout is) because what they say acts at
once, outside any run: a broken config stops every git command (OpenLoop's restore of the refs
included, and the next iteration), a changed one or a planted hook runs the agent's program at
the user's next `git status` or commit. The snapshot keeps their content (they are small).
The guard lists and fingerprints them (guarded_files.git_settings, fileprint.look): its
fingerprint is passed in, so that both sides compare alike.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from openloop.adapters import safefs
from openloop.state.storage import read_regular

Setting = tuple[str | None, bytes | None, str]  # fingerprint, content, real folder
ASIDE = "openloop-escaped"  # what stood in a setting's place is renamed <name>.<ASIDE>-<time>
_INCLUDE = re.compile(r"include\.path|includeif\..*\.path")


def named(origins: str, home: Path) -> list[Path]:
    """The config files in `git config --list --show-origin -z` output, and every file their
    includes name, whether it exists and its condition holds or not: it may be written later.
    Relative paths are relative to the including file (the repository's for `.git/config`)."""
    paths = []
    items = origins.split("\0")
    for item, entry in zip(items, items[1:] + [""], strict=True):
        if item.startswith("file:"):
            origin = Path(item.removeprefix("file:"))
            paths.append(origin)
            key, _, value = entry.partition("\n")
            if value and _INCLUDE.fullmatch(key):
                included = home / value[2:] if value.startswith("~/") else Path(value)
                paths.append(included if included.is_absolute() else origin.parent / included)
    return paths


_SET_ASIDE: set[str] = set()  # what restore() renamed in this process


def set_aside(path: Path) -> bool:
    """Whether `path` is what restore() renamed out of a setting's place, for the compare that
    follows (which must not report it as planted): forget_set_aside() ends that, and later
    snapshots list it like any file there (a name of this kind planted by the agent too)."""
    return str(path) in _SET_ASIDE


def forget_set_aside() -> None:
    _SET_ASIDE.clear()


def worktree_config(dotgit: Path) -> list[Path]:
    """A linked worktree's own config.worktree, in the folder its `.git` file names."""
    try:
        text = (read_regular(dotgit) or b"").decode("utf-8", "replace")
    except OSError:
        return []
    if not text.startswith("gitdir: "):
        return []
    folder = Path(text.removeprefix("gitdir: ").strip())
    return [(folder if folder.is_absolute() else dotgit.parent / folder) / "config.worktree"]


def mode(fingerprint: str) -> int:
    """The permission bits in a regular file's fingerprint (fileprint.look's `<mode>:<digest>`)."""
    return int(fingerprint.partition(":")[0], 8) & 0o7777


def restore(
    settings: dict[Path, Setting],
    gitdir: Path | None,
    planted: Iterable[Path],
    fingerprint: Callable[[Path], str | None],
) -> list[str]:
    """Put git's settings files back as they were, each only while it holds what it holds now
    (compare-and-swap: a later writer's version is never overwritten), in the real folder that
    held it before (a folder on the way replaced by a link is refused, never followed).
    `planted`: files found now where settings live (hooks, info/): taken away unless known.
    What was there is never deleted: it is renamed beside it, `<name>.<ASIDE>-<time>` (a name
    git never reads), for the user to look at, or to take back if it was their own edit.
    Returns what changed, and what was done."""
    done: list[str] = []
    # Unpredictable: a folder planted at the name would make the rename fail (the setting is
    # then taken away all the same, but not kept).
    aside = f"{ASIDE}-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}"
    paths = dict(settings)
    for path in planted:
        paths.setdefault(path, (None, None, os.path.realpath(path.parent)))
    for path, (old, content, folder) in sorted(paths.items()):
        seen = fingerprint(path)
        if seen == old:
            continue
        what = "created" if old is None else "deleted" if seen is None else "changed"
        inside = gitdir is not None and Path(folder).is_relative_to(gitdir)

        def unchanged(path: Path = path, seen: str | None = seen) -> bool:
            return fingerprint(path) == seen

        try:
            if os.path.realpath(path.parent) != folder:
                raise OSError(f"{path.parent} is no longer the folder {folder}")
            root, name = Path(folder), path.name
            _SET_ASIDE.add(str(path.with_name(f"{path.name}.{aside}")))
            _SET_ASIDE.add(str(Path(folder) / f"{path.name}.{aside}"))
            if old is None:
                safefs.remove(root, name, unchanged, folders=inside, aside=aside)
                how = "took it away"
            elif old == "dir":
                safefs.make_folder(root, name, unchanged, aside=aside)
                how = "made it a folder again"
            elif old.startswith("link:"):
                safefs.put_link(root, name, old.removeprefix("link:"), unchanged, aside=aside)
                how = "put it back"
            elif content is not None:
                safefs.put(root, name, content, mode(old), unchanged, folders=inside, aside=aside)
                how = "put it back"
            else:
                how = "could not put it back (too big to have been kept)"
        except (OSError, ValueError, safefs.Moved) as exc:
            how = f"could not put it back ({exc})"
        kept = Path(folder) / f"{path.name}.{aside}"
        if os.path.lexists(kept):
            how += f"; what was there is now {kept.name}"
        done.append(f"git setting {path} {what}; OpenLoop {how}")
    return done
