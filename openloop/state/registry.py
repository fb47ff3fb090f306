"""The project registry (`projects.json`): which repositories are linked, under which alias.

It lives on the user's side (config dir), never in a repository, so it is also where the user's
approval of a repository's commands (trust) is recorded.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from pydantic import Field

from openloop.env import Environment
from openloop.errors import ConfigError, InputError, NotFoundError
from openloop.state.models_base import FileModel, file_version, validate
from openloop.state.storage import (
    atomic_write_text,
    dump_json,
    load_json_object,
    locked,
    read_text_or_none,
)
from openloop.text import check_line

REGISTRY_VERSION = 2
ALIAS_MAX = 64
_ALIAS_CHARS = re.compile(r"[a-z0-9_.-]")


class TrustRecord(FileModel):
    fingerprint: str
    commands: dict[str, str | None] = Field(default_factory=dict)
    approved_at: str
    # The governing policy.yaml's text and its fingerprint, as approved (None: never approved).
    policy_fingerprint: str | None = None
    policy: str | None = None


class ProjectEntry(FileModel):
    alias: str
    path: str
    initialized: bool = False
    default_branch: str | None = None
    paused: bool = False
    paused_at: str | None = None
    trust: TrustRecord | None = None
    created_at: str | None = None
    updated_at: str | None = None


class Registry(FileModel):
    version: Literal[2] = REGISTRY_VERSION
    projects: list[ProjectEntry] = Field(default_factory=list)

    def find(self, alias: str) -> ProjectEntry | None:
        return next((p for p in self.projects if p.alias == alias), None)

    def get(self, alias: str) -> ProjectEntry:
        entry = self.find(alias)
        if entry is None:
            known = ", ".join(p.alias for p in self.projects) or "none linked yet"
            raise NotFoundError(f"unknown project '{alias}' (known: {known})")
        return entry


def alias_problem(alias: str) -> str | None:
    """Why `alias` cannot be a project alias (it becomes a systemd instance name), or None."""
    if not alias:
        return "it is empty"
    if len(alias) > ALIAS_MAX:
        return f"it is {len(alias)} characters long (at most {ALIAS_MAX})"
    if alias[0] in "-.":
        return f"it starts with '{alias[0]}'"
    for ch in alias:
        if not _ALIAS_CHARS.fullmatch(ch):
            if ch.isalpha() and ch.lower() != ch and _ALIAS_CHARS.fullmatch(ch.lower()):
                return f"it has the uppercase letter '{ch}' (use '{alias.lower()}')"
            return f"it has the character {ch!r} (allowed: a-z, 0-9, '-', '_', '.')"
    return None


def check_alias(alias: str) -> str:
    check_line(alias, "alias", "aliases")
    problem = alias_problem(alias)
    if problem:
        raise InputError(f"alias '{alias}' is not allowed: {problem}")
    return alias


def parse_registry(data: dict[str, Any], source: str) -> Registry:
    if file_version(data, REGISTRY_VERSION, source) == 1:
        data = {**data, "version": REGISTRY_VERSION}
    registry = validate(Registry, data, source)
    seen: set[str] = set()
    for index, entry in enumerate(registry.projects):
        if entry.alias in seen:
            raise ConfigError(f"{source}: projects.{index}.alias: duplicate alias '{entry.alias}'")
        seen.add(entry.alias)
    return registry


def load_registry(env: Environment) -> Registry:
    text = read_text_or_none(env.registry_file)
    if text is None:
        return Registry()
    return parse_registry(load_json_object(env.registry_file, text), str(env.registry_file))


@contextmanager
def edit_registry(env: Environment) -> Iterator[Registry]:
    """Read-modify-write under the registry lock; nothing is written if the block raises."""
    with locked(env.registry_file, what="project registry"):
        registry = load_registry(env)
        yield registry
        registry.projects.sort(key=lambda p: p.alias)
        atomic_write_text(env.registry_file, dump_json(registry.to_data()))
