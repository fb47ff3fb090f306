"""The iteration's own overhead: `openloop run-once` wall time minus the agent's time, with a
no-op agent (a custom command that writes one file) and no validation commands.

Run: .venv/bin/python benchmarks/iteration_overhead.py [--runs N]
Everything else is measured: start-up, gate, repair, selection, worktree, commit, diff, policy,
promotion hand-over, ledger and run-record writes, cleanup.
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

AGENT = "sh -c 'cat >/dev/null; date +%s%N > out.txt'"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    openloop = str(Path(sys.executable).with_name("openloop"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        repo = root / "repo"
        env = {
            **os.environ,
            "OPENLOOP_HOME": str(root / "home"),
            "GIT_AUTHOR_NAME": "b",
            "GIT_AUTHOR_EMAIL": "b@b",
            "GIT_COMMITTER_NAME": "b",
            "GIT_COMMITTER_EMAIL": "b@b",
        }

        def ol(*argv: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                [openloop, *argv], env=env, capture_output=True, text=True, check=False
            )

        subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
        (repo / "README.md").write_text("bench\n")
        subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
        subprocess.run(["git", "-C", str(repo), "commit", "-qm", "init"], check=True, env=env)
        ol("project", "add", "bench", str(repo), "--init")
        config = json.loads((repo / ".openloop/project.json").read_text())
        config["agent"] = {"type": "custom", "command": AGENT}
        (repo / ".openloop/project.json").write_text(json.dumps(config))
        ol("project", "trust", "bench")
        for i in range(args.runs + 1):
            ol("task", "add", "-p", "bench", "--title", f"bench {i}")
        overheads, totals = [], []
        for i in range(args.runs + 1):
            start = time.perf_counter()
            proc = ol("run-once", "-p", "bench", "--json", "-q")
            total = time.perf_counter() - start
            record = json.loads(proc.stdout)
            assert record["outcome"] == "completed", record
            if i == 0:
                continue  # warm-up
            totals.append(total)
            overheads.append(total - record["durationSeconds"])
        ms = sorted(o * 1000 for o in overheads)
        print(f"run-once wall time           median {statistics.median(totals) * 1000:7.1f} ms")
        print(
            f"overhead (wall - agent time) median {statistics.median(ms):7.1f} ms  "
            f"(min {ms[0]:.1f}, max {ms[-1]:.1f}, n={len(ms)})"
        )


if __name__ == "__main__":
    main()
