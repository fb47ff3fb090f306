"""The three modes of an iteration besides planning: self-healing, active development and
continuous improvement (idle discovery).

- Self-healing: a failing default branch (loop/baseline.py) gets one task per healable failure
  signature (`lint-fix`, `type-fix`, `localized-test-fix`), run by the `ci-healer` with the
  failure output as data, ahead of every other task. Such a task is low-risk only while its
  diff stays inside the files the failure names (its declared scope). `policy.selfHealing`
  decides whether, which kinds and how many attempts.
- Active development: the ledger's eligible tasks.
- Discovery: with nothing eligible and a healthy default branch, cheap heuristics propose
  tasks (`proposed`, for `openloop task accept`), each fingerprint once ever, at most
  `policy.discovery.maxProposalsPerDay` a day.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from openloop.adapters import gitops
from openloop.errors import InputError
from openloop.state import baseline as cache
from openloop.state import budget
from openloop.state.judge import _matcher
from openloop.state.ledger import (
    HEALING_KINDS,
    StatusChange,
    Task,
    TaskLedger,
    TaskScope,
    TaskSource,
    edit_ledger,
    new_task_id,
    transition,
)
from openloop.state.policy import Policy, SelfHealing
from openloop.state.taskinput import check_scope

HEAL_CHECK = {"lint-fix": "lint", "type-fix": "typecheck", "localized-test-fix": "test"}
HEAL_TITLE = {
    "lint-fix": "Fix the lint errors on {branch}",
    "type-fix": "Fix the type errors on {branch}",
    "localized-test-fix": "Fix the failing tests on {branch}",
}
MAX_SCOPE = 50


# --- self-healing -------------------------------------------------------------------------------


def healing_allows(healing: SelfHealing, kind: str) -> bool:
    return healing.enabled and (kind in healing.allowed_task_kinds or kind == "ci-heal")


def due_failures(entry: dict[str, Any] | None, healing: SelfHealing) -> list[dict[str, Any]]:
    """The baseline's healable failures that policy lets OpenLoop heal."""
    if not entry or entry.get("status") != cache.FAILING:
        return []
    return [
        f
        for f in entry.get("failures", [])
        if f.get("healable") and healing_allows(healing, f.get("kind") or "")
    ]


def unhealed(
    entry: dict[str, Any] | None, healing: SelfHealing, tasks: list[Task]
) -> list[dict[str, Any]]:
    """Healable failures with no task made for their signature yet (ever)."""
    made = {t.source.ref for t in tasks if t.source.type == "ci"}
    return [f for f in due_failures(entry, healing) if f["signature"] not in made]


def sync_healing(it, entry: dict[str, Any] | None) -> list[str]:
    """Make the healing tasks the baseline calls for (once per signature), and cancel queued
    ones whose failure is gone from the default branch. Returns the ids made."""
    healing = it.policy.self_healing
    now = it.env.now_iso()
    made: list[str] = []
    with edit_ledger(it.project.plane.ledger_file, now) as ledger:
        if entry is not None:
            current = {f.get("signature") for f in entry.get("failures", [])}
            for task in ledger.tasks:
                if (
                    task.source.type == "ci"
                    and task.kind in HEALING_KINDS
                    and task.status == "ready"
                    and task.source.ref not in current
                ):
                    transition(
                        task, "cancelled", "the default branch no longer fails this way", now
                    )
        for failure in unhealed(entry, healing, ledger.tasks):
            made.append(_healing_task(ledger, failure, it.base_branch or "the default branch", now))
    for task_id in made:
        it.reporter.phase("healing", task=task_id)
    return made


def _healing_task(ledger: TaskLedger, failure: dict[str, Any], branch: str, now: str) -> str:
    kind = failure["kind"]
    files = []
    for path in failure.get("files", [])[:MAX_SCOPE]:
        try:
            files += check_scope([path])
        except InputError:
            continue  # a name that cannot be a scope entry: the scope is narrower, never wider
    named = failure.get("tests") or failure.get("diagnostics") or []
    description = (
        f"`{failure.get('command')}` fails on the tip of {branch} (exit "
        f"{failure.get('exitCode')}). Make it pass by fixing the cause.\n"
        + (
            ("Named by the failure:\n" + "\n".join(f"- {n}" for n in named[:40]) + "\n")
            if named
            else ""
        )
        + f"\nIts output (the end):\n{failure.get('output', '')}"
    )
    task_id = new_task_id(ledger, f"fix {failure['check']} {failure['signature'][-6:]}")
    task = Task(
        id=task_id,
        title=HEAL_TITLE[kind].format(branch=branch),
        description=description,
        kind=kind,
        status="ready",
        # Low-risk only inside the files the failure names: a diff outside them is judged
        # medium-risk (outside the declared scope) and waits for review.
        risk="low-risk" if files else "medium-risk",
        scope=TaskScope(paths=files) if files else None,
        source=TaskSource(type="ci", ref=failure["signature"]),
        owner="openloop",
        acceptance_criteria=[f"`{failure.get('command')}` passes"],
        created_at=now,
        updated_at=now,
    )
    task.history.append(
        StatusChange(at=now, from_=None, to="ready", reason=f"self-healing: {failure['why']}")
    )
    ledger.tasks.append(task)
    return task_id


