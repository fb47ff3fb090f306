"""Which policy governs a run, and whether the user approved it.

The policy decides what may merge, so it must not be something the agent (or a pull) can
change and have take effect silently. It is read from the default branch's tip commit, where
a change has to arrive through a merge that the policy itself reviews; only while the file is
not committed yet is the working file used. Either way its fingerprint joins the approved
commands: a policy the user has not approved still judges every change (reads and reviews go
on), but nothing auto-merges until `openloop project trust`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from openloop.adapters import gitops
from openloop.errors import GitError
from openloop.state import trust
from openloop.state.policy import Policy, parse_policy
from openloop.state.project import Project
from openloop.state.projectconfig import ProjectConfig
from openloop.state.storage import read_text_or_none

POLICY_PATH = ".openloop/policy.yaml"


@dataclass(frozen=True)
class GoverningPolicy:
    policy: Policy
    text: str
    source: str  # "main:.openloop/policy.yaml" or the working file's path
    approved: bool


def base_branch(project: Project, pconf: ProjectConfig) -> str:
    """The pinned default branch (registry), else the configured one, else origin's HEAD or
    main/master; never the branch that happens to be checked out."""
    return gitops.default_branch(
        project.repo, project.entry.default_branch or pconf.runtime.default_branch
    )


def policy_text(project: Project, commit: str | None, branch: str | None) -> tuple[str, str]:
    """(text, where it came from): the committed file at `commit`, else the working file."""
    if commit:
        committed = gitops.regular_file_at(project.repo, commit, POLICY_PATH)
        if committed is not None:
            return committed, f"{branch or commit[:12]}:{POLICY_PATH}"
    working = project.repo / POLICY_PATH
    return read_text_or_none(working) or "", str(working)


def current_policy_text(project: Project, pconf: ProjectConfig) -> tuple[str, str]:
    """As policy_text, at the tip of the project's default branch (for trust and review)."""
    try:
        branch = base_branch(project, pconf)
        commit = gitops.rev_parse(project.repo, f"refs/heads/{branch}")
    except GitError:
        return policy_text(project, None, None)
    return policy_text(project, commit, branch)


def governing_policy(project: Project, commit: str | None, branch: str | None) -> GoverningPolicy:
    text, source = policy_text(project, commit, branch)
    policy = parse_policy(text, source) if text.strip() else Policy()
    return GoverningPolicy(policy, text, source, trust.policy_approved(project.entry, text))


def load_current(project: Project, pconf: ProjectConfig) -> Policy:
    text, source = current_policy_text(project, pconf)
    return parse_policy(text, source) if text.strip() else Policy()


def working_file(project: Project) -> Path:
    return project.repo / POLICY_PATH
