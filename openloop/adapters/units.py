"""The systemd user units: where they live, rendering them, per-project drop-ins. Talking to
the user manager (systemctl) is adapters/manager.py.

OpenLoop has no daemon of its own. `openloop@.service` runs one iteration, `openloop@.timer`
schedules it per project, `openloop.target` groups the timers. Distro packages ship the units in
/usr/lib/systemd/user (ExecStart=/usr/bin/openloop); a pip/pipx install gets them rendered into
~/.config/systemd/user pointing at the real executable. Everything per user or per project
(environment, limits, schedule) goes into drop-ins, so `systemctl --user cat` shows the truth.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from openloop.env import Environment
from openloop.errors import OpenLoopError
from openloop.resources import data_dir
from openloop.state.config import GlobalConfig
from openloop.state.projectconfig import ProjectConfig

TEMPLATES = ("openloop@.service", "openloop@.timer", "openloop.target", "openloop-failure@.service")
PACKAGED_DIRS = (Path("/usr/lib/systemd/user"), Path("/usr/local/lib/systemd/user"))
DROPIN = "50-openloop.conf"
ENV_DROPIN = "10-environment.conf"
SANDBOX_DROPIN = "60-sandbox.conf"
HEADER = "# Written by 'openloop service install'; re-run it instead of editing.\n"


class SystemdError(OpenLoopError):
    """systemctl failed or the user manager is not reachable."""


# --- where things are ---------------------------------------------------------------------------


def user_unit_dir(env: Environment) -> Path:
    base = env.environ.get("XDG_CONFIG_HOME") or str(Path(env.environ.get("HOME", "~")) / ".config")
    return Path(base).expanduser() / "systemd" / "user"


def packaged_units(env: Environment | None = None) -> Path | None:
    """The directory a distro package installed the template units into, if any."""
    return next((d for d in vendor_unit_dirs(env) if (d / "openloop@.service").is_file()), None)


# --- vendor units (a distro package) ------------------------------------------------------------

VENDOR_DIR_VAR = "OPENLOOP_VENDOR_UNIT_DIR"
# What the user manager reads between ~/.config/systemd/user and the vendor directories.
ADMIN_UNIT_DIR = Path("/etc/systemd/user")


def vendor_unit_dirs(env: Environment | None = None) -> tuple[Path, ...]:
    """Where distro packages put user units. OPENLOOP_VENDOR_UNIT_DIR (colon-separated)
    replaces the list: for tests, and for a package built with another prefix."""
    environ = env.environ if env is not None else os.environ
    override = environ.get(VENDOR_DIR_VAR)
    if override:
        return tuple(Path(p) for p in override.split(":") if p)
    return PACKAGED_DIRS


def unit_sources(env: Environment) -> dict[str, Path | None]:
    """For each template unit, the file the user manager loads: the first of the user's
    directory, /etc/systemd/user and the vendor directories that has it (systemd's order)."""
    search = [user_unit_dir(env)]
    if VENDOR_DIR_VAR not in env.environ:  # a test's vendor directory stands for the system
        search.append(ADMIN_UNIT_DIR)
    search += vendor_unit_dirs(env)
    return {
        name: next((d / name for d in search if (d / name).is_file()), None) for name in TEMPLATES
    }


def is_rendered_copy(name: str, text: str) -> bool:
    """Whether `text` is exactly the shipped unit `name` as render_templates() writes it, for
    some executable: a copy OpenLoop wrote, not one the user edited."""
    import re

    parts = (data_dir("units") / name).read_text(encoding="utf-8").split("/usr/bin/openloop")
    pattern = "(.+?)".join(re.escape(p) for p in parts)
    found = re.fullmatch(pattern, text, flags=re.DOTALL)
    return found is not None and len(set(found.groups())) <= 1


def shadowing_copies(env: Environment) -> list[Path]:
    """Copies of the template units in the user's directory that hide the vendor units (left by
    an install from before the package): only those OpenLoop wrote itself."""
    if packaged_units(env) is None:
        return []
    unit_dir = user_unit_dir(env)
    return [
        unit_dir / name
        for name in TEMPLATES
        if (unit_dir / name).is_file()
        and is_rendered_copy(name, (unit_dir / name).read_text(encoding="utf-8"))
    ]


def openloop_command() -> list[str]:
    """How a unit should start this very installation of OpenLoop."""
    script = Path(sys.executable).parent / "openloop"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script.absolute())]
    return [str(Path(sys.executable).absolute()), "-m", "openloop"]


# --- rendering ----------------------------------------------------------------------------------


