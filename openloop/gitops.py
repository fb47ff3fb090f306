"""git, always as an argv list (titles, refs and branch names are data, never shell)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from openloop.errors import GitError, InputError

# Our own commits must not depend on the user's signing setup or hooks prompting for input.
_QUIET_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0"}


def git(
    repo: Path,
    *args: str,
    check: bool = True,
    input: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **_QUIET_ENV, **(env or {})}
    try:
        proc = subprocess.run(
            ["git", "-C", str(repo), *args],
            capture_output=True,
            text=True,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            env=full_env,
            timeout=timeout,
        )
    except FileNotFoundError:
        raise GitError("git is not installed or not on PATH") from None
    except subprocess.TimeoutExpired:
        raise GitError(f"git {' '.join(args[:2])} timed out after {timeout:.0f}s") from None
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise GitError(
            f"git {' '.join(args[:3])} failed: {detail[-1] if detail else proc.returncode}"
        )
    return proc


def out(repo: Path, *args: str) -> str:
    return git(repo, *args).stdout.strip()


def work_tree_root(path: Path) -> Path:
    """The top of the git work tree containing `path`, or InputError saying why not."""
    if not path.exists():
        raise InputError(f"path '{path}' does not exist")
    if not path.is_dir():
        raise InputError(f"path '{path}' is not a directory")
    proc = git(path, "rev-parse", "--is-inside-work-tree", "--show-toplevel", check=False)
    lines = proc.stdout.split()
    if proc.returncode != 0 or not lines or lines[0] != "true":
        raise InputError(
            f"path '{path}' is not inside a git work tree (run 'git init' there first)"
        )
    return Path(lines[1]).resolve()


def default_branch(repo: Path, configured: str | None = None) -> str:
    """The branch tasks start from and merge into.

    Configured value first; then origin's HEAD; then the branch checked out in the main tree;
    then main/master if one exists.
    """
    if configured:
        return configured
    proc = git(repo, "symbolic-ref", "--quiet", "--short", "refs/remotes/origin/HEAD", check=False)
    if proc.returncode == 0 and proc.stdout.strip():
        return proc.stdout.strip().split("/", 1)[-1]
    proc = git(repo, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    if proc.returncode == 0 and proc.stdout.strip():
        return proc.stdout.strip()
    for name in ("main", "master"):
        if ref_exists(repo, f"refs/heads/{name}"):
            return name
    raise GitError(f"cannot tell the default branch of {repo}; set runtime.defaultBranch")


def ref_exists(repo: Path, ref: str) -> bool:
    return git(repo, "rev-parse", "--verify", "--quiet", ref, check=False).returncode == 0


def rev_parse(repo: Path, ref: str) -> str:
    return out(repo, "rev-parse", "--verify", f"{ref}^{{commit}}")


def is_ignored(repo: Path, paths: Sequence[str]) -> set[str]:
    if not paths:
        return set()
    proc = git(repo, "check-ignore", "--stdin", input="\n".join(paths) + "\n", check=False)
    return set(proc.stdout.split("\n")) - {""}
