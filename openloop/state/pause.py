"""Global and per-project pause flags (user-side state, never in a repository). Pausing as a
user action, with its audit event, is openloop.actions.pause."""

from __future__ import annotations

import json

from openloop.env import Environment
from openloop.state.registry import edit_registry, load_registry
from openloop.state.storage import atomic_write_text, dump_json, locked, read_text_or_none


def global_pause(env: Environment) -> dict | None:
    """{"pausedAt": ..., "reason": ...} while paused, else None."""
    text = read_text_or_none(env.pause_file)
    if not text:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return {"pausedAt": None, "reason": "pause file unreadable; treated as paused"}
    return data if isinstance(data, dict) and data.get("paused") else None


def set_global_pause(env: Environment, paused: bool, reason: str | None = None) -> None:
    with locked(env.pause_file, what="pause flag"):
        if paused:
            record = {"paused": True, "pausedAt": env.now_iso(), "reason": reason}
            atomic_write_text(env.pause_file, dump_json(record))
        elif env.pause_file.exists():
            env.pause_file.unlink()


def set_project_pause(env: Environment, alias: str, paused: bool) -> None:
    with edit_registry(env) as registry:
        entry = registry.get(alias)
        entry.paused = paused
        entry.paused_at = env.now_iso() if paused else None


def project_paused(env: Environment, alias: str) -> bool:
    entry = load_registry(env).find(alias)
    return bool(entry and entry.paused)
