"""Pausing and resuming as a user action: the flag (openloop.state.pause) plus its audit event."""

from __future__ import annotations

from openloop.adapters import journal
from openloop.env import Environment
from openloop.state.pause import set_global_pause, set_project_pause
from openloop.state.project import resolve
from openloop.state.text import check_line


def set_paused(
    env: Environment, paused: bool, alias: str | None = None, reason: str | None = None
) -> str:
    """Pause or resume everything, or one project; recorded in the audit trail. Returns what
    was changed, for the user ("project web" or "OpenLoop")."""
    if reason is not None:
        check_line(reason, "--reason", "reasons")
    event = "paused" if paused else "resumed"
    why = f": {reason}" if reason and paused else ""
    if alias:
        alias = resolve(env, alias).alias
        set_project_pause(env, alias, paused)
        journal.send(f"project {alias} {event}{why}", event=event, project=alias)
        return f"project {alias}"
    set_global_pause(env, paused, reason)
    journal.send(f"OpenLoop {event}{why}", event=event)
    return "OpenLoop (all projects)"
