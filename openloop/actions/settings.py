"""`config validate` and `config set -p`: every settings file checked in one pass, and one
project setting changed atomically with what it takes to put it into effect."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from openloop.env import Environment
from openloop.errors import ConfigError, GitError, InputError, OpenLoopError
from openloop.loop import governance
from openloop.state import trust
from openloop.state.config import load_config, parse_setting
from openloop.state.models_base import validate
from openloop.state.policy import parse_policy
from openloop.state.project import Project, resolve
from openloop.state.projectconfig import (
    ProjectConfig,
    load_project_config,
    update_project_config,
)
from openloop.state.registry import load_registry
from openloop.state.storage import read_text_or_none


@dataclass
class FileCheck:
    what: str  # "global config", "project.json", "policy.yaml (working file)", ...
    path: str
    ok: bool
    problem: str | None = None
    note: str | None = None

    def to_data(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "path": self.path,
            "ok": self.ok,
            "problem": self.problem,
            "note": self.note,
        }


@dataclass
class ValidationReport:
    checks: list[FileCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_data(self) -> dict[str, Any]:
        return {"ok": self.ok, "files": [c.to_data() for c in self.checks]}


def _check(what: str, path: str, load) -> FileCheck:
    try:
        note = load()
    except (ConfigError, InputError) as exc:
        return FileCheck(what, path, False, str(exc))
    return FileCheck(what, path, True, note=note)


def validate_settings(env: Environment, alias: str | None = None) -> ValidationReport:
    """The global config, then for each project (or ALIAS) its project.json, its working
    policy.yaml and the policy committed on the default branch (the one runs obey)."""
    report = ValidationReport()
    if alias is None:
        report.checks.append(_check("global config", str(env.config_file), lambda: _global(env)))
        registry = load_registry(env)
        aliases = [p.alias for p in registry.projects]
    else:
        aliases = [alias]
    for name in aliases:
        project = resolve(env, name)
        report.checks.extend(_project_checks(project))
    return report


def _global(env: Environment) -> None:
    load_config(env)


def _project_checks(project: Project) -> list[FileCheck]:
    plane = project.plane
    out = [
        _check(
            f"{project.alias}: project.json",
            str(plane.project_file),
            lambda: _project_file(plane.project_file),
        )
    ]
    working = governance.working_file(project)
    out.append(
        _check(
            f"{project.alias}: policy.yaml (working file)",
            str(working),
            lambda: _policy(read_text_or_none(working), str(working)),
        )
    )
    out.append(_committed_policy(project))
    return out


CALENDAR_KEY = "schedule.onCalendar"


def _project_file(path) -> None:
    conf = load_project_config(path)
    if conf.schedule.on_calendar:
        _require_calendar(conf.schedule.on_calendar, str(path))


def _require_calendar(expression: str, path: str) -> None:
    """systemd's verdict on schedule.onCalendar, where systemd-analyze exists."""
    from openloop.adapters import units

    if problem := units.check_calendar(expression):
        raise InputError(f"{path}: {CALENDAR_KEY}: {expression!r}: {problem}")


def _policy(text: str | None, source: str) -> str | None:
    if text is None:
        return "absent: the defaults apply"
    if text.strip():
        parse_policy(text, source)
    return None


def _committed_policy(project: Project) -> FileCheck:
    try:
        pconf = project.config()
    except ConfigError:
        pconf = ProjectConfig()
    text, source = governance.current_policy_text(project, pconf)
    what = f"{project.alias}: policy.yaml (committed, governs the runs)"
    if source == str(governance.working_file(project)):
        check = _check(what, source, lambda: _policy(text, source))
        check.note = "not committed on the default branch: runs read the working file"
        return check

    def load() -> str | None:
        _policy(text, source)
        working = read_text_or_none(governance.working_file(project))
        notes = []
        if working is not None and working != text:
            notes.append("the working file differs: commit it for runs to use it")
        if not trust.policy_approved(project.entry, text):
            notes.append(f"not approved: openloop project trust {project.alias}")
        return "; ".join(notes) or None

    return _check(what, source, load)


