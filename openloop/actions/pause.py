"""Pausing and resuming as a user action: the flag (openloop.state.pause) plus its audit event."""

from __future__ import annotations

from openloop.adapters import journal
from openloop.env import Environment
from openloop.state import backoff
from openloop.state.pause import set_global_pause, set_project_pause
from openloop.state.project import resolve
from openloop.state.registry import load_registry
from openloop.text import check_line


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
        ended = [] if paused else _end_backoff(env, [alias])
        return f"project {alias}" + (" (its environment backoff ended)" if ended else "")
    set_global_pause(env, paused, reason)
    journal.send(f"OpenLoop {event}{why}", event=event)
    ended = [] if paused else _end_backoff(env, [e.alias for e in load_registry(env).projects])
    return "OpenLoop (all projects)" + (
        f" (environment backoff ended: {', '.join(ended)})" if ended else ""
    )


def _end_backoff(env: Environment, aliases: list[str]) -> list[str]:
    """Resuming is also how the user says "fixed it, try now" after an environment error."""
    return [alias for alias in aliases if backoff.clear(env, alias) is not None]
