"""Per-project configuration (`<repo>/.openloop/project.json`).

Strict: an unknown key or a value of the wrong type is an error naming the file and the key.
The keys the original tool (version 1) wrote and OpenLoop does not use are declared as legacy
fields, so a migrated file keeps them through a rewrite and still reads back.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from openloop.state.models_base import StrictFileModel, file_version, validate
from openloop.state.storage import (
    atomic_write_text,
    dump_json,
    load_json_object,
    locked,
    read_text_or_none,
)

PROJECT_VERSION = 2
AgentType = Literal["pi", "claude", "codex", "aider", "custom"]


class ProjectMeta(StrictFileModel):
    legacy_fields: ClassVar[frozenset[str]] = frozenset({"alias", "repo_root"})

    name: str | None = None
    initialized_at: str | None = None
    alias: str | None = None  # v1: became `name`
    repo_root: str | None = None  # v1: the registry knows where the repository is


class PiSettings(StrictFileModel):
    legacy_fields: ClassVar[frozenset[str]] = frozenset({"prompt_files"})

    model: str | None = None
    provider: str | None = None
    thinking: str | None = None
    prompt_files: list[str] | None = None  # v1: the prompt is built by OpenLoop


class AgentSettings(StrictFileModel):
    type: AgentType = "pi"
    # Only for type=custom: an argv-style command line; the prompt arrives on stdin.
    command: str | None = None


_BAD_IN_REF = re.compile(r"\.\.|@\{|//|[\x00-\x20\x7f~^:?*\[\\]")


def branch_name_problem(name: str) -> str | None:
    """Why `git check-ref-format --branch NAME` would refuse the name, or None (git's rules,
    without running git: project.json is validated on every load)."""
    if bad := _BAD_IN_REF.search(name):
        return f"contains {bad.group()!r}"
    if name.startswith(("/", "-")):
        return f"starts with {name[0]!r}"
    for component in name.split("/"):
        if component.startswith("."):
            return f"a component starts with '.' ({component!r})"
        if component.endswith(".lock"):
            return f"a component ends with '.lock' ({component!r})"
    if name.endswith(("/", ".")) or name == "@":
        return f"ends with {name[-1]!r}"
    return None


class ProjectRuntime(StrictFileModel):
    legacy_fields: ClassVar[frozenset[str]] = frozenset(
        {"auto_commit", "use_worktree", "pr_command"}
    )

    branch_prefix: str = "openloop/"
    default_branch: str | None = None
    run_timeout_seconds: int | None = Field(None, ge=1)
    inactivity_timeout_seconds: int | None = Field(None, ge=1)
    max_attempts_per_task: int | None = Field(None, ge=1)
    # v1 only: OpenLoop always commits, always uses a worktree and opens no pull requests.
    auto_commit: bool | None = None
    use_worktree: bool | None = None
    pr_command: str | None = None

    @field_validator("branch_prefix")
    @classmethod
    def _valid_branch_prefix(cls, value: str) -> str:
        # Each task's branch is prefix + task id: a prefix git refuses fails every run at the
        # worktree step, and an empty one puts task branches among the user's own.
        if not value:
            raise ValueError("must not be empty (task branches would be named after the bare id)")
        if problem := branch_name_problem(value + "x"):
            raise ValueError(f"{value!r} cannot start a git branch name: {problem}")
        return value


class Validation(StrictFileModel):
    lint_command: str | None = None
    typecheck_command: str | None = None
    test_command: str | None = None
    timeout_seconds: int | None = Field(None, ge=1)

    def commands(self) -> dict[str, str | None]:
        return {
            "lint": self.lint_command,
            "typecheck": self.typecheck_command,
            "test": self.test_command,
        }


class Schedule(StrictFileModel):
    """How systemd runs this project (written into drop-ins by 'openloop service install')."""

    interval_minutes: int | None = Field(None, ge=1)
    # A systemd calendar expression ("Mon..Fri 09:00", "hourly", "*-*-* 02:30:00") instead of
    # the interval: runs at those times. Checked lightly here (the gate reads this file at every
    # tick); `config validate`, `config set` and `service install` ask `systemd-analyze
    # calendar` where it exists.
    on_calendar: str | None = Field(None, min_length=1, max_length=200)
    memory_max: str | None = Field(None, pattern=r"^(\d+[KMGT]?|\d+%|infinity)$")
    cpu_weight: int | None = Field(None, ge=1, le=10000)
    # Overrides of the derived systemd limits (RuntimeMaxSec=, WatchdogSec=).
    hard_timeout_seconds: int | None = Field(None, ge=1)
    watchdog_seconds: int | None = Field(None, ge=1)

    @field_validator("on_calendar")
    @classmethod
    def _calendar_syntax(cls, value: str | None) -> str | None:
        if value is not None and not CALENDAR_CHARS.fullmatch(value):
            raise ValueError(
                "not a systemd calendar expression (e.g. 'daily', 'Mon..Fri 09:00', "
                "'*-*-* 02:30:00'; see 'man systemd.time')"
            )
        return value

    @model_validator(mode="after")
    def _one_schedule(self) -> Schedule:
        if self.on_calendar is not None and self.interval_minutes is not None:
            raise ValueError(
                "onCalendar and intervalMinutes exclude each other: set one of them to null"
            )
        return self


# What a calendar expression is made of (systemd.time(7)): weekday and month names, digits,
# the separators and ranges, a time zone name; never a newline or '=' (it goes in a unit file).
CALENDAR_CHARS = re.compile(r"[A-Za-z0-9*][A-Za-z0-9 *.,:/~+_-]*")


class Planning(StrictFileModel):
    """Which new tasks the sdd-planner sees first (besides `task add --plan`)."""

    kinds: list[str] = Field(default_factory=lambda: ["feature", "epic"])
    # A description longer than this (characters) asks for a plan too.
    description_chars: int = Field(1500, ge=1)


class LedgerSettings(StrictFileModel):
    # False keeps tasks.json out of git (local state); True versions it with the code.
    versioned: bool = False


class ProjectConfig(StrictFileModel):
    legacy_fields: ClassVar[frozenset[str]] = frozenset({"risk"})

    version: Literal[2] = PROJECT_VERSION
    project: ProjectMeta = Field(default_factory=ProjectMeta)
    pi: PiSettings = Field(default_factory=PiSettings)
    agent: AgentSettings = Field(default_factory=AgentSettings)
    runtime: ProjectRuntime = Field(default_factory=ProjectRuntime)
    validation: Validation = Field(default_factory=Validation)
    schedule: Schedule = Field(default_factory=Schedule)
    ledger: LedgerSettings = Field(default_factory=LedgerSettings)
    planning: Planning = Field(default_factory=Planning)
    # v1: the risk defaults now live in policy.yaml; kept whatever it holds, never read.
    risk: Any = None


def parse_project_config(data: dict[str, Any], source: str) -> ProjectConfig:
    if file_version(data, PROJECT_VERSION, source) == 1:
        data = {**data, "version": PROJECT_VERSION}
        project = data.get("project")
        if isinstance(project, dict) and "alias" in project and "name" not in project:
            data["project"] = {**project, "name": project["alias"]}
    return validate(ProjectConfig, data, source)


def load_project_config(path: Path) -> ProjectConfig:
    text = read_text_or_none(path)
    if text is None:
        return ProjectConfig()
    return parse_project_config(load_json_object(path, text), str(path))


def save_project_config(path: Path, config: ProjectConfig) -> None:
    atomic_write_text(path, dump_json(config.to_data()))


def update_project_config(path: Path, change) -> ProjectConfig:
    """Apply `change(config)` to project.json under its lock."""
    with locked(path, what=str(path)):
        config = load_project_config(path)
        change(config)
        save_project_config(path, config)
    return config