def render_templates(command: list[str]) -> dict[str, str]:
    """The shipped unit files with ExecStart pointing at `command` instead of /usr/bin/openloop.
    systemd expands % specifiers and $VARIABLES in command lines: a path containing them is
    escaped, then quoted like a shell word."""
    exe = shlex.join(arg.replace("%", "%%").replace("$", "$$") for arg in command)
    return {
        name: (data_dir("units") / name)
        .read_text(encoding="utf-8")
        .replace("/usr/bin/openloop", exe)
        for name in TEMPLATES
    }


def _seconds(value: float) -> str:
    return f"{int(value)}s"


def hard_timeout(gconf: GlobalConfig, pconf: ProjectConfig) -> int:
    """RuntimeMaxSec: the agent's own limit plus room for three rounds of the three checks (a
    deferred merge re-checked, the attempt's own, an auto-merge re-checked on a moved default
    branch) and bookkeeping; systemd's kill is the backstop, OpenLoop's limits act first."""
    if pconf.schedule.hard_timeout_seconds:
        return pconf.schedule.hard_timeout_seconds
    run = pconf.runtime.run_timeout_seconds or gconf.runtime.run_timeout_seconds
    check = pconf.validation.timeout_seconds or gconf.runtime.validation_timeout_seconds
    return run + 9 * check + 120


def watchdog_timeout(gconf: GlobalConfig, pconf: ProjectConfig) -> int:
    """WatchdogSec: longer than OpenLoop's own inactivity limit, which should act first."""
    if pconf.schedule.watchdog_seconds:
        return pconf.schedule.watchdog_seconds
    quiet = pconf.runtime.inactivity_timeout_seconds or gconf.runtime.inactivity_timeout_seconds
    return quiet + 120


def service_dropin(gconf: GlobalConfig, pconf: ProjectConfig, repo: Path, sandbox: bool) -> str:
    lines = [HEADER, f"# From {repo}/.openloop/project.json\n", "[Service]\n"]
    lines.append(f"RuntimeMaxSec={_seconds(hard_timeout(gconf, pconf))}\n")
    lines.append(f"WatchdogSec={_seconds(watchdog_timeout(gconf, pconf))}\n")
    if pconf.schedule.memory_max:
        lines.append(f"MemoryMax={pconf.schedule.memory_max}\n")
    if pconf.schedule.cpu_weight:
        lines.append(f"CPUWeight={pconf.schedule.cpu_weight}\n")
    if sandbox:
        # The agent may write only its worktree (under the state dir) and the repository.
        lines.append(f"ReadWritePaths={_quote_path(repo)}\n")
    return "".join(lines)


def schedule_offset(alias: str, interval_seconds: int) -> int:
    """The project's fixed place in the interval, from a hash of its alias: N projects spread
    evenly over the interval, and each keeps its place across restarts, reinstalls and other
    projects coming and going. (RandomizedDelaySec= alone draws again at every start, within
    its window only; 200 projects with 30 s of it started 170 gates at once.)"""
    import hashlib

    digest = int.from_bytes(hashlib.sha256(alias.encode()).digest()[:8], "big")
    return digest % max(1, interval_seconds)


# Seconds after the timers start (login, `service start`) before the first project may run.
FIRST_RUN_DELAY = 30


