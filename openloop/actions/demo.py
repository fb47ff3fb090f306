"""`openloop demo`: the whole loop on a sample repository, with the real pi and no API key.

Everything lives in one directory of the demo's own (a temporary one unless `--dir`):

    <dir>/sample/     the sample git repository (a tiny Python package, lint and test commands)
    <dir>/openloop/   OPENLOOP_HOME: the demo's registry, config, budget, worktrees
    <dir>/home/       HOME for pi and git: pi's models.json/settings.json point at the demo model

so the user's projects, configuration, journal filters and ~/.pi are never read or written.
The scripted model (openloop.adapters.demo_model) listens on 127.0.0.1 while the demo runs.
Iterations run through the real systemd units when a user manager is reachable (the demo's
own instance, `openloop@demo-<random>`: see openloop.actions.demo_units), their records
followed in the journal; otherwise `openloop run-once -p sample` is called directly, as the
unit would, and the demo says so. It then checks the five outcomes (a healed default branch,
an auto-merge, a review, a policy block, a retry after a failed check) in the ledger, the run
records and the git history, and says which are missing.
"""

from __future__ import annotations

import json
import os
import shutil
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
from openloop.adapters import demo_model
from openloop.errors import InputError, OpenLoopError
from openloop.loop.outcomes import Outcome as RunOutcome

PI_PACKAGE = "@mariozechner/pi-coding-agent"
PI_VERSION = "0.73.1"  # the version OpenLoop is tested against (scripts/install-pi.sh)
MAX_ITERATIONS = 10
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
_SOURCE_ROOT = Path(__file__).resolve().parents[2]

_FINISHED = tuple(f"{o.value}:" for o in RunOutcome)

Say = Callable[[str], None]


class DemoError(OpenLoopError):
    """The demo could not run (pi not installable, a step failed)."""


@dataclass
class Outcome:
    name: str
    ok: bool
    detail: str


OUTCOMES = 5


@dataclass
class DemoResult:
    root: Path
    kept: bool
    seconds: float
    spent_usd: float
    outcomes: list[Outcome] = field(default_factory=list)
    via: str = "run-once"  # or "systemd"

    @property
    def ok(self) -> bool:
        return len(self.outcomes) == OUTCOMES and all(o.ok for o in self.outcomes)

    def to_data(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "via": self.via,
            "seconds": round(self.seconds, 1),
            "spentUsd": round(self.spent_usd, 6),
            "directory": str(self.root),
            "openloopHome": str(self.root / "openloop"),
            "kept": self.kept,
            "outcomes": [o.__dict__ for o in self.outcomes],
        }


# --- pi -------------------------------------------------------------------------------------


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


def _node_problem(environ: dict[str, str]) -> str | None:
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


# --- the demo's world -----------------------------------------------------------------------


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


def _prepare_dir(directory: Path | None) -> tuple[Path, bool]:
    """(root, created by us)."""
    if directory is None:
        return Path(tempfile.mkdtemp(prefix="openloop-demo-")), True
    directory = directory.expanduser().absolute()
    if directory.exists() and any(directory.iterdir()):
        raise InputError(f"--dir: {directory} is not empty (the demo needs a directory of its own)")
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    return directory, created


def _python_command() -> str:
    return "python3" if shutil.which("python3") else sys.executable


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
    python = _python_command()
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
            for record in _records(w):
                if record.get("endedAt") and record.get("runId") not in reported:
                    reported.add(record["runId"])
                    _say_run(w, record, f"by {du.service}")
                    pause()
            state = du.state()
            if state.get("StatusText") and state["StatusText"] != status:
                status = state["StatusText"]
                if not heard():  # the journal says more, when it can be read
                    w.line(f"  {du.service}: {status}")
            idle = state.get("ActiveState") in ("inactive", "failed")
            if idle and not any(t.get("status") in _OPEN for t in _ledger(w).values()):
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
        du.stop()
        time.sleep(0.5)  # the last records' way through journald
        if not heard():
            w.line(
                "  (no journal records reached this demo: is journald running, and may you read "
                "your user journal? 'openloop doctor' checks)"
            )


# --- checking the outcomes -------------------------------------------------------------


def _ledger(w: World) -> dict[str, dict[str, Any]]:
    data = json.loads((w.repo / ".openloop" / "tasks.json").read_text())
    return {t["id"]: t for t in data["tasks"]}


def _records(w: World) -> list[dict[str, Any]]:
    runs = w.repo / ".openloop" / "runs"
    found = [json.loads(p.read_text()) for p in runs.glob("*.json")]
    return sorted(found, key=lambda r: r.get("startedAt") or "")


def _on_main(w: World, path: str) -> str:
    return w.git("show", f"{script.BRANCH}:{path}", check=False)