# --- config set -p ------------------------------------------------------------------------------

# Keys that change what systemd runs: the drop-ins must be rewritten ('service install').
_UNIT_KEYS = ("schedule.", "runtime.runTimeoutSeconds", "runtime.inactivityTimeoutSeconds")
_FIXED = {"version", "project.initializedAt", "risk"}


def project_settable_keys() -> list[str]:
    keys = []
    for name, section in ProjectConfig.model_fields.items():
        alias = section.alias or name
        sub = section.annotation
        if isinstance(sub, type) and hasattr(sub, "model_fields"):
            keys.extend(
                f"{alias}.{f.alias or n}"
                for n, f in sub.model_fields.items()
                if f"{alias}.{f.alias or n}" not in _FIXED
            )
    return keys


def _is_text(key: str) -> bool:
    """A string setting (a command, a model, a branch): VALUE is taken as typed, so `true` or
    `make test` is never read as JSON."""
    import typing

    section, leaf = key.split(".", 1)
    model = ProjectConfig.model_fields[_field_name(ProjectConfig, section)].annotation
    annotation = model.model_fields[_field_name(model, leaf)].annotation  # type: ignore[union-attr]
    args = set(typing.get_args(annotation)) or {annotation}
    return str in args and not ({int, float, bool} & args)


def _field_name(model, alias: str) -> str:
    for name, info in model.model_fields.items():
        if (info.alias or name) == alias:
            return name
    raise InputError(f"'{alias}' is not a project setting")


@dataclass(frozen=True)
class ProjectSetting:
    alias: str
    key: str
    old: Any
    new: Any
    path: str
    needs_trust: bool  # the commands OpenLoop runs changed: 'project trust' before runs
    needs_install: bool  # the units' drop-ins changed: 'service install'
    changed: bool


def _get(data: dict[str, Any], key: str) -> Any:
    node: Any = data
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def preview_project_setting(env: Environment, alias: str, key: str, raw: str) -> ProjectSetting:
    """What `config set -p` would change, validated, without writing."""
    return _set(env, alias, key, raw, write=False)


def set_project_setting(env: Environment, alias: str, key: str, raw: str) -> ProjectSetting:
    return _set(env, alias, key, raw, write=True)


def _set(env: Environment, alias: str, key: str, raw: str, *, write: bool) -> ProjectSetting:
    project = resolve(env, alias)
    keys = project_settable_keys()
    if key not in keys:
        raise InputError(f"'{key}' is not a project setting; valid keys: {', '.join(keys)}")
    value = None if raw == "null" else raw if _is_text(key) else parse_setting(key, raw)
    path = project.plane.project_file
    result: dict[str, Any] = {}

    def change(conf: ProjectConfig) -> None:
        data = conf.to_data()
        result["old"] = _get(data, key)
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
        updated = validate(ProjectConfig, data, path)  # refuses a bad value, naming the key
        for name in ProjectConfig.model_fields:
            setattr(conf, name, getattr(updated, name))
        result["new"] = _get(updated.to_data(), key)
        result["trusted_after"] = trust.is_trusted(project.entry, updated)

    if write:
        update_project_config(path, change)
    else:
        change(load_project_config(path))
    if key == CALENDAR_KEY and result["new"]:
        _require_calendar(result["new"], str(path))
    changed = result["old"] != result["new"]
    return ProjectSetting(
        alias=project.alias,
        key=key,
        old=result["old"],
        new=result["new"],
        path=str(path),
        needs_trust=not result["trusted_after"],
        needs_install=changed and key.startswith(_UNIT_KEYS),
        changed=changed,
    )


def apply_units(env: Environment, alias: str) -> bool:
    """Rewrite the project's drop-ins if the units are installed; False when they are not."""
    from openloop.actions import service

    try:
        return service.project_linked(env, alias)
    except (OpenLoopError, GitError) as exc:
        raise OpenLoopError(f"the units were not updated: {exc}") from None


def shown(value: Any) -> str:
    return "null" if value is None else json.dumps(value) if not isinstance(value, str) else value
