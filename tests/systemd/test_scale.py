"""Many projects under a real user manager: `service start/stop/restart` with 200 linked
projects exit 0 and leave exactly the expected timers (counted with list-timers); the timers'
first elapses spread over the whole interval; the host-wide cap holds iterations down."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

from tests.systemd.test_openloop_units import FAST_TIMER, WRITE_FILE, site  # noqa: F401

N = 200


def _link_many(site, n: int = N, agent: str = WRITE_FILE) -> list[str]:  # noqa: F811
    """One project through the CLI, then n-1 copies linked by writing the registry directly
    (200 `project add` calls would take minutes)."""
    first = site.make_project("p000", agent)
    registry_file = site.root / "home" / "projects.json"
    registry = json.loads(registry_file.read_text())
    template = registry["projects"][0]
    aliases = ["p000"]
    for i in range(1, n):
        alias = f"p{i:03d}"
        repo = site.root / alias
        shutil.copytree(first, repo, symlinks=True)
        registry["projects"].append({**template, "alias": alias, "path": str(repo)})
        aliases.append(alias)
    registry_file.write_text(json.dumps(registry))
    # The copies are made by this (root) process: hand them to the test user.
    subprocess.run(["chown", "-R", f"{site.um.uid}:{site.um.gid}", str(site.root)], check=True)
    return aliases


def _scheduled(site) -> dict[str, int]:  # noqa: F811
    cp = site.um.systemctl("list-timers", "--output=json", "openloop@*.timer", check=True)
    return {r["unit"]: r["next"] for r in json.loads(cp.stdout or "[]")}


def _timed(site, *args):  # noqa: F811
    began = time.monotonic()
    cp = site.ol(*args, timeout=300, check=False)
    took = time.monotonic() - began
    print(f"openloop {' '.join(args)}: exit {cp.returncode} in {took:.2f}s")
    print("  " + cp.stderr.strip().replace("\n", "\n  "))
    assert cp.returncode == 0, cp.stdout + cp.stderr
    return took


def test_start_stop_restart_with_200_projects_leave_the_expected_timers(site):  # noqa: F811
    aliases = _link_many(site)
    _timed(site, "service", "install")
    _timed(site, "service", "start")
    assert set(_scheduled(site)) == {f"openloop@{a}.timer" for a in aliases}
    assert site.um.systemctl("is-enabled", "openloop.target").stdout.strip() == "enabled"

    _timed(site, "service", "stop")
    assert _scheduled(site) == {}
    assert site.um.systemctl("is-enabled", "openloop.target").stdout.strip() == "disabled"

    _timed(site, "service", "restart")
    assert len(_scheduled(site)) == N
    assert site.um.systemctl("is-enabled", "openloop.target").stdout.strip() == "enabled"

    _timed(site, "service", "restart")  # from running, too
    assert len(_scheduled(site)) == N

    cp = site.ol("service", "uninstall")
    removed = int(cp.stdout.split()[1])
    # Two drop-ins per project, four unit templates, two template environment drop-ins.
    assert removed == 2 * N + 4 + 2, cp.stdout
    assert _scheduled(site) == {}
    assert not list(site.um.unit_dir.glob("openloop@*.d"))


def test_the_first_runs_of_200_projects_spread_over_the_whole_interval(site):  # noqa: F811
    _link_many(site)
    site.ol("config", "set", "runtime.intervalMinutes", "10")
    site.ol("service", "install")
    started = time.time()
    site.ol("service", "start", timeout=300)
    nexts = sorted((usec / 1e6) - started for usec in _scheduled(site).values())
    assert len(nexts) == N
    interval, first_delay = 600, 30
    # Every first run falls in [30 s, 30 s + interval + jitter] after the start ...
    assert nexts[0] >= first_delay - 2 and nexts[-1] <= first_delay + interval + 15, nexts
    # ... and they cover it evenly: no tenth of the interval holds more than twice its share,
    # and every tenth holds some.
    buckets = [0] * 10
    for t in nexts:
        buckets[min(9, int((t - first_delay) / (interval / 10)))] += 1
    print("first runs per tenth of the interval:", buckets)
    assert max(buckets) <= 2 * N / 10 and min(buckets) > 0, buckets
    # The largest number starting within any 5 s (170 of 201 did within 30 s before).
    window = max(sum(1 for u in nexts if t <= u < t + 5) for t in nexts)
    print("most first runs within 5 s:", window)
    assert window <= 10


def test_no_more_than_the_cap_run_at_once(site):  # noqa: F811
    marker = f"sleep 3.{int(time.time()) % 1000}1"  # one agent = one such process
    aliases = _link_many(site, 6, agent=f"cat > /dev/null\n{marker}\necho x > f.txt\n")
    for alias in aliases:
        site.ol("task", "add", "-p", alias, "--title", f"Work of {alias}")
    site.ol("config", "set", "runtime.maxConcurrentIterations", "2")
    site.ol("service", "install")
    site.fast_timers()  # every timer fires 1 s after the start: all six at once
    site.ol("service", "start")
    most = done = 0
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        # Agents, not units: a unit whose run-once found every slot taken is "running" for
        # the moment it takes to skip.
        agents = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout
        most = max(most, len(agents.split()))
        done = sum(
            1
            for a in aliases
            if any(r["outcome"] == "completed" for r in site.records(site.root / a))
        )
        if done >= 4:
            break
        time.sleep(0.05)
    print(f"at most {most} agents at once; {done} iterations completed")
    assert done >= 4 and 1 <= most <= 2
    skipped = site.ol("logs", "--json", "-n", "500").stdout
    assert "maxConcurrentIterations" in skipped


def test_status_over_200_running_timers_reads_every_timer_at_once(site):  # noqa: F811
    """`openloop status` with 200 timers running: every row has its next run (from one
    list-timers), and the screen takes a few hundred milliseconds, not seconds. Set
    OPENLOOP_COMPARE_EXE to another openloop to print its time beside (a before/after)."""
    import os
    import statistics

    _link_many(site)
    _timed(site, "service", "install")
    _timed(site, "service", "start")
    exes = {"this": site.exe}
    if os.environ.get("OPENLOOP_COMPARE_EXE"):
        exes["compare"] = os.environ["OPENLOOP_COMPARE_EXE"]
    times: dict[str, list[float]] = {name: [] for name in exes}
    for _ in range(5):
        for name, exe in exes.items():
            began = time.monotonic()
            cp = site.um.run([str(exe), "status", "--json"], env=site.env, timeout=120)
            times[name].append(time.monotonic() - began)
            assert cp.returncode == 0, cp.stderr
            rows = json.loads(cp.stdout)["projects"]
            assert len(rows) == N
            assert all(r.get("nextRun") for r in rows), [r for r in rows if not r.get("nextRun")]
    for name, values in times.items():
        print(
            f"status, {N} running timers ({name}): median {statistics.median(values) * 1000:.0f}"
            f" ms (min {min(values) * 1000:.0f}, max {max(values) * 1000:.0f}, n={len(values)})"
        )
    _timed(site, "service", "uninstall")
