"""The agent's own repository, and recording what it left there with OpenLoop's own index.

A git worktree shares refs, config and hooks with the user's repository: an agent in one can
move `main`, plant a hook that OpenLoop's next commit runs, or rewrite the config. So the agent
gets a separate repository per attempt, with its own refs, config and hooks (created from no
template), that borrows the user's objects through `objects/info/alternates` (nothing is
copied). OpenLoop never reads the agent's git metadata back: it records the agent's files with
a private index against the user's repository (`record`), and the task branch is then moved by
compare-and-swap in the user's repository. Merges replay a task's change in memory
(`replay_onto`, git merge-tree), so no git work tree of the user's repository is ever handed to
code the agent wrote.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from openloop.adapters.gitops import git, out, tree_of
from openloop.adapters.gitrun import Together, checked
from openloop.errors import GitError

ZERO = "0" * 40


_COMMON_DIR = ("rev-parse", "--git-common-dir")
# One call for both: the last value of each wins, as with `git config user.name`.
_IDENTITY = ("config", "-z", "--get-regexp", r"^user\.(name|email)$")


def common_dir(repo: Path) -> Path:
    """The user's git directory (shared by all its worktrees), absolute."""
    return _absolute(repo, out(repo, *_COMMON_DIR))


def _absolute(repo: Path, answer: str) -> Path:
    path = Path(answer)
    return (path if path.is_absolute() else repo / path).resolve()


def identity_and_gitdir(repo: Path) -> tuple[dict[str, str], Path]:
    """identity(repo) and common_dir(repo), asked side by side."""
    with Together(repo, _IDENTITY, _COMMON_DIR) as asked:
        listing, answer = asked.results()
    return _identity(listing.stdout), _absolute(repo, checked(answer, _COMMON_DIR).stdout.strip())


def make_workspace(
    repo: Path, path: Path, commit: str, branch: str | None = None, gitdir: Path | None = None
) -> None:
    """A fresh repository at `path` with `commit` checked out (on `branch`, or detached).
    `gitdir` is common_dir(repo) when the caller has it already.

    Whatever was at `path` is removed first: a leftover from a killed run, or something the
    agent placed there in advance, must not seed the new attempt."""
    remove_workspace(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Born on the branch: `reset` below creates it at `commit` (no update-ref, no symbolic-ref).
    on_branch = ("--initial-branch", branch) if branch else ()
    git(path.parent, "init", "--quiet", "--template=", *on_branch, str(path))
    objects = path / ".git" / "objects" / "info"
    objects.mkdir(parents=True, exist_ok=True)
    (objects / "alternates").write_text(f"{(gitdir or common_dir(repo)) / 'objects'}\n")
    if not branch:
        git(path, "update-ref", "--no-deref", "HEAD", commit)
    git(path, "reset", "--quiet", "--hard", commit)


def remove_workspace(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


def prune_old_worktrees(repo: Path) -> None:
    """`git worktree prune`, for the worktrees OpenLoop versions before the separate workspaces
    made. Not run where it has provably nothing to prune: a plain repository (its git directory
    is `.git` there, no GIT_DIR or GIT_COMMON_DIR set) that has no `worktrees` folder."""
    dotgit = repo / ".git"
    if (
        not any(name in os.environ for name in ("GIT_DIR", "GIT_COMMON_DIR"))
        and dotgit.is_dir()
        and not dotgit.is_symlink()
        and (dotgit / "HEAD").is_file()
        and not os.path.lexists(dotgit / "commondir")
        and not os.path.lexists(dotgit / "worktrees")
    ):
        return
    git(repo, "worktree", "prune", check=False)


def identity(repo: Path) -> dict[str, str]:
    """Author and committer for OpenLoop's commits: the user's own identity from their config
    (read before the agent runs), else OpenLoop's."""
    return _identity(git(repo, *_IDENTITY, check=False).stdout)


def _identity(listing: str) -> dict[str, str]:
    values = dict(item.partition("\n")[::2] for item in listing.split("\0") if item)
    name = values.get("user.name", "").strip() or "OpenLoop"
    email = values.get("user.email", "").strip() or "openloop@localhost"
    return {
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_COMMITTER_NAME": name,
        "GIT_COMMITTER_EMAIL": email,
    }


def record(
    repo: Path,
    workspace: Path,
    base: str,
    message: str,
    who: dict[str, str],
    gitdir: Path | None = None,
) -> str:
    """Commit the files of `workspace` as a child of `base`, in the user's repository, using a
    private index: the agent's refs, index, config and hooks play no part. Returns the commit
    (equal to `base` when nothing changed). `gitdir`: common_dir(repo), read before the agent
    ran, when the caller has it."""
    gitdir = gitdir or common_dir(repo)
    with tempfile.TemporaryDirectory(prefix="openloop-index-") as tmp:
        env = {"GIT_INDEX_FILE": os.path.join(tmp, "index"), **who}
        where = ("--git-dir", str(gitdir), "--work-tree", str(workspace))
        git(repo, *where, "read-tree", base, env=env)
        git(repo, *where, "add", "--all", "--", ".", env=env)
        tree = git(repo, *where, "write-tree", env=env).stdout.strip()
    if tree == tree_of(repo, base):
        return base
    return git(repo, "commit-tree", tree, "-p", base, input=message, env=who).stdout.strip()


def set_branch(repo: Path, branch: str, new: str, old: str | None) -> bool:
    """Point `branch` at `new` only if it still is `old` (None: only if it does not exist)."""
    proc = git(
        repo,
        "update-ref",
        "-m",
        "openloop: task branch",
        f"refs/heads/{branch}",
        new,
        old or ZERO,
        check=False,
    )
    return proc.returncode == 0


def replay_onto(repo: Path, head: str, onto: str, who: dict[str, str]) -> tuple[str | None, str]:
    """The change of `head` (since its merge base with `onto`) as one commit on top of `onto`,
    computed in memory with `git merge-tree` (no work tree, no hooks, no checkout).

    Returns (commit, "") or (None, why: the conflict)."""
    # git computes the merge base of `onto` and `head` itself (git >= 2.38).
    proc = git(
        repo,
        "merge-tree",
        "--write-tree",
        "--name-only",
        "--no-messages",
        onto,
        head,
        check=False,
    )
    lines = proc.stdout.splitlines()
    if proc.returncode == 1:
        files = ", ".join(lines[1:6])
        return None, f"conflicts with the default branch: {files or 'merge conflict'}"
    if proc.returncode != 0 or not lines:
        raise GitError(f"git merge-tree failed: {(proc.stderr or proc.stdout).strip()[:200]}")
    message = out(repo, "log", "-1", "--format=%B", head)
    commit = git(repo, "commit-tree", lines[0], "-p", onto, input=message, env=who)
    return commit.stdout.strip(), ""
