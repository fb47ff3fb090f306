"""git, always as an argv list (titles, refs and branch names are data, never shell).

Every call runs with hooks and program-running settings switched off: the agent can write the
user's `.git/hooks` and `.git/config` (it writes anywhere the user can), and nothing it planted
may run when OpenLoop commits, merges or reads a repository. The agent itself works in a
repository of its own (`make_workspace`); OpenLoop records its files with its own index.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import NamedTuple

from openloop.adapters.gitrun import NO_PROGRAMS, QUIET_ENV, SAFE_ARGS, Together, checked, git
from openloop.errors import GitError, InputError


def out(repo: Path, *args: str) -> str:
    return git(repo, *args).stdout.strip()


def work_tree_root(path: Path) -> Path:
    """The top of the git work tree containing `path`, or InputError saying why not."""
    if not path.exists():
        raise InputError(f"path '{path}' does not exist")
    if not path.is_dir():
        raise InputError(f"path '{path}' is not a directory")
    proc = git(path, "rev-parse", "--is-inside-work-tree", "--show-toplevel", check=False)
    lines = proc.stdout.splitlines()  # a path may contain spaces
    if proc.returncode != 0 or not lines or lines[0] != "true":
        raise InputError(
            f"path '{path}' is not inside a git work tree (run 'git init' there first)"
        )
    return Path(lines[1]).resolve()


def default_branch(repo: Path, configured: str | None = None) -> str:
    """The branch tasks start from and merge into: the pinned or configured one, else origin's
    HEAD, else main/master if one exists. Never "whatever is checked out": a user working on a
    feature branch would get the agent's work merged into it."""
    if configured:
        return configured
    proc = git(repo, "symbolic-ref", "--quiet", "--short", "refs/remotes/origin/HEAD", check=False)
    if proc.returncode == 0 and proc.stdout.strip():
        return proc.stdout.strip().split("/", 1)[-1]
    for name in ("main", "master"):
        if ref_exists(repo, f"refs/heads/{name}"):
            return name
    raise GitError(
        f"cannot tell the default branch of {repo}: set runtime.defaultBranch in "
        ".openloop/project.json"
    )


