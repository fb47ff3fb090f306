"""The per-project iteration lock: one iteration (or one merge, or one purge) per project at a
time, systemd or not. Here, below both the iteration and the actions that must wait for it."""

from __future__ import annotations

from pathlib import Path

from openloop.env import Environment
from openloop.errors import BusyError
from openloop.state.storage import locked


def iteration_lock_target(env: Environment, alias: str) -> Path:
    return env.locks_dir / f"{alias}.iteration"


class iteration_lock:  # noqa: N801 - used as a context manager
    """One iteration per project at a time, systemd or not. flock dies with its holder."""

    def __init__(self, env: Environment, alias: str) -> None:
        self.target = iteration_lock_target(env, alias)
        self.alias = alias

    def __enter__(self) -> None:
        self._lock = locked(self.target, timeout=0, what=f"project '{self.alias}'")
        try:
            self._lock.__enter__()
        except BusyError:
            raise BusyError(
                f"another iteration of project '{self.alias}' is running; try again when it ends"
            ) from None

    def __exit__(self, *exc: object) -> None:
        self._lock.__exit__(*exc)
