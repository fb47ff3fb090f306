"""The state one iteration carries from step to step, and how it ends."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openloop.adapters import agent as agents
from openloop.adapters import guard
from openloop.env import Environment
from openloop.loop import validation
from openloop.loop.outcomes import Outcome
from openloop.progress import Reporter
from openloop.state.config import GlobalConfig, ModelChoice
from openloop.state.judge import Change
from openloop.state.ledger import Task
from openloop.state.policy import Policy
from openloop.state.project import Project
from openloop.state.projectconfig import ProjectConfig


class Stop(Exception):
    """Ends the iteration early with an outcome (not an error of OpenLoop's)."""

    def __init__(self, outcome: Outcome, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


@dataclass
class Selection:
    task: Task
    mode: str  # "implement" or "plan"
    role: str
    reason: str


@dataclass
class Iteration:
    env: Environment
    project: Project
    gconf: GlobalConfig
    pconf: ProjectConfig
    policy: Policy
    model: ModelChoice
    reporter: Reporter
    adapter_factory: Callable[[str], agents.AgentAdapter]
    selection: Selection | None = None
    run_id: str | None = None
    run_dir: Path | None = None
    started: str | None = None
    attempt: int = 0
    base_branch: str | None = None
    base_commit: str | None = None
    head_commit: str | None = None
    branch: str | None = None
    worktree: Path | None = None
    prompt: str | None = None
    agent_result: agents.AgentResult | None = None
    changes: list[Change] = field(default_factory=list)
    lines_changed: int = 0
    diff_hash: str | None = None
    links: list[tuple[str, str]] = field(default_factory=list)  # (path, blob): gitops.DiffSummary
    checks: list[validation.CheckResult] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    decision: dict[str, Any] | None = None
    task_status: str | None = None
    merges_done: int = 0
    identity: dict[str, str] | None = None  # the user's git identity, read before the agent ran
    gitdir: Path | None = None  # the user's git directory, read before the agent ran
    escape: list[str] = field(default_factory=list)  # what the agent changed outside its repo
    # The user's repository as the last guarded step left it (proven unchanged), while only
    # OpenLoop has run since: the next guarded step starts from it (see attempt.guarded).
    clean: guard.Snapshot | None = None
    policy_approved: bool = True  # False: the governing policy differs from the approved one
    # Why project.json or policy.yaml cannot be used; pconf and policy are then placeholders.
    settings_error: str | None = None
    # The default branch's verdict (loop/baseline.py) and the task's checks it excused.
    baseline: dict[str, Any] | None = None
    excused: list[dict[str, str]] = field(default_factory=list)
    # The workspace's first commit when it is not the base (an implementation on its spec).
    start_commit: str | None = None
    # What the planner's spec asks for (loop/planning.py): subtasks and the file list.
    plan: dict[str, Any] | None = None

    @property
    def task(self) -> Task:
        assert self.selection is not None
        return self.selection.task

    def agent_env(self) -> dict[str, str]:
        """The agent's environment; OPENLOOP_RUN_ID lets a later repair find its leftovers."""
        env = dict(self.env.environ)
        env["OPENLOOP_RUN_ID"] = self.run_id or ""
        env["OPENLOOP_PROJECT"] = self.project.alias
        env["OPENLOOP_TASK_ID"] = self.task.id
        return env

    def check_env_for(self, task_id: str) -> dict[str, str]:
        """Checks run for another task than the selected one (a deferred merge): marked with
        this iteration's run id all the same, so a repair finds what they leave behind."""
        env = dict(self.env.environ)
        env.update(OPENLOOP_RUN_ID=self.run_id or "", OPENLOOP_PROJECT=self.project.alias)
        env["OPENLOOP_TASK_ID"] = task_id
        return env

    def check_env(self) -> dict[str, str]:
        """The validation commands' environment. It carries OPENLOOP_RUN_ID like the agent's:
        a check left running by a killed iteration is found and stopped by the next repair."""
        return self.agent_env()

    def max_attempts(self, task: Task) -> int:
        """Attempts a task gets: a healing task's come from policy.selfHealing."""
        from openloop.state.ledger import HEALING_KINDS

        if task.kind in HEALING_KINDS and task.source.type == "ci":
            return self.policy.self_healing.max_attempts_per_signature
        return self.limit("max_attempts_per_task")

    def judged_checks(self) -> list[validation.CheckResult]:
        """The checks that count against the task: all but those the baseline excuses."""
        excused = {e["check"] for e in self.excused}
        return [c for c in self.checks if c.name not in excused]

    def limit(self, name: str) -> int:
        """A runtime limit: the project's own value, else the global one."""
        if name == "validation_timeout_seconds" and self.pconf.validation.timeout_seconds:
            return self.pconf.validation.timeout_seconds
        own = getattr(self.pconf.runtime, name, None)
        return own if own is not None else getattr(self.gconf.runtime, name)


@dataclass(frozen=True)
class IterationResult:
    outcome: Outcome
    reason: str
    project: str
    task_id: str | None = None
    run_id: str | None = None
    record: dict[str, Any] | None = None

    @property
    def exit_code(self) -> int:
        return self.outcome.exit_code
