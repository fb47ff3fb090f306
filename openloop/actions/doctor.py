"""`openloop doctor`: everything an unattended run needs, each with how to fix it."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from openloop.adapters import manager, units
from openloop.env import Environment
from openloop.errors import OpenLoopError
from openloop.state import backoff, budget, trust
from openloop.state.config import load_config
from openloop.state.registry import load_registry


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str | None = None
    warning: bool = False  # a problem that does not stop unattended runs


def _run(argv: list[str], env: dict[str, str], timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def check_pi(env: Environment) -> Check:
    unit_path = ":".join(units.tool_path(env))
    pi = env.environ.get("OPENLOOP_PI_BIN") or shutil.which("pi", path=unit_path)
    if not pi:
        elsewhere = [str(p) for p in pi_candidates(env) if os.access(p, os.X_OK)]
        if elsewhere:
            return Check(
                "pi",
                False,
                f"pi is not on the PATH the units get, but {elsewhere[0]} exists",
                f"export OPENLOOP_PI_BIN={elsewhere[0]} (or put its directory on PATH), "
                "then 'openloop service install'",
            )
        return Check(
            "pi",
            False,
            "pi is not on the PATH the units get (OpenLoop looks at $OPENLOOP_PI_BIN, then PATH)",
            "npm install -g @mariozechner/pi-coding-agent (or set OPENLOOP_PI_BIN), "
            "then 'openloop service install'",
        )
    try:
        proc = _run([pi, "--version"], {**env.environ, "PATH": unit_path})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("pi", False, f"{pi} does not run: {exc}", "reinstall pi")
    if proc.returncode != 0:
        return Check(
            "pi",
            False,
            f"{pi} --version failed: {proc.stderr.strip()[:200]}",
            "check Node.js (pi 0.73 needs Node >= 20)",
        )
    return Check("pi", True, f"{pi} ({version_line(proc.stdout, proc.stderr)})")


def version_line(stdout: str | None, stderr: str | None) -> str:
    """The version a tool printed, wherever it printed it: pi writes it on stderr. The first
    line that has a digit in it, from stdout first; escaped, capped."""
    from openloop.text import escape

    for stream in (stdout or "", stderr or ""):
        for line in stream.splitlines():
            if any(c.isdigit() for c in line):
                return escape(line.strip())[:80]
    return "version unknown"


def pi_candidates(env: Environment) -> list[Path]:
    """Where a per-user npm install usually puts pi (not on every PATH): named by doctor."""
    home = Path(env.environ.get("HOME", "~")).expanduser()
    prefix = env.environ.get("NPM_CONFIG_PREFIX")
    dirs = [Path(prefix) / "bin"] if prefix else []
    dirs += [home / ".local/bin", home / ".npm-global/bin", home / ".npm/bin", home / "bin"]
    return [d / "pi" for d in dirs]


def check_git_identity(env: Environment) -> Check:
    proc = _run(["git", "config", "--global", "user.email"], dict(env.environ))
    if proc.returncode != 0 or not proc.stdout.strip():
        return Check(
            "git identity",
            True,
            "no global user.email: OpenLoop commits as 'OpenLoop <openloop@localhost>'",
            "git config --global user.email you@host",
            warning=True,
        )
    return Check("git identity", True, proc.stdout.strip())


def check_manager(env: Environment) -> Check:
    try:
        manager.systemctl(env, "show-environment")
    except OpenLoopError as exc:
        return Check(
            "user manager",
            False,
            str(exc),
            "log in with a systemd session, or use 'openloop service run'",
        )
    return Check("user manager", True, "systemctl --user answers")


def check_linger(env: Environment) -> Check:
    linger = units.linger_enabled(env)
    if linger is None:
        return Check("linger", True, "could not tell", warning=True)
    if not linger:
        return Check(
            "linger",
            True,
            "off: timers stop when you log out",
            "loginctl enable-linger $USER",
            warning=True,
        )
    return Check("linger", True, "on")


def check_units(env: Environment) -> Check:
    from openloop.actions import service

    if not service.installed(env):
        return Check("units", False, "not installed", "openloop service install")
    unit_dir = units.user_unit_dir(env)
    vendor = units.packaged_units(env)
    if vendor is None:
        rendered = units.render_templates(units.openloop_command())
        stale = [
            n
            for n, text in rendered.items()
            if not (unit_dir / n).is_file() or (unit_dir / n).read_text() != text
        ]
        if stale:
            return Check(
                "units", False, f"out of date: {', '.join(stale)}", "openloop service install"
            )
        return Check("units", True, f"copies in {unit_dir} ({units_in_use(env)})")
    detail = f"packaged units from {vendor}, drop-ins in {unit_dir} ({units_in_use(env)})"
    shadowing = [p for p in units.unit_sources(env).values() if p and p.parent != vendor]
    if shadowing:
        return Check(
            "units",
            True,
            f"{detail}; these hide the packaged ones: {', '.join(map(str, shadowing))}",
            "openloop service install (removes copies it wrote; remove edited ones yourself)",
            warning=True,
        )
    return Check("units", True, detail)


def units_in_use(env: Environment) -> str:
    """Which file the user manager loads for each template unit."""
    return "; ".join(
        f"{name}: {path or 'missing'}" for name, path in units.unit_sources(env).items()
    )


def check_schedule(env: Environment) -> list[Check]:
    """Installed is not running: every timer may be stopped, and a drop-in may still carry the
    limits of a project.json edited since the last install."""
    from openloop.actions import service

    if not service.installed(env):
        return []
    checks = []
    aliases = [e.alias for e in load_registry(env).projects]
    try:
        running = manager.scheduled_timers(env)
    except OpenLoopError:
        running = None
    if running is not None and aliases:
        idle = [a for a in aliases if units.instance(a, "timer") not in running]
        if len(idle) == len(aliases):
            checks.append(
                Check("timers", False, "no project's timer is running", "openloop service start")
            )
        elif idle:
            checks.append(
                Check(
                    "timers",
                    True,
                    f"not running for: {', '.join(idle)}",
                    "openloop service start",
                    warning=True,
                )
            )
        else:
            checks.append(Check("timers", True, f"{len(running)} running"))
    stale = []
    for alias in aliases:
        try:
            wanted = service.dropins_for(env, alias)
        except OpenLoopError:
            continue  # the project's own check reports why
        if any(not p.is_file() or p.read_text() != text for p, text in wanted.items()):
            stale.append(alias)
    if stale:
        checks.append(
            Check(
                "drop-ins",
                False,
                f"out of date after a project.json change: {', '.join(stale)}",
                "openloop service install",
            )
        )
    return checks


def check_journal() -> Check:
    from openloop.adapters import journal_read

    try:
        journal_read.read(limit=1)
    except OpenLoopError as exc:
        return Check("journal", False, str(exc), "install systemd-python or journalctl")
    return Check("journal", True, "readable")


def check_budget(env: Environment) -> Check:
    ceiling = load_config(env).budgets.daily_cost_usd
    left = budget.left_today(env, ceiling)
    if left <= 0:
        return Check(
            "budget",
            False,
            f"today's ${ceiling:.2f} is spent",
            "wait for tomorrow or 'openloop config set budgets.dailyCostUsd N'",
        )
    return Check("budget", True, f"${left:.2f} of ${ceiling:.2f} left today")


def check_projects(env: Environment) -> list[Check]:
    from openloop.loop import governance
    from openloop.state.ledger import load_ledger
    from openloop.state.project import resolve

    checks = []
    for entry in load_registry(env).projects:
        name = f"project {entry.alias}"
        try:
            project = resolve(env, entry.alias)
            config = project.config()
            governance.load_current(project, config)
            load_ledger(project.plane.ledger_file)
        except OpenLoopError as exc:
            checks.append(
                Check(
                    name, False, str(exc), f"fix the file, or 'openloop project init {entry.alias}'"
                )
            )
            continue
        if not trust.is_trusted(entry, config):
            checks.append(
                Check(
                    name,
                    False,
                    "its commands are not approved",
                    f"openloop project trust {entry.alias}",
                )
            )
        elif not Path(entry.path, ".git").exists():
            checks.append(
                Check(
                    name,
                    False,
                    f"{entry.path} is not a git repository",
                    f"openloop project add {entry.alias} PATH --force",
                )
            )
        else:
            checks.append(Check(name, True, entry.path))
        checks += _baseline_checks(env, entry.alias)
        if waiting := backoff.summary(env, entry.alias):
            checks.append(
                Check(
                    f"agent {entry.alias}",
                    False,
                    f"{waiting['reason']}; {backoff.retry_phrase(waiting)} "
                    f"(failed {waiting['failures']}x in a row, no attempt counted)",
                    f"{waiting['fix']}, then 'openloop resume -p {entry.alias}' to retry now",
                )
            )
    return checks


def _baseline_checks(env: Environment, alias: str) -> list[Check]:
    """What fails on the default branch and will not be healed: a warning (runs go on, judged
    against it), with the fix."""
    from openloop.state import baseline

    health = baseline.summary(env, alias)
    if not health or not health["unhealable"]:
        return []
    return [
        Check(
            f"default branch {alias}",
            True,
            f"{health['branch']} fails {f['check']}, not auto-healable: {f['why']}",
            "fix it on the default branch by hand (tasks are judged against it meanwhile)",
            warning=True,
        )
        for f in health["unhealable"]
    ]


def check_containment(env: Environment) -> Check:
    """How the processes of an iteration are found and stopped, and what bounds the agent's
    writes: the user should know which guarantee is in force."""
    from openloop.adapters.supervise import pid_namespace_prefix

    sandbox = any(units.user_unit_dir(env).glob("openloop@*.service.d/*sandbox*.conf"))
    pidns = pid_namespace_prefix() is not None
    processes = (
        "the agent and each check run in a PID namespace of their own (nothing they start "
        "outlives them)"
        if pidns
        else "no PID namespace here (unshare or user namespaces unavailable): the agent's and "
        "the checks' process groups and every process carrying the run's marker are stopped, "
        "and the next repair sweeps again; a process that drops both can outlive the run"
    )
    writes = (
        "writes outside the repository are confined by the sandbox drop-in"
        if sandbox
        else "writes outside the repository are not confined (the guard detects changes to it)"
    )
    fix = None
    if not pidns:
        fix = "install util-linux >= 2.38 (unshare) and allow unprivileged user namespaces"
    elif not sandbox:
        fix = "'openloop service install --sandbox' where user namespaces work"
    return Check("containment", True, f"{processes}; {writes}", fix, warning=fix is not None)


def run_checks(env: Environment) -> list[Check]:
    return [
        check_pi(env),
        check_containment(env),
        check_git_identity(env),
        check_manager(env),
        check_linger(env),
        check_units(env),
        *check_schedule(env),
        check_journal(),
        check_budget(env),
        *check_projects(env),
    ]
