"""Issue and pull/merge request references for `openloop task add --from-ref REF`.

Parsing is strict on purpose: owner, repository and group names end up as argv items for `gh` or
`glab`, so anything outside the forges' own name rules is rejected rather than escaped.
Fetching is best-effort enrichment: when the CLI is missing, unauthenticated, offline or slow, the
caller falls back to `fallback_title` and the task is still created.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from openloop.errors import InputError
from openloop.text import clean_line, clean_text

BODY_LIMIT = 20_000
TRUNCATED_NOTE = "\n\n[truncated by openloop]"

GITHUB_HOSTS = ("github.com", "www.github.com")
DEFAULT_HOST = {"github": "github.com", "gitlab": "gitlab.com"}

# GitHub: owners are alphanumerics and inner hyphens (max 39); repositories add '.' and '_'.
_GH_OWNER = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,37}[A-Za-z0-9])?")
_GH_REPO = re.compile(r"[A-Za-z0-9._-]{1,100}")
# GitLab path segments: letters, digits, '_', '-', '.'; never starting with '-' (argv safety).
_GL_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST = re.compile(rf"{_LABEL}(?:\.{_LABEL})+(?::[0-9]{{1,5}})?")
_NUMBER = re.compile(r"[1-9][0-9]{0,9}")
_SHORT = re.compile(
    r"(?:(?P<forge>github|gitlab):)?(?P<repo>[^#!\s]+)(?P<sep>[#!])(?P<number>[^\s]+)"
)


@dataclass(frozen=True)
class IssueRef:
    forge: str  # "github" | "gitlab"
    repo: str  # "owner/repo" or "group/subgroup/project"
    number: int
    kind: str  # "issue" | "pull" | "merge_request"
    raw: str
    host: str = ""  # empty means the forge's public host; kept for self-hosted GitLab

    def url(self) -> str:
        host = self.host or DEFAULT_HOST[self.forge]
        if self.forge == "github":
            section = "pull" if self.kind == "pull" else "issues"
            return f"https://{host}/{self.repo}/{section}/{self.number}"
        section = "merge_requests" if self.kind == "merge_request" else "issues"
        return f"https://{host}/{self.repo}/-/{section}/{self.number}"

    def short(self) -> str:
        sep = "!" if self.kind == "merge_request" else "#"
        return f"{self.repo}{sep}{self.number}"

    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", f"{self.repo}-{self.number}".lower()).strip("-")


@dataclass(frozen=True)
class FetchedIssue:
    """An issue's title and body, cleaned of control characters. The issue's author is not the
    user and cannot be asked to retype, so nothing is refused: `title_notes`/`body_notes` say
    what was removed, for the caller to tell the user when it uses that part."""

    title: str
    body: str
    title_notes: tuple[str, ...] = field(default=())
    body_notes: tuple[str, ...] = field(default=())


def _bad(raw: str) -> InputError:
    return InputError(f"--ref: '{raw}' is not a GitHub/GitLab issue URL or owner/repo#N")


def _github_repo(owner: str, name: str) -> str | None:
    if _GH_OWNER.fullmatch(owner) and _GH_REPO.fullmatch(name) and name not in (".", ".."):
        return f"{owner}/{name}"
    return None


def _gitlab_repo(segments: list[str]) -> str | None:
    if len(segments) < 2 or not all(_GL_SEGMENT.fullmatch(s) for s in segments):
        return None
    return "/".join(segments)


def _number(text: str) -> int | None:
    return int(text) if _NUMBER.fullmatch(text) else None


def _parse_url(raw: str, text: str) -> IssueRef | None:
    if "://" not in text:
        text = "https://" + text  # tolerate a pasted "github.com/o/r/issues/1"
    parts = urlsplit(text)
    host = (parts.netloc or "").lower()
    if parts.scheme not in ("http", "https") or not _HOST.fullmatch(host):
        return None
    segments = [s for s in parts.path.split("/") if s]
    if host in GITHUB_HOSTS:
        # Extra trailing segments are tolerated: `/pull/12/files`, `/pull/12/commits`.
        if len(segments) < 4 or segments[2] not in ("issues", "pull"):
            return None
        repo, number = _github_repo(segments[0], segments[1]), _number(segments[3])
        if repo is None or number is None:
            return None
        kind = "pull" if segments[2] == "pull" else "issue"
        return IssueRef("github", repo, number, kind, raw)
    # Any host with GitLab's `/-/` separator is taken to be GitLab, self-hosted included.
    if "-" not in segments:
        return None
    dash = segments.index("-")
    tail = segments[dash + 1 :]
    if len(tail) < 2 or tail[0] not in ("issues", "merge_requests"):
        return None
    repo, number = _gitlab_repo(segments[:dash]), _number(tail[1])
    if repo is None or number is None:
        return None
    kind = "merge_request" if tail[0] == "merge_requests" else "issue"
    return IssueRef("gitlab", repo, number, kind, raw, "" if host == "gitlab.com" else host)


def _parse_short(raw: str, text: str) -> IssueRef | None:
    match = _SHORT.fullmatch(text)
    if not match:
        return None
    forge = match["forge"] or "github"
    number = _number(match["number"])
    segments = match["repo"].split("/")
    if number is None:
        return None
    if forge == "github":
        repo = _github_repo(*segments) if len(segments) == 2 else None
        if repo is None or match["sep"] != "#":
            return None
        return IssueRef("github", repo, number, "issue", raw)
    repo = _gitlab_repo(segments)
    if repo is None:
        return None
    kind = "merge_request" if match["sep"] == "!" else "issue"
    return IssueRef("gitlab", repo, number, kind, raw)


def parse_ref(raw: str) -> IssueRef:
    text = raw.strip()
    if not text or any(c.isspace() or ord(c) < 32 for c in text):
        raise _bad(raw)
    bare_hosts = tuple(f"{host}/" for host in (*GITHUB_HOSTS, "gitlab.com"))
    looks_like_url = "://" in text or text.lower().startswith(bare_hosts)
    ref = _parse_url(text, text) if looks_like_url else _parse_short(text, text)
    if ref is None:
        raise _bad(raw)
    return ref


def fallback_title(ref: IssueRef) -> str:
    label = {"issue": "Issue", "pull": "Pull request", "merge_request": "Merge request"}[ref.kind]
    return f"{label} {ref.short()}"


def _fetch_argv(ref: IssueRef, tool: str) -> list[str]:
    number = str(ref.number)
    if ref.forge == "github":
        command = "pr" if ref.kind == "pull" else "issue"
        return [tool, command, "view", number, "--repo", ref.repo, "--json", "title,body"]
    command = "mr" if ref.kind == "merge_request" else "issue"
    # glab accepts a full URL for --repo, which is how a self-hosted instance is named.
    repo = f"https://{ref.host}/{ref.repo}" if ref.host else ref.repo
    return [tool, command, "view", number, "--repo", repo, "--output", "json"]


def _to_issue(data: Any) -> FetchedIssue | None:
    if not isinstance(data, dict):
        return None
    title = data.get("title")
    # gh calls it "body"; glab returns GitLab's API object, where it is "description".
    body = data.get("body")
    if body is None:
        body = data.get("description")
    if not isinstance(title, str):
        return None
    title, title_controls = clean_line(title)
    if not title:
        return None
    if not isinstance(body, str):
        body = ""
    body, body_controls = clean_text(body)
    if len(body) > BODY_LIMIT:
        body = body[:BODY_LIMIT] + TRUNCATED_NOTE
    return FetchedIssue(
        title=title,
        body=body,
        title_notes=_note("title", title_controls),
        body_notes=_note("body", body_controls),
    )


def _note(what: str, controls: list[str]) -> tuple[str, ...]:
    if not controls:
        return ()
    return (
        f"note: the fetched {what} contained control characters ({', '.join(controls)}); "
        f"they were removed{' (line breaks became spaces)' if what == 'title' else ''}",
    )


def fetch_tool(
    ref: IssueRef, which: Callable[[str], str | None] = shutil.which
) -> tuple[str, bool]:
    """The CLI that fetches `ref` ('gh' or 'glab') and whether it is on PATH."""
    name = "gh" if ref.forge == "github" else "glab"
    return name, which(name) is not None


def fetch_issue(
    ref: IssueRef,
    *,
    run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run,
    which: Callable[[str], str | None] = shutil.which,
    timeout: float = 15,
) -> FetchedIssue | None:
    """Title and body via `gh`/`glab`, or None when that is not possible for any reason."""
    tool = which("gh" if ref.forge == "github" else "glab")
    if not tool:
        return None
    # Neither CLI may stop to ask a question: stdin is closed and prompts are switched off.
    env = {**os.environ, "GH_PROMPT_DISABLED": "1", "GH_NO_UPDATE_NOTIFIER": "1", "NO_PROMPT": "1"}
    try:
        result = run(
            _fetch_argv(ref, tool),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=timeout,
            check=False,
            env=env,
        )
        if result.returncode != 0:
            return None
        return _to_issue(json.loads(result.stdout))
    except (OSError, subprocess.SubprocessError, ValueError, TypeError, AttributeError):
        # Not installed after all, killed by the timeout, garbage on stdout, or an odd result
        # object: all mean "no details", never a failed `task add`.
        return None
