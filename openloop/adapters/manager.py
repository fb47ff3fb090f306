"""Talking to the systemd user manager: `systemctl --user` (argv, never a shell), batched
queries and jobs for hundreds of units, and the few facts OpenLoop asks of it (what is loaded,
scheduled, enabled; which unit directory it reads)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from openloop.adapters.units import (
    HEADER,
    SystemdError,
    sandbox_dropin,
    user_unit_dir,
    write_if_changed,
)
from openloop.env import Environment

# --- systemctl ----------------------------------------------------------------------------------


def systemctl(env: Environment, *args: str, check: bool = True, timeout: float = 60):
    """`systemctl --user ...` (argv, never a shell)."""
    run_env = dict(env.environ)
    if "XDG_RUNTIME_DIR" not in run_env:
        run_env["XDG_RUNTIME_DIR"] = f"/run/user/{os.getuid()}"
    try:
        proc = subprocess.run(
            ["systemctl", "--user", "--no-pager", *args],
            capture_output=True,
            text=True,
            env=run_env,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise SystemdError(
            "systemctl not found: this host has no systemd; use 'openloop service run' instead"
        ) from None
    except subprocess.TimeoutExpired:
        raise SystemdError(f"systemctl --user {' '.join(args)} timed out") from None
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        message = detail[-1] if detail else f"exit {proc.returncode}"
        if "Failed to connect to bus" in message or "No medium found" in message:
            message += (
                " (no user manager reachable: log in, or 'loginctl enable-linger'; on a"
                " host without one, use 'openloop service run')"
            )
        raise SystemdError(f"systemctl --user {' '.join(args)}: {message}")
    return proc


def show(env: Environment, unit: str, *props: str) -> dict[str, str]:
    cached = _SNAPSHOT.settled().show.get(unit)
    if cached is not None and set(props) <= _SNAPSHOT.props:
        return {k: v for k, v in cached.items() if k in props}
    proc = systemctl(env, "show", unit, *(f"--property={p}" for p in props), check=False)
    values: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        key, _, value = line.partition("=")
        values[key] = value
    return values


def show_many(env: Environment, names: list[str], *props: str) -> dict[str, dict[str, str]]:
    """`show` for many units in one `systemctl show` call (per unit: what `show` returns).
    systemctl prints one block per unit, blank-line separated, in the order asked."""
    found: dict[str, dict[str, str]] = {name: {} for name in names}
    if not names:
        return found
    wanted = ("Id", *(p for p in props if p != "Id"))
    proc = systemctl(env, "show", *(f"--property={p}" for p in wanted), "--", *names, check=False)
    blocks = [b for b in proc.stdout.split("\n\n") if b.strip()]
    for position, block in enumerate(blocks):
        values: dict[str, str] = {}
        for line in block.splitlines():
            key, _, value = line.partition("=")
            values[key] = value
        name = values.pop("Id", "") if "Id" not in props else values.get("Id", "")
        if name not in found and len(blocks) == len(names):
            name = names[position]
        if name in found:
            found[name] = values
    return found


@dataclass
class _Snapshot:
    props: frozenset[str] = frozenset()
    show: dict[str, dict[str, str]] = field(default_factory=dict)
    timers: dict[str, tuple[str | None, str | None]] | None = None
    asking: list[threading.Thread] = field(default_factory=list)
    failed: list[BaseException] = field(default_factory=list)

    def settled(self) -> _Snapshot:
        """Itself, once the systemctl calls started for it have answered."""
        while self.asking:
            self.asking.pop().join()
        if self.failed:
            raise self.failed[0]
        return self


_SNAPSHOT = _Snapshot()


@contextlib.contextmanager
def snapshot(env: Environment, names: list[str], *props: str) -> Iterator[None]:
    """Answer `show(unit, *props)` and `timer_times` for `names` from two systemctl calls,
    for the block: a screen over N projects asks the manager twice, not 3N times. (Each unit
    is one D-Bus round trip either way; the N process starts were the cost.) The two calls
    run side by side, and beside the block until it first asks (`settle` waits for them).
    Units or properties not asked for here still go to systemctl."""
    global _SNAPSHOT
    previous = _SNAPSHOT
    timers = [n for n in names if n.endswith(".timer")]
    taken = _SNAPSHOT = _Snapshot(frozenset(props), timers={} if not timers else None)

    def ask(fill) -> None:
        try:
            fill()
        except BaseException as exc:  # noqa: BLE001 - raised where the answer is needed
            taken.failed.append(exc)

    def fill_show() -> None:
        taken.show = show_many(env, names, *props)

    def fill_timers() -> None:
        taken.timers = _list_timers(env, *timers)

    for fill in (fill_show, fill_timers) if timers else (fill_show,):
        thread = threading.Thread(target=ask, args=(fill,), daemon=True)
        thread.start()
        taken.asking.append(thread)
    try:
        yield
    finally:
        # Not waited for here: a block left early (Ctrl+C in `watch`) must not wait on
        # systemctl; a call still running only fills this snapshot, which nobody reads.
        _SNAPSHOT = previous


def settle() -> None:
    """Wait for the current snapshot's answers (raising what asking systemd raised)."""
    _SNAPSHOT.settled()


