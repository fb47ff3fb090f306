"""OpenLoop's user-side files, guarded while code of the agent's runs, like the repository.

They live under the user's home, which the agent can write: the budget (delete it and the day's
spend is gone), the registry's approvals, pinned branches and paths (approve a weakened policy),
the global config (notification commands run as the user; the ceilings), the pause flag. A
change there is an escape like any other, and is put back: charges never go down, approvals
and config return to what they were. Changes the user may make meanwhile in the safe direction
(pausing) are not escapes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from openloop.env import Environment
from openloop.errors import ConfigError
from openloop.state import budget
from openloop.state.registry import edit_registry, load_registry
from openloop.state.storage import atomic_write_text, locked, read_text_or_none

_GUARDED = ("path", "default_branch", "trust")  # the registry fields that decide what runs


@dataclass(frozen=True)
class UserState:
    charged: dict[str, budget.DaySpend]
    config: str | None
    paused: bool
    projects: dict[str, dict]  # alias -> its guarded fields and paused flag
    # The project's baseline verdicts (state/baseline.py): a planted "failing" entry would make
    # a low-risk healing task or excuse the agent's own failure; a "healthy" one hide a break.
    baselines: dict[Path, str | None]


def take(env: Environment, alias: str | None = None) -> UserState:
    from openloop.state import baseline

    files = [baseline.cache_file(env, alias)] if alias else []
    return UserState(
        budget.charged_days(env),
        read_text_or_none(env.config_file),
        env.pause_file.exists(),
        _projects(env),
        {path: read_text_or_none(path) for path in files},
    )


def _text(path: Path) -> str | None:
    """The file's text for comparing with a snapshot's; what cannot be read (a FIFO or folder
    planted in its place, bytes that are not UTF-8) compares as changed, so it is put back
    (a planted folder cannot be replaced: the restore then fails loudly)."""
    try:
        return read_text_or_none(path)
    except ConfigError:
        return "\0unreadable"


def _projects(env: Environment) -> dict[str, dict]:
    try:
        entries = load_registry(env).projects
    except Exception:  # noqa: BLE001 - unreadable: every project differs from before
        return {}
    return {
        e.alias: {
            **{
                name: json.dumps(e.to_data().get(_camel(name)), sort_keys=True) for name in _GUARDED
            },
            "paused": e.paused,
        }
        for e in entries
    }


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def verify(env: Environment, before: UserState) -> list[str]:
    """What changed for the worse since `before`, each put back; [] when nothing did."""
    found = [
        f"budget charges lowered ({c}); OpenLoop put them back"
        for c in budget.restore_charges(env, before.charged)
    ]
    if _text(env.config_file) != before.config:
        found.append(f"{env.config_file} changed; OpenLoop put it back")
        with locked(env.config_file, what="global config"):
            if before.config is None:
                env.config_file.unlink(missing_ok=True)
            else:
                atomic_write_text(env.config_file, before.config)
    if before.paused and not env.pause_file.exists():
        found.append(f"{env.pause_file} removed (OpenLoop was paused); left for you to check")
    for path, text in before.baselines.items():
        if _text(path) != text:
            found.append(f"{path} changed; OpenLoop put it back")
            with locked(path, what="baseline cache"):
                if text is None:
                    path.unlink(missing_ok=True)
                else:
                    atomic_write_text(path, text)
    now = _projects(env)
    changed = {
        alias: fields
        for alias, fields in before.projects.items()
        if {k: now.get(alias, {}).get(k) for k in _GUARDED} != {k: fields[k] for k in _GUARDED}
        or (fields["paused"] and not now.get(alias, {}).get("paused"))
    }
    added = sorted(set(now) - set(before.projects))
    if changed or added:
        found.append(
            "project registry changed for "
            + ", ".join(sorted(changed) + added)
            + "; OpenLoop put the entries back (a project linked meanwhile keeps its link but"
            " loses any approval: 'openloop project trust' it)"
        )
        _restore_projects(env, before, changed, added)
    return found


def _restore_projects(env, before: UserState, changed: dict, added: list[str]) -> None:
    from openloop.state.registry import ProjectEntry

    with edit_registry(env) as registry:
        for entry in registry.projects:
            if entry.alias in added:
                entry.trust = None
        for alias, fields in changed.items():
            entry = registry.find(alias)
            data = entry.to_data() if entry else {"alias": alias}
            for name in _GUARDED:
                data[_camel(name)] = json.loads(fields[name])
            data["paused"] = fields["paused"] or data.get("paused", False)
            restored = ProjectEntry.model_validate(data)
            if entry is None:
                registry.projects.append(restored)
            else:
                registry.projects[registry.projects.index(entry)] = restored
