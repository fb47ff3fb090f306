"""`openloop demo`: the whole loop on a sample repository, with the real pi and no API key.

Everything lives in one directory of the demo's own (a temporary one unless `--dir`):

    <dir>/sample/     the sample git repository (a tiny Python package, lint and test commands)
    <dir>/openloop/   OPENLOOP_HOME: the demo's registry, config, budget, worktrees
    <dir>/home/       HOME for pi and git: pi's models.json/settings.json point at the demo model

so the user's projects, configuration, journal filters and ~/.pi are never read or written.
The scripted model (openloop.adapters.demo_model) listens on 127.0.0.1 while the demo runs.
Iterations run through real systemd units when a user manager is reachable (OpenLoop's
units under a name of the demo's, `openloop_demo_<random>`: see openloop.actions.demo_units),
their records followed in the journal; otherwise `openloop run-once -p sample` is called
directly, as the unit would, and the demo says so. It then checks the five outcomes (a healed
default branch, an auto-merge, a review, a policy block, a retry after a failed check) in the
ledger, the run records and the git history, and says which are missing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openloop.actions import demo_script as script
from openloop.actions import demo_units
from openloop.actions.demo_checks import Outcome, check_outcomes, ledger, records
from openloop.actions.demo_pi import DemoError, Say, ensure_pi, find_pi, node_problem
from openloop.actions.demo_world import World, prepare_dir, python_command
from openloop.adapters import demo_model
from openloop.loop.outcomes import Outcome as RunOutcome

__all__ = ["DemoError", "DemoResult", "World", "ensure_pi", "find_pi", "run_demo"]

MAX_ITERATIONS = 10
_FINISHED = tuple(f"{o.value}:" for o in RunOutcome)

OUTCOMES = 5


@dataclass
class DemoResult:
    root: Path
    kept: bool
    seconds: float
    spent_usd: float
    outcomes: list[Outcome] = field(default_factory=list)
    via: str = "run-once"  # or "systemd"
    unit: str | None = None  # the demo's service, when via systemd

    @property
    def ok(self) -> bool:
        return len(self.outcomes) == OUTCOMES and all(o.ok for o in self.outcomes)

    def to_data(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "via": self.via,
            "unit": self.unit,
            "seconds": round(self.seconds, 1),
            "spentUsd": round(self.spent_usd, 6),
            "directory": str(self.root),
            "openloopHome": str(self.root / "openloop"),
            "kept": self.kept,
            "outcomes": [o.__dict__ for o in self.outcomes],
        }


def build_sample(w: World) -> None:
    """The sample repository with its control plane and policy committed on main."""
    w.pi_home.mkdir(parents=True)
    w.repo.mkdir(parents=True)
    for rel, text in script.FILES.items():
        path = w.repo / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    w.git("init", "-q", "-b", script.BRANCH)
    w.git("add", "-A")
    w.git("commit", "-qm", "calc: add()")
    w.line(f"sample repository: {w.repo} (a tiny Python package, branch {script.BRANCH})")

    w.openloop("project", "add", w.alias, str(w.repo), "--init")
    python = python_command()
    pfile = w.repo / ".openloop" / "project.json"
    data = json.loads(pfile.read_text())
    data["pi"].update(model=demo_model.MODEL, provider=demo_model.PROVIDER)
    data["validation"].update(
        lintCommand=script.LINT.replace("python3", python),
        typecheckCommand=None,
        testCommand=script.TEST.replace("python3", python),
    )
    data["runtime"].update(inactivityTimeoutSeconds=60, runTimeoutSeconds=180)
    pfile.write_text(json.dumps(data, indent=2) + "\n")
    (w.repo / ".openloop" / "policy.yaml").write_text(script.POLICY)
    w.git("add", "-A")
    w.git("commit", "-qm", "OpenLoop control plane: checks, policy (deploy/ is denied)")
    w.openloop("project", "trust", w.alias)
    w.line(
        f"linked as '{w.alias}'; committed .openloop/policy.yaml (denyGlobs: deploy/**) "
        f"and approved checks and policy with 'openloop project trust {w.alias}'"
    )
    w.line(f"  lint: {data['validation']['lintCommand']}")
    w.line(f"  test: {data['validation']['testCommand']}")
    w.openloop("config", "set", "budgets.dailyCostUsd", "1")
    for task in script.TASKS:
        args = ["task", "add", "-p", w.alias, "--id", task.id, "--title", task.title]
        args += ["--risk", task.risk, "--priority", str(task.priority), "--accept", task.accept]
        for scope in task.scope:
            args += ["--scope", scope]
        w.openloop(*args)
        w.line(f"task {task.id} ({task.risk}): {task.title}")
    message, files = script.BROKEN_COMMIT
    for rel, text in files.items():
        (w.repo / rel).write_text(text)
    w.git("add", "-A")
    w.git("commit", "-qm", message, "--author", "A teammate <teammate@openloop.invalid>")
    w.line(
        f"a teammate committed to {script.BRANCH}: '{message}': the lint check now fails on "
        f"{script.BRANCH} itself, and OpenLoop heals that before any feature work"
    )


def run_loop(w: World, pause: Callable[[], None]) -> list[dict[str, Any]]:
    """`openloop run-once -p ALIAS` until the backlog has nothing left to run."""
    records: list[dict[str, Any]] = []
    for _ in range(MAX_ITERATIONS):
        record = _run_once(w)
        if "runId" not in record:  # stopped before the agent ran: idle, skipped, refused
            w.line(
                f"{record.get('taskId') or 'run-once'}: {record.get('outcome')}: "
                f"{record.get('reason', '')}"
            )
            if record.get("outcome") in ("idle", "skipped"):
                break
        records.append(record)
        pause()
    return records


def _run_once(w: World) -> dict[str, Any]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "openloop", "run-once", "-p", w.alias, "--json"],
        env=w.env(),
        cwd=w.root,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None and proc.stdout is not None
    for raw in proc.stderr:
        text = raw.rstrip()
        if text.startswith("openloop: "):
            text = text[len("openloop: ") :]
        # The last line repeats the outcome, which the summary below reports with more.
        if text and not text.startswith(_FINISHED):
            w.line(f"  {text}")
    out = proc.stdout.read()
    proc.wait()
    try:
        record = json.loads(out)
    except ValueError:
        raise DemoError(f"run-once exited {proc.returncode} without a summary: {out!r}") from None
    if "runId" in record:
        _say_run(w, record, f"exit {proc.returncode}")
    return record


def _say_run(w: World, record: dict[str, Any], how: str) -> None:
    w.spent += float(record.get("costUsd") or 0)
    checks = ", ".join(f"{v['name']} {v['status']}" for v in record.get("validation") or [])
    role = f" [{record['role']}]" if record.get("role") else ""
    w.line(
        f"{record.get('taskId')}{role}: {record['outcome']} -> task {record.get('taskStatus')}"
        f"  ({how}; {checks or 'no checks run'}; "
        f"run ${float(record.get('costUsd') or 0):.4f})"
    )
    if record.get("reason"):
        w.line(f"  why: {record['reason']}")


# Task states with work left: the demo's loop goes on while one is in them.
_OPEN = ("ready", "in_progress", "validating", "planned")
UNITS_TIMEOUT = 420


def run_units(w: World, du: demo_units.DemoUnits, pause: Callable[[], None]) -> None:
    """Starts the demo's timer and watches: each run record as it is finished, the unit's
    state, the journal's records (on a thread); stops once no task has work left and the
    service is idle."""
    reported: set[str] = set()
    deadline = time.monotonic() + UNITS_TIMEOUT
    status = ""

    def said(message: str) -> None:
        # Every record starts with the project's alias: the demo has one project.
        w.line(f"  journal: {message.removeprefix(w.alias + ':').removeprefix(w.alias).strip()}")

    with demo_units.journal_lines(du.env, du.service, said) as heard:
        du.start()
        w.line(f"started {du.timer}: it fires {du.service} now and 2 s after each run ends")
        while True:
            for record in records(w):
                if record.get("endedAt") and record.get("runId") not in reported:
                    reported.add(record["runId"])
                    _say_run(w, record, f"by {du.service}")
                    if record.get("outcome") == "environment-error":
                        # The project now backs off for minutes: waiting would look hung.
                        raise DemoError(f"pi could not work here: {record.get('reason')}")
                    pause()
            state = du.state()
            if state.get("StatusText") and state["StatusText"] != status:
                status = state["StatusText"]
                if not heard():  # the journal says more, when it can be read
                    w.line(f"  {du.service}: {status}")
            idle = state.get("ActiveState") in ("inactive", "failed")
            if idle and not any(t.get("status") in _OPEN for t in ledger(w).values()):
                break
            if state.get("ActiveState") == "failed":
                raise DemoError(
                    f"{du.service} failed ({state.get('Result')}): "
                    f"journalctl --user -u {du.service}"
                )
            if time.monotonic() > deadline:
                raise DemoError(
                    f"the backlog was not done after {UNITS_TIMEOUT} s of {du.timer}: "
                    f"journalctl --user -u {du.service}"
                )
            time.sleep(0.5)
        time.sleep(0.5)  # the last records' way through journald
        if not heard():
            w.line(
                "  (no journal records reached this demo: is journald running, and may you read "
                "your user journal? 'openloop doctor' checks)"
            )


# --- the whole demo -------------------------------------------------------------------------


def run_demo(
    *,
    directory: Path | None,
    keep: bool,
    say: Say,
    pause: Callable[[], None] = lambda: None,
    report: Callable[[World, DemoResult], None] | None = None,
    units: bool | None = None,
) -> DemoResult:
    """Runs the demo; `report` sees the world and the result before anything is cleaned up.
    `units`: through the systemd units (True: or fail), run-once directly (False), or the
    units when a user manager is reachable (None). The demo's units are always removed at the
    end (their journal records stay); unless `keep`, so is the demo directory (emptied, for a
    `directory` that existed), whether the demo succeeded or not."""
    environ = dict(os.environ)
    if problem := node_problem(environ):
        raise DemoError(f"{problem} (install it from nodejs.org or NodeSource)")
    no_units = "not asked for (--no-units)" if units is False else None
    target = (directory.expanduser().absolute(),) if directory else (Path(tempfile.gettempdir()),)
    no_units = no_units or demo_units.manager_problem(environ, target)
    if units and no_units:
        raise DemoError(f"--units: {no_units}")
    root, created = prepare_dir(directory)
    started = time.monotonic()
    du: demo_units.DemoUnits | None = None
    restore = _exit_on_signals()
    try:
        pi = ensure_pi(environ, say)
        alias = script.ALIAS if no_units else demo_units.new_alias()
        w = World(root, pi, say, started, alias=alias)
        w.line(f"demo directory {root}; pi {pi}")
        w.line("phase 1/4: set up the sample repository")
        build_sample(w)
        pause()
        with demo_model.DemoModel(script.SCRIPTS) as model:
            demo_model.write_pi_config(w.pi_home, model.url)
            w.line(
                f"phase 2/4: the scripted model listens on {model.url} "
                f"(provider {demo_model.PROVIDER}, model {demo_model.MODEL}; its prices are "
                f"{demo_model.PRICE[0]:g}/{demo_model.PRICE[1]:g} demo dollars per million "
                "tokens in/out: nothing is charged)"
            )
            if no_units:
                w.line(
                    f"phase 3/4: iterations: 'openloop run-once -p {w.alias}', called directly "
                    f"(what the openloop@{w.alias}.service unit runs on each timer tick): "
                    f"systemd is not used because {no_units}"
                )
                run_loop(w, pause)
            else:
                du = _demo_units(w, environ)
                try:
                    _install_units(w, du)
                    run_units(w, du, pause)
                finally:
                    du.remove()  # before the model goes: a run stopped now ends cleanly
            w.line("phase 4/4: check the outcomes in the ledger, run records and git history")
            outcomes = check_outcomes(w, model)
        result = DemoResult(root, keep, time.monotonic() - started, w.spent, outcomes)
        result.via = "run-once" if du is None else "systemd"
        result.unit = du.service if du else None
        if report:
            report(w, result)
        return result
    finally:
        if du is not None:
            du.remove()  # a no-op when done above
        restore()
        if not keep:
            if created:
                shutil.rmtree(root, ignore_errors=True)
            else:
                for child in root.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink(missing_ok=True)


def _exit_on_signals() -> Callable[[], None]:
    """SIGTERM and SIGHUP (a closed terminal) end the demo like Ctrl-C does, through its
    clean-up: its units removed, its directory too unless --keep. Returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def leave(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    old = {sig: signal.signal(sig, leave) for sig in (signal.SIGTERM, signal.SIGHUP)}
    return lambda: [signal.signal(sig, handler) for sig, handler in old.items()] and None


def _demo_units(w: World, environ: dict[str, str]) -> demo_units.DemoUnits:
    """The demo's units (see demo_units), after removing those of demos that were killed."""
    from openloop.env import Environment

    caller = Path(environ.get("HOME") or Path.home())
    config_home = environ.get("XDG_CONFIG_HOME") or str(caller / ".config")
    env = Environment.from_os({**w.env(), "XDG_CONFIG_HOME": config_home})
    for gone in demo_units.remove_stale(env):
        w.line(f"removed {gone}: left behind by a demo that was killed")
    return demo_units.DemoUnits(env, w.alias, w.env(), w.root / "demo.lock")


def _install_units(w: World, du: demo_units.DemoUnits) -> None:
    from openloop.adapters import units
    from openloop.state.config import load_config
    from openloop.state.project import resolve

    project = resolve(du.env, w.alias)
    limits = units.service_dropin(load_config(du.env), project.config(), project.repo, False)
    unit_dir = du.install(limits)
    w.line(
        f"phase 3/4: iterations through systemd: {du.timer} fires {du.service}, OpenLoop's own "
        f"units under a name of the demo's (in {unit_dir}; your units are not touched)"
    )
    w.line(f"  see them: systemctl --user cat {du.service}; journalctl --user -u {du.service}")


def status_screen(w: World) -> str:
    return w.openloop("status", check=False).stdout


def journal_tail(w: World, lines: int = 12) -> str:
    """The demo project's last journal records, read back by `openloop logs`."""
    proc = w.openloop("logs", "-p", w.alias, "-n", str(lines), check=False)
    return proc.stdout if proc.returncode == 0 else proc.stderr


def review_summary(w: World, task_id: str) -> str:
    """The promotion request in a few lines (`promotion show` prints the whole JSON)."""
    proc = w.openloop("promotion", "show", "-p", w.alias, "--task", task_id, check=False)
    try:
        req = json.loads(proc.stdout)
    except ValueError:
        return (proc.stderr or proc.stdout).strip()
    checks = ", ".join(
        f"{c['name']} {c['status']}" for c in req.get("validation") or [] if c.get("command")
    )
    lines = [
        f"branch {req.get('branch')} onto {req.get('baseBranch')}, {req.get('risk')}, "
        f"status {req.get('status')}",
        f"checks: {checks or 'none'}",
        *(f"why review: {r}" for r in req.get("reasons") or []),
        *(req.get("diffstat") or "").splitlines(),
    ]
    return "\n".join(lines)
