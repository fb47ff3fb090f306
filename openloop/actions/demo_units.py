"""The demo through real systemd units, standalone ones of its own: never the user's units.

When a user manager is reachable, `openloop demo` schedules its sample project with the units
OpenLoop ships (units/openloop@.service and openloop@.timer, rendered as `service install`
renders them, with the project filled in) under a name of its own, `openloop_demo_<random>`:
the timer fires the service every 2 seconds after the last run, the service runs the same
gate, run-once and record-exit, and their records go to the journal.

Why not an instance of the user's `openloop@.service`: an instance gets every drop-in of its
template, and the user's (`systemctl --user edit` writes `override.conf`, which sorts after
anything the demo could write) may set their API keys, hooks, another OpenLoop's command or a
sandbox. A name with no `-` and no `@` has no template and no prefix drop-ins: only the
demo's files apply (and user-wide `service.d/` ones, which the user meant for every service).

Each unit stops itself once the demo is gone: the service's first condition checks that the
demo still holds its lock file, else stops the timer and skips. A later demo removes the
files of one that was killed (SIGKILL leaves no chance to clean up).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from openloop.adapters import manager, units
from openloop.env import Environment
from openloop.errors import OpenLoopError

PREFIX = "openloop_demo_"
DROPIN = "50-openloop-demo.conf"
# Seconds: the demo's timer fires a second after it starts and two seconds after each run.
# An empty OnActiveSec= clears every trigger of the unit file before.
FAST_TIMER = (
    "[Timer]\nOnActiveSec=\nOnActiveSec=1s\nOnUnitInactiveSec=2s\n"
    "RandomizedDelaySec=0\nAccuracySec=100ms\n"
)
# What the units see of the demo's environment (the manager passes its own too: a variable
# set here wins over the manager's).
CARRIED = (
    "HOME",
    "OPENLOOP_HOME",
    "OPENLOOP_PI_BIN",
    "PI_CODING_AGENT_DIR",
    "XDG_CONFIG_HOME",
    "XDG_STATE_HOME",
    "XDG_DATA_HOME",
    "GIT_CONFIG_GLOBAL",
    "GIT_CONFIG_NOSYSTEM",
    "GIT_AUTHOR_NAME",
    "GIT_AUTHOR_EMAIL",
    "GIT_COMMITTER_NAME",
    "GIT_COMMITTER_EMAIL",
    "NO_PROXY",
    "no_proxy",
    "PI_OFFLINE",
    "PI_SKIP_VERSION_CHECK",
)
_LOCK_LINE = re.compile(r"^# Demo lock: (.+)$", re.M)
# Paths that go into unit files as they are: no quoting subtleties, no specifiers.
_PLAIN_PATH = re.compile(r"^/[A-Za-z0-9._+,:@/ -]*$")


def new_alias() -> str:
    return f"demo-{secrets.token_hex(3)}"


def unit_name(alias: str) -> str:
    return PREFIX + alias.removeprefix("demo-")


def manager_problem(environ: Mapping[str, str], paths: tuple[Path, ...] = ()) -> str | None:
    """Why the demo cannot run through systemd here (None: it can)."""
    for tool in ("systemctl", "flock"):
        if shutil.which(tool, path=environ.get("PATH")) is None:
            return f"{tool} is not installed"
    for path in (*paths, Path(units.openloop_command()[0])):
        if not _PLAIN_PATH.match(str(path)):
            return f"{str(path)!r} has characters that unit files would take apart"
    env = Environment.from_os(environ)
    try:
        proc = manager.systemctl(env, "show-environment", check=False, timeout=10)
    except OpenLoopError as exc:
        return str(exc)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        return f"no user manager reachable ({detail[-1] if detail else proc.returncode})"
    try:
        manager.check_unit_dir_seen(env)
    except OpenLoopError as exc:
        return str(exc)
    return None


def _exec(command: list[str]) -> str:
    """A command line for a unit file: words quoted as systemd reads them, `%` and `$` kept."""
    return shlex.join(arg.replace("%", "%%").replace("$", "$$") for arg in command)


@dataclass
class DemoUnits:
    """The demo's timer and service; `remove()` undoes every file it wrote, also after an
    install that was cut short."""

    env: Environment  # for systemctl: the manager's unit directory
    alias: str
    unit_environ: Mapping[str, str]  # what the units run with: the demo's isolated world
    lock: Path
    name: str = ""
    written: list[Path] = field(default_factory=list)
    _fd: int | None = None

    def __post_init__(self) -> None:
        self.name = self.name or unit_name(self.alias)

    @property
    def service(self) -> str:
        return f"{self.name}.service"

    @property
    def timer(self) -> str:
        return f"{self.name}.timer"

    def files(self, limits: str) -> dict[Path, str]:
        """The unit files: OpenLoop's shipped units with the project filled in, without the
        failure notice (the demo watches the unit itself) and openloop.target; drop-ins with
        the project's limits, the demo's environment and its lock check, and the fast timer."""
        unit_dir = units.user_unit_dir(self.env)
        exe = units.openloop_command()
        rendered = units.render_templates(exe)
        owner = f"# Written by 'openloop demo'; removed when it ends.\n# Demo lock: {self.lock}\n"
        service = rendered["openloop@.service"].replace("%i", self.alias)
        service = re.sub(r"^OnFailure=.*\n", "", service, flags=re.M)
        timer = rendered["openloop@.timer"].replace("%i", self.alias)
        timer = re.sub(r"^PartOf=.*\n", "", timer, flags=re.M)
        env_lines = [f"Environment={units.quote_env('PATH', ':'.join(units.tool_path(self.env)))}"]
        env_lines += [
            f"Environment={units.quote_env(key, self.unit_environ[key])}"
            for key in CARRIED
            if self.unit_environ.get(key)
        ]
        # Skip (and stop the timer) unless the demo still holds its lock: a demo killed with
        # SIGKILL leaves no timer working on for it.
        guard = (
            'ExecCondition=/bin/sh -c \'flock -n -E 0 "$$0" false && exit 0; '
            'systemctl --user stop --no-block "$$1"; exit 1\' '
            f"{_exec([str(self.lock), self.timer])}"
        )
        gate = f"ExecCondition={_exec(exe)} gate --project {self.alias}"
        dropin = "\n".join(
            [owner.rstrip("\n"), limits.rstrip("\n"), *env_lines, "ExecCondition=", guard, gate]
        )
        return {
            unit_dir / self.service: owner + service,
            unit_dir / self.timer: owner + timer,
            unit_dir / f"{self.service}.d" / DROPIN: dropin + "\n",
            unit_dir / f"{self.timer}.d" / DROPIN: owner + FAST_TIMER,
        }

    def hold(self) -> None:
        """Takes the lock the units check; held until remove() (SIGKILL releases it)."""
        self._fd = os.open(self.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def install(self, limits: str) -> Path:
        if self._fd is None:
            self.hold()
        unit_dir = units.user_unit_dir(self.env)
        for path, text in self.files(limits).items():
            if path.exists():
                raise OpenLoopError(f"{path} exists already: not the demo's")
            self.written.append(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            units.write_if_changed(path, text)
        manager.daemon_reload(self.env)
        return unit_dir

    def start(self) -> None:
        manager.systemctl(self.env, "start", self.timer)

    def state(self) -> dict[str, str]:
        return manager.show(self.env, self.service, "ActiveState", "StatusText", "Result")

    def remove(self) -> None:
        """The timer stopped, a running iteration stopped (it records itself as interrupted),
        the files removed, the lock released. Never raises: it runs on the way out."""
        if self.written:
            for args in (("stop", self.timer), ("stop", self.service)):
                try:
                    manager.systemctl(self.env, *args, check=False, timeout=150)
                except OpenLoopError:
                    pass
            for path in self.written:
                path.unlink(missing_ok=True)
                if path.parent.name.endswith(".d"):
                    shutil.rmtree(path.parent, ignore_errors=True)
            self.written.clear()
            try:
                manager.daemon_reload(self.env)
                manager.systemctl(self.env, "reset-failed", self.service, self.timer, check=False)
            except OpenLoopError:
                pass
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _abandoned(lock: Path) -> bool:
    """Whether the demo that holds `lock` is gone (no file, or nobody holds it)."""
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def remove_stale(env: Environment) -> list[str]:
    """The units of earlier demos that were killed before they could clean up: stopped and
    removed. Returns their names."""
    unit_dir = units.user_unit_dir(env)
    removed = []
    for timer in sorted(unit_dir.glob(f"{PREFIX}*.timer")):
        try:
            found = _LOCK_LINE.search(timer.read_text(encoding="utf-8"))
        except OSError:
            continue
        if found is None or not _abandoned(Path(found.group(1))):
            continue
        stale = DemoUnits(env, "", {}, Path(found.group(1)), name=timer.name[: -len(".timer")])
        stale.written = [
            path
            for path in (
                unit_dir / stale.service,
                timer,
                unit_dir / f"{stale.service}.d" / DROPIN,
                unit_dir / f"{stale.timer}.d" / DROPIN,
            )
            if path.exists()
        ]
        stale.remove()
        removed.append(stale.timer)
    return removed


@contextmanager
def journal_lines(
    env: Environment, unit: str, say: Callable[[str], None]
) -> Iterator[Callable[[], bool]]:
    """Follows the unit's journal (`journalctl --user -u UNIT -f`) on a thread while the demo
    runs, handing each record's message to `say`. Yields a function telling whether any
    record arrived (a journal the user cannot read shows nothing, which the demo then says)."""
    seen = threading.Event()
    proc = None
    try:
        proc = subprocess.Popen(
            ["journalctl", "--user", "-u", unit, "-f", "-n", "0", "-o", "json", "--no-pager"],
            env=dict(env.environ),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
    except OSError:
        proc = None

    def pump() -> None:
        assert proc is not None and proc.stdout is not None
        for raw in proc.stdout:
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            message = record.get("MESSAGE")
            if isinstance(message, list):  # journalctl's form for a message that is not UTF-8
                message = bytes(message).decode("utf-8", "replace")
            if message:
                seen.set()
                say(str(message))

    thread = threading.Thread(target=pump, daemon=True, name="openloop-demo-journal")
    if proc is not None:
        thread.start()
    try:
        yield seen.is_set
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
            thread.join(timeout=2)
