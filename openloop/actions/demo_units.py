"""The demo through the real systemd units: its own instance, never the user's units.

When a user manager is reachable, `openloop demo` schedules its sample project the way
`openloop service install` + `service start -p` would: `openloop@<alias>.timer` fires
`openloop@<alias>.service`, whose gate and run-once leave their records in the journal. The
alias is the demo's own (`demo-<random>`), so no instance name of the user's can clash.

What it writes into the user's unit directory, and removes at the end:
- `openloop@<alias>.service.d/`, `openloop@<alias>.timer.d/`: the project's drop-ins (what
  `service install` writes for any project) plus `90-openloop-demo.conf`, which resets every
  setting the user's own template drop-ins may carry (Environment=, EnvironmentFile= with
  their API keys, the opt-in sandbox with its private /tmp, the command of another OpenLoop
  installation) and states the demo's; for the timer, a 2-second schedule;
- `openloop-failure@openloop@<alias>.service.service.d/`: the same reset for its failure notice;
- the templates themselves only when none are installed; removed again unless the user has
  installed OpenLoop's units since, or another demo's instance still uses them.
The user's templates, template drop-ins, timers and openloop.target are never touched: a demo
never changes how the user's own projects run.
"""

from __future__ import annotations

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

from openloop.actions.activity import pid_alive
from openloop.adapters import units
from openloop.env import Environment
from openloop.errors import OpenLoopError

DEMO_DROPIN = "90-openloop-demo.conf"
# Seconds: the demo's timer fires a second after it starts and two seconds after each run.
FAST_TIMER = (
    # An empty OnActiveSec= clears every trigger of the files before (a calendar too).
    "[Timer]\nOnActiveSec=\nOnActiveSec=1s\nOnUnitInactiveSec=2s\n"
    "RandomizedDelaySec=0\nAccuracySec=100ms\nPersistent=no\n"
)
# What the units see of the demo's environment (everything else comes from these files).
CARRIED = (
    "HOME",
    "OPENLOOP_HOME",
    "OPENLOOP_PI_BIN",
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


class UnitsUnavailable(OpenLoopError):
    """No user manager the demo can use: it calls run-once directly instead."""


def new_alias() -> str:
    return f"demo-{secrets.token_hex(3)}"


def manager_problem(environ: Mapping[str, str]) -> str | None:
    """Why the demo cannot run through systemd here (None: it can)."""
    if shutil.which("systemctl", path=environ.get("PATH")) is None:
        return "systemctl is not installed"
    env = Environment.from_os(environ)
    try:
        proc = units.systemctl(env, "show-environment", check=False, timeout=10)
    except OpenLoopError as exc:
        return str(exc)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        return f"no user manager reachable ({detail[-1] if detail else proc.returncode})"
    try:
        units.check_unit_dir_seen(env)
    except OpenLoopError as exc:
        return str(exc)
    return None


def _quote_exec(command: list[str]) -> str:
    return shlex.join(arg.replace("%", "%%").replace("$", "$$") for arg in command)


# The first line of each demo drop-in: whose it is, so that a later demo can remove the units
# of one that was killed (SIGKILL leaves no chance to clean up).
OWNER = "# Written by 'openloop demo' (pid {pid}) for its own instance; removed when it ends.\n"
_OWNER = re.compile(r"^# Written by 'openloop demo' \(pid (\d+)\)")
# In the timer's drop-in: the templates this demo wrote (none were installed), for a later
# demo to remove them if it was killed.
_TEMPLATES = re.compile(r"^# Templates it wrote: (.*)$", re.M)
TEMPLATE_NAMES = ("openloop@.service", "openloop@.timer", "openloop-failure@.service")


def service_override(demo_env: Mapping[str, str], path_dirs: list[str]) -> str:
    """The demo instance's last word on its service: its environment only, this installation's
    command, no sandbox (the demo lives under /tmp, which a private /tmp would hide)."""
    exe = _quote_exec(units.openloop_command())
    lines = [
        OWNER.format(pid=os.getpid()),
        "[Service]\n",
        "Environment=\n",
        "EnvironmentFile=\n",
        f"Environment={units.quote_env('PATH', ':'.join(path_dirs))}\n",
    ]
    for key in CARRIED:
        if demo_env.get(key):
            lines.append(f"Environment={units.quote_env(key, demo_env[key])}\n")
    lines += [
        "ExecCondition=\n",
        f"ExecCondition={exe} gate --project %i\n",
        "ExecStart=\n",
        f"ExecStart={exe} run-once --project %i --quiet\n",
        "ExecStopPost=\n",
        f"ExecStopPost={exe} record-exit --project %i\n",
        "PrivateTmp=no\nProtectSystem=no\nProtectHome=no\nPrivateUsers=no\nReadWritePaths=\n",
    ]
    return "".join(lines)


def failure_override(demo_env: Mapping[str, str], path_dirs: list[str]) -> str:
    exe = _quote_exec(units.openloop_command())
    text = service_override(demo_env, path_dirs).split("ExecCondition=\n")[0]
    return text + f"ExecStart=\nExecStart={exe} notify-failure --unit %i\n"


@dataclass
class DemoUnits:
    """The demo's instance in the user's manager; `remove()` undoes every file it wrote."""

    env: Environment  # for systemctl: the demo's, with the manager's XDG_CONFIG_HOME
    alias: str
    unit_environ: Mapping[str, str]  # what the units run with: the demo's isolated world
    written: list[Path] = field(default_factory=list)
    dirs: list[Path] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)

    @property
    def service(self) -> str:
        return units.instance(self.alias, "service")

    @property
    def timer(self) -> str:
        return units.instance(self.alias, "timer")

    def install(self, project_dropins: dict[Path, str]) -> Path:
        """Writes the instance's drop-ins (and the templates if none are installed), reloads."""
        unit_dir = units.user_unit_dir(self.env)
        path_dirs = units.tool_path(self.env)
        files = dict(project_dropins)
        files[unit_dir / f"{self.service}.d" / DEMO_DROPIN] = service_override(
            self.unit_environ, path_dirs
        )
        failure = f"openloop-failure@{self.service}.service.d"
        files[unit_dir / failure / DEMO_DROPIN] = failure_override(self.unit_environ, path_dirs)
        if units.packaged_units(self.env) is None:
            rendered = units.render_templates(units.openloop_command())
            for name in TEMPLATE_NAMES:
                if not (unit_dir / name).exists():
                    files[unit_dir / name] = rendered[name]
                    self.templates.append(name)
        owner = OWNER.format(pid=os.getpid())
        if self.templates:
            owner += f"# Templates it wrote: {' '.join(self.templates)}\n"
        files[unit_dir / f"{self.timer}.d" / DEMO_DROPIN] = owner + FAST_TIMER
        for path, text in files.items():
            if path.parent != unit_dir and path.parent not in self.dirs:
                if path.parent.exists():
                    raise UnitsUnavailable(f"{path.parent} exists already: not the demo's")
                self.dirs.append(path.parent)
            path.parent.mkdir(parents=True, exist_ok=True)
            units.write_if_changed(path, text)
            self.written.append(path)
        units.daemon_reload(self.env)
        return unit_dir

    def start(self) -> None:
        units.systemctl(self.env, "start", self.timer)

    def state(self) -> dict[str, str]:
        return units.show(self.env, self.service, "ActiveState", "StatusText", "Result")

    def stop(self) -> None:
        """The timer, then a running iteration (which records itself as interrupted)."""
        units.systemctl(self.env, "stop", self.timer, check=False)
        units.systemctl(self.env, "stop", self.service, check=False, timeout=120)

    def remove(self) -> None:
        self.stop()
        unit_dir = units.user_unit_dir(self.env)
        for path in self.written:
            if path.parent != unit_dir:  # templates: below, if still the demo's alone
                path.unlink(missing_ok=True)
        for folder in self.dirs:
            shutil.rmtree(folder, ignore_errors=True)
        _remove_templates(self.env, self.templates)
        self.written.clear()
        self.dirs.clear()
        self.templates.clear()
        units.daemon_reload(self.env)
        units.systemctl(
            self.env,
            "reset-failed",
            self.service,
            self.timer,
            f"openloop-failure@{self.service}.service",
            check=False,
        )


