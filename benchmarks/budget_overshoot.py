"""How far the day's spend can overshoot the daily budget with iterations running at once.

K projects, each running one real `openloop run-once` in its own process at the same time (as
systemd's timers start them), with a pi-like fake agent (tests/support/fake_pi.py) whose every
model call costs --cost and takes --delay seconds. Repeated R times against a --ceiling; prints,
per round and overall, the overshoot in dollars and in calls, the requests the agents made that
never reported a cost (killed in flight), and whether what the budget recorded equals the sum of
the costs the agents reported in their transcripts, to the cent.

The bound: the overshoot stays below one call per running iteration (K calls).

Run: .venv/bin/python benchmarks/budget_overshoot.py [--parallel 4] [--repeat 5]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from openloop.adapters.agent import transcript_cost  # noqa: E402
from openloop.cli import run as openloop_cli  # noqa: E402
from openloop.env import Environment  # noqa: E402
from openloop.state import budget  # noqa: E402
from tests.support import fake_pi  # noqa: E402

GIT = {
    "GIT_AUTHOR_NAME": "b",
    "GIT_AUTHOR_EMAIL": "b@b",
    "GIT_COMMITTER_NAME": "b",
    "GIT_COMMITTER_EMAIL": "b@b",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parallel", type=int, default=4, help="iterations at once (K)")
    parser.add_argument("--repeat", type=int, default=5, help="rounds (R)")
    parser.add_argument("--ceiling", type=float, default=1.0, help="budgets.dailyCostUsd")
    parser.add_argument("--cost", type=float, default=0.47, help="USD per model call")
    parser.add_argument("--delay", type=float, default=0.3, help="seconds per model call")
    parser.add_argument("--gap", type=float, default=0.02, help="tool seconds between calls")
    parser.add_argument("--jitter", type=float, default=0.5, help="max random start offset (s)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        environ = {
            **os.environ,
            **GIT,
            "OPENLOOP_HOME": str(root / "home"),
            "XDG_CONFIG_HOME": str(root / "xdg"),
            "GIT_CONFIG_GLOBAL": str(root / "gitconfig"),
            "PYTHONPATH": str(ROOT),
        }
        env = Environment.from_os(environ)
        aliases = [_project(env, root, n) for n in range(args.parallel)]
        _ol(env, "config", "set", "budgets.dailyCostUsd", str(args.ceiling))
        markers = root / "markers"
        agent_env = {
            **environ,
            "OPENLOOP_PI_BIN": str(fake_pi.install(root / "bin")),
            "FAKE_PI_CALLS": "200",  # never done: every run ends on the budget
            "FAKE_PI_COST": str(args.cost),
            "FAKE_PI_DELAY": str(args.delay),
            "FAKE_PI_GAP": str(args.gap),
            "FAKE_PI_MARKERS": str(markers),
        }
        worst_usd, worst_unreported, worst_extra, all_equal = float("-inf"), 0, 0, True
        reach = math.ceil(args.ceiling / args.cost - 1e-9)  # calls that reach the ceiling
        print(
            f"{args.parallel} iterations at once, ceiling ${args.ceiling:.2f}, "
            f"${args.cost:.2f} per call ({args.delay:g}s each), {args.repeat} rounds; "
            f"bound: overshoot < {args.parallel} calls (${args.parallel * args.cost:.2f})"
        )
        for round_no in range(1, args.repeat + 1):
            env.budget_file.unlink(missing_ok=True)
            markers.unlink(missing_ok=True)
            before = set(root.glob("repo*/.openloop/runs/*/"))
            started = time.monotonic()
            procs = []
            for alias in aliases:
                time.sleep(random.uniform(0, args.jitter / args.parallel))
                procs.append(_run_once(alias, agent_env))
            outcomes = [json.loads(p.communicate(timeout=600)[0] or "{}") for p in procs]
            took = time.monotonic() - started
            runs = sorted(set(root.glob("repo*/.openloop/runs/*/")) - before)
            reported = sum(transcript_cost(r / "transcript.jsonl") for r in runs)
            calls = sum(_cost_events(r / "transcript.jsonl") for r in runs)
            requests = len(markers.read_text().splitlines()) if markers.exists() else 0
            day = budget.today(env)
            recorded = day.total()
            equal = round(recorded, 2) == round(reported, 2) and not day.live
            over = recorded - args.ceiling
            worst_usd = max(worst_usd, over)
            worst_unreported = max(worst_unreported, requests - calls)
            all_equal &= equal
            extra = calls - reach
            worst_extra = max(worst_extra, extra)
            print(
                f"round {round_no}: recorded ${recorded:.2f} = {calls} calls "
                f"(overshoot ${over:+.2f} = {over / args.cost:+.2f} calls; "
                f"{extra} calls after the one that reached the ceiling); "
                f"reported ${reported:.2f}, recorded == reported: {equal}; "
                f"requests killed in flight: {requests - calls}; "
                f"outcomes: {', '.join(sorted(o.get('outcome', '?') for o in outcomes))}; "
                f"{took:.1f}s"
            )
        print(
            f"worst overshoot: ${worst_usd:.2f} = {worst_usd / args.cost:.2f} calls, "
            f"{worst_extra} calls after the one that reached the ceiling "
            f"(bound {args.parallel} calls, ${args.parallel * args.cost:.2f}); "
            f"most requests killed in flight in a round: {worst_unreported}; "
            f"recorded == reported every time: {all_equal}"
        )
        if not all_equal or worst_usd >= args.parallel * args.cost:
            sys.exit(1)


def _ol(env: Environment, *argv: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = openloop_cli(list(argv), env)
    if code != 0:
        raise SystemExit(f"openloop {' '.join(argv)}: {err.getvalue()}")


def _project(env: Environment, root: Path, n: int) -> str:
    repo, alias = root / f"repo{n}", f"bench{n}"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True, env=env.environ)
    (repo / "README.md").write_text("bench\n")
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True, env=env.environ)
    subprocess.run(["git", "-C", str(repo), "commit", "-qm", "init"], check=True, env=env.environ)
    _ol(env, "project", "add", alias, str(repo), "--init")
    _ol(env, "project", "trust", alias)
    _ol(env, "task", "add", "-p", alias, "--title", "Spend")  # budget stops leave it ready
    return alias


def _run_once(alias: str, environ: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "openloop", "run-once", "-p", alias, "--json", "-q"],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _cost_events(transcript: Path) -> int:
    count = 0
    with contextlib.suppress(OSError), open(transcript, "rb") as lines:
        for line in lines:
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                message = event.get("message") if isinstance(event, dict) else None
                if event.get("type") == "message_end" and (message or {}).get("usage"):
                    count += 1
    return count


if __name__ == "__main__":
    main()
