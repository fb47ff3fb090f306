"""A project backing off after environment failures (pi missing, the API key refused, the quota
spent): user-side state, one file per project in the state directory (`backoff/<alias>.json`),
never in a repository.

Each failure in a row pushes the next try further out: 5 min, 15, 45, 2 h 15, then every 6 h;
a provider that said when to retry ("try again in 20s", "resets at ...") is taken at its word
(up to a day). The file is removed by the next agent run that gets past the environment, or by
`openloop resume`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import Field

from openloop.env import Environment, iso
from openloop.errors import ConfigError
from openloop.state.models_base import FileModel, validate
from openloop.state.storage import (
    atomic_write_text,
    dump_json,
    load_json_object,
    locked,
    read_text_or_none,
)

FIRST_DELAY = timedelta(minutes=5)
FACTOR = 3
MAX_DELAY = timedelta(hours=6)
MAX_PROVIDER_DELAY = timedelta(hours=24)


class Backoff(FileModel):
    kind: str  # openloop.adapters.agent.ENVIRONMENT_KINDS
    reason: str  # what happened: "'pi' not found"
    fix: str  # what to do: "install it or set OPENLOOP_PI_BIN"
    failures: int = Field(1, ge=1)  # in a row
    since: str  # the first of them
    last_at: str
    retry_at: str
    provider_said: bool = False  # retry_at is the provider's own
    task_id: str | None = None
    run_id: str | None = None

    @property
    def message(self) -> str:
        return f"{self.reason}: {self.fix}"


def _file(env: Environment, alias: str):
    return env.state_dir / "backoff" / f"{alias}.json"


def delay(failures: int) -> timedelta:
    """The pause after this many environment failures in a row."""
    return min(FIRST_DELAY * FACTOR ** max(0, failures - 1), MAX_DELAY)


def load(env: Environment, alias: str) -> Backoff | None:
    """The project's backoff record; an unreadable one counts as none (it only ever delays)."""
    path = _file(env, alias)
    text = read_text_or_none(path)
    if not text:
        return None
    try:
        return validate(Backoff, load_json_object(path, text), path)
    except ConfigError:
        return None


def active(env: Environment, alias: str) -> Backoff | None:
    """The backoff while it lasts (now before its retry time), else None."""
    record = load(env, alias)
    if record is None or env.now() >= datetime.fromisoformat(record.retry_at):
        return None
    return record


def record_failure(
    env: Environment,
    alias: str,
    *,
    kind: str,
    reason: str,
    fix: str,
    retry_after: float | None = None,
    task_id: str | None = None,
    run_id: str | None = None,
) -> Backoff:
    """One more environment failure in a row: the next try moves further out."""
    path = _file(env, alias)
    now = env.now()
    with locked(path, what="backoff state"):
        old = load(env, alias)
        failures = old.failures + 1 if old else 1
        if retry_after is not None and retry_after > 0:
            wait = min(timedelta(seconds=retry_after), MAX_PROVIDER_DELAY)
        else:
            wait = delay(failures)
        record = Backoff(
            kind=kind,
            reason=reason,
            fix=fix,
            failures=failures,
            since=old.since if old else iso(now),
            last_at=iso(now),
            retry_at=iso(now + wait),
            provider_said=retry_after is not None and retry_after > 0,
            task_id=task_id,
            run_id=run_id,
        )
        atomic_write_text(path, dump_json(record.to_data()))
    return record


def clear(env: Environment, alias: str) -> Backoff | None:
    """The environment works again: forget the failures. Returns what was cleared."""
    path = _file(env, alias)
    if not path.exists():
        return None
    with locked(path, what="backoff state"):
        record = load(env, alias)
        path.unlink(missing_ok=True)
    return record


def retry_time(env: Environment, record: Backoff) -> str:
    """The retry time in local time: "14:35", or "2026-11-26 14:35" when not today."""
    when = datetime.fromisoformat(record.retry_at).astimezone()
    now = env.now().astimezone()
    return when.strftime("%H:%M" if when.date() == now.date() else "%Y-%m-%d %H:%M")


def summary(env: Environment, alias: str) -> dict[str, Any] | None:
    """The backoff for `status`, `service status` and `doctor`: with the fix and the retry time,
    also once that time has passed (until a run shows the environment fixed)."""
    record = load(env, alias)
    if record is None:
        return None
    return {
        "kind": record.kind,
        "reason": record.reason,
        "fix": record.fix,
        "failures": record.failures,
        "since": record.since,
        "retryAt": record.retry_at,
        "retryAtLocal": retry_time(env, record),
        "due": active(env, alias) is None,
    }


def retry_phrase(summary: dict[str, Any]) -> str:
    return "retry at the next run" if summary["due"] else f"retry at {summary['retryAtLocal']}"


def describe(alias: str, summary: dict[str, Any]) -> str:
    """One line: "'pi' not found: install it or set OPENLOOP_PI_BIN; retry at 14:35 (...)"."""
    return (
        f"{summary['reason']}: {summary['fix']}; {retry_phrase(summary)} "
        f"(failed {summary['failures']}x in a row, no attempt counted; "
        f"'openloop resume -p {alias}' retries now)"
    )


def gate_reason(env: Environment, alias: str) -> str | None:
    """Why the project is skipped for now, with the fix and the retry time; None once due."""
    record = active(env, alias)
    if record is None:
        return None
    times = f"{record.failures} times in a row" if record.failures > 1 else "once"
    return (
        f"{record.message}; retry at {retry_time(env, record)} "
        f"(the agent's environment failed {times}; "
        f"'openloop resume -p {alias}' retries now)"
    )