def check_outcomes(w: World, model: demo_model.DemoModel | None) -> list[Outcome]:
    tasks = _ledger(w)
    records = _records(w)
    ops = _on_main(w, "calc/ops.py")
    log = w.git("log", "--format=%s", script.BRANCH)
    outcomes = []

    def by_task(task_id: str) -> list[dict[str, Any]]:
        return [r for r in records if r.get("taskId") == task_id]

    heals = [t for t in tasks.values() if t["id"].startswith(script.HEAL_PREFIX)]
    heal = heals[0] if heals else {}
    stats = _on_main(w, "calc/stats.py")
    heal_runs = by_task(heal["id"]) if heal else []
    first = records[0].get("taskId") if records else None
    ok = (
        len(heals) == 1
        and heal.get("status") == "promoted"
        and (heal.get("source") or {}).get("type") == "ci"
        and any(r.get("role") == "ci-healer" for r in heal_runs)
        and first == heal.get("id")
        and "def mean" in stats
        and "print(" not in stats
    )
    outcomes.append(
        Outcome(
            "broken default branch healed first",
            ok,
            f"{heal.get('id') or 'no healing task'} is {heal.get('status')} "
            f"(role {', '.join(str(r.get('role')) for r in heal_runs) or 'none'}; the first run "
            f"was {first}); calc/stats.py on {script.BRANCH} "
            f"{'has no print()' if 'print(' not in stats else 'still prints'}",
        )
    )

    sub = tasks.get("add-subtract", {})
    ok = sub.get("status") == "promoted" and "def subtract" in ops
    outcomes.append(
        Outcome(
            "low-risk task auto-merged",
            ok,
            f"add-subtract is {sub.get('status')}; subtract() "
            f"{'is' if 'def subtract' in ops else 'is NOT'} on {script.BRANCH}",
        )
    )

    div = tasks.get("add-safe-divide", {})
    branch_ops = w.git("show", "openloop/add-safe-divide:calc/ops.py", check=False)
    ok = div.get("status") == "review" and "def divide" in branch_ops and "def divide" not in ops
    outcomes.append(
        Outcome(
            "medium-risk task left for review",
            ok,
            f"add-safe-divide is {div.get('status')}; divide() is "
            f"{'on' if 'def divide' in branch_ops else 'NOT on'} openloop/add-safe-divide and "
            f"{'NOT ' if 'def divide' not in ops else ''}on {script.BRANCH}",
        )
    )

    dep = tasks.get("raise-production-workers", {})
    dep_runs = by_task("raise-production-workers")
    untouched = "workers = 2" in _on_main(w, "deploy/production.ini")
    ok = (
        dep.get("status") == "blocked"
        and any(r.get("outcome") == "blocked-by-policy" for r in dep_runs)
        and untouched
    )
    outcomes.append(
        Outcome(
            "denied path blocked by policy",
            ok,
            f"raise-production-workers is {dep.get('status')} "
            f"({', '.join(r.get('outcome', '?') for r in dep_runs) or 'no run'}); "
            f"deploy/production.ini on {script.BRANCH} "
            f"{'unchanged' if untouched else 'CHANGED'}",
        )
    )

    mul = tasks.get("add-multiply", {})
    mul_runs = [r.get("outcome") for r in by_task("add-multiply")]
    retried_with_failure = model is None or any(
        s.task_id == "add-multiply" and s.retry and "print" in s.prompt for s in model.seen
    )
    ok = (
        mul_runs[:1] == ["validation-failed"]
        and mul_runs[-1:] == ["completed"]
        and retried_with_failure
        and mul.get("status") == "promoted"
        and "def multiply" in ops
        and 'print("multiply"' not in ops
    )
    outcomes.append(
        Outcome(
            "failed check retried, then passing",
            ok,
            f"add-multiply runs: {' -> '.join(mul_runs) or 'none'}; the retry's prompt "
            f"{'carried' if retried_with_failure else 'did NOT carry'} the lint failure; "
            f"task {mul.get('status')}",
        )
    )
    if not any("openloop" in s.lower() or "subtract" in s.lower() for s in log.splitlines()):
        outcomes[1].ok = False
        outcomes[1].detail += f"; no merge in the history of {script.BRANCH}"
    return outcomes


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
    if problem := _node_problem(environ):
        raise DemoError(f"{problem} (install it from nodejs.org or NodeSource)")
    no_units = "not asked for (--no-units)" if units is False else None
    no_units = no_units or demo_units.manager_problem(environ)
    if units and no_units:
        raise DemoError(f"--units: {no_units}")
    root, created = _prepare_dir(directory)
    started = time.monotonic()
    du: demo_units.DemoUnits | None = None
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
                du = _install_units(w, environ)
                run_units(w, du, pause)
            w.line("phase 4/4: check the outcomes in the ledger, run records and git history")
            outcomes = check_outcomes(w, model)
        result = DemoResult(root, keep, time.monotonic() - started, w.spent, outcomes)
        result.via = "run-once" if du is None else "systemd"
        if report:
            report(w, result)
        return result
    finally:
        if du is not None:
            du.remove()
        if not keep:
            if created:
                shutil.rmtree(root, ignore_errors=True)
            else:
                for child in root.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink(missing_ok=True)


def _install_units(w: World, environ: dict[str, str]) -> demo_units.DemoUnits:
    """The demo's own instance in the user's manager (see demo_units for what is written)."""
    from openloop.actions import service
    from openloop.env import Environment

    caller = Path(environ.get("HOME") or Path.home())
    config_home = environ.get("XDG_CONFIG_HOME") or str(caller / ".config")
    env = Environment.from_os({**w.env(), "XDG_CONFIG_HOME": config_home})
    du = demo_units.DemoUnits(env, w.alias, w.env())
    unit_dir = du.install(service.dropins_for(env, w.alias))
    w.line(
        f"phase 3/4: iterations through systemd: {du.timer} and {du.service}, the demo's own "
        f"instance (drop-ins in {unit_dir}; your own units are not touched)"
    )
    w.line(f"  see them: systemctl --user cat {du.service}; journalctl --user -u {du.service}")
    return du


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
