"""The demo's world: its directory, the environment every command of it runs in (nothing of
the user's is read or written), and the progress lines it prints."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from openloop.actions import demo_script as script
from openloop.actions.demo_pi import DemoError, Say
from openloop.errors import InputError

_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


@dataclass
class World:
    root: Path
    pi: Path
    say: Say
    started: float = field(default_factory=time.monotonic)
    spent: float = 0.0
    alias: str = script.ALIAS
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def repo(self) -> Path:
        return self.root / "sample"

    @property
    def home(self) -> Path:
        return self.root / "openloop"

    @property
    def pi_home(self) -> Path:
        return self.root / "home"

    def env(self) -> dict[str, str]:
        """OpenLoop's and pi's environment: the caller's, with every place they read or write
        moved into the demo directory, and no proxy between pi and 127.0.0.1."""
        env = {k: v for k, v in os.environ.items() if k not in _PROXY_VARS}
        env.update(
            HOME=str(self.pi_home),
            OPENLOOP_HOME=str(self.home),
            XDG_CONFIG_HOME=str(self.pi_home / ".config"),
            XDG_STATE_HOME=str(self.pi_home / ".local" / "state"),
            XDG_DATA_HOME=str(self.pi_home / ".local" / "share"),
            OPENLOOP_PI_BIN=str(self.pi),
            # pi reads its models and writes its sessions here: the demo's, whatever the
            # caller (or the user manager) points it at.
            PI_CODING_AGENT_DIR=str(self.pi_home / ".pi" / "agent"),
            GIT_CONFIG_GLOBAL=str(self.pi_home / ".gitconfig"),
            GIT_CONFIG_NOSYSTEM="1",
            GIT_AUTHOR_NAME="OpenLoop demo",
            GIT_AUTHOR_EMAIL="demo@openloop.invalid",
            GIT_COMMITTER_NAME="OpenLoop demo",
            GIT_COMMITTER_EMAIL="demo@openloop.invalid",
            NO_PROXY="127.0.0.1,localhost",
            no_proxy="127.0.0.1,localhost",
            PI_OFFLINE="1",
            PI_SKIP_VERSION_CHECK="1",
        )
        node = shutil.which("node")
        if node and str(Path(node).parent) not in env.get("PATH", "").split(os.pathsep):
            env["PATH"] = os.pathsep.join([str(Path(node).parent), env.get("PATH", "")])
        for name in ("OPENLOOP_PROJECT", "OPENLOOP_RUN_ID", "OPENLOOP_TASK_ID", "NOTIFY_SOCKET"):
            env.pop(name, None)
        return env

    def clock(self) -> str:
        elapsed = int(time.monotonic() - self.started)
        return f"{elapsed // 60}:{elapsed % 60:02d}"

    def line(self, text: str) -> None:
        with self._lock:  # the journal's thread prints too
            self.say(f"[{self.clock()}  ${self.spent:.4f}] {text}")

    def openloop(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, "-m", "openloop", *args],
            env=self.env(),
            cwd=self.root,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=300,
        )
        if check and proc.returncode != 0:
            raise DemoError(
                f"'openloop {' '.join(args)}' exited {proc.returncode}: "
                f"{(proc.stderr or proc.stdout).strip()}"
            )
        return proc

    def git(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run(
            ["git", "-C", str(self.repo), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise DemoError(f"git {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout


def prepare_dir(directory: Path | None) -> tuple[Path, bool]:
    """(root, created by us)."""
    if directory is None:
        return Path(tempfile.mkdtemp(prefix="openloop-demo-")), True
    directory = directory.expanduser().absolute()
    if directory.exists() and any(directory.iterdir()):
        raise InputError(f"--dir: {directory} is not empty (the demo needs a directory of its own)")
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    return directory, created


def python_command() -> str:
    return "python3" if shutil.which("python3") else sys.executable
