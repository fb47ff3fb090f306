"""Wall time of `openloop --help` and of `openloop task list --json` on a 10,000-task ledger.

Run: .venv/bin/python benchmarks/cli_startup.py [--runs N]
Prints the median and range of each, measured as whole processes (start-up included).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TASKS = 10_000


def make_ledger(repo: Path) -> None:
    now = "2026-11-25T10:00:00.000Z"
    tasks = [
        {
            "id": f"task-{i}",
            "title": f"Benchmark task number {i} with a realistic title",
            "description": "Some description of the work to do. " * 3,
            "kind": "feature",
            "status": ("ready", "review", "blocked", "promoted")[i % 4],
            "risk": "medium-risk",
            "priority": i % 5,
            "scope": {"paths": ["src/**"]},
            "source": {"type": "human", "ref": None},
            "acceptanceCriteria": ["It works"],
            "attempts": i % 3,
            "notes": [],
            "history": [{"at": now, "from": None, "to": "ready", "reason": "created"}],
            "createdAt": now,
            "updatedAt": now,
        }
        for i in range(TASKS)
    ]
    (repo / ".openloop" / "tasks.json").write_text(json.dumps({"version": 2, "tasks": tasks}))


def timed(cmd: list[str], env: dict[str, str], runs: int) -> list[float]:
    subprocess.run(cmd, env=env, check=True, capture_output=True)  # warm-up (page cache)
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        samples.append(time.perf_counter() - start)
    return samples


def report(name: str, samples: list[float]) -> None:
    ms = sorted(s * 1000 for s in samples)
    spread = f"(min {ms[0]:.1f}, max {ms[-1]:.1f}, n={len(ms)})"
    print(f"{name:40} median {statistics.median(ms):7.1f} ms  {spread}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    openloop = [str(Path(sys.executable).with_name("openloop"))]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        repo = root / "repo"
        repo.mkdir()
        subprocess.run(["git", "init", "-q", str(repo)], check=True)
        env = {**os.environ, "OPENLOOP_HOME": str(root / "home")}
        subprocess.run(
            [*openloop, "project", "add", "bench", str(repo), "--init"],
            env=env,
            check=True,
            capture_output=True,
        )
        make_ledger(repo)
        report("openloop --help", timed([*openloop, "--help"], env, args.runs))
        report(
            "python -c pass (interpreter floor)",
            timed([sys.executable, "-c", "pass"], env, args.runs),
        )
        report(
            f"openloop task list --json ({TASKS} tasks)",
            timed([*openloop, "task", "list", "-p", "bench", "--json"], env, args.runs),
        )


if __name__ == "__main__":
    main()
