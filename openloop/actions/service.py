"""Service actions: install the units and start and stop the schedules. Reading their state
back is actions/unit_status.py; the hooks the service unit calls around each iteration (gate,
record-exit, the failure notice) and the fallback without a user manager are
actions/unit_hooks.py."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from openloop.adapters import manager, units
from openloop.env import Environment
from openloop.errors import OpenLoopError
from openloop.state.config import load_config
from openloop.state.project import resolve
from openloop.state.registry import load_registry

# --- install ------------------------------------------------------------------------------------


def install(
    env: Environment, *, sandbox: bool | None = None, reload: bool = True
) -> units.InstallReport:
    """Write the units and drop-ins. `sandbox=None` keeps whatever the last install chose."""
    unit_dir = units.user_unit_dir(env)
    if reload:
        manager.check_unit_dir_seen(env)
    if sandbox is None:
        sandbox = sandboxed(env)
    report = units.InstallReport(
        unit_dir, packaged=units.packaged_units(env), linger=units.linger_enabled(env)
    )
    files: dict[Path, str] = {}
    if report.packaged is None:
        for name, text in units.render_templates(units.openloop_command()).items():
            files[unit_dir / name] = text
    else:
        report.removed = _remove_shadowing_copies(env)
    service_d = unit_dir / "openloop@.service.d"
    env_dropin = units.environment_dropin(env, units.tool_path(env))
    files[service_d / units.ENV_DROPIN] = env_dropin
    # The OnFailure= handler reads the same config (notification commands) as the iterations.
    files[unit_dir / "openloop-failure@.service.d" / units.ENV_DROPIN] = env_dropin
    if sandbox:
        if reload:
            manager.probe_sandbox(env)  # refuse before writing anything if it cannot work here
        files[service_d / units.SANDBOX_DROPIN] = units.sandbox_dropin(env)
    else:
        (service_d / units.SANDBOX_DROPIN).unlink(missing_ok=True)
    for entry in load_registry(env).projects:
        try:  # one broken project.json must not keep the others from being scheduled
            files.update(_dropins_for(env, entry.alias, sandbox))
        except OpenLoopError as exc:
            report.skipped.append(f"{entry.alias}: {exc}")
    for path, text in files.items():
        (report.written if units.write_if_changed(path, text) else report.unchanged).append(
            str(path.relative_to(unit_dir))
        )
    _ensure_environment_file(env)
    if reload:
        manager.daemon_reload(env)
    return report


def _remove_shadowing_copies(env: Environment) -> list[str]:
    """With vendor units (a distro package), the copies an earlier install wrote would hide
    them: remove those (never a copy the user edited)."""
    removed = []
    for path in units.shadowing_copies(env):
        path.unlink()
        removed.append(path.name)
    return removed


def _dropins_for(env: Environment, alias: str, sandbox: bool) -> dict[Path, str]:
    project = resolve(env, alias)
    calendar = project.config().schedule.on_calendar
    if calendar and (problem := units.check_calendar(calendar)):
        raise OpenLoopError(f"schedule.onCalendar {calendar!r}: {problem}")
    return units.project_dropins(
        units.user_unit_dir(env), alias, load_config(env), project.config(), project.repo, sandbox
    )


def _ensure_environment_file(env: Environment) -> None:
    path = env.config_dir / "environment"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(
                "# Environment for OpenLoop's units (API keys for the agent go here).\n"
                "# KEY=value per line; this file stays mode 0600.\n"
            )


def dropins_for(env: Environment, alias: str) -> dict[Path, str]:
    """The drop-ins `service install` would write for the project now (doctor compares)."""
    return _dropins_for(env, alias, sandboxed(env))


def sandboxed(env: Environment) -> bool:
    return (units.user_unit_dir(env) / "openloop@.service.d" / units.SANDBOX_DROPIN).exists()


def installed(env: Environment) -> bool:
    unit_dir = units.user_unit_dir(env)
    return (unit_dir / "openloop@.service").exists() or (
        units.packaged_units(env) is not None and (unit_dir / "openloop@.service.d").is_dir()
    )


def uninstall(env: Environment, progress=None) -> list[str]:
    """Stop and disable everything, then remove every file OpenLoop wrote in the unit
    directory: templates, template drop-ins and the drop-ins of every instance, also those of
    projects linked from another OPENLOOP_HOME or unlinked since. Returns the removed paths."""
    unit_dir = units.user_unit_dir(env)
    stop(env, progress=progress, disable=False)
    timers = _all_timers(env)
    manager.in_batches(
        env,
        "disable",
        ["openloop.target", *timers],
        flags=("--no-reload",),
        progress=_progress(progress, "disabling timers"),
    )
    removed = []
    for path in [unit_dir / n for n in units.TEMPLATES]:
        if path.is_file():
            path.unlink()
            removed.append(str(path.relative_to(unit_dir)))
    ours = (units.DROPIN, units.ENV_DROPIN, units.SANDBOX_DROPIN)
    for folder in sorted(unit_dir.glob("openloop*.d")):
        for path in sorted(folder.iterdir()):
            if path.name in ours and path.is_file():
                path.unlink()
                removed.append(str(path.relative_to(unit_dir)))
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    manager.daemon_reload(env)
    manager.systemctl(env, "reset-failed", "openloop@*", "openloop-failure@*", check=False)
    return removed


def _all_timers(env: Environment) -> list[str]:
    """Linked projects' timers, plus any other openloop@ timer the manager has loaded or that
    is enabled (a project unlinked, or linked from another OPENLOOP_HOME)."""
    names = {units.instance(e.alias, "timer") for e in load_registry(env).projects}
    names |= {n for n in manager.loaded_units(env, "openloop@*.timer")}
    wants = units.user_unit_dir(env) / "openloop.target.wants"
    if wants.is_dir():
        names |= {p.name for p in wants.iterdir() if p.name.startswith("openloop@")}
    return sorted(names)


def project_linked(env: Environment, alias: str) -> bool:
    """Keep the units in step with `project add`: drop-ins, and the timer when running."""
    if not installed(env):
        return False
    for path, text in _dropins_for(env, alias, sandbox=sandboxed(env)).items():
        units.write_if_changed(path, text)
    manager.daemon_reload(env)
    if _target_active(env):
        manager.systemctl(env, "enable", "--now", units.instance(alias, "timer"))
    return True


def project_unlinked(env: Environment, alias: str) -> None:
    if not installed(env):
        return
    manager.systemctl(env, "disable", "--now", units.instance(alias, "timer"), check=False)
    units.remove_project_dropins(units.user_unit_dir(env), alias)
    manager.daemon_reload(env)


# --- start / stop -------------------------------------------------------------------------------


# How long `stop` waits for running iterations: TimeoutStopSec=90s, then ExecStopPost.
STOP_WAIT_SECONDS = 150.0


@dataclass
class ScheduleReport:
    """What start/stop did and what `list-timers` shows afterwards."""

    action: str
    expected: int  # timers that should be scheduled afterwards
    scheduled: int  # timers list-timers shows
    problems: list[str]
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # worth saying, not a failure

    @property
    def ok(self) -> bool:
        return not self.problems


def _names(names: list[str] | set[str], limit: int = 8) -> str:
    shown = sorted(names)[:limit]
    more = len(names) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more else "")


def _progress(progress, what: str):
    if progress is None:
        return None

    def report(done: int, total: int) -> None:
        if total > manager.BATCH:
            progress(f"{what}: {done}/{total}")

    return report


def start(env: Environment, progress=None) -> ScheduleReport:
    """Enable, then start, every linked project's timer and openloop.target, in batches; then
    check with list-timers. Enabled first: if starting fails half-way, the next login (or a
    retry) still brings everything up."""
    began = time.monotonic()
    if not installed(env):
        install(env)
    timers = [units.instance(e.alias, "timer") for e in load_registry(env).projects]
    problems = manager.in_batches(
        env,
        "enable",
        ["openloop.target", *timers],
        flags=("--no-reload",),
        progress=_progress(progress, "enabling timers"),
    )
    manager.daemon_reload(env)
    problems += manager.in_batches(env, "start", ["openloop.target"], flags=("--no-block",))
    # The target pulls in the timers it wants; starting by name the ones that are not running
    # yet catches any it did not start.
    waiting = _not_active(env, timers)
    problems += manager.in_batches(
        env,
        "start",
        waiting,
        flags=("--no-block",),
        progress=_progress(progress, "starting timers"),
    )
    _wait_until(lambda: not _not_active(env, timers))
    scheduled = manager.scheduled_timers(env)
    missing = set(timers) - set(scheduled)
    if missing:
        problems.append(f"not scheduled after start: {_names(missing)}")
    extra = set(scheduled) - set(timers)
    if extra:
        problems.append(f"scheduled but not linked here (openloop project list): {_names(extra)}")
    if manager.unit_file_state(env, "openloop.target") != "enabled":
        problems.append("openloop.target is not enabled: the timers will not start at login")
    return ScheduleReport("start", len(timers), len(scheduled), problems, time.monotonic() - began)


def stop(env: Environment, progress=None, *, disable: bool = True) -> ScheduleReport | None:
    """Stop the timers, then the running iterations (ExecStopPost records them as stopped by
    the user), then disable openloop.target so they stay stopped across logins (`start`
    enables it again); then check with list-timers. Disabled last: a stop that fails half-way
    leaves the schedule as it was. None if nothing is installed."""
    if not installed(env):
        return None
    began = time.monotonic()
    loaded = manager.loaded_units(env, "openloop@*.timer")
    timers = sorted(n for n, state in loaded.items() if state.active != "inactive")
    problems = manager.in_batches(
        env,
        "stop",
        timers,
        flags=("--no-block",),
        progress=_progress(progress, "stopping timers"),
    )
    problems += manager.in_batches(env, "stop", ["openloop.target"], flags=("--no-block",))
    _wait_until(lambda: not manager.scheduled_timers(env))
    running = _running_services(env)
    if running:
        if progress is not None:
            progress(f"stopping {len(running)} running iteration(s)")
        # --no-block: an iteration may take TimeoutStopSec to end; we wait below, for all of
        # them at once, instead of in one systemctl call that outlives its own timeout.
        problems += manager.in_batches(env, "stop", running, flags=("--no-block",))
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        while running and time.monotonic() < deadline:
            time.sleep(0.2)
            running = _running_services(env)
        if running:
            problems.append(f"still running after {STOP_WAIT_SECONDS:.0f}s: {_names(running)}")
    if disable:
        problems += manager.in_batches(env, "disable", ["openloop.target"])
    scheduled = manager.scheduled_timers(env)
    if scheduled:
        problems.append(f"still scheduled after stop: {_names(set(scheduled))}")
    if disable and manager.unit_file_state(env, "openloop.target") == "enabled":
        problems.append("openloop.target is still enabled: the timers would start at login")
    return ScheduleReport("stop", 0, len(scheduled), problems, time.monotonic() - began)


def start_project(env: Environment, alias: str) -> ScheduleReport:
    """`service start -p ALIAS`: this project's drop-ins, then its timer enabled and started;
    then checked with list-timers. The other projects' timers are left as they are."""
    began = time.monotonic()
    project = resolve(env, alias)
    dropins = _dropins_for(env, project.alias, sandboxed(env))  # raises: nothing to schedule
    if not installed(env):
        install(env)
    else:
        for path, text in dropins.items():
            units.write_if_changed(path, text)
        manager.daemon_reload(env)
    timer = units.instance(project.alias, "timer")
    problems = manager.in_batches(env, "enable", [timer], flags=("--no-reload",))
    problems += manager.in_batches(env, "start", [timer], flags=("--no-block",))
    _wait_until(lambda: not _not_active(env, [timer]))
    scheduled = manager.scheduled_timers(env)
    if timer not in scheduled:
        problems.append(f"not scheduled after start: {timer}")
    report = ScheduleReport("start", 1, int(timer in scheduled), problems, 0.0)
    if manager.unit_file_state(env, "openloop.target") != "enabled":
        report.notes.append(
            "openloop.target is not enabled: this timer runs until you log out "
            "('openloop service start' enables every project's)"
        )
    report.seconds = time.monotonic() - began
    return report


