"""Project actions: link, initialize, inspect, trust and unlink repositories."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from openloop.adapters import gitops
from openloop.env import Environment
from openloop.errors import InputError
from openloop.loop import governance
from openloop.state import trust
from openloop.state.config import edit_config
from openloop.state.controlplane import ControlPlane, InitReport, materialize
from openloop.state.locks import iteration_lock
from openloop.state.project import Project, resolve
from openloop.state.projectconfig import load_project_config
from openloop.state.registry import ProjectEntry, check_alias, edit_registry, load_registry


@dataclass(frozen=True)
class AddResult:
    entry: ProjectEntry
    report: InitReport | None
    untrusted_commands: bool


def add(env: Environment, alias: str, path: Path, *, init: bool, force: bool = False) -> AddResult:
    check_alias(alias)
    root = gitops.work_tree_root(path.expanduser().absolute())
    now = env.now_iso()
    registry = load_registry(env)
    existing = registry.find(alias)
    if existing and not force:
        raise InputError(
            f"alias '{alias}' is already linked to {existing.path} (use --force to relink it)"
        )
    other = next((p for p in registry.projects if Path(p.path) == root and p.alias != alias), None)
    if other:
        raise InputError(f"path '{root}' is already linked as '{other.alias}'")
    plane = ControlPlane(root)
    before = load_project_config(plane.project_file)
    report = materialize(plane, alias, now) if init else None
    config = load_project_config(plane.project_file)
    with edit_registry(env) as reg:
        entry = reg.find(alias)
        if entry is None:
            entry = ProjectEntry(alias=alias, path=str(root), created_at=now, updated_at=now)
            reg.projects.append(entry)
        if entry.default_branch is None or Path(entry.path) != root:
            # Pinned now, while the user is here to see it (project show): later runs never
            # take "whatever is checked out" as the branch to merge into.
            entry.default_branch = gitops.branch_to_pin(root, config.runtime.default_branch)
        entry.path = str(root)
        entry.updated_at = now
        entry.initialized = plane.exists()
        if init:
            _approve_what_init_wrote(Project(entry, plane), before, config, now)
        result_entry = entry.model_copy(deep=True)
    return AddResult(result_entry, report, not trust.is_trusted(result_entry, config))


def init(env: Environment, alias: str, *, force: bool = False) -> InitReport:
    project = resolve(env, alias)
    now = env.now_iso()
    before = project.config()
    report = materialize(project.plane, project.alias, now, force=force)
    config = project.config()
    with edit_registry(env) as reg:
        entry = reg.get(project.alias)
        entry.initialized = True
        entry.updated_at = now
        _approve_what_init_wrote(Project(entry, project.plane), before, config, now)
    return report


def _approve_what_init_wrote(project: Project, before, after, now: str) -> None:
    """Init approves the commands it detected and printed, never ones the repository brought:
    if the project.json it started from asked for commands the user had not approved (a
    clone, a pull, an agent's commit), the approval stays as it was. The policy is approved
    with them only where the approval is new (a first link): a policy a pull changed waits for
    'project trust' like changed commands do."""
    entry = project.entry
    if trust.is_trusted(entry, before):
        first = entry.trust is None or entry.trust.policy_fingerprint is None
        policy = governance.current_policy_text(project, after)[0] if first else None
        kept = None if first else (entry.trust.policy_fingerprint, entry.trust.policy)
        entry.trust = trust.approve(after, now, policy)
        if kept:
            entry.trust.policy_fingerprint, entry.trust.policy = kept


def list_projects(env: Environment) -> list[ProjectEntry]:
    return load_registry(env).projects


@dataclass(frozen=True)
class RemovalPlan:
    """What `project remove --purge [--branches]` would delete, to show before asking."""

    control_plane: Path
    exists: bool
    tasks: int
    runs: int
    pending_reviews: int
    branches: list[str]


def removal_plan(env: Environment, alias: str) -> RemovalPlan:
    entry = load_registry(env).get(alias)
    repo = Path(entry.path)
    plane = ControlPlane(repo)
    tasks = runs = pending = 0
    if plane.dir.is_dir():
        import json

        from openloop.state.ledger import load_rows

        try:
            tasks = len(load_rows(plane.ledger_file))
        except Exception:  # a damaged ledger is still deleted; the count is only a hint
            tasks = 0
        runs = len(list(plane.runs_dir.glob("*.json"))) if plane.runs_dir.is_dir() else 0
        for path in plane.promotions_dir.glob("*.json") if plane.promotions_dir.is_dir() else ():
            try:
                pending += json.loads(path.read_text()).get("status") in ("pending", "deferred")
            except (OSError, ValueError, AttributeError):
                continue
    return RemovalPlan(plane.dir, plane.dir.is_dir(), tasks, runs, pending, _our_branches(plane))


def _our_branches(plane: ControlPlane) -> list[str]:
    """Branches OpenLoop made for this project: the ones its ledger, promotion requests and run
    records name, that still exist. A branch merely named openloop/... is not assumed ours."""
    import json

    names: set[str] = set()
    for directory in (plane.promotions_dir, plane.runs_dir):
        if not directory.is_dir():
            continue
        for path in directory.glob("*.json"):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and isinstance(data.get("branch"), str):
                names.add(data["branch"])
    try:
        data = json.loads(plane.ledger_file.read_text())
        for task in data.get("tasks", []) if isinstance(data, dict) else []:
            for value in (task.get("branch"), (task.get("lastRun") or {}).get("branch")):
                if isinstance(value, str):
                    names.add(value)
    except (OSError, ValueError, AttributeError):
        pass
    repo = plane.dir.parent
    return sorted(n for n in names if n and gitops.ref_exists(repo, f"refs/heads/{n}"))


def remove(
    env: Environment, alias: str, *, purge: bool = False, branches: bool = False
) -> ProjectEntry:
    # Never under a running iteration: it would write into a control plane that is gone.
    with iteration_lock(env, alias):
        with edit_registry(env) as reg:
            entry = reg.get(alias)
            reg.projects.remove(entry)
        if branches:
            repo = Path(entry.path)
            for name in _our_branches(ControlPlane(repo)):
                if gitops.checked_out_in(repo, name) is None:  # never one you have checked out
                    gitops.delete_branch(repo, name)
        if purge:
            plane = ControlPlane(Path(entry.path))
            if plane.dir.is_dir():
                shutil.rmtree(plane.dir)
    with edit_config(env) as config:
        if config.active_project == alias:
            config.active_project = None
    return entry


def activate(env: Environment, alias: str) -> None:
    load_registry(env).get(alias)
    with edit_config(env) as config:
        config.active_project = alias


@dataclass(frozen=True)
class TrustReview:
    commands: list[str]  # the commands, with -/+ lines for changes since the approval
    commands_approved: bool
    policy_source: str  # where the governing policy.yaml is read from
    policy_diff: list[str]  # unified diff against the approved policy (empty: approved)
    policy_text: str

    @property
    def approved(self) -> bool:
        return self.commands_approved and not self.policy_diff


def review_trust(project: Project) -> TrustReview:
    """What `project trust` shows: the commands and the governing policy against what the user
    approved last."""
    config = project.config()
    text, source = governance.current_policy_text(project, config)
    return TrustReview(
        trust.trust_diff(project.entry, config),
        trust.is_trusted(project.entry, config),
        source,
        trust.policy_diff(project.entry, text),
        text,
    )


def trust_project(env: Environment, alias: str) -> TrustReview:
    """Approve the project's current commands and governing policy; returns what was shown."""
    project = resolve(env, alias)
    review = review_trust(project)
    with edit_registry(env) as reg:
        reg.get(project.alias).trust = trust.approve(
            project.config(), env.now_iso(), review.policy_text
        )
    return review
