"""User notification commands (global config `notifications.*`), each sent once per event.

A timer fires every few minutes; a "budget exhausted" or "queue empty" state must not notify on
every tick. Such states are remembered in the state directory until they change.
"""

from __future__ import annotations

import json
import subprocess

from openloop.env import Environment
from openloop.state.config import load_config
from openloop.state.storage import atomic_write_text, dump_json, locked, read_text_or_none

EVENTS = {
    "task-complete": "on_task_complete",
    "task-failed": "on_task_failed",
    "budget-exhausted": "on_budget_exhausted",
    "queue-empty": "on_queue_empty",
    "environment-error": "on_environment_error",
}
# An event with no command of its own uses this one's: whoever hears of failed tasks hears
# that no task can run at all.
FALLBACK = {"environment-error": "on_task_failed"}


def _state_file(env: Environment):
    return env.state_dir / "notified.json"


def notify(
    env: Environment,
    event: str,
    *,
    project: str = "",
    task_id: str = "",
    once_key: str | None = None,
    message: str = "",
) -> bool:
    """Run the command configured for `event`. With `once_key`, only the first time that key is
    seen (until `clear` forgets it). Returns whether a command ran."""
    from openloop.adapters import journal

    settings = load_config(env).notifications
    command = getattr(settings, EVENTS[event])
    if command is None and event in FALLBACK:
        command = getattr(settings, FALLBACK[event])
    if once_key is not None and not _remember(env, once_key):
        return False
    journal.send(
        message or f"{event} {project} {task_id}".strip(),
        event=event,
        project=project or None,
        task=task_id or None,
    )
    if not command:
        return False
    run_env = {
        **env.environ,
        "OPENLOOP_EVENT": event,
        "OPENLOOP_PROJECT": project,
        "OPENLOOP_TASK_ID": task_id,
    }
    try:
        # The user's own command from their own config: a shell line by design.
        subprocess.run(
            ["/bin/sh", "-c", command],
            env=run_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=20,  # inside ExecStopPost, whose whole budget is TimeoutStopSec=90s
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        journal.send(f"notification command for {event} failed", priority=4, project=project)
    return True


def _remember(env: Environment, key: str) -> bool:
    path = _state_file(env)
    with locked(path, what="notification state"):
        text = read_text_or_none(path)
        seen = set(json.loads(text).get("sent", [])) if text else set()
        if key in seen:
            return False
        seen.add(key)
        atomic_write_text(path, dump_json({"sent": sorted(seen)}))
    return True


def clear(env: Environment, key: str) -> None:
    """Forget a state (the queue has work again), so the next time it is reached notifies."""
    path = _state_file(env)
    with locked(path, what="notification state"):
        text = read_text_or_none(path)
        if not text:
            return
        seen = set(json.loads(text).get("sent", []))
        if key in seen:
            seen.discard(key)
            atomic_write_text(path, dump_json({"sent": sorted(seen)}))


def clear_prefix(env: Environment, prefix: str) -> None:
    """Forget every state whose key starts with `prefix` (a project's failures, once it works
    again). Called after every run: reads without the lock first, so usually it costs a read."""
    path = _state_file(env)
    text = read_text_or_none(path)
    if not text or prefix not in text:
        return
    with locked(path, what="notification state"):
        text = read_text_or_none(path)
        if not text:
            return
        seen = set(json.loads(text).get("sent", []))
        kept = {k for k in seen if not k.startswith(prefix)}
        if kept != seen:
            atomic_write_text(path, dump_json({"sent": sorted(kept)}))
