"""The pi that `openloop demo` runs: the user's (`OPENLOOP_PI_BIN`, PATH), else the pinned
version installed locally (never globally) into OpenLoop's tools directory; and the Node.js
it needs."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from openloop.errors import OpenLoopError

PI_PACKAGE = "@mariozechner/pi-coding-agent"
PI_VERSION = "0.73.1"  # the version OpenLoop is tested against (scripts/install-pi.sh)
_SOURCE_ROOT = Path(__file__).resolve().parents[2]

Say = Callable[[str], None]


class DemoError(OpenLoopError):
    """The demo could not run (pi not installable, a step failed)."""


def _tools_dirs(environ: dict[str, str]) -> list[Path]:
    """Where a pinned pi may be: $OPENLOOP_TOOLS_DIR, a source checkout's .tools/ (what
    scripts/install-pi.sh fills), else OpenLoop's own data directory."""
    dirs = []
    if environ.get("OPENLOOP_TOOLS_DIR"):
        dirs.append(Path(environ["OPENLOOP_TOOLS_DIR"]))
    if (_SOURCE_ROOT / "pyproject.toml").is_file() and (_SOURCE_ROOT / "openloop").is_dir():
        dirs.append(_SOURCE_ROOT / ".tools")
    data = Path(environ.get("XDG_DATA_HOME") or Path(environ.get("HOME", "~")) / ".local/share")
    dirs.append(data.expanduser() / "openloop" / "tools")
    return dirs


def _pi_in(tools: Path) -> Path:
    return tools / "pi" / "node_modules" / ".bin" / "pi"


def find_pi(environ: dict[str, str]) -> Path | None:
    """$OPENLOOP_PI_BIN, else a pinned copy in a tools directory, else `pi` on PATH."""
    if environ.get("OPENLOOP_PI_BIN"):
        return Path(environ["OPENLOOP_PI_BIN"])
    for tools in _tools_dirs(environ):
        if os.access(_pi_in(tools), os.X_OK):
            return _pi_in(tools)
    found = shutil.which("pi", path=environ.get("PATH"))
    return Path(found) if found else None


def install_command(prefix: Path) -> list[str]:
    return [
        "npm",
        "install",
        "--prefix",
        str(prefix),
        "--no-audit",
        "--no-fund",
        f"{PI_PACKAGE}@{PI_VERSION}",
    ]


def ensure_pi(environ: dict[str, str], say: Say) -> Path:
    """The pi to use, installing the pinned version locally (never globally) when none is."""
    if found := find_pi(environ):
        if not os.access(found, os.X_OK):
            raise DemoError(f"{found} is not executable (OPENLOOP_PI_BIN?)")
        return found
    tools = _tools_dirs(environ)[0]
    prefix = tools / "pi"
    command = install_command(prefix)
    manual = " ".join(command)
    if not shutil.which("npm", path=environ.get("PATH")) or not shutil.which(
        "node", path=environ.get("PATH")
    ):
        raise DemoError(
            "pi is not installed and Node.js/npm are missing: install Node.js >= 20.6, then run "
            f"'{manual}' (or 'bash scripts/setup.sh' in a clone of OpenLoop)"
        )
    say(f"pi {PI_VERSION} is not installed: installing it into {prefix} (npm, ~30 s)")
    prefix.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        command, env=environ, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    pi = _pi_in(tools)
    if proc.returncode != 0 or not os.access(pi, os.X_OK):
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise DemoError(
            f"could not install pi ({'; '.join(tail) or 'npm failed'}): run '{manual}' yourself, "
            f"or set OPENLOOP_PI_BIN to a pi {PI_VERSION} binary"
        )
    return pi


def node_problem(environ: dict[str, str]) -> str | None:
    node = shutil.which("node", path=environ.get("PATH"))
    if not node:
        return "Node.js is not on PATH: pi needs Node.js >= 20.6"
    proc = subprocess.run(
        [node, "--version"], capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    try:
        major, minor = (int(x) for x in proc.stdout.strip().lstrip("v").split(".")[:2])
    except ValueError:
        return f"could not read the Node.js version ({proc.stdout.strip()!r})"
    if (major, minor) < (20, 6):
        return f"pi {PI_VERSION} needs Node.js >= 20.6 (found {proc.stdout.strip()})"
    return None