# --- discovery ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Proposal:
    fingerprint: str
    title: str
    description: str
    kind: str
    risk: str
    scope: tuple[str, ...] = ()


SECRET_PROBES = (".env", "config/.env.local", "deploy/server.pem", "keys/id_rsa", "app.key")
CI_PROBES = (".github/workflows/ci.yml", ".gitlab-ci.yml")
_SKIP_DIRS = re.compile(r"(^|/)(\.openloop|\.pi|\.agents|node_modules|vendor|dist|build)/")
TODO_HOT_SPOT = 3
MAX_CANDIDATES = 10


def _fp(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def heuristics(
    repo, commit: str, policy: Policy, commands: dict[str, str | None]
) -> list[Proposal]:
    """Cheap proposals, best first; git reads only, nothing of the repository runs."""
    found: list[Proposal] = []
    if not any(commands.values()):
        found.append(
            Proposal(
                _fp("no-checks"),
                "Configure the project's checks (lint, typecheck, test)",
                "No validation command is configured in .openloop/project.json, so nothing is "
                "checked and nothing auto-merges. Set validation.lintCommand, typecheckCommand "
                "and testCommand to the commands this repository uses, then approve them with "
                "'openloop project trust'.",
                "chore",
                "medium-risk",
                (".openloop/project.json",),
            )
        )
    denied = _matcher(policy.scope.deny_globs)
    missing = [p for p in (*SECRET_PROBES, *CI_PROBES) if not denied((p,))]
    if missing:
        found.append(
            Proposal(
                _fp("policy-deny", *sorted(policy.scope.deny_globs)),
                "Deny secrets and CI files in the policy",
                "policy.yaml's scope.denyGlobs does not cover: "
                + ", ".join(missing)
                + ". Add patterns such as '.env*', '*.pem', '*.key', 'id_rsa*', '.github/**' "
                "and '.gitlab-ci.yml' so no agent change can touch secrets or CI.",
                "chore",
                "medium-risk",
                (".openloop/policy.yaml",),
            )
        )
    files = [
        f
        for f in gitops.git(repo, "ls-tree", "-r", "--name-only", commit).stdout.splitlines()
        if f and not _SKIP_DIRS.search(f)
    ]
    found += _todo_hot_spots(repo, commit, set(files))
    found += _untested(files)
    return found


def _todo_hot_spots(repo, commit: str, files: set[str]) -> list[Proposal]:
    proc = gitops.git(
        repo, "grep", "-c", "-I", "-E", r"\b(TODO|FIXME)\b", commit, "--", check=False
    )
    counts = []
    for line in proc.stdout.splitlines():
        _, _, rest = line.partition(":")
        path, _, count = rest.rpartition(":")
        if path in files and count.isdigit() and int(count) >= TODO_HOT_SPOT:
            counts.append((int(count), path))
    return [
        Proposal(
            _fp("todo", path),
            f"Resolve the TODO/FIXME notes in {path}",
            f"{path} has {count} TODO/FIXME notes. Resolve the ones that can be done safely "
            "and small; leave a note where a decision is needed.",
            "refactor",
            "low-risk",
            (path,),
        )
        for count, path in sorted(counts, key=lambda c: (-c[0], c[1]))[:MAX_CANDIDATES]
    ]


def _untested(files: list[str]) -> list[Proposal]:
    names = {f.rsplit("/", 1)[-1] for f in files}
    out: list[Proposal] = []
    for path in files:
        directory, _, name = path.rpartition("/")
        stem, dot, ext = name.rpartition(".")
        if not dot or re.search(r"(^|/)(tests?|__tests__|spec)(/|$)", directory):
            continue
        if ext == "py" and not name.startswith("test_") and not stem.endswith("_test"):
            if stem in ("__init__", "__main__", "conftest", "setup", "noxfile") or not directory:
                continue
            if f"test_{name}" in names or f"{stem}_test.py" in names:
                continue
            scope = (f"**/test_{name}", f"**/{stem}_test.py")
        elif ext in ("js", "ts", "jsx", "tsx") and not re.search(r"\.(test|spec|d|config)$", stem):
            if any(
                f"{stem}.{k}.{e}" in names
                for k in ("test", "spec")
                for e in ("js", "ts", "jsx", "tsx")
            ):
                continue
            scope = (f"**/{stem}.test.{ext}", f"**/{stem}.spec.{ext}")
        elif ext == "go" and not stem.endswith("_test"):
            if f"{stem}_test.go" in names:
                continue
            scope = (f"{directory + '/' if directory else ''}{stem}_test.go",)
        else:
            continue
        out.append(
            Proposal(
                _fp("untested", path),
                f"Add tests for {path}",
                f"{path} has no test file of its own. Add focused tests for its public "
                "behaviour without changing the module.",
                "test",
                "low-risk",
                scope,
            )
        )
        if len(out) >= MAX_CANDIDATES:
            break
    return out


def discover(it, entry: dict[str, Any] | None) -> list[str]:
    """Idle mode: propose what the heuristics find, never a fingerprint twice, at most the
    day's cap. Runs once per default-branch tree (and again on a later day if the cap cut it
    short). Returns the ids proposed."""
    conf = it.policy.discovery
    if not discovery_due(it.env, it.project.alias, it.policy, entry):
        return []
    tree = entry["tree"]
    day = budget.day_key(it.env.now())
    state = cache.discovery_state(it.env, it.project.alias)
    room = conf.max_proposals_per_day - state["days"].get(day, 0)
    seen = set(state["fingerprints"])
    now = it.env.now_iso()
    candidates = [
        p
        for p in heuristics(
            it.project.repo, it.base_commit, it.policy, it.pconf.validation.commands()
        )
        if p.fingerprint not in seen
    ]
    made: list[tuple[str, str]] = []
    with edit_ledger(it.project.plane.ledger_file, now) as ledger:
        seen |= {
            (t.source.ref or "").removeprefix("discovery:")
            for t in ledger.tasks
            if t.source.type == "discovery"
        }
        for proposal in [p for p in candidates if p.fingerprint not in seen][:room]:
            made.append(
                (
                    _proposal_task(ledger, proposal, conf.auto_accept_low_risk, now),
                    proposal.fingerprint,
                )
            )
    left = len([p for p in candidates if p.fingerprint not in seen]) - len(made)

    def record(state: dict[str, Any]) -> None:
        state["fingerprints"] += [fp for _, fp in made if fp not in state["fingerprints"]]
        state["days"][day] = state["days"].get(day, 0) + len(made)
        if left <= 0 and tree not in state["trees"]:
            state["trees"].append(tree)

    cache.update_discovery(it.env, it.project.alias, record)
    return [task_id for task_id, _ in made]


def discovery_due(env, alias: str, policy: Policy, entry: dict[str, Any] | None) -> bool:
    """Whether idle discovery has something to look at: enabled, a healthy (or unchecked)
    default branch whose tree it has not exhausted, and room left in the day's cap."""
    conf = policy.discovery
    if (
        not conf.enabled
        or not entry
        or entry.get("status") not in (cache.HEALTHY, cache.UNCONFIGURED)
    ):
        return False
    state = cache.discovery_state(env, alias)
    if entry.get("tree") in state["trees"]:
        return False
    return state["days"].get(budget.day_key(env.now()), 0) < conf.max_proposals_per_day


def _proposal_task(ledger: TaskLedger, proposal: Proposal, auto_accept: bool, now: str) -> str:
    status = "ready" if auto_accept and proposal.risk == "low-risk" else "proposed"
    task_id = new_task_id(ledger, proposal.title)
    task = Task(
        id=task_id,
        title=proposal.title,
        description=proposal.description,
        kind=proposal.kind,
        status=status,
        risk=proposal.risk,
        scope=TaskScope(paths=list(proposal.scope)) if proposal.scope else None,
        source=TaskSource(type="discovery", ref=f"discovery:{proposal.fingerprint}"),
        owner="openloop",
        created_at=now,
        updated_at=now,
    )
    reason = "discovery" + (" (auto-accepted: low-risk)" if status == "ready" else "")
    task.history.append(StatusChange(at=now, from_=None, to=status, reason=reason))
    ledger.tasks.append(task)
    return task_id


def waiting_for_acceptance(task: Task) -> bool:
    """Proposed, but not for the planner: discovery's proposals, and an issue reference that
    could not be fetched (a title like 'Issue o/r#N' and no body is no task for an agent)."""
    if task.status != "proposed":
        return False
    return task.source.type == "discovery" or (task.source.type == "issue" and not task.description)
