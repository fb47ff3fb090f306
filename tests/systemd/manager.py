"""A real systemd user manager and journald for the tests, run as an unprivileged test user.

On the development/CI VMs PID 1 is not systemd, but systemd is installed. As root, this module
creates a test user, prepares the directories journald and the manager need, starts a standalone
``systemd-journald`` (unless the journal socket is already served) and starts ``systemd --user``
for the test user from inside a cgroup created and chowned for it (so it only ever manages its
own subtree). It records the PIDs it started and, at the end, kills exactly those.

If the pieces are already running (left over from an earlier session), what answers is reused and
left running. On a host where PID 1 *is* systemd, ``user@UID.service`` is started instead.

Start-up problems are raised as :class:`Unavailable`; :func:`systemd_unavailable` is the one
place that turns them into a skip (locally) or a failure (``CI=true`` or
``OPENLOOP_REQUIRE_SYSTEMD=1``).
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import json
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

DEFAULT_USER = "openloop-test"
FIRST_UID = 1500  # regular range (>= UID_MIN): journald only writes per-user files for those
LAST_UID = 59999
STATE_DIR = Path("/run/openloop-systemd-test")
JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
BOOTED_MARKER = Path("/run/systemd/system")
FLUSHED_FLAG = Path("/run/systemd/journal/flushed")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
START_TIMEOUT = 30.0
LOCK_TIMEOUT = float(os.environ.get("OPENLOOP_SYSTEMD_LOCK_TIMEOUT", "120"))

T = TypeVar("T")
_UNIT_SUFFIXES = (".service", ".timer", ".socket", ".path", ".target", ".slice", ".scope")


class Unavailable(Exception):
    """The real systemd environment cannot be provided here; the message says why."""


def systemd_required(environ: dict[str, str] | None = None) -> bool:
    """In CI a skipped systemd test counts as a failure."""
    env = os.environ if environ is None else environ
    return (
        env.get("CI", "").strip().lower() == "true"
        or env.get("OPENLOOP_REQUIRE_SYSTEMD", "").strip() == "1"
    )


def systemd_unavailable(reason: str) -> NoReturn:
    """The skip-or-fail policy, in one place: skip locally, fail when systemd is required."""
    import pytest

    if systemd_required():
        pytest.fail(
            f"systemd test environment unavailable: {reason}"
            " [failing instead of skipping because CI=true or OPENLOOP_REQUIRE_SYSTEMD=1]",
            pytrace=False,
        )
    pytest.skip(f"systemd test environment unavailable: {reason}")


def _log(msg: str) -> None:
    print(f"[systemd-fixture] {msg}", file=sys.stderr, flush=True)


def _find(*candidates: str) -> str | None:
    for c in candidates:
        if "/" in c:
            if os.access(c, os.X_OK):
                return c
        else:
            found = shutil.which(c, path=PATH)
            if found:
                return found
    return None


def _root(argv: Sequence[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "\n    ".join(["", *text]) if text else ""


def _pid1_is_systemd() -> bool:
    try:
        return Path("/proc/1/comm").read_text().strip() == "systemd"
    except OSError:
        return False


def journal_socket_served(path: Path = JOURNAL_SOCKET) -> bool:
    """True when something is bound to journald's native socket (connect fails otherwise)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def cgroup_hierarchies() -> list[Path]:
    """Mount points of the hierarchies the user manager needs: the named ``systemd`` v1
    hierarchy and the unified (v2) one, whichever are mounted."""
    found: list[Path] = []
    with open("/proc/self/mounts") as f:
        for line in f:
            _dev, mnt, fstype, opts, *_ = line.split()
            if fstype == "cgroup2" or (fstype == "cgroup" and "name=systemd" in opts.split(",")):
                found.append(Path(mnt.replace("\\040", " ")))
    return found


def _cgroup_pids(root: Path) -> list[int]:
    pids: list[int] = []
    if not root.is_dir():
        return pids
    for dirpath, _dirs, files in os.walk(root):
        if "cgroup.procs" in files:
            with contextlib.suppress(OSError):
                pids += [int(p) for p in Path(dirpath, "cgroup.procs").read_text().split()]
    return pids


