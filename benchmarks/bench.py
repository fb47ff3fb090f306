"""Every OpenLoop benchmark in one run: one line per figure, median and spread of wall times.

Run: benchmarks/run [--short] [--runs N] [--only NAME,...] [--compare OTHER_SOURCE_TREE]
Each figure times whole `python -m openloop ...` processes (start-up included) with the
standard library only. --compare measures another checkout of OpenLoop (e.g. an older commit,
`git worktree add /tmp/old <commit>`) in the same run, alternating the two sample by sample, and
prints the ratio of the medians (this tree / other). Nothing here fails on time: the figures are
for people to read.

Figures: start-up (--help); task list --json and task add at 10,000 tasks; status over 200
linked projects (through the user manager when one is reachable); run-once overhead with a
no-op agent and no checks, also in a project holding its 500 kept runs; a whole iteration with
the real pi (pinned in .tools/, or $OPENLOOP_PI_BIN) against a scripted model on 127.0.0.1;
ledger throughput with 8 concurrent writers; and the archive's effect: task add and run-once
with a year of history (a task finished every 15 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
AGENT = "sh -c 'cat >/dev/null; date +%s%N > out.txt'"
NOW = datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


@dataclass
class Tree:
    """One OpenLoop source tree, run as `python -m openloop` with it first on PYTHONPATH."""

    source: Path
    root: Path  # its scratch directory

    def env(self, home: str = "home") -> dict[str, str]:
        # Compiled bytecode is written and reused, as in any installation.
        environ = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        return {
            **environ,
            "PYTHONPATH": str(self.source),
            # Beside the repositories, never inside one (it holds the budget and locks).
            "OPENLOOP_HOME": str(self.home(home)),
            "XDG_CONFIG_HOME": str(self.root / "xdg"),
            "GIT_AUTHOR_NAME": "b",
            "GIT_AUTHOR_EMAIL": "b@b",
            "GIT_COMMITTER_NAME": "b",
            "GIT_COMMITTER_EMAIL": "b@b",
        }

    def home(self, name: str) -> Path:
        return self.root / "homes" / name

    def argv(self, *args: str) -> list[str]:
        # -P: `-m` would otherwise put the current directory first on the path, ahead of
        # PYTHONPATH (a run from one checkout would measure that checkout, whatever --compare).
        return [sys.executable, "-P", "-m", "openloop", *args]

    def ol(self, *args: str, home: str = "home", check: bool = True) -> str:
        proc = subprocess.run(
            self.argv(*args), env=self.env(home), capture_output=True, text=True, check=False
        )
        if check and proc.returncode != 0:
            raise SystemExit(f"openloop {' '.join(args)}: exit {proc.returncode}: {proc.stderr}")
        return proc.stdout


def git(*args: str, cwd: Path, env: dict[str, str]) -> None:
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def make_repo(path: Path, env: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=path, env=env)
    (path / "README.md").write_text("bench\n")
    git("add", "-A", cwd=path, env=env)
    git("commit", "-qm", "init", cwd=path, env=env)
    return path


def link(tree: Tree, alias: str, repo: Path, home: str = "home") -> None:
    tree.ol("project", "add", alias, str(repo), "--init", home=home)


def task_dict(i: int, status: str, at: str) -> dict:
    return {
        "id": f"task-{i}",
        "title": f"Benchmark task number {i} with a realistic title",
        "description": "Some description of the work to do. " * 3,
        "kind": "feature",
        "status": status,
        "risk": "medium-risk",
        "priority": i % 5,
        "scope": {"paths": ["src/**"]},
        "source": {"type": "human", "ref": None},
        "acceptanceCriteria": ["It works"],
        "attempts": i % 3,
        "notes": [],
        "history": [{"at": at, "from": None, "to": "ready", "reason": "created"}],
        "createdAt": at,
        "updatedAt": at,
    }


def write_ledger(repo: Path, tasks: list[dict]) -> None:
    ledger = repo / ".openloop" / "tasks.json"
    ledger.write_text(json.dumps({"version": 2, "tasks": tasks}, indent=2))


def ten_thousand() -> list[dict]:
    at = iso(NOW)
    return [
        task_dict(i, ("ready", "review", "blocked", "promoted")[i % 4], at) for i in range(10_000)
    ]


def a_year_of_history() -> list[dict]:
    """A task promoted every 15 minutes for a year, finished long enough ago to be archived."""
    start = NOW - timedelta(days=400)
    return [task_dict(i, "promoted", iso(start + timedelta(minutes=15 * i))) for i in range(35_040)]


def noop_agent(repo: Path) -> None:
    config = json.loads((repo / ".openloop/project.json").read_text())
    config["agent"] = {"type": "custom", "command": AGENT}
    (repo / ".openloop/project.json").write_text(json.dumps(config))


# --- figures ------------------------------------------------------------------------------------


@dataclass
class Figure:
    name: str
    setup: Callable[[Tree], Callable[[], float]]  # returns one sample's runner (seconds)
    unit: str = "ms"


def timed(argv: list[str], env: dict[str, str], ok=(0,)) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True)
    took = time.perf_counter() - start
    if proc.returncode not in ok:
        said = (proc.stderr or proc.stdout).decode(errors="replace")[-2000:]
        raise SystemExit(f"{' '.join(argv)}: exit {proc.returncode}: {said}")
    return took


def startup(tree: Tree) -> Callable[[], float]:
    return lambda: timed(tree.argv("--help"), tree.env())


def _ten_k_project(tree: Tree, name: str) -> str:
    repo = make_repo(tree.root / name, tree.env())
    link(tree, name, repo, home=name)
    write_ledger(repo, ten_thousand())
    return name


def task_list_10k(tree: Tree) -> Callable[[], float]:
    home = _ten_k_project(tree, "list10k")
    argv = tree.argv("task", "list", "-p", home, "--json")
    return lambda: timed(argv, tree.env(home))


def task_add_10k(tree: Tree) -> Callable[[], float]:
    home = _ten_k_project(tree, "add10k")
    argv = tree.argv("task", "add", "-p", home, "--title", "One more task")
    return lambda: timed(argv, tree.env(home))


def status_200(tree: Tree, projects: int = 200) -> Callable[[], float]:
    env = tree.env("status")
    first = make_repo(tree.root / "s000", env)
    link(tree, "s000", first, home="status")
    tree.ol("task", "add", "-p", "s000", "--title", "Work", home="status")
    registry_file = tree.home("status") / "projects.json"
    registry = json.loads(registry_file.read_text())
    template = registry["projects"][0]
    for i in range(1, projects):
        repo = tree.root / f"s{i:03d}"
        shutil.copytree(first, repo, symlinks=True)
        registry["projects"].append({**template, "alias": f"s{i:03d}", "path": str(repo)})
    registry_file.write_text(json.dumps(registry))
    argv = tree.argv("status", "--json")
    return lambda: timed(argv, env)


def _run_once_project(tree: Tree, name: str, history: list[dict] | None, runs: int) -> str:
    repo = make_repo(tree.root / name, tree.env(name))
    link(tree, name, repo, home=name)
    noop_agent(repo)
    tree.ol("project", "trust", name, home=name)
    if history is not None:
        write_ledger(repo, history)
    for i in range(runs + 2):
        tree.ol("task", "add", "-p", name, "--title", f"bench {i}", home=name)
    return name


def run_once(tree: Tree, runs: int, history: list[dict] | None = None, name="once"):
    home = _run_once_project(tree, name, history, runs)
    argv = tree.argv("run-once", "-p", home, "-q")
    return lambda: timed(argv, tree.env(home))


def find_pi() -> Path | None:
    """$OPENLOOP_PI_BIN, else the pinned pi scripts/install-pi.sh puts in .tools/."""
    if os.environ.get("OPENLOOP_PI_BIN"):
        return Path(os.environ["OPENLOOP_PI_BIN"])
    pinned = HERE.parent / ".tools" / "pi" / "node_modules" / ".bin" / "pi"
    return pinned if os.access(pinned, os.X_OK) else None


_MODEL: list = []  # the scripted model, started once and shared by both trees


def run_once_kept_runs(tree: Tree, runs: int, kept: int = 500) -> Callable[[], float]:
    """run-once in a project at its runtime.keepRuns (500 earlier runs, each a record and a
    folder of artifacts, as every project used for a while has)."""
    home = _run_once_project(tree, "keptruns", None, runs + 1)
    tree.ol("run-once", "-p", home, "-q", home=home)
    runs_dir = tree.root / home / ".openloop" / "runs"
    model = sorted(runs_dir.glob("*.json"))[-1]
    record, folder = model.read_text(), runs_dir / model.stem
    start = NOW - timedelta(days=30)
    for i in range(kept - 1):
        run_id = (start + timedelta(minutes=15 * i)).strftime("%Y%m%dT%H%M%SZ") + f"-old-{i}-beef"
        (runs_dir / f"{run_id}.json").write_text(record.replace(model.stem, run_id))
        shutil.copytree(folder, runs_dir / run_id)
    argv = tree.argv("run-once", "-p", home, "-q")
    return lambda: timed(argv, tree.env(home))


def iteration_pi(tree: Tree, runs: int) -> Callable[[], float]:
    """A whole iteration with the real pi against a scripted model on 127.0.0.1 (OpenLoop's
    demo model, stdlib only): two model turns (a bash tool call that changes a file, then the
    final reply), then collect, judge and hand over. No checks configured."""
    sys.path.insert(0, str(HERE.parent))
    from openloop.adapters import demo_model as dm

    pi = find_pi()
    if pi is None:
        raise SystemExit("no pi: set OPENLOOP_PI_BIN or run scripts/install-pi.sh")
    if not _MODEL:
        step = dm.Call("bash", {"command": "date +%s%N > out.txt"})
        script = dm.TaskScript(first=(dm.Turn((step,)), dm.Turn(text="Wrote out.txt.")))
        _MODEL.append(dm.DemoModel({"*": script}))
    model = _MODEL[0]
    name = "pi"
    repo = make_repo(tree.root / name, tree.env(name))
    link(tree, name, repo, home=name)
    config = json.loads((repo / ".openloop/project.json").read_text())
    config["agent"] = {"type": "pi"}
    config["pi"] = {"model": dm.MODEL, "provider": dm.PROVIDER}
    (repo / ".openloop/project.json").write_text(json.dumps(config))
    tree.ol("project", "trust", name, home=name)
    for i in range(runs + 2):
        tree.ol("task", "add", "-p", name, "--title", f"bench {i}", home=name)
    pi_home = tree.root / "pi-home"
    agent_dir = dm.write_pi_config(pi_home, model.url)
    env = {
        **tree.env(name),
        "OPENLOOP_PI_BIN": str(pi),
        "PI_CODING_AGENT_DIR": str(agent_dir),
        "PI_OFFLINE": "1",
        "PI_SKIP_VERSION_CHECK": "1",
        "NO_PROXY": "127.0.0.1",
        "no_proxy": "127.0.0.1",
    }
    argv = tree.argv("run-once", "-p", name, "-q")
    if os.environ.get("BENCH_DEBUG"):
        argv = tree.argv("run-once", "-p", name, "--json")
    return lambda: timed(argv, env)


def year_task_add(tree: Tree) -> Callable[[], float]:
    home = "yearadd"
    repo = make_repo(tree.root / home, tree.env(home))
    link(tree, home, repo, home=home)
    noop_agent(repo)
    tree.ol("project", "trust", home, home=home)
    write_ledger(repo, a_year_of_history())
    tree.ol("task", "add", "-p", home, "--title", "first", home=home)
    tree.ol("run-once", "-p", home, "-q", home=home, check=False)  # an iteration archives
    argv = tree.argv("task", "add", "-p", home, "--title", "One more task")
    return lambda: timed(argv, tree.env(home))


def writers_8(tree: Tree, per_writer: int) -> Callable[[], float]:
    """8 processes, each adding `per_writer` tasks one CLI call at a time, all at once: the
    figure is tasks added per second; every task must be in the ledger afterwards."""
    home = "writers"
    repo = make_repo(tree.root / home, tree.env(home))
    link(tree, home, repo, home=home)
    write_ledger(repo, ten_thousand()[:1000])
    env = tree.env(home)
    script = " ; ".join(
        f"{' '.join(tree.argv('task', 'add', '-p', home, '--title', f'w$0-{k}'))}"
        for k in range(per_writer)
    )
    rounds = [0]

    def sample() -> float:
        rounds[0] += 1
        start = time.perf_counter()
        procs = [
            subprocess.Popen(
                ["sh", "-c", script, f"r{rounds[0]}w{w}"], env=env, stdout=subprocess.DEVNULL
            )
            for w in range(8)
        ]
        if any(p.wait() for p in procs):
            raise SystemExit("a concurrent writer failed")
        took = time.perf_counter() - start
        ledger = json.loads((repo / ".openloop/tasks.json").read_text())
        titles = {t["title"] for t in ledger["tasks"]}
        wanted = {f"wr{rounds[0]}w{w}-{k}" for w in range(8) for k in range(per_writer)}
        if not wanted <= titles:
            raise SystemExit(f"lost tasks: {sorted(wanted - titles)[:5]}")
        return (8 * per_writer) / took  # tasks per second

    return sample


# --- running ------------------------------------------------------------------------------------


def manager_reachable() -> bool:
    try:
        proc = subprocess.run(
            ["systemctl", "--user", "show-environment"], capture_output=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def describe(values: list[float], unit: str) -> tuple[float, str]:
    median = statistics.median(values)
    if unit == "ms":
        values, median = [v * 1000 for v in values], median * 1000
    spread = f"(min {min(values):.1f}, max {max(values):.1f}, n={len(values)})"
    text = f"median {median:8.1f} {unit}  {spread}"
    return median, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--short", action="store_true", help="CI mode: 3 runs, fewer figures' setups"
    )
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--only", default="", help="Comma-separated figure names.")
    parser.add_argument("--compare", type=Path, help="Another OpenLoop source tree to measure too.")
    parser.add_argument("--source", type=Path, default=HERE.parent, help=argparse.SUPPRESS)
    args = parser.parse_args()
    runs = args.runs or (3 if args.short else 11)
    per_writer = 3 if args.short else 10
    manager = manager_reachable()
    figures = [
        Figure("startup (--help)", startup),
        Figure("task list --json, 10,000 tasks", task_list_10k),
        Figure("task add, 10,000-task ledger", task_add_10k),
        Figure(
            "status, 200 projects "
            + ("(user manager reachable)" if manager else "(no user manager reachable)"),
            status_200,
        ),
        Figure("run-once, no-op agent, no checks", lambda t: run_once(t, runs)),
        Figure("run-once, 500 earlier runs kept", lambda t: run_once_kept_runs(t, runs)),
        Figure("iteration, real pi, scripted two-step task", lambda t: iteration_pi(t, runs)),
        Figure("ledger, 8 concurrent writers", lambda t: writers_8(t, per_writer), "tasks/s"),
        Figure("task add, a year of history", year_task_add),
        Figure(
            "run-once, a year of history",
            lambda t: run_once(t, runs, a_year_of_history(), name="yearonce"),
        ),
    ]
    if args.only:
        keys = [k.strip() for k in args.only.split(",") if k.strip()]
        figures = [f for f in figures if any(k in f.name for k in keys)]
    print(f"OpenLoop benchmarks: {os.cpu_count()} CPUs, {runs} runs each after a warm-up")
    if args.compare:
        print(f"A = {args.source}  B = {args.compare}  (ratio: A's median / B's)")
    with tempfile.TemporaryDirectory(prefix="openloop-bench-") as tmp:
        trees = [Tree(args.source.resolve(), Path(tmp) / "a")]
        if args.compare:
            trees.append(Tree(args.compare.resolve(), Path(tmp) / "b"))
        for tree in trees:
            tree.root.mkdir()
        for figure in figures:
            samplers = [figure.setup(tree) for tree in trees]
            for sampler in samplers:
                sampler()  # warm-up (and, for a year of history, the one archive move)
            results: list[list[float]] = [[] for _ in trees]
            for _ in range(runs):
                for i, sampler in enumerate(samplers):
                    results[i].append(sampler())
            medians = []
            for label, values in zip("AB", results, strict=False):
                median, text = describe(values, figure.unit)
                medians.append(median)
                prefix = f"{label} " if args.compare else ""
                print(f"{prefix}{figure.name:48} {text}", flush=True)
            if args.compare:
                print(f"  ratio A/B {medians[0] / medians[1]:.2f}", flush=True)


if __name__ == "__main__":
    main()