def _remove_templates(env: Environment, names: list[str]) -> None:
    """The templates a demo wrote because none were installed, unless someone relies on them
    now: an install of the user's since (its environment drop-in) or another instance with
    drop-ins (another demo running). Only an unchanged copy is removed."""
    unit_dir = units.user_unit_dir(env)
    if not names or (unit_dir / "openloop@.service.d" / units.ENV_DROPIN).exists():
        return
    if any(unit_dir.glob("openloop@?*.service.d")) or any(unit_dir.glob("openloop@?*.timer.d")):
        return
    rendered = units.render_templates(units.openloop_command())
    for name in names:
        path = unit_dir / name
        if (
            name in rendered
            and path.is_file()
            and path.read_text(encoding="utf-8") == rendered[name]
        ):
            path.unlink()


def remove_stale(env: Environment) -> list[str]:
    """The instances of earlier demos whose process is gone (killed before it could clean up):
    timer and service stopped, their drop-in directories removed. Returns their names."""
    unit_dir = units.user_unit_dir(env)
    removed = []
    for dropin in sorted(unit_dir.glob(f"openloop@demo-*.timer.d/{DEMO_DROPIN}")):
        try:
            text = dropin.read_text(encoding="utf-8")
        except OSError:
            continue
        found = _OWNER.match(text)
        if found is None or pid_alive(int(found.group(1))):
            continue
        wrote = _TEMPLATES.search(text)
        alias = dropin.parent.name.removeprefix("openloop@").removesuffix(".timer.d")
        stale = DemoUnits(env, alias, {})
        stale.dirs = [
            unit_dir / f"{stale.timer}.d",
            unit_dir / f"{stale.service}.d",
            unit_dir / f"openloop-failure@{stale.service}.service.d",
        ]
        stale.templates = [
            n for n in (wrote.group(1).split() if wrote else []) if n in TEMPLATE_NAMES
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
