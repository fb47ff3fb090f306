"""Per-project configuration (`<repo>/.openloop/project.json`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from openloop.state.models_base import FileModel, file_version, validate
from openloop.state.storage import (
    atomic_write_text,
    dump_json,
    load_json_object,
    locked,
    read_text_or_none,
)

PROJECT_VERSION = 2
AgentType = Literal["pi", "claude", "codex", "aider", "custom"]


class ProjectMeta(FileModel):
    name: str | None = None
    initialized_at: str | None = None


class PiSettings(FileModel):
    model: str | None = None
    provider: str | None = None
    thinking: str | None = None


class AgentSettings(FileModel):
    type: AgentType = "pi"
    # Only for type=custom: an argv-style command line; the prompt arrives on stdin.
    command: str | None = None


class ProjectRuntime(FileModel):
    branch_prefix: str = "openloop/"
    default_branch: str | None = None
    run_timeout_seconds: int | None = Field(None, ge=1)
    inactivity_timeout_seconds: int | None = Field(None, ge=1)
    max_attempts_per_task: int | None = Field(None, ge=1)


class Validation(FileModel):
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


class Schedule(FileModel):
    """How systemd runs this project (written into drop-ins by 'openloop service install')."""

    interval_minutes: int | None = Field(None, ge=1)
    memory_max: str | None = Field(None, pattern=r"^(\d+[KMGT]?|\d+%|infinity)$")
    cpu_weight: int | None = Field(None, ge=1, le=10000)
    # Overrides of the derived systemd limits (RuntimeMaxSec=, WatchdogSec=).
    hard_timeout_seconds: int | None = Field(None, ge=1)
    watchdog_seconds: int | None = Field(None, ge=1)


class LedgerSettings(FileModel):
    # False keeps tasks.json out of git (local state); True versions it with the code.
    versioned: bool = False


class ProjectConfig(FileModel):
    version: Literal[2] = PROJECT_VERSION
    project: ProjectMeta = Field(default_factory=ProjectMeta)
    pi: PiSettings = Field(default_factory=PiSettings)
    agent: AgentSettings = Field(default_factory=AgentSettings)
    runtime: ProjectRuntime = Field(default_factory=ProjectRuntime)
    validation: Validation = Field(default_factory=Validation)
    schedule: Schedule = Field(default_factory=Schedule)
    ledger: LedgerSettings = Field(default_factory=LedgerSettings)


def parse_project_config(data: dict[str, Any], source: str) -> ProjectConfig:
    if file_version(data, PROJECT_VERSION, source) == 1:
        # v1 keys we do not model (pi.promptFiles, runtime.autoCommit, risk.*, project.repoRoot)
        # are kept verbatim as extra keys.
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
