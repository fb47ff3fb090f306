"""Issue reference parsing and best-effort fetching through gh/glab."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from openloop.adapters.refs import (
    BODY_LIMIT,
    FetchedIssue,
    IssueRef,
    fallback_title,
    fetch_issue,
    parse_ref,
)
from openloop.errors import InputError

# (raw, forge, repo, number, kind, url, short, slug)
GOOD = [
    (
        "https://github.com/octo/hello-world/issues/12",
        "github", "octo/hello-world", 12, "issue",
        "https://github.com/octo/hello-world/issues/12", "octo/hello-world#12",
        "octo-hello-world-12",
    ),
    (
        "https://github.com/octo/repo.js/pull/7/files?diff=split#r123",
        "github", "octo/repo.js", 7, "pull",
        "https://github.com/octo/repo.js/pull/7", "octo/repo.js#7", "octo-repo-js-7",
    ),
    (
        "http://www.github.com/Octo/Repo/issues/3/#issuecomment-99",
        "github", "Octo/Repo", 3, "issue",
        "https://github.com/Octo/Repo/issues/3", "Octo/Repo#3", "octo-repo-3",
    ),
    (
        "github.com/o/r/issues/5",
        "github", "o/r", 5, "issue", "https://github.com/o/r/issues/5", "o/r#5", "o-r-5",
    ),
    (
        "  owner/my_repo#42  ",
        "github", "owner/my_repo", 42, "issue",
        "https://github.com/owner/my_repo/issues/42", "owner/my_repo#42", "owner-my-repo-42",
    ),
    (
        "github:owner/repo#1",
        "github", "owner/repo", 1, "issue", "https://github.com/owner/repo/issues/1",
        "owner/repo#1", "owner-repo-1",
    ),
    (
        "https://gitlab.com/group/sub/proj/-/issues/9",
        "gitlab", "group/sub/proj", 9, "issue",
        "https://gitlab.com/group/sub/proj/-/issues/9", "group/sub/proj#9", "group-sub-proj-9",
    ),
    (
        "https://gitlab.com/g/p/-/merge_requests/15/diffs?view=inline",
        "gitlab", "g/p", 15, "merge_request",
        "https://gitlab.com/g/p/-/merge_requests/15", "g/p!15", "g-p-15",
    ),
    (
        "https://git.example.org:8443/team/app/-/issues/4/",
        "gitlab", "team/app", 4, "issue",
        "https://git.example.org:8443/team/app/-/issues/4", "team/app#4", "team-app-4",
    ),
    (
        "gitlab:group/sub/proj!8",
        "gitlab", "group/sub/proj", 8, "merge_request",
        "https://gitlab.com/group/sub/proj/-/merge_requests/8", "group/sub/proj!8",
        "group-sub-proj-8",
    ),
    (
        "gitlab:g/p#2",
        "gitlab", "g/p", 2, "issue", "https://gitlab.com/g/p/-/issues/2", "g/p#2", "g-p-2",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "forge", "repo", "number", "kind", "url", "short", "slug"), GOOD)
def test_parse_good(
    raw: str, forge: str, repo: str, number: int, kind: str, url: str, short: str, slug: str
) -> None:
    ref = parse_ref(raw)
    assert (ref.forge, ref.repo, ref.number, ref.kind) == (forge, repo, number, kind)
    assert ref.raw == raw.strip()
    assert (ref.url(), ref.short(), ref.slug()) == (url, short, slug)


BAD = [
    "",
    "   ",
    "owner/repo",
    "owner/repo#",
    "owner/repo#0",
    "owner/repo#-1",
    "owner/repo#12a",
    "owner/repo#+3",
    "owner#1",
    "a/b/c#1",  # GitHub has no subgroups
    "owner/repo!1",  # GitHub has no merge requests
    "-owner/repo#1",
    "owner-/repo#1",
    "owner/..#1",
    "owner/re po#1",
    "owner/repo#1;rm -rf /",
    "owner/$(id)#1",
    "own`er/repo#1",
    "bitbucket:owner/repo#1",
    "gitlab:onlyone#1",
    "gitlab:g/-p#1",
    "https://github.com/o/r",
    "https://github.com/o/r/issues",
    "https://github.com/o/r/issues/abc",
    "https://github.com/o/r/discussions/4",
    "https://github.com/o/r/blob/main/issues/4",
    "https://example.com/o/r/issues/4",  # not GitHub, and no GitLab `/-/`
    "https://gitlab.com/g/p/issues/4",  # GitLab needs the `/-/` separator
    "https://gitlab.com/p/-/issues/4",  # a project always lives in a namespace
    "https://gitlab.com/g/p/-/pipelines/4",
    "https://user@github.com/o/r/issues/1",
    "ftp://github.com/o/r/issues/1",
    "file:///o/r/-/issues/1",
    "https://github.com/o/r/issues/99999999999",
]


@pytest.mark.parametrize("raw", BAD)
def test_parse_bad(raw: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_ref(raw)
    assert str(caught.value) == f"--ref: '{raw}' is not a GitHub/GitLab issue URL or owner/repo#N"
    assert caught.value.exit_code == 2


def test_fallback_titles() -> None:
    assert fallback_title(parse_ref("o/r#12")) == "Issue o/r#12"
    assert fallback_title(parse_ref("https://github.com/o/r/pull/3")) == "Pull request o/r#3"
    assert fallback_title(parse_ref("gitlab:g/p!4")) == "Merge request g/p!4"


# --- fetch_issue with injected fakes -----------------------------------------------------------


class FakeRun:
    def __init__(self, *, stdout: str = "", returncode: int = 0, raises: Exception | None = None):
        self.stdout, self.returncode, self.raises = stdout, returncode, raises
        self.calls: list[tuple[list[str], dict[str, Any]]] = []

    def __call__(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append((argv, kwargs))
        if self.raises:
            raise self.raises
        return subprocess.CompletedProcess(argv, self.returncode, self.stdout, "")


def which_all(name: str) -> str:
    return f"/usr/bin/{name}"


def test_fetch_github_issue_success() -> None:
    run = FakeRun(stdout=json.dumps({"title": "  Crash\non start ", "body": "Steps..."}))
    issue = fetch_issue(parse_ref("octo/repo#12"), run=run, which=which_all, timeout=3)
    note = (
        "note: the fetched title contained control characters (newline); they were removed "
        "(line breaks became spaces)"
    )
    assert issue == FetchedIssue(title="Crash on start", body="Steps...", title_notes=(note,))
    argv, kwargs = run.calls[0]
    assert argv == [
        "/usr/bin/gh", "issue", "view", "12", "--repo", "octo/repo", "--json", "title,body",
    ]  # fmt: skip
    assert kwargs["stdin"] is subprocess.DEVNULL
    assert kwargs["timeout"] == 3
    assert kwargs.get("shell", False) is False


def test_fetch_github_pull_uses_gh_pr() -> None:
    run = FakeRun(stdout=json.dumps({"title": "Fix", "body": None}))
    issue = fetch_issue(parse_ref("https://github.com/o/r/pull/5"), run=run, which=which_all)
    assert issue == FetchedIssue(title="Fix", body="")
    assert run.calls[0][0][1:4] == ["pr", "view", "5"]


@pytest.mark.parametrize(
    ("raw", "expected_argv"),
    [
        (
            "https://gitlab.com/g/sub/p/-/issues/9",
            ["/usr/bin/glab", "issue", "view", "9", "--repo", "g/sub/p", "--output", "json"],
        ),
        (
            "https://gitlab.com/g/p/-/merge_requests/2",
            ["/usr/bin/glab", "mr", "view", "2", "--repo", "g/p", "--output", "json"],
        ),
        (
            "https://git.example.org/team/app/-/issues/4",
            [
                "/usr/bin/glab", "issue", "view", "4",
                "--repo", "https://git.example.org/team/app", "--output", "json",
            ],
        ),
    ],
)  # fmt: skip
def test_fetch_gitlab_uses_glab_and_description(raw: str, expected_argv: list[str]) -> None:
    run = FakeRun(stdout=json.dumps({"title": "T", "description": "D", "iid": 9}))
    assert fetch_issue(parse_ref(raw), run=run, which=which_all) == FetchedIssue("T", "D")
    assert run.calls[0][0] == expected_argv


def test_fetch_caps_the_body() -> None:
    run = FakeRun(stdout=json.dumps({"title": "T", "body": "x" * (BODY_LIMIT + 500)}))
    issue = fetch_issue(parse_ref("o/r#1"), run=run, which=which_all)
    assert issue is not None
    assert issue.body.startswith("x" * BODY_LIMIT)
    assert len(issue.body) < BODY_LIMIT + 100


@pytest.mark.parametrize(
    "run",
    [
        FakeRun(returncode=1, stdout='{"title": "T", "body": ""}'),
        FakeRun(raises=subprocess.TimeoutExpired(["gh"], 15)),
        FakeRun(raises=FileNotFoundError("gh")),
        FakeRun(raises=PermissionError("gh")),
        FakeRun(stdout="not json"),
        FakeRun(stdout=""),
        FakeRun(stdout="[1, 2]"),
        FakeRun(stdout=json.dumps({"body": "no title"})),
        FakeRun(stdout=json.dumps({"title": "   ", "body": "blank title"})),
        FakeRun(stdout=json.dumps({"title": 5, "body": "odd"})),
    ],
    ids=[
        "nonzero-exit", "timeout", "vanished", "not-executable", "bad-json", "empty",
        "not-object", "no-title", "blank-title", "title-not-string",
    ],
)  # fmt: skip
def test_fetch_failures_return_none(run: FakeRun) -> None:
    assert fetch_issue(parse_ref("o/r#1"), run=run, which=which_all) is None


def test_fetch_without_the_cli_returns_none_and_runs_nothing() -> None:
    run = FakeRun(stdout=json.dumps({"title": "T", "body": "B"}))
    assert fetch_issue(parse_ref("o/r#1"), run=run, which=lambda name: None) is None
    assert fetch_issue(parse_ref("gitlab:g/p#1"), run=run, which=lambda name: None) is None
    assert run.calls == []


# --- a real fake `gh` on PATH ------------------------------------------------------------------


def install_fake_gh(bin_dir: Path, script_body: str) -> None:
    bin_dir.mkdir()
    gh = bin_dir / "gh"
    gh.write_text(f"#!{sys.executable}\n{script_body}", encoding="utf-8")
    gh.chmod(0o755)


@pytest.mark.skipif(os.name != "posix", reason="needs an executable script with a shebang")
def test_fetch_with_a_real_fake_gh_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "argv.json"
    install_fake_gh(
        tmp_path / "bin",
        "import json, sys\n"
        f"open({str(log)!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
        "print(json.dumps({'title': 'From gh', 'body': sys.stdin.read() or 'no stdin'}))\n",
    )
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    issue = fetch_issue(parse_ref("https://github.com/octo/repo/issues/77"))
    assert issue == FetchedIssue(title="From gh", body="no stdin")
    assert json.loads(log.read_text()) == [
        "issue", "view", "77", "--repo", "octo/repo", "--json", "title,body",
    ]  # fmt: skip


@pytest.mark.skipif(os.name != "posix", reason="needs an executable script with a shebang")
def test_real_fake_gh_failing_returns_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_gh(
        tmp_path / "bin",
        "import sys\n"
        "sys.stderr.write('To get started with GitHub CLI, please run: gh auth login\\n')\n"
        "sys.exit(4)\n",
    )
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert fetch_issue(parse_ref("o/r#1")) is None


@pytest.mark.skipif(os.name != "posix", reason="needs an executable script with a shebang")
def test_real_fake_gh_hanging_times_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_gh(tmp_path / "bin", "import time\ntime.sleep(30)\n")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert fetch_issue(parse_ref("o/r#1"), timeout=0.5) is None


def test_issue_ref_is_frozen() -> None:
    ref = parse_ref("o/r#1")
    with pytest.raises(AttributeError):
        ref.number = 2  # type: ignore[misc]
    assert ref == IssueRef("github", "o/r", 1, "issue", "o/r#1")
