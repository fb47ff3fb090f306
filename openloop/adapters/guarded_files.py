"""What the guard looks at in the user's repository and git directory: the entries of `git
status`, the control files and OpenLoop's records under `.openloop/` (and `.pi/`, `.agents/`),
the ledger by task, and the files from which git learns to run programs. guard.py snapshots
and compares them."""

from __future__ import annotations

import json
import os
from pathlib import Path

from openloop.adapters import gitsettings, runfolders
from openloop.adapters.fileprint import Look, look, walk
from openloop.state.storage import read_regular

GOVERNANCE_DIRS = (".openloop", ".pi", ".agents")
LEDGER = ".openloop/tasks.json"
# Written by OpenLoop while the agent runs: the run's own transcript and logs live in
# .openloop/runs/<run-id>/ (subdirectories of runs/ are skipped; the records beside them are not).
RUN_ARTIFACTS = ".openloop/runs/"
STATE_FILES = (
    "MERGE_HEAD",
    "MERGE_MSG",
    "MERGE_MODE",
    "CHERRY_PICK_HEAD",
    "REVERT_HEAD",
    "BISECT_LOG",
    "index",
)
STATE_DIRS = ("sequencer", "rebase-merge", "rebase-apply", "worktrees")


# OpenLoop's own records: nothing but OpenLoop writes them while code of the agent's runs (the
# ledger's new tasks aside), so after an escape their earlier content is put back, whole.
RECORD_DIRS = (".openloop/promotions", ".openloop/promotion-results")


def status_entries(listing: str) -> list[tuple[str, str, str | None]]:
    """(XY, path, original path of a rename or copy) of each entry of `git status -z`, but the
    ledger's: with `ledger.versioned` it is a checkout file, and its tasks are compared one by
    one (OpenLoop edits its own task between the guarded steps, and `task add` may add some)."""
    parts, entries, i = listing.split("\0"), [], 0
    while i < len(parts):
        entry = parts[i]
        if len(entry) < 4:
            i += 1
            continue
        xy, path = entry[:2], entry[3:]
        orig = parts[i + 1] if ("R" in xy or "C" in xy) and i + 1 < len(parts) else None
        i += 2 if orig is not None else 1
        if LEDGER not in (path, orig):
            entries.append((xy, path, orig))
    return entries


def control_files(
    repo: Path, looked: dict[Path, tuple[str | None, bytes | None]]
) -> dict[str, str | None]:
    files: dict[str, str | None] = {}
    prefix = prefix_of(repo)
    for top in GOVERNANCE_DIRS:
        for path in walk(repo / top, skip=repo / RUN_ARTIFACTS):
            rel = str(path)[len(prefix) :]
            if rel == LEDGER or (
                rel.startswith(RUN_ARTIFACTS) and "/" in rel[len(RUN_ARTIFACTS) :]
            ):
                continue
            if rel.rpartition("/")[2].startswith(".") and rel.endswith((".lock", ".tmp")):
                continue  # OpenLoop's lock files and atomic-write temporaries
            looked[path] = look(path)
            files[f"control file {rel}"] = looked[path][0]
    runs = repo / RUN_ARTIFACTS
    mine = runfolders.running((p.name, seen[1]) for p, seen in looked.items() if p.parent == runs)
    files.update(runfolders.fingerprints(runs, f"earlier run's files {RUN_ARTIFACTS}", mine))
    return files


def records_of(repo: Path, looked: dict[Path, Look] | None = None) -> dict[str, Look]:
    """OpenLoop's record files, each with its fingerprint and content (see fileprint.look), and any
    folder planted among them. `looked`: what this snapshot read already (the records are
    control files too)."""
    found: dict[str, Look] = {}
    paths = [p for d in RECORD_DIRS for p in walk(repo / d)]
    for folder in RECORD_DIRS:  # flat: a folder there is planted (and hides from the walk)
        top = repo / folder
        if top.is_dir() and not top.is_symlink():
            with os.scandir(top) as entries:
                paths += [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
    runs = repo / RUN_ARTIFACTS
    paths += sorted(runs.glob("*.json")) if runs.is_dir() else []
    prefix = prefix_of(repo)
    for path in paths:
        seen = (looked or {}).get(path)
        found[str(path)[len(prefix) :]] = seen or look(path)
    return found


def prefix_of(repo: Path) -> str:
    """What precedes a path's repository-relative form in str(repo / rel)."""
    return "" if str(repo) == "." else str(repo).rstrip("/") + "/"


DUPLICATES = "(duplicate task ids)"  # a key of tasks_of's answer when the ledger has some


def tasks_of(path: Path) -> dict[str, str] | None:
    """Task id -> its canonical JSON, in the ledger's order (None: no ledger; a key in
    parentheses: the ledger is not a regular file, cannot be read, or repeats an id)."""
    try:
        raw = read_regular(path)
        if raw is None:
            return {"(not a regular file)": "x"}
        data = json.loads(raw)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"(unreadable)": "x"}
    tasks = data.get("tasks") if isinstance(data, dict) else None
    if not isinstance(tasks, list):
        return {"(unreadable)": "x"}
    found = {str(t.get("id")): json.dumps(t, sort_keys=True) for t in tasks if isinstance(t, dict)}
    if len(found) < sum(1 for t in tasks if isinstance(t, dict)):
        found[DUPLICATES] = "x"  # a forged copy placed before the real task would hide
    return found


def git_settings(repo: Path, gitdir: Path, env: dict[str, str], origins: str) -> list[Path]:
    """The files from which git learns to run programs or what to ignore: every config file
    git reads (includes too), hooks, info/ (attributes, exclude), alternates, and the user's
    global attributes and ignore files."""
    home = Path(env.get("HOME", "~")).expanduser()
    # config.worktree too, read once extensions.worktreeConfig is set (it may be set later).
    paths = [gitdir / "config", gitdir / "config.worktree", gitdir / "objects/info/alternates"]
    worktree_gitdir = repo / ".git"
    if worktree_gitdir.is_file():  # the checkout is itself a worktree: its own config.worktree
        paths += [worktree_gitdir, *gitsettings.worktree_config(worktree_gitdir)]
    paths += gitsettings.named(origins, home)
    for folder in (gitdir / "hooks", gitdir / "info"):
        paths.extend(p for p in walk(folder) if not gitsettings.set_aside(p))
        paths.append(folder)
    xdg = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
    paths += [home / ".gitconfig", xdg / "git" / "config"]
    paths += [xdg / "git" / "attributes", xdg / "git" / "ignore"]
    if env.get("GIT_CONFIG_GLOBAL"):
        paths.append(Path(env["GIT_CONFIG_GLOBAL"]))
    paths = [p if p.is_absolute() else repo / p for p in paths]
    # A config that is a link (dotfiles): what git reads is the file it leads to.
    paths += [Path(os.path.realpath(p)) for p in paths if p.is_symlink()]
    return list(dict.fromkeys(paths))


def git_state(gitdir: Path) -> list[Path]:
    paths = [gitdir / name for name in STATE_FILES]
    for name in STATE_DIRS:
        paths.extend(walk(gitdir / name))
    return paths
