"""Which repository files the approved commands run or read: those decide whether a check passes.

An agent that can edit `scripts/test.sh` while `bash scripts/test.sh` is the approved test
command can make any change "pass" (`exit 0`). The fixed list of well-known check files in
policy.CHECK_DEFINITIONS cannot know a project's own scripts, so every file an approved command
names is protected too: a change to it goes to review, never auto-merge.

This reads the command the way /bin/sh would split it (shlex), without running or expanding
anything. It errs on the side of protecting too much: a token that merely looks like a path is
protected even if it is an argument nothing reads, because the price of a false hit is a human
review and the price of a miss is an agent judging its own change.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Callable, Mapping

# Suffixes of scripts and config files a command may run or read.
SCRIPT_SUFFIXES = (
    ".sh",
    ".bash",
    ".py",
    ".js",
    ".ts",
    ".mjs",
    ".cjs",
    ".mk",
    ".toml",
    ".cfg",
    ".ini",
    ".json",
    ".yaml",
    ".yml",
)
# Options whose value is a file the tool reads (`make -f ci.mk`, `pytest -c cfg/pytest.ini`,
# `--cov-config=.coveragerc`, `pylint --rcfile=x`, `tsc --project tsconfig.build.json`).
_FILE_OPTION = re.compile(
    r"-c|-f|--project|--([a-z0-9]+-)*(config|config-file|configfile|rcfile|settings|file|makefile)"
)
# For a shell, `-c` takes a command line, not a file: that line is read for files in turn.
SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "ash"})
# What separates one simple command from the next in a shell line.
_SEPARATORS = frozenset({"&&", "||", ";", "|", "&", "(", ")", ";;", "|&"})
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_PYTHON = re.compile(r"python[0-9.]*")
_MAX_DEPTH = 3  # sh -c "bash -c '...'" nests; a bound keeps a pathological line cheap


def command_files(
    commands: Mapping[str, str | None], exists: Callable[[str], bool]
) -> dict[str, str]:
    """Each repository file an approved command names, with the reason a change to it goes to
    review ("scripts/test.sh is run or read by the approved test command ...").

    `commands` is keyed by the command's name (`test`, or trust.repo_commands' `validation.test`
    and `agent.command`); `exists(path)` says whether a repository-relative path is a file in the
    repository, for tokens that do not look like paths (`run-tests`). Paths are relative to the
    repository root; absolute paths and paths escaping it are left out (not ours to protect).
    A command shlex cannot split (an unclosed quote) contributes nothing: it fails when run too.
    """
    found: dict[str, str] = {}
    for key, command in commands.items():
        if not command:
            continue
        name = key.removeprefix("validation.").removesuffix(".command")
        for path in _files_of(command, exists, depth=0):
            found.setdefault(
                path,
                f"{path} is run or read by the approved {name} command ({command!r}): "
                "a change to it goes to review",
            )
    return found


def _split(command: str) -> list[str] | None:
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    # No comments: shlex would end a word at a '#' inside it (`-k a#b x.py` would lose x.py);
    # reading a real comment's words as paths only protects more.
    lexer.commenters = ""
    try:
        return list(lexer)
    except ValueError:  # "No closing quotation", "No escaped character"
        return None


def _segments(tokens: list[str]) -> list[list[str]]:
    """The simple commands of a shell line: `a && b | c` gives [a], [b], [c]."""
    segments: list[list[str]] = [[]]
    for token in tokens:
        if token in _SEPARATORS or (token and set(token) <= set("();&|")):
            segments.append([])
        else:
            segments[-1].append(token)
    return [s for s in segments if s]


def _files_of(command: str, exists: Callable[[str], bool], *, depth: int) -> list[str]:
    tokens = _split(command)
    if tokens is None or depth > _MAX_DEPTH:
        return []
    files: list[str] = []
    cwd: str | None = ""  # relative to the repository root; None once a `cd` leaves it
    for words in _segments(tokens):
        # Leading VAR=value assignments belong to the command; their values may be paths.
        while words and _ASSIGNMENT.match(words[0]):
            files += _candidate(words[0].split("=", 1)[1], cwd, exists, named=False)
            words = words[1:]
        if not words:
            continue
        program = posixpath.basename(words[0])
        if program == "cd":
            cwd = _join(cwd, words[1]) if len(words) > 1 else None
            continue
        files += _candidate(words[0], cwd, exists, named=False)
        expect_file = expect_script = expect_code = False
        for word in words[1:]:
            if expect_code:  # python -c 'code': a program text, not a file
                expect_code = False
                continue
            if expect_script:
                files += _files_of(word, exists, depth=depth + 1)
                expect_script = False
                continue
            if expect_file:
                files += _candidate(word, cwd, exists, named=True)
                expect_file = False
                continue
            if word.startswith("-"):
                option, eq, value = word.partition("=")
                if program in SHELLS and not eq and re.fullmatch(r"-[a-z]*c[a-z]*", word):
                    expect_script = True  # sh -c 'line', bash -lc 'line'
                elif word == "-c" and _PYTHON.fullmatch(program):
                    expect_code = True
                elif _FILE_OPTION.fullmatch(option):
                    if eq:
                        files += _candidate(value, cwd, exists, named=True)
                    else:
                        expect_file = True
                elif eq:
                    files += _candidate(value, cwd, exists, named=False)  # --cov-config=x.toml
                continue
            files += _candidate(word, cwd, exists, named=False)
    return files


def _candidate(
    token: str, cwd: str | None, exists: Callable[[str], bool], *, named: bool
) -> list[str]:
    """`token` as a repository path if it is one: `named` (an option's file), path-like (a `/`
    or a known suffix), or an existing file. Empty when it is none or lies outside the repo."""
    if not token or cwd is None or "://" in token or token.startswith(("~", "$")):
        return []
    path = _join(cwd, token)
    if not path:
        return []
    if named or "/" in token or token.endswith(SCRIPT_SUFFIXES) or exists(path):
        return [path]
    return []


def _join(cwd: str | None, token: str) -> str | None:
    """`token` relative to the repository root ("" for the root itself), or None when it is
    outside: absolute, or escaping with `..`."""
    if cwd is None or token.startswith("/"):
        return None
    path = posixpath.normpath(posixpath.join(cwd, token))
    if path == ".." or path.startswith("../"):
        return None
    return "" if path == "." else path