def check_unit_dir_seen(env: Environment) -> None:
    """Refuse to write units where the running user manager will not look for them (a shell
    whose XDG_CONFIG_HOME or HOME differs from the manager's)."""
    proc = systemctl(env, "show-environment", check=False)
    if proc.returncode != 0:
        return  # no manager to ask: daemon-reload will say so
    manager = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    home = manager.get("HOME")
    if not home:
        return
    theirs = Path(manager.get("XDG_CONFIG_HOME") or Path(home) / ".config") / "systemd" / "user"
    ours = user_unit_dir(env)
    if theirs.expanduser().resolve() != ours.resolve():
        raise SystemdError(
            f"units would go to {ours}, but your user manager reads {theirs}: run OpenLoop with "
            "the same XDG_CONFIG_HOME as the manager (or 'systemctl --user import-environment "
            "XDG_CONFIG_HOME', then 'systemctl --user daemon-reexec')"
        )


def timer_times(env: Environment, timer: str) -> tuple[str | None, str | None]:
    """(next, last) elapse of a timer as ISO times. `show` has no wall-clock next elapse for
    monotonic timers (OnUnitInactiveSec=); `list-timers --output=json` has both."""
    if _SNAPSHOT.settled().timers is not None and timer in _SNAPSHOT.show:
        return _SNAPSHOT.timers.get(timer, (None, None))
    return _list_timers(env, timer).get(timer, (None, None))


def _list_timers(env: Environment, *timers: str) -> dict[str, tuple[str | None, str | None]]:
    """(next, last) of each timer named, from one `list-timers --all --output=json`."""
    from datetime import UTC, datetime

    proc = systemctl(env, "list-timers", "--all", "--output=json", *timers, check=False)
    try:
        rows = json.loads(proc.stdout or "[]")
    except json.JSONDecodeError:
        return {}

    def iso(usec: object) -> str | None:
        if not isinstance(usec, int) or usec <= 0:
            return None
        return datetime.fromtimestamp(usec / 1e6, UTC).isoformat(timespec="seconds")

    wanted = set(timers)
    return {
        r["unit"]: (iso(r.get("next")), iso(r.get("last")))
        for r in rows
        if isinstance(r, dict) and r.get("unit") in wanted
    }


def daemon_reload(env: Environment) -> None:
    systemctl(env, "daemon-reload")


PROBE = "openloop-sandbox-probe.service"


def probe_sandbox(env: Environment) -> None:
    """Start a throwaway unit with the sandbox settings; raise SystemdError if the host cannot
    run it. A namespace failure in the real unit would surface as exit 226 in ExecCondition,
    which systemd reads as "skip": every run would be skipped quietly."""
    path = user_unit_dir(env) / PROBE
    body = sandbox_dropin(env).split("[Service]\n", 1)[1]
    write_if_changed(path, f"{HEADER}[Service]\nType=oneshot\nExecStart=/bin/true\n{body}")
    try:
        daemon_reload(env)
        proc = systemctl(env, "start", PROBE, check=False)
        status = show(env, PROBE, "ExecMainStatus").get("ExecMainStatus", "")
    finally:
        systemctl(env, "reset-failed", PROBE, check=False)
        path.unlink(missing_ok=True)
        daemon_reload(env)
    if proc.returncode != 0:
        blocked = ", 226/NAMESPACE: mount namespaces are blocked" if status == "226" else ""
        raise SystemdError(
            f"--sandbox: this host cannot run sandboxed user units (exit status {status}"
            f"{blocked}); install without --sandbox"
        )


# --- acting on many units -----------------------------------------------------------------------

# Units per systemctl call. One call with hundreds of units (or a glob matching them) makes
# systemctl wait on hundreds of jobs over one connection; under load the manager answered
# some with ENOBUFS ("No buffer space available") and the call hit its timeout. Small batches
# keep every call short and its errors attributable.
BATCH = 50


def in_batches(
    env: Environment,
    verb: str,
    names: list[str],
    *,
    flags: tuple[str, ...] = (),
    progress=None,
    timeout: float = 60,
) -> list[str]:
    """`systemctl --user [flags] VERB` over `names`, BATCH at a time; returns the error lines
    (empty: all went through). `progress(done, total)` after each batch."""
    errors: list[str] = []
    for start in range(0, len(names), BATCH):
        chunk = names[start : start + BATCH]
        try:
            proc = systemctl(env, *flags, verb, *chunk, check=False, timeout=timeout)
        except SystemdError as exc:
            errors.append(str(exc))
            continue
        if proc.returncode != 0:
            lines = [
                line
                for line in proc.stderr.splitlines()
                if line.strip() and not line.startswith(("Created symlink", "Removed "))
            ]
            errors += lines or [f"systemctl {verb}: exit {proc.returncode}"]
        if progress is not None:
            progress(min(start + BATCH, len(names)), len(names))
    return errors


@dataclass(frozen=True)
class UnitState:
    name: str
    active: str  # active, inactive, failed, activating, deactivating
    sub: str


def loaded_units(env: Environment, *patterns: str) -> dict[str, UnitState]:
    """Units the manager has loaded that match the patterns (all instances, linked or not)."""
    proc = systemctl(env, "list-units", "--all", "--plain", "--no-legend", *patterns, check=False)
    found = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 4:
            found[parts[0]] = UnitState(parts[0], parts[2], parts[3])
    return found


def scheduled_timers(env: Environment) -> dict[str, int]:
    """`list-timers`: every active openloop@ timer and its next elapse (realtime usec, 0 if
    none): what "the schedule is running" means."""

    proc = systemctl(env, "list-timers", "--output=json", "openloop@*.timer", check=False)
    try:
        rows = json.loads(proc.stdout or "[]")
    except json.JSONDecodeError:
        return {}
    return {r["unit"]: int(r.get("next") or 0) for r in rows if r.get("unit")}


def unit_file_state(env: Environment, unit: str) -> str:
    proc = systemctl(env, "is-enabled", unit, check=False)
    return proc.stdout.strip() or "unknown"