def branch_to_pin(repo: Path, configured: str | None = None) -> str | None:
    """The branch to pin when a project is linked: as default_branch, but at that moment (the
    user is there and is shown the choice) the checked-out branch is a fair answer too."""
    try:
        return default_branch(repo, configured)
    except GitError:
        pass
    proc = git(repo, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None


def ref_exists(repo: Path, ref: str) -> bool:
    return git(repo, "rev-parse", "--verify", "--quiet", ref, check=False).returncode == 0


def ref_value(repo: Path, ref: str) -> str | None:
    """What `ref` holds, None when it does not exist."""
    proc = git(repo, "rev-parse", "--verify", "--quiet", ref, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def rev_parse(repo: Path, ref: str) -> str:
    return out(repo, "rev-parse", "--verify", f"{ref}^{{commit}}")


def name_status(repo: Path, base: str, head: str) -> list[tuple[str, str, str | None]]:
    """(status letter, path, old path for renames/copies) for every change base..head."""
    raw = git(repo, "diff", "--name-status", "-z", "-M", *NO_PROGRAMS, base, head).stdout
    parts = raw.split("\0")
    changes: list[tuple[str, str, str | None]] = []
    i = 0
    while i < len(parts) - 1:
        status = parts[i]
        letter = status[:1]
        if letter in ("R", "C"):
            changes.append((letter, parts[i + 2], parts[i + 1]))
            i += 3
        else:
            changes.append((letter, parts[i + 1], None))
            i += 2
    return changes


SYMLINK_MODE = "120000"
# Longer than any link a file system creates (Linux refuses 4096 bytes and more): such a "link"
# can only be a crafted blob, and is not read into memory.
MAX_LINK_TARGET = 4096


def changed_symlinks(repo: Path, base: str, head: str) -> list[tuple[str, str | None]]:
    """(path, target) for every symlink added or changed base..head: mode 120000 on the new
    side, the target being the link blob's text in git (the link on disk is never followed or
    read: the checks still run in the worktree after the commit, and may change it). target is
    None for a blob too long to be a link target. A renamed link is judged afresh at its new
    place. Undecodable bytes become U+FFFD, which never turns into '/' or '..'. (An iteration
    has diff_summary's links already: link_targets of those.)"""
    return link_targets(repo, diff_summary(repo, base, head).links)


def link_targets(repo: Path, links: list[tuple[str, str]]) -> list[tuple[str, str | None]]:
    """(path, target) for each (path, link blob): see changed_symlinks."""
    if not links:
        return []
    sizes = git(
        repo, "cat-file", "--batch-check=%(objectsize)", input="".join(f"{b}\n" for _, b in links)
    ).stdout.splitlines()
    found: list[tuple[str, str | None]] = []
    for (path, blob), size in zip(links, sizes, strict=True):
        if not size.isdigit() or int(size) >= MAX_LINK_TARGET:
            found.append((path, None))
            continue
        found.append((path, git(repo, "cat-file", "blob", blob, errors="replace").stdout))
    return found


class DiffSummary(NamedTuple):
    changes: list[tuple[str, str, str | None]]  # as name_status
    lines: int
    digest: str | None  # of the patch; None when nothing changed
    links: list[tuple[str, str]]  # (path, blob) of each link added or changed: link_targets


def diff_summary(repo: Path, base: str, head: str) -> DiffSummary:
    """What the attempt's judge needs of base..head, from diffs run side by side: --raw gives
    the statuses and paths --name-status gives, and the modes that tell links (a renamed link
    is judged as added, at its new path, as changed_symlinks does); the --numstat that follows
    it the same counts; the patch its hash. The --stat a review shows is asked too, and kept
    (see diffstat)."""
    summary = ("diff", "--raw", "--numstat", "-z", "-M", "--no-abbrev", *NO_PROGRAMS, base, head)
    with Together(repo, summary, _patch_args(base, head), _stat_args(base, head)) as asked:
        try:
            raw = checked(asked.result(0), summary).stdout
        except UnicodeDecodeError:  # a path that is not UTF-8: fail as the separate calls fail
            name_status(repo, base, head)
            raise
        changes, total, links = _parse_summary(raw)
        if not changes:
            return DiffSummary(changes, total, None, links)
        digest = _patch_hash(checked(asked.result(1), _patch_args(base, head)).stdout)
        stat = asked.result(2)
        if stat.returncode == 0 and _object_id(head):
            _keep((str(repo), base, "--stat", head), stat.stdout.rstrip())
    return DiffSummary(changes, total, digest, links)


def _parse_summary(
    raw: str,
) -> tuple[list[tuple[str, str, str | None]], int, list[tuple[str, str]]]:
    parts = raw.split("\0")
    changes: list[tuple[str, str, str | None]] = []
    links: list[tuple[str, str]] = []
    total, i = 0, 0
    while i < len(parts) - 1:
        if parts[i].startswith(":"):  # ":<modes> <blobs> <status>", then one or two paths
            fields = parts[i][1:].split()
            letter = fields[-1][:1]
            if letter in ("R", "C"):
                changes.append((letter, parts[i + 2], parts[i + 1]))
                i += 3
            else:
                changes.append((letter, parts[i + 1], None))
                i += 2
            if len(fields) == 5 and fields[1] == SYMLINK_MODE and letter != "D":
                links.append((changes[-1][1], fields[3]))
            continue
        # "<added>\t<deleted>\t<path>", or "...\t" then two paths for a rename or copy
        added, deleted, path = parts[i].split("\t", 2)
        total += (int(added) if added.isdigit() else 0) + (int(deleted) if deleted.isdigit() else 0)
        i += 1 if path else 3
    return changes, total, links


def _patch_args(base: str, head: str) -> tuple[str, ...]:
    return ("diff", "--binary", "-M", *NO_PROGRAMS, base, head)


def _patch_hash(patch: str) -> str:
    import hashlib

    return hashlib.sha256(patch.encode()).hexdigest()


def diffstat(repo: Path, base: str, head: str) -> str:
    key = (str(repo), base, "--stat", head)
    if key in _FIXED:
        return _FIXED[key]  # type: ignore[return-value]
    return git(repo, *_stat_args(base, head)).stdout.rstrip()


def _stat_args(base: str, head: str) -> tuple[str, ...]:
    return ("diff", "--stat", "-M", *NO_PROGRAMS, base, head)


# --- advancing the default branch ---------------------------------------------------------------


def checked_out_in(repo: Path, branch: str) -> Path | None:
    """The worktree (main checkout or other) that has `branch` checked out, if any, counting
    one that is in the middle of rebasing it (git shows those as detached)."""
    current: Path | None = None
    worktrees: list[Path] = []
    for line in git(repo, "worktree", "list", "--porcelain").stdout.splitlines():
        if line.startswith("worktree "):
            current = Path(line.removeprefix("worktree "))
            worktrees.append(current)
        elif line == f"branch refs/heads/{branch}" and current is not None:
            return current
    for tree in worktrees:
        if rebasing(tree) == f"refs/heads/{branch}":
            return tree
    return None


def rebasing(worktree: Path) -> str | None:
    """The branch a rebase in progress in `worktree` will move when it finishes, if any."""
    for state in ("rebase-merge", "rebase-apply"):
        proc = git(worktree, "rev-parse", "--git-path", f"{state}/head-name", check=False)
        path = Path(proc.stdout.strip())
        if proc.returncode == 0 and not path.is_absolute():
            path = worktree / path
        if proc.returncode == 0 and path.is_file():
            return path.read_text().strip()
    return None


def is_ancestor(repo: Path, ancestor: str, descendant: str) -> bool:
    proc = git(repo, "merge-base", "--is-ancestor", ancestor, descendant, check=False)
    return proc.returncode == 0


def advance_branch(repo: Path, branch: str, old: str, new: str) -> str | None:
    """Move `branch` from `old` to `new` (a fast-forward) without ever mixing up a checkout.

    Returns None on success, or why it could not be done now. Where the branch is checked out,
    it moves exactly as `git merge --ff-only` there would (git refuses if local changes would
    be overwritten, so HEAD, index and files never disagree); elsewhere the ref moves with a
    compare-and-swap, so a concurrent push or commit is never overwritten.
    """
    if not is_ancestor(repo, old, new):
        return f"{new[:12]} does not fast-forward {branch}"
    checkout = checked_out_in(repo, branch)
    if checkout is None:
        proc = git(
            repo,
            "update-ref",
            "-m",
            "openloop: promote",
            f"refs/heads/{branch}",
            new,
            old,
            check=False,
        )
        return None if proc.returncode == 0 else f"{branch} moved meanwhile"
    if rebasing(checkout):
        return f"checkout busy: a rebase is in progress in {checkout}"
    head = git(checkout, "rev-parse", "HEAD", check=False).stdout.strip()
    if head != old:
        return f"{branch} moved meanwhile"
    proc = git(checkout, "merge", "--ff-only", "--quiet", new, check=False)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        return f"checkout busy: {detail[0] if detail else 'git merge --ff-only refused'}"
    return None


def delete_branch(repo: Path, branch: str) -> None:
    git(repo, "branch", "-D", branch, check=False)


# Answers about a commit named by its full object id never change (the id is a hash of the
# content): they are kept for the process, where an iteration asks some twice (the policy at the
# base commit, the base commit's tree). Answers that come from a failed git call are not kept.
_FIXED: dict[tuple[str, ...], str | None] = {}
_FIXED_LIMIT = 256


def _object_id(name: str) -> bool:
    return len(name) in (40, 64) and all(c in "0123456789abcdef" for c in name)


def _keep(key: tuple[str, ...], value: str | None) -> str | None:
    if _object_id(key[1]):
        if len(_FIXED) >= _FIXED_LIMIT:
            _FIXED.clear()
        _FIXED[key] = value
    return value


def tree_of(repo: Path, commit: str) -> str:
    key = (str(repo), commit, "^{tree}")
    if key in _FIXED:
        return _FIXED[key]  # type: ignore[return-value]
    return _keep(key, out(repo, "rev-parse", f"{commit}^{{tree}}"))  # type: ignore[return-value]


def regular_file_at(repo: Path, commit: str, path: str, limit: int = 200_000) -> str | None:
    """The text of `path` in `commit` if it is a regular file there (not a link), else None."""
    key = (str(repo), commit, path, str(limit))
    if key in _FIXED:
        return _FIXED[key]
    proc = git(repo, "ls-tree", commit, "--", path, check=False)
    listing = proc.stdout.split(maxsplit=3)
    if len(listing) < 4 or listing[0] not in ("100644", "100755") or listing[1] != "blob":
        return _keep(key, None) if proc.returncode == 0 else None
    blob = git(repo, "cat-file", "blob", listing[2], check=False)
    return _keep(key, blob.stdout[:limit]) if blob.returncode == 0 else None


def is_file_at(repo: Path, commit: str, path: str) -> bool:
    """Whether `path` is a file (a blob: regular, executable or link) in `commit`'s tree."""
    listing = git(repo, "ls-tree", "-z", commit, "--", path, check=False).stdout
    for entry in listing.split("\0"):
        meta, _, name = entry.partition("\t")
        if name == path and meta.split(" ")[1:2] == ["blob"]:
            return True
    return False


def files_at(repo: Path, commit: str, paths: list[str]) -> set[str]:
    """The `paths` that are files in `commit`'s tree: is_file_at for all of them in one git call
    (ls-tree lists the union of what each path alone lists). A path ls-tree refuses (outside
    the repository, say) fails the whole call: then each path is asked alone, as before."""
    wanted = list(dict.fromkeys(paths))
    if not wanted:
        return set()
    proc = git(repo, "ls-tree", "-z", commit, "--", *wanted, check=False)
    if proc.returncode != 0:
        return {path for path in wanted if is_file_at(repo, commit, path)}
    found = set()
    for entry in proc.stdout.split("\0"):
        meta, _, name = entry.partition("\t")
        if meta.split(" ")[1:2] == ["blob"]:
            found.add(name)
    return found.intersection(wanted)


def show_diff(
    repo: Path, base: str, head: str, *, color: str | None = None, stat: bool = False
) -> int:
    """`git diff base head` for a person: stdout is inherited, so git picks its own pager and
    colours (the user's pager settings apply). The content is the agent's: hooks, external diff
    drivers and textconv filters are off, as on every other call."""
    args = ["git", "-C", str(repo), *SAFE_ARGS, "diff", *NO_PROGRAMS, "-M"]
    if color in ("always", "never"):
        args.append(f"--color={color}")
    if stat:
        args.append("--stat")
    try:
        return subprocess.run(
            [*args, base, head, "--"], env={**os.environ, **QUIET_ENV}, check=False
        ).returncode
    except FileNotFoundError:
        raise GitError("git is not installed or not on PATH") from None
