"""The environment object: where files live, what time it is, what the terminal is.

One instance is built at start-up and passed down, so tests swap paths and the clock without
monkeypatching (the httpie pattern).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path


def _utcnow() -> datetime:
    return datetime.now(UTC)


def iso(dt: datetime) -> str:
    """ISO-8601 UTC with milliseconds and a Z, the format the original tool's files use."""
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Environment:
    config_dir: Path
    state_dir: Path
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    clock: Callable[[], datetime] = _utcnow
    stdout_isatty: bool = False

    @classmethod
    def from_os(cls, environ: Mapping[str, str] | None = None) -> Environment:
        env = dict(os.environ if environ is None else environ)
        home = Path(env.get("HOME") or Path.home())
        if env.get("OPENLOOP_HOME"):
            # One directory for everything, like the original tool's ~/.openloop/.
            root = Path(env["OPENLOOP_HOME"]).expanduser().absolute()
            config_dir, state_dir = root, root / "state"
        else:
            config_dir = Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "openloop"
            state_dir = Path(env.get("XDG_STATE_HOME") or home / ".local" / "state") / "openloop"
        return cls(
            config_dir=config_dir,
            state_dir=state_dir,
            environ=env,
            stdout_isatty=sys.stdout.isatty(),
        )

    def now(self) -> datetime:
        return self.clock()

    def now_iso(self) -> str:
        return iso(self.clock())

    @property
    def home_id(self) -> str:
        """A short id of this OpenLoop home (a hash of the resolved config directory): every
        journal record carries it as OPENLOOP_HOME_ID, so `logs` and `events` show this home's
        records only, also when several homes (or users' test homes) share one journal."""
        return home_id(self.config_dir)

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.json"

    @property
    def registry_file(self) -> Path:
        return self.config_dir / "projects.json"

    @property
    def locks_dir(self) -> Path:
        return self.state_dir / "locks"

    @property
    def worktrees_dir(self) -> Path:
        return self.state_dir / "worktrees"

    @property
    def budget_file(self) -> Path:
        return self.state_dir / "budget.json"

    @property
    def pause_file(self) -> Path:
        return self.state_dir / "paused.json"


def home_id(config_dir: Path) -> str:
    import hashlib

    return hashlib.sha256(str(config_dir.resolve()).encode()).hexdigest()[:12]


# The home this process serves, for the journal records it writes (journal.make_record adds it
# as OPENLOOP_HOME_ID). Set once by the CLI at start (openloop.cli.cli), for every command and
# so for the units' run-once, gate and record-exit too; code that never goes through the CLI
# writes records without the tag, as OpenLoop before it did.
_serving: str | None = None


def serve_home(env: Environment | None) -> None:
    global _serving
    _serving = env.home_id if env is not None else None


def serving_home_id() -> str | None:
    return _serving
