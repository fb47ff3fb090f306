"""The gate (`openloop gate`, systemd's ExecCondition) with many linked projects: wall time of
one gate process, alone, and of a burst of gates started together (what a timer wave does).

Run: .venv/bin/python benchmarks/gate_many_projects.py [--projects 200] [--runs 15] [--burst 20]
Projects are linked by writing the registry directly (copies of one initialised repository).
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
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--projects", type=int, default=200)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--burst", type=int, default=20)
    args = parser.parse_args()
    openloop = str(Path(sys.executable).with_name("openloop"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = {
            **os.environ,
            "OPENLOOP_HOME": str(root / "home"),
            "GIT_AUTHOR_NAME": "b",
            "GIT_AUTHOR_EMAIL": "b@b",
            "GIT_COMMITTER_NAME": "b",
            "GIT_COMMITTER_EMAIL": "b@b",
        }
        first = root / "p000"
        first.mkdir()
        for argv in (
            ["git", "init", "-q", "-b", "main"],
            ["git", "commit", "-q", "--allow-empty", "-m", "i"],
        ):
            subprocess.run(argv, cwd=first, env=env, check=True)
        subprocess.run(
            [openloop, "project", "add", "p000", str(first), "--init"],
            env=env,
            check=True,
            capture_output=True,
        )
        registry_file = root / "home" / "projects.json"
        registry = json.loads(registry_file.read_text())
        template = registry["projects"][0]
        for i in range(1, args.projects):
            repo = root / f"p{i:03d}"
            shutil.copytree(first, repo, symlinks=True)
            registry["projects"].append({**template, "alias": f"p{i:03d}", "path": str(repo)})
        registry_file.write_text(json.dumps(registry))
        subprocess.run(
            [openloop, "task", "add", "-p", "p100", "--title", "Work"],
            env=env,
            check=True,
            capture_output=True,
        )

        def gate(alias: str) -> float:
            began = time.perf_counter()
            subprocess.run([openloop, "gate", "-p", alias], env=env, capture_output=True)
            return time.perf_counter() - began

        idle = [gate("p150") for _ in range(args.runs)]
        busy = [gate("p100") for _ in range(args.runs)]
        began = time.perf_counter()
        procs = [
            subprocess.Popen(
                [openloop, "gate", "-p", f"p{i:03d}"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for i in range(args.burst)
        ]
        for p in procs:
            p.wait()
        burst = time.perf_counter() - began
        print(f"{args.projects} linked projects, {os.cpu_count()} CPUs")
        for label, times in (("nothing to do", idle), ("a task ready", busy)):
            median, most = statistics.median(times) * 1000, max(times) * 1000
            print(f"gate, {label}: median {median:.0f} ms, max {most:.0f} ms")
        print(f"{args.burst} gates at once: {burst * 1000:.0f} ms for all")


if __name__ == "__main__":
    main()