def stop_project(env: Environment, alias: str) -> ScheduleReport | None:
    """`service stop -p ALIAS`: its timer stopped and disabled (so openloop.target does not
    bring it back at login), then its running iteration stopped (recorded as interrupted by
    you); checked with list-timers. None if nothing is installed."""
    if not installed(env):
        return None
    began = time.monotonic()
    project = resolve(env, alias)
    timer = units.instance(project.alias, "timer")
    svc = units.instance(project.alias, "service")
    problems = manager.in_batches(env, "stop", [timer], flags=("--no-block",))
    _wait_until(lambda: timer not in manager.scheduled_timers(env))
    if svc in _running_services(env):
        problems += manager.in_batches(env, "stop", [svc], flags=("--no-block",))
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        while svc in _running_services(env) and time.monotonic() < deadline:
            time.sleep(0.2)
        if svc in _running_services(env):
            problems.append(f"still running after {STOP_WAIT_SECONDS:.0f}s: {svc}")
    problems += manager.in_batches(env, "disable", [timer])
    if timer in manager.scheduled_timers(env):
        problems.append(f"still scheduled after stop: {timer}")
    return ScheduleReport("stop", 0, 0, problems, time.monotonic() - began)


def _not_active(env: Environment, names: list[str]) -> list[str]:
    loaded = manager.loaded_units(env, "openloop@*.timer")
    return [n for n in names if n not in loaded or loaded[n].active != "active"]


def _wait_until(done, seconds: float = 30.0) -> bool:
    """Poll for the manager to finish jobs queued with --no-block. (A blocking systemctl
    waits for every job's completion signal; for hundreds of units, or units already in the
    wanted state right after a daemon-reload, it sat out the 25 s D-Bus timeout per call.)"""
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _running_services(env: Environment) -> list[str]:
    return sorted(
        name
        for name, state in manager.loaded_units(env, "openloop@*.service").items()
        if state.active in ("active", "activating", "deactivating", "reloading")
    )


def _target_active(env: Environment) -> bool:
    return manager.show(env, "openloop.target", "ActiveState").get("ActiveState") == "active"
