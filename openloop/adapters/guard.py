"""What the agent must not change outside its own repository, recorded before and compared after.

The agent can write anywhere the user can: the user's refs, checkout, control files, hooks and
git config are one `cd` away. Without a filesystem sandbox that cannot be prevented, so it is
detected: a snapshot is taken before any code the agent wrote runs (the agent itself, then its
checks), and compared when that code has stopped. Any difference ends the attempt as "escaped".
Refs are put back by compare-and-swap where they still hold the agent's value; files are never
rewritten (OpenLoop cannot know which version the user wants), only reported.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from openloop.adapters.gitops import git
from openloop.adapters.workspace import ZERO, common_dir

# Under .openloop/, what OpenLoop itself writes during a run (run records, the ledger, requests).
LOCAL_STATE = ("runs", "promotions", "promotion-results", "tasks.json")
GOVERNANCE_DIRS = (".openloop", ".pi", ".agents")
HASH_LIMIT = 8 * 1024 * 1024  # bytes of one file hashed; a bigger one is judged by size and time


@dataclass(frozen=True)
class Snapshot:
    refs: dict[str, str]
    head: str
    status: str
    files: dict[str, str]  # label -> content fingerprint

    def differences(self, after: Snapshot) -> list[str]:
        found: list[str] = []
        for ref in sorted(set(self.refs) | set(after.refs)):
            old, new = self.refs.get(ref), after.refs.get(ref)
            if old != new:
                found.append(f"ref {ref} {_short(old)} -> {_short(new)}")
        if self.head != after.head:
            found.append(f"HEAD {self.head} -> {after.head}")
        if self.status != after.status:
            found.append("the checkout's files or index changed (git status differs)")
        for label in sorted(set(self.files) | set(after.files)):
            old, new = self.files.get(label), after.files.get(label)
            if old != new:
                what = "created" if old is None else "deleted" if new is None else "changed"
                found.append(f"{label} {what}")
        return found


def _short(value: str | None) -> str:
    return value[:12] if value else "(none)"


def take(repo: Path, env: dict[str, str] | None = None) -> Snapshot:
    """Refs, HEAD, the checkout's status (with the content of every file it lists), the control
    files, and the git settings that could make git run a program."""
    gitdir = common_dir(repo)
    listing = git(repo, "for-each-ref", "--format=%(refname) %(objectname)").stdout
    refs = dict(line.split(" ", 1) for line in listing.splitlines() if " " in line)
    head = _read(gitdir / "HEAD")
    status = git(
        repo, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--ignored=no"
    ).stdout
    files: dict[str, str] = {}
    for entry in status.split("\0"):
        # Dirty or untracked files already listed: their content must not change either.
        if len(entry) > 3:
            files[f"checkout file {entry[3:]}"] = _fingerprint(repo / entry[3:])
    for top in GOVERNANCE_DIRS:
        for path in _walk(repo / top):
            rel = path.relative_to(repo).as_posix()
            parts = rel.split("/")
            if parts[0] == ".openloop" and len(parts) > 1 and _local_state(parts[1]):
                continue
            files[f"control file {rel}"] = _fingerprint(path)
    for path in _git_settings(repo, gitdir, env or dict(os.environ)):
        files[f"git setting {path}"] = _fingerprint(path)
    return Snapshot(refs, head, status, {k: v for k, v in files.items() if v is not None})


def restore_refs(repo: Path, before: Snapshot, after: Snapshot) -> list[str]:
    """Put back every ref the agent moved, created or deleted, each only if it still holds the
    value seen after the agent (compare-and-swap). Returns what was put back."""
    restored = []
    for ref in sorted(set(before.refs) | set(after.refs)):
        old, new = before.refs.get(ref), after.refs.get(ref)
        if old == new:
            continue
        args = ["update-ref", "-m", "openloop: undo a change the agent made"]
        if old is None:
            args += ["-d", ref, new or ZERO]
        else:
            args += [ref, old, new or ZERO]
        if git(repo, *args, check=False).returncode == 0:
            restored.append(f"{ref} put back to {_short(old)}" if old else f"{ref} deleted")
    return restored


def _local_state(name: str) -> bool:
    return name in LOCAL_STATE or name.startswith("tasks.json")


def _walk(top: Path):
    if top.is_symlink() or not top.exists():
        if top.is_symlink():
            yield top
        return
    if top.is_file():
        yield top
        return
    for root, dirs, names in os.walk(top):
        for name in sorted(names + [d for d in dirs if (Path(root) / d).is_symlink()]):
            yield Path(root) / name


def _git_settings(repo: Path, gitdir: Path, env: dict[str, str]) -> list[Path]:
    """The files from which git learns to run programs: the repository's config, hooks and
    info/ (attributes, exclude), alternates, and the user's global git config."""
    paths = [gitdir / "config", gitdir / "objects" / "info" / "alternates"]
    worktree_gitdir = repo / ".git"
    if worktree_gitdir.is_file():  # the checkout is itself a worktree: its own config.worktree
        paths.append(worktree_gitdir)
    for folder in (gitdir / "hooks", gitdir / "info"):
        paths.extend(_walk(folder))
        paths.append(folder)
    home = Path(env.get("HOME", "~")).expanduser()
    xdg = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
    paths += [home / ".gitconfig", xdg / "git" / "config", xdg / "git" / "attributes"]
    if env.get("GIT_CONFIG_GLOBAL"):
        paths.append(Path(env["GIT_CONFIG_GLOBAL"]))
    return paths


def _fingerprint(path: Path) -> str | None:
    try:
        if path.is_symlink():
            return "link:" + os.readlink(path)
        if path.is_dir():
            return "dir"
        stat = path.stat()
        if stat.st_size > HASH_LIMIT:
            return f"big:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_mode:o}"
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        return f"{stat.st_mode:o}:{digest}"
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"unreadable:{exc.errno}"


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""
