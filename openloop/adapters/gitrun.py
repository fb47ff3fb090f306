"""Running git: one call (`git`), or several independent ones side by side (`Together`).

Every call runs with hooks and program-running settings switched off (see gitops.py for why).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from openloop.adapters.popen import Popen
from openloop.errors import GitError

# Our own commits must not depend on the user's signing setup or hooks prompting for input.
QUIET_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0"}
# Settings that make git run a program or read from one: forced off on every call, whatever a
# repository's config (or a planted global one) says. Diffs also pass --no-ext-diff and
# --no-textconv. Filter drivers named by .gitattributes stay the user's own config: a change to
# .gitattributes is protected by policy, and a changed config is caught by the run's guard.
SAFE_CONFIG = (
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "core.untrackedCache=false",
    "commit.gpgsign=false",
    "tag.gpgsign=false",
    "protocol.ext.allow=never",
)
SAFE_ARGS = tuple(arg for item in SAFE_CONFIG for arg in ("-c", item))
NO_PROGRAMS = ("--no-ext-diff", "--no-textconv")


def git(
    repo: Path,
    *args: str,
    check: bool = True,
    input: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    errors: str = "strict",
) -> subprocess.CompletedProcess[str]:
    return _Call(repo, args, input, env, timeout, errors).result(check)


class Together:
    """Independent git calls that only read, started at once so that they run side by side
    (and beside the caller's own work until it asks for the results); each result is what
    git(check=False) returns for it (check it with `checked`). Use as a context manager:
    calls not collected are stopped on leaving."""

    def __init__(self, repo: Path, *calls: tuple[str, ...]) -> None:
        self.started: list[_Call] = []
        try:
            for args in calls:
                self.started.append(_Call(repo, args))
        except BaseException:
            self.__exit__()
            raise

    def results(self) -> list[subprocess.CompletedProcess[str]]:
        return [call.result(check=False) for call in self.started]

    def result(self, index: int) -> subprocess.CompletedProcess[str]:
        return self.started[index].result(check=False)

    def __enter__(self) -> Together:
        return self

    def __exit__(self, *_exc) -> None:
        for call in self.started:
            call.discard()


def checked(
    proc: subprocess.CompletedProcess[str], args: tuple[str, ...]
) -> subprocess.CompletedProcess[str]:
    """proc, or the GitError git(*args) raises when the call failed."""
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise GitError(
            f"git {' '.join(args[:3])} failed: {detail[-1] if detail else proc.returncode}"
        )
    return proc


class _Call:
    """One git process: started on creation, its output collected by result() (as
    subprocess.run with capture_output, text and a timeout would)."""

    def __init__(
        self,
        repo: Path,
        args: tuple[str, ...],
        input: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 120,
        errors: str = "strict",
    ) -> None:
        self.args, self.input, self.timeout = args, input, timeout
        self.argv = ["git", "-C", str(repo), *SAFE_ARGS, *args]
        try:
            self.proc: Popen | None = Popen(
                self.argv,
                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                errors=errors,
                env={**os.environ, **QUIET_ENV, **(env or {})},
            )
        except FileNotFoundError:
            raise GitError("git is not installed or not on PATH") from None

    def result(self, check: bool) -> subprocess.CompletedProcess[str]:
        proc, self.proc = self.proc, None
        assert proc is not None
        with proc:
            try:
                stdout, stderr = proc.communicate(self.input, timeout=self.timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise GitError(
                    f"git {' '.join(self.args[:2])} timed out after {self.timeout:.0f}s"
                ) from None
            except BaseException:
                proc.kill()
                raise
        done = subprocess.CompletedProcess(self.argv, proc.poll(), stdout, stderr)
        return checked(done, self.args) if check else done

    def discard(self) -> None:
        """Stop and reap a call whose result nobody will collect (another call failed)."""
        if self.proc is not None:
            with self.proc:
                self.proc.kill()
