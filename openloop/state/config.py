"""Global configuration (`config.json`) and the one function that resolves the model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from openloop.env import Environment
from openloop.errors import InputError
from openloop.state.models_base import FileModel, file_version, validate
from openloop.state.storage import (
    atomic_write_text,
    dump_json,
    load_json_object,
    locked,
    read_text_or_none,
)

CONFIG_VERSION = 2


class Budgets(FileModel):
    daily_cost_usd: float = Field(
        25.0, ge=0, allow_inf_nan=False, description="Daily spend ceiling across all projects (USD)"
    )
    project_daily_cost_usd: float | None = Field(
        None,
        ge=0,
        allow_inf_nan=False,
        description="Daily spend ceiling for each project on its own (USD); unset: none",
    )


class Runtime(FileModel):
    run_timeout_seconds: int = Field(1800, ge=1, description="Hard cap on one agent run")
    inactivity_timeout_seconds: int = Field(
        300, ge=1, description="Kill the agent when no event arrived for this long"
    )
    max_attempts_per_task: int = Field(3, ge=1, description="Attempts before a task is blocked")
    no_progress_repeat_limit: int = Field(
        2, ge=1, description="Consecutive no-progress attempts before a task is blocked"
    )
    validation_timeout_seconds: int = Field(900, ge=1, description="Cap on each validation command")
    interval_minutes: int = Field(15, ge=1, description="Default pause between iterations")
    max_concurrent_iterations: int = Field(
        4,
        ge=1,
        description="Iterations running at once on this host, across all projects (the gate "
        "skips a project's tick while they are all taken)",
    )
    keep_runs: int = Field(500, ge=1, description="Run records kept per project (oldest pruned)")
    archive_after_days: int = Field(
        30,
        ge=0,
        description="Promoted and cancelled tasks older than this move from the ledger to "
        ".openloop/archive/ (one file per month; 'task list --all' and 'task show' read it); "
        "0: never",
    )


class Notifications(FileModel):
    on_task_complete: str | None = Field(None, description="Command run when a task completes")
    on_task_failed: str | None = Field(None, description="Command run when a task fails or blocks")
    on_budget_exhausted: str | None = Field(
        None, description="Command run when the budget runs out"
    )
    on_queue_empty: str | None = Field(None, description="Command run when a project has no work")
    on_environment_error: str | None = Field(
        None,
        description="Command run when the agent cannot run at all (pi missing, API key refused, "
        "quota spent); unset: onTaskFailed's",
    )


class GlobalConfig(FileModel):
    version: Literal[2] = CONFIG_VERSION
    model: str | None = Field(None, description="Default model for every project")
    provider: str | None = Field(None, description="Default provider for every project")
    active_project: str | None = None
    budgets: Budgets = Field(default_factory=Budgets)
    runtime: Runtime = Field(default_factory=Runtime)
    notifications: Notifications = Field(default_factory=Notifications)


def _migrate_v1(data: dict[str, Any]) -> dict[str, Any]:
    """The TypeScript tool's version-1 file: rename what moved, keep everything else."""
    data = dict(data)
    data["version"] = CONFIG_VERSION
    if "activeProjectAlias" in data and "activeProject" not in data:
        data["activeProject"] = data.pop("activeProjectAlias")
    notes = dict(data.get("notifications") or {})
    for old, new in (("onBudgetBlocked", "onBudgetExhausted"), ("onAllTasksDone", "onQueueEmpty")):
        if old in notes and new not in notes:
            notes[new] = notes.pop(old)
    if notes:
        data["notifications"] = notes
    return data


def parse_config(data: dict[str, Any], source: str) -> GlobalConfig:
    if file_version(data, CONFIG_VERSION, source) == 1:
        data = _migrate_v1(data)
    return validate(GlobalConfig, data, source)


def load_config(env: Environment) -> GlobalConfig:
    text = read_text_or_none(env.config_file)
    if text is None:
        return GlobalConfig()
    return parse_config(load_json_object(env.config_file, text), str(env.config_file))


def save_config(env: Environment, config: GlobalConfig) -> None:
    atomic_write_text(env.config_file, dump_json(config.to_data()))


class _ConfigEdit:
    def __init__(self, env: Environment) -> None:
        self.env = env

    def __enter__(self) -> GlobalConfig:
        self._lock = locked(self.env.config_file, what="config.json")
        self._lock.__enter__()
        try:
            self.config = load_config(self.env)
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        return self.config

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                save_config(self.env, self.config)
        finally:
            self._lock.__exit__(exc_type, exc, tb)


def edit_config(env: Environment) -> _ConfigEdit:
    """Read-modify-write of config.json under its lock; written only if the block succeeds."""
    return _ConfigEdit(env)


# --- `config set` -------------------------------------------------------------------------------


def settable_keys() -> dict[str, str]:
    """Every leaf key `config set` accepts, dotted camelCase, with its description."""
    keys: dict[str, str] = {}
    for name, field in GlobalConfig.model_fields.items():
        alias = field.alias or name
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, FileModel):
            for sub_name, sub in annotation.model_fields.items():
                keys[f"{alias}.{sub.alias or sub_name}"] = sub.description or ""
        elif name not in ("version", "active_project"):
            keys[alias] = field.description or ""
    return keys


def parse_value(raw: str) -> Any:
    """`25`, `2.5`, `null`, `true` are JSON; anything else is a plain string."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def parse_setting(key: str, raw: str) -> Any:
    """`parse_value`, and a duration ('20m', '1h30m') for a ...Seconds/...Minutes key: the
    file keeps the integer."""
    from openloop.text import duration_unit, parse_duration

    unit = duration_unit(key)
    if unit and raw.strip() not in ("null", "") and not _is_number(raw):
        return parse_duration(raw, key, unit)
    return parse_value(raw)


def _is_number(raw: str) -> bool:
    try:
        float(raw)
    except ValueError:
        return False
    return True


def set_key(env: Environment, key: str, raw_value: str) -> Any:
    keys = settable_keys()
    if key not in keys:
        raise InputError(f"'{key}' is not a settable config key; valid keys: {', '.join(keys)}")
    value = parse_setting(key, raw_value)
    with edit_config(env) as config:
        data = config.to_data()
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
        updated = validate(GlobalConfig, data, "config set")
        for name in GlobalConfig.model_fields:
            setattr(config, name, getattr(updated, name))
    return value


# --- model resolution ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelChoice:
    model: str | None
    provider: str | None
    source: str  # "cli", "project", "global" or "agent default"


def _first(*values: str | None) -> tuple[str | None, int]:
    for index, value in enumerate(values):
        if value and value.strip():
            return value.strip(), index
    return None, len(values)


def resolve_model(
    cli_model: str | None,
    project_model: str | None,
    global_model: str | None,
    *,
    cli_provider: str | None = None,
    project_provider: str | None = None,
    global_provider: str | None = None,
) -> ModelChoice:
    """CLI flag > project config > global config, for model and provider alike.

    Blank strings fall through (a cleared field means "inherit"). With no model anywhere the
    agent's own default applies.
    """
    model, level = _first(cli_model, project_model, global_model)
    provider, _ = _first(cli_provider, project_provider, global_provider)
    source = ("cli", "project", "global", "agent default")[level]
    return ModelChoice(model, provider, source)