def _rmdir_tree(root: Path) -> None:
    if not root.is_dir():
        return
    for dirpath, _dirs, _files in sorted(os.walk(root), key=lambda t: -len(t[0])):
        with contextlib.suppress(OSError):
            os.rmdir(dirpath)


class UserManager:
    """Handle on the test user's systemd user manager. Created by :func:`start`."""

    def __init__(self, user: str, uid: int, gid: int, home: Path) -> None:
        self.user = user
        self.uid = uid
        self.gid = gid
        self.home = home
        self.runtime_dir = Path(f"/run/user/{uid}")
        self.unit_dir = home / ".config" / "systemd" / "user"
        self.env: dict[str, str] = {
            "HOME": str(home),
            "USER": user,
            "LOGNAME": user,
            "XDG_RUNTIME_DIR": str(self.runtime_dir),
            "PATH": PATH,
            "LANG": "C.UTF-8",
        }
        # What this session started (only these are ever killed) and what it reused.
        self.started: dict[str, int] = {}
        self.reused: list[str] = []
        self.startup_seconds: float | None = None
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._started_user_service = False
        self._created_marker = False
        self._cgroups: list[Path] = []
        self._written: list[str] = []
        self._lock_fd: int | None = None
        self._setpriv = _find("setpriv") or "setpriv"

    # ------------------------------------------------------------------ running commands

    def command(self, argv: Sequence[str], env: dict[str, str] | None = None) -> list[str]:
        """The argv that runs ``argv`` as the test user with :attr:`env` (plus ``env``)."""
        full_env = {**self.env, **(env or {})}
        return [
            self._setpriv,
            f"--reuid={self.uid}",
            f"--regid={self.gid}",
            "--init-groups",
            "env",
            "-i",
            *(f"{k}={v}" for k, v in full_env.items()),
            *map(str, argv),
        ]

    def run(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        input: str | None = None,  # noqa: A002 - mirrors subprocess.run
        timeout: float = 30,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` as the test user; text output is captured. ``env`` adds variables."""
        cp = subprocess.run(
            self.command(argv, env),
            cwd=cwd if cwd is not None else self.home,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        cp.args = list(map(str, argv))  # readable in assertion messages
        if check and cp.returncode != 0:
            raise subprocess.CalledProcessError(cp.returncode, cp.args, cp.stdout, cp.stderr)
        return cp

    def systemctl(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.run(["systemctl", "--user", "--no-pager", *args], **kw)

    def journalctl(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.run(["journalctl", "--user", "--no-pager", *args], **kw)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        """``systemctl --user show -p A -p B unit`` as a dict."""
        cp = self.systemctl("show", *(f"--property={p}" for p in props), unit, check=True)
        return dict(line.split("=", 1) for line in cp.stdout.splitlines() if "=" in line)

    def journal_json(self, unit: str | None = None, *args: str, **match: str) -> list[dict]:
        """Parsed ``journalctl --user -o json`` records: ``unit`` as ``--user-unit=`` (the
        unit's own output plus the manager's messages about it), ``match`` as FIELD=value."""
        argv = ["--output=json", *args]
        if unit:
            argv.append(f"--user-unit={unit}")
        argv += [f"{k}={v}" for k, v in match.items()]
        cp = self.journalctl(*argv)
        if cp.returncode != 0 and "No entries" not in cp.stderr:
            raise RuntimeError(f"journalctl {shlex.join(argv)} failed: {cp.stderr.strip()}")
        return [json.loads(line) for line in cp.stdout.splitlines() if line.startswith("{")]

    @staticmethod
    def wait_for(
        predicate: Callable[[], T],
        timeout: float = 10.0,
        interval: float = 0.1,
        what: str | None = None,
    ) -> T:
        """Poll ``predicate`` until it returns something truthy and return that value."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what or predicate!r}"
                    f" (last value: {value!r})"
                )
            time.sleep(interval)

    # ------------------------------------------------------------------ unit files

    def write_unit(self, name: str, text: str) -> Path:
        """Write ``~/.config/systemd/user/<name>`` owned by the test user. ``name`` may be a
        drop-in (``foo@.service.d/50-x.conf``). Call :meth:`daemon_reload` afterwards."""
        path = self.unit_dir / name
        if self.unit_dir not in path.resolve().parents:
            raise ValueError(f"unit name escapes the unit directory: {name!r}")
        self.make_user_dir(path.parent)
        path.write_text(text)
        os.chown(path, self.uid, self.gid)
        path.chmod(0o644)
        self._written.append(name)
        return path

    def daemon_reload(self) -> None:
        cp = self.systemctl("daemon-reload")
        if cp.returncode != 0:
            raise RuntimeError(f"systemctl --user daemon-reload failed: {cp.stderr.strip()}")

    def written_units(self) -> list[str]:
        return list(self._written)

    def remove_units(self, names: Iterable[str] | None = None) -> None:
        """Stop the units (all instances of templates) written by :meth:`write_unit` (or the
        given file names), delete their files and reload."""
        names = list(self._written if names is None else names)
        if not names:
            return
        tops = {n.split("/", 1)[0] for n in names}
        unit_files = {t[: -len(".d")] if t.endswith(".d") else t for t in tops}
        patterns = sorted(
            {u.replace("@.", "@*.", 1) for u in unit_files if u.endswith(_UNIT_SUFFIXES)}
        )
        # Timers first so they cannot start a service we are about to stop. --no-block, then
        # wait: a blocking stop of hundreds of units (or of units already stopped, right after
        # a daemon-reload) sits out systemctl's 25 s D-Bus timeout for each call.
        timers = [p for p in patterns if p.endswith(".timer")]
        if timers:
            self.systemctl("stop", "--no-block", *timers, timeout=60)
        if patterns:
            self.systemctl("stop", "--no-block", *patterns, timeout=60)

            def settled() -> bool:
                out = self.systemctl("list-units", "--plain", "--no-legend", *patterns).stdout
                return not any(
                    word in line.split()[2:4]
                    for line in out.splitlines()
                    for word in ("active", "activating", "deactivating")
                )

            with contextlib.suppress(AssertionError):
                self.wait_for(settled, timeout=120, interval=0.2, what="test units to stop")
            self.systemctl("reset-failed", *patterns)
        for top in tops:
            path = self.unit_dir / top
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        self._written = [n for n in self._written if n not in set(names)]
        self.systemctl("daemon-reload")

    def make_user_dir(self, path: Path) -> None:
        """``mkdir -p`` whose new directories belong to the test user."""
        missing = []
        p = path
        while not p.exists():
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            d.mkdir(mode=0o755)
            os.chown(d, self.uid, self.gid)

    # ------------------------------------------------------------------ checks

    def answers(self) -> bool:
        if not (self.runtime_dir / "systemd" / "private").exists():
            return False
        try:
            return self.systemctl("show-environment", timeout=5).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def blocked_dirs(self, paths: Iterable[Path]) -> list[Path]:
        """Directories on the way to ``paths`` (following symlinks) that the test user
        cannot traverse."""
        dirs: list[Path] = []
        for path in paths:
            for p in _path_walk(Path(path)):
                if p not in dirs:
                    dirs.append(p)
        script = 'for d; do [ -x "$d" ] || printf "%s\\n" "$d"; done'
        cp = self.run(["/bin/sh", "-c", script, "sh", *map(str, dirs)], cwd="/")
        return [Path(line) for line in cp.stdout.splitlines() if line]

    def check_can_execute(self, exe: Path, readable: Iterable[Path] = ()) -> str | None:
        """None when the test user can run ``exe --help`` and read ``readable``; otherwise a
        message naming the blocking directories."""
        exe = Path(exe)
        involved = [exe, *readable]
        interp = _shebang(exe)
        if interp:
            involved.append(Path(interp))
        blocked = self.blocked_dirs(involved)
        # Below a blocked directory everything looks blocked: name only the topmost ones.
        blocked = [d for d in blocked if not any(b in d.parents for b in blocked)]
        unreadable = [
            p for p in readable if self.run(["test", "-r", str(p)], cwd="/").returncode != 0
        ]
        cp = self.run([str(exe), "--help"], cwd="/", timeout=60)
        if cp.returncode == 0 and not blocked and not unreadable:
            return None
        why = [f"test user {self.user} (uid {self.uid}) cannot use {exe}"]
        if interp:
            why.append(f"its interpreter is {interp} -> {os.path.realpath(interp)}")
        for d in blocked:
            st = d.stat()
            why.append(
                f"directory {d} is not traversable by that user (mode {st.st_mode & 0o7777:04o},"
                f" owner {_name(st.st_uid)}:{_group(st.st_gid)}); every parent directory must"
                " have o+x"
            )
        for p in unreadable:
            why.append(f"{p} is not readable by that user")
        if cp.returncode != 0:
            err = (cp.stderr or cp.stdout).strip().splitlines()[-3:]
            why.append(f"`{exe} --help` as that user exited {cp.returncode}: {' | '.join(err)}")
        why.append(
            "fix: make the checkout and the virtualenv's Python world-traversable (e.g. create"
            " the venv from /usr/bin/python3 instead of a Python under /root, or chmod o+x on"
            " the directories above)"
        )
        return "; ".join(why)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Stop the units written this session, then kill exactly the processes it started."""
        try:
            if self._written and self.answers():
                self.remove_units()
        except Exception as exc:  # noqa: BLE001 - teardown must go on
            _log(f"could not remove test units: {exc}")
        if self._started_user_service:
            _root(["systemctl", "stop", f"user@{self.uid}.service"], timeout=60)
        proc = self._procs.pop("manager", None)
        if proc is not None:
            # SIGTERM makes a user manager start exit.target: units are stopped cleanly.
            _stop_process(proc, "systemd --user", grace=15)
            cg = self._cgroups[0] if self._cgroups else None
            leftovers = _cgroup_pids(cg) if cg else []
            for pid in leftovers:  # descendants of the manager this session started
                _log(f"killing leftover pid {pid} in {cg}")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for cg in self._cgroups:
                _rmdir_tree(cg)
        proc = self._procs.pop("journald", None)
        if proc is not None:
            _stop_process(proc, "systemd-journald", grace=5)
        if self._created_marker and not self.reused:
            with contextlib.suppress(OSError):
                BOOTED_MARKER.rmdir()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def describe(self) -> str:
        return (
            f"user {self.user} uid={self.uid} home={self.home} runtime={self.runtime_dir}"
            f" started={self.started} reused={self.reused}"
            f" startup={self.startup_seconds and round(self.startup_seconds, 2)}s"
        )


def _stop_process(proc: subprocess.Popen[bytes], what: str, grace: float) -> None:
    if proc.poll() is not None:
        _log(f"{what} (pid {proc.pid}) had already exited with {proc.returncode}")
        return
    proc.send_signal(signal.SIGTERM)  # Popen never signals a reaped (possibly reused) pid
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        _log(f"{what} (pid {proc.pid}) ignored SIGTERM for {grace}s; sending SIGKILL")
        proc.kill()
        proc.wait(10)


def _path_walk(path: Path) -> list[Path]:
    """Every directory that must be traversed to reach ``path``, through symlinks."""
    out: list[Path] = []
    seen = 0
    todo = list(Path(os.path.abspath(path)).parts[1:])
    cur = Path("/")
    while todo:
        out.append(cur)
        part = todo.pop(0)
        nxt = cur / part
        if nxt.is_symlink() and seen < 40:
            seen += 1
            target = Path(os.readlink(nxt))
            if target.is_absolute():
                cur = Path("/")
                todo = list(target.parts[1:]) + todo
            else:
                todo = list(target.parts) + todo
            continue
        if part == "..":
            cur = cur.parent
        elif part != ".":
            cur = nxt
    return out


def _shebang(exe: Path) -> str | None:
    try:
        with open(exe, "rb") as f:
            first = f.readline(256)
    except OSError:
        return None
    if first.startswith(b"#!"):
        words = first[2:].decode(errors="replace").split()
        return words[0] if words else None
    return None


def _name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


# ---------------------------------------------------------------------- start-up


def requirements() -> dict[str, str]:
    """Paths of the programs needed; raises :class:`Unavailable` naming what is missing."""
    if not sys.platform.startswith("linux"):
        raise Unavailable(f"systemd tests need Linux (this is {sys.platform})")
    if os.geteuid() != 0:
        raise Unavailable(
            "systemd tests need root to create the test user, its cgroups and journald"
            f" (running as uid {os.geteuid()})"
        )
    found = {
        "systemd": _find("/lib/systemd/systemd", "/usr/lib/systemd/systemd"),
        "journald": _find("/lib/systemd/systemd-journald", "/usr/lib/systemd/systemd-journald"),
        "systemctl": _find("systemctl"),
        "journalctl": _find("journalctl"),
        "systemd-tmpfiles": _find("systemd-tmpfiles"),
        "setpriv": _find("setpriv"),
        "useradd": _find("useradd"),
    }
    missing = [k for k, v in found.items() if not v]
    if missing:
        raise Unavailable(
            f"systemd tests need {', '.join(missing)} (Debian: apt-get install systemd"
            " util-linux passwd)"
        )
    return {k: v for k, v in found.items() if v}


def _acquire_lock() -> int:
    STATE_DIR.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(STATE_DIR / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + LOCK_TIMEOUT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise Unavailable(
                    f"another test session holds {STATE_DIR / 'lock'} (the systemd test user"
                    f" is in use) for more than {LOCK_TIMEOUT:.0f}s"
                ) from None
            time.sleep(0.5)


def ensure_user(name: str) -> tuple[int, int, Path]:
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        used_uids = {p.pw_uid for p in pwd.getpwall()}
        used_gids = {g.gr_gid for g in grp.getgrall()}
        uid = next(
            (u for u in range(FIRST_UID, LAST_UID) if u not in used_uids and u not in used_gids),
            None,
        )
        if uid is None:
            raise Unavailable("no free uid for the systemd test user") from None
        home = Path("/home") / name if Path("/home").is_dir() else Path("/var/tmp") / name
        cp = _root(
            [
                "useradd", "--create-home", f"--home-dir={home}", f"--uid={uid}",
                "--user-group", "--shell=/bin/sh", "--comment=OpenLoop systemd tests", name,
            ]
        )  # fmt: skip
        if cp.returncode != 0:
            raise Unavailable(f"useradd {name} failed: {cp.stderr.strip()}") from None
        _log(f"created user {name} uid={uid} home={home}")
        pw = pwd.getpwnam(name)
    if pw.pw_uid < 1000:
        raise Unavailable(f"test user {name} has system uid {pw.pw_uid}; it needs a regular uid")
    home = Path(pw.pw_dir)
    if not home.is_dir():
        home.mkdir(parents=True, mode=0o755)
        os.chown(home, pw.pw_uid, pw.pw_gid)
    # Lets journalctl --user read the system/runtime journal too, whatever journald stores.
    with contextlib.suppress(KeyError):
        if name not in grp.getgrnam("systemd-journal").gr_mem:
            _root(["usermod", "--append", "--groups=systemd-journal", name])
    return pw.pw_uid, pw.pw_gid, home


def start(user: str = DEFAULT_USER) -> UserManager:
    """Start (or reuse) journald and the test user's manager. Raises :class:`Unavailable`."""
    t0 = time.monotonic()
    progs = requirements()
    lock_fd = _acquire_lock()
    um: UserManager | None = None
    try:
        uid, gid, home = ensure_user(user)
        um = UserManager(user, uid, gid, home)
        um._lock_fd = lock_fd
        if _pid1_is_systemd():
            _start_with_system_manager(um)
        else:
            _prepare_dirs(um, progs)
            _ensure_journald(um, progs)
            _ensure_manager(um, progs)
        _check_user_journal(um)
        _clean_stale_units(um)
        um.startup_seconds = time.monotonic() - t0
        (STATE_DIR / "state.json").write_text(
            json.dumps({"user": user, "uid": uid, "started": um.started, "reused": um.reused})
        )
        _log(um.describe())
        return um
    except BaseException:
        if um is not None:
            um.close()
        else:
            os.close(lock_fd)
        raise


def _prepare_dirs(um: UserManager, progs: dict[str, str]) -> None:
    if not BOOTED_MARKER.is_dir():
        BOOTED_MARKER.mkdir(parents=True, mode=0o755)
        um._created_marker = True
    Path("/run/systemd/journal").mkdir(parents=True, exist_ok=True, mode=0o755)
    Path("/var/log/journal").mkdir(parents=True, exist_ok=True, mode=0o2755)
    Path("/run/log/journal").mkdir(parents=True, exist_ok=True, mode=0o2755)
    _fix_journal_dirs(progs)
    Path("/run/user").mkdir(exist_ok=True, mode=0o755)
    um.runtime_dir.mkdir(exist_ok=True, mode=0o700)
    os.chown(um.runtime_dir, um.uid, um.gid)
    um.runtime_dir.chmod(0o700)


def _fix_journal_dirs(progs: dict[str, str]) -> None:
    # Owner, group systemd-journal, setgid and ACLs as Debian's tmpfiles.d/systemd.conf says.
    cp = _root(
        [progs["systemd-tmpfiles"], "--create", "--prefix=/var/log/journal",
         "--prefix=/run/log/journal"]
    )  # fmt: skip
    if cp.returncode != 0:
        _log(f"systemd-tmpfiles for the journal directories: rc={cp.returncode} {cp.stderr}")


def _ensure_journald(um: UserManager, progs: dict[str, str]) -> None:
    if journal_socket_served():
        um.reused.append("journald")
    else:
        _start_journald(um, progs)
    _fix_journal_dirs(progs)


def _start_journald(um: UserManager, progs: dict[str, str]) -> None:
    # journald writes to /var/log/journal (where the per-user files user-UID.journal live,
    # which `journalctl --user` reads) only once the "flushed" flag exists; at boot
    # systemd-journal-flush.service sets it. Set it before the start: a later
    # `journalctl --flush` is not enough here, because /run is not a tmpfs on these VMs,
    # journald refuses to delete the runtime journal after flushing and keeps writing to it.
    FLUSHED_FLAG.touch()
    log = STATE_DIR / "journald.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [progs["journald"]],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd="/",
            env={"PATH": PATH, "LANG": "C.UTF-8"},
        )
    um._procs["journald"] = proc
    um.started["journald"] = proc.pid
    deadline = time.monotonic() + 10
    while not journal_socket_served():
        if proc.poll() is not None:
            raise Unavailable(f"systemd-journald exited with {proc.returncode}:{_tail(log)}")
        if time.monotonic() > deadline:
            raise Unavailable(f"systemd-journald did not open {JOURNAL_SOCKET} in 10s{_tail(log)}")
        time.sleep(0.05)


def _ensure_manager(um: UserManager, progs: dict[str, str]) -> None:
    if um.answers():
        um.reused.append("manager")
        return
    hierarchies = cgroup_hierarchies()
    if not hierarchies:
        raise Unavailable("no name=systemd or cgroup2 hierarchy is mounted under /sys/fs/cgroup")
    rel = Path(f"user.slice/user-{um.uid}.slice/user@{um.uid}.service")
    um._cgroups = [h / rel for h in hierarchies]
    stale = sorted({pid for cg in um._cgroups for pid in _cgroup_pids(cg)})
    if stale:
        raise Unavailable(
            f"processes {stale} are still in {um._cgroups[0]} but no manager answers there;"
            " they were not started by this session, so they are left alone: stop them first"
        )
    for cg in um._cgroups:
        cg.mkdir(parents=True, exist_ok=True)
        for dirpath, _dirs, files in os.walk(cg):
            os.chown(dirpath, um.uid, um.gid)
            for f in files:
                with contextlib.suppress(OSError):
                    os.chown(os.path.join(dirpath, f), um.uid, um.gid)
    # The shell moves itself into the user's cgroup in every hierarchy, then becomes the
    # manager (same PID) as the test user.
    exec_argv = um.command([progs["systemd"], "--user"])
    script = 'for f; do echo $$ > "$f" || exit 97; done; exec ' + shlex.join(exec_argv)
    procs_files = [str(cg / "cgroup.procs") for cg in um._cgroups]
    log = STATE_DIR / "manager.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", script, "sh", *procs_files],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=um.home,
            env={"PATH": PATH},
        )
    um._procs["manager"] = proc
    um.started["manager"] = proc.pid
    deadline = time.monotonic() + START_TIMEOUT
    while not um.answers():
        if proc.poll() is not None:
            raise Unavailable(f"systemd --user exited with {proc.returncode}:{_tail(log)}")
        if time.monotonic() > deadline:
            raise Unavailable(f"systemd --user did not answer in {START_TIMEOUT:.0f}s{_tail(log)}")
        time.sleep(0.05)
    _wait_started(um)


def _wait_started(um: UserManager) -> None:
    cp = um.systemctl("is-system-running", "--wait", timeout=START_TIMEOUT)
    state = cp.stdout.strip()
    if state not in ("running", "degraded"):
        raise Unavailable(f"user manager state is {state!r}: {cp.stderr.strip()}")
    if state == "degraded":
        failed = um.systemctl("--failed", "--plain", "--no-legend").stdout.strip()
        _log(f"user manager is degraded (failed units: {failed})")


def _start_with_system_manager(um: UserManager) -> None:
    # A host booted with systemd (not the dev VMs): let it run user@UID.service.
    # Not exercised on the dev/CI VMs, where PID 1 is not systemd.
    if um.answers():
        um.reused.append("manager")
        return
    cp = _root(["systemctl", "start", f"user@{um.uid}.service"], timeout=START_TIMEOUT)
    if cp.returncode != 0:
        raise Unavailable(f"systemctl start user@{um.uid}.service failed: {cp.stderr.strip()}")
    um._started_user_service = True
    um.started["user@.service"] = um.uid
    UserManager.wait_for(um.answers, START_TIMEOUT, 0.1, "user manager to answer")
    _wait_started(um)


def _check_user_journal(um: UserManager) -> None:
    """`journalctl --user` only reads user-UID.journal: make sure the user's messages land there."""
    token = f"openloop-fixture-{uuid.uuid4().hex}"
    cp = um.run(["systemd-cat", "--identifier=openloop-fixture", "echo", token])
    if cp.returncode != 0:
        raise Unavailable(f"systemd-cat as the test user failed: {cp.stderr.strip()}")
    deadline = time.monotonic() + 5
    while token not in um.journalctl("--identifier=openloop-fixture", "--output=cat").stdout:
        if time.monotonic() > deadline:
            started = "started by this session" if "journald" in um.started else "already running"
            raise Unavailable(
                f"journald ({started}) does not put the test user's messages where"
                f" `journalctl --user` reads them (/var/log/journal/<machine-id>/user-{um.uid}"
                ".journal): it must be started after /var/log/journal exists and with"
                f" {FLUSHED_FLAG} present"
            )
        time.sleep(0.05)


def _clean_stale_units(um: UserManager) -> None:
    """Units left by a session that died without teardown (we hold the lock, so no other
    session is using them)."""
    if um.unit_dir.is_dir():
        stale = [p.name for p in um.unit_dir.iterdir()]
        if stale:
            _log(f"removing stale test units {stale}")
            um.remove_units(stale)
    else:
        um.make_user_dir(um.unit_dir)


def open_for_traversal(um: UserManager, paths: list[Path]) -> None:
    for directory in um.blocked_dirs(paths):
        mode = directory.stat().st_mode
        directory.chmod(mode | 0o001)
        _log(f"chmod o+x {directory} (CI: the test user must reach the checkout)")