def timer_dropin(gconf: GlobalConfig, pconf: ProjectConfig, alias: str) -> str:
    if pconf.schedule.on_calendar:
        return calendar_timer_dropin(pconf.schedule.on_calendar)
    minutes = pconf.schedule.interval_minutes or gconf.runtime.interval_minutes
    offset = schedule_offset(alias, minutes * 60)
    # The first run comes at the project's own offset into the interval; after that, a full
    # interval after each run ends, so the places stay spread. A little jitter on top keeps
    # projects whose places are close from starting in the same second.
    jitter = max(1, min(60, minutes * 60 // 50))
    # Timer triggers accumulate across drop-ins, and an empty assignment to any of them clears
    # them all: so reset once, then state the whole schedule.
    return (
        f"{HEADER}[Timer]\nOnActiveSec=\nOnActiveSec={FIRST_RUN_DELAY + offset}s\n"
        f"OnUnitInactiveSec={minutes}min\nRandomizedDelaySec={jitter}s\n"
    )


# A calendar schedule's spread: projects on the same expression do not all start in the same
# second (FixedRandomDelay= in the template keeps each project's place).
CALENDAR_JITTER = 30


def calendar_timer_dropin(expression: str) -> str:
    """`schedule.onCalendar`: runs at the calendar's times instead of the interval. The empty
    OnActiveSec= clears every trigger of the template (the interval ones included), so only the
    calendar is left. Persistent=: a time missed while the machine was off runs at boot."""
    return (
        f"{HEADER}[Timer]\nOnActiveSec=\nOnCalendar={expression}\n"
        f"Persistent=yes\nRandomizedDelaySec={CALENDAR_JITTER}s\n"
    )


def check_calendar(expression: str) -> str | None:
    """systemd's own verdict on a calendar expression: None when valid (or when
    `systemd-analyze` is not installed: the file's light syntax check is all there is), else
    its message."""
    exe = shutil.which("systemd-analyze")
    if exe is None:
        return None
    try:
        cp = subprocess.run(
            [exe, "calendar", expression],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if cp.returncode == 0:
        return None
    return (cp.stderr.strip() or cp.stdout.strip() or "not a calendar expression").splitlines()[-1]


# What the units must see as the installing shell did: where OpenLoop keeps its files, and
# which pi to run. (API keys are not here: they go in the 0600 environment file.)
CARRIED_ENV = ("OPENLOOP_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME", "OPENLOOP_PI_BIN")


def environment_dropin(env: Environment, path_dirs: list[str]) -> str:
    lines = [HEADER, "[Service]\n"]
    lines.append(f"Environment={quote_env('PATH', ':'.join(path_dirs))}\n")
    for key in CARRIED_ENV:
        if env.environ.get(key):
            lines.append(f"Environment={quote_env(key, env.environ[key])}\n")
    # EnvironmentFile= takes its path raw (no quotes; only % is special).
    envfile = str(env.config_dir / "environment").replace("%", "%%")
    lines.append(f"EnvironmentFile=-{envfile}\n")
    return "".join(lines)


def sandbox_dropin(env: Environment) -> str:
    return (
        f"{HEADER}# Opt-in ('openloop service install --sandbox'): mount-namespace sandboxing\n"
        "# needs user namespaces (PrivateUsers=yes), which some distributions block.\n"
        "[Service]\nPrivateUsers=yes\nPrivateTmp=yes\nProtectSystem=strict\n"
        "ProtectHome=read-only\nProtectKernelTunables=yes\nProtectControlGroups=yes\n"
        "ProtectKernelModules=yes\nProtectKernelLogs=yes\nProtectHostname=yes\n"
        f"ReadWritePaths={_quote_path(env.state_dir)} {_quote_path(env.config_dir)}\n"
        "# pi keeps its sessions and auth under ~/.pi (a leading - : fine if it is missing).\n"
        "ReadWritePaths=-%h/.pi\n"
    )


def quote_env(key: str, value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'"{key}={escaped}"'


def _quote_path(path: Path) -> str:
    text = str(path).replace("%", "%%")
    return f'"{text}"' if " " in text else text


def tool_path(env: Environment) -> list[str]:
    """PATH for the units: where pi, git, node and OpenLoop were found now, then the basics.
    A unit does not see the user's shell PATH."""
    dirs: list[str] = []
    search = env.environ.get("PATH", "")
    for tool in ("pi", "git", "node", "npm", "gh", "glab"):
        found = shutil.which(tool, path=search)
        if found:
            dirs.append(str(Path(found).parent))
    pi_bin = env.environ.get("OPENLOOP_PI_BIN")
    if pi_bin:
        dirs.append(str(Path(pi_bin).parent))
    dirs.append(str(Path(openloop_command()[0]).parent))
    dirs += ["/usr/local/bin", "/usr/bin", "/bin"]
    return list(dict.fromkeys(dirs))


# --- files --------------------------------------------------------------------------------------


def write_if_changed(path: Path, text: str) -> bool:
    from openloop.state.storage import atomic_write_text

    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    atomic_write_text(path, text)
    return True


def instance(alias: str, kind: str) -> str:
    return f"openloop@{alias}.{kind}"


@dataclass
class InstallReport:
    unit_dir: Path
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    packaged: Path | None = None
    linger: bool | None = None
    skipped: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # old copies that hid the vendor units


def project_dropins(
    unit_dir: Path,
    alias: str,
    gconf: GlobalConfig,
    pconf: ProjectConfig,
    repo: Path,
    sandbox: bool,
) -> dict[Path, str]:
    return {
        unit_dir / f"{instance(alias, 'service')}.d" / DROPIN: service_dropin(
            gconf, pconf, repo, sandbox
        ),
        unit_dir / f"{instance(alias, 'timer')}.d" / DROPIN: timer_dropin(gconf, pconf, alias),
    }


def remove_project_dropins(unit_dir: Path, alias: str) -> None:
    for kind in ("service", "timer"):
        folder = unit_dir / f"{instance(alias, kind)}.d"
        (folder / DROPIN).unlink(missing_ok=True)
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def linger_enabled(env: Environment) -> bool | None:
    user = env.environ.get("USER") or env.environ.get("LOGNAME")
    if not user:
        return None
    if Path("/var/lib/systemd/linger").is_dir():
        return (Path("/var/lib/systemd/linger") / user).exists()
    return None
