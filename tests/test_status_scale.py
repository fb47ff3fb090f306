"""`openloop status` over many projects asks systemd a fixed number of times and reads the
registry once; what it shows is what per-unit questions gave."""

from __future__ import annotations

import json
import stat
import time
from dataclasses import replace
from pathlib import Path

from openloop.actions import dashboard, service, unit_status
from openloop.adapters import manager
from openloop.state import registry as registry_module

FAKE = r"""#!/usr/bin/env python3
import json, os, sys
args = [a for a in sys.argv[1:] if a not in ("--user", "--no-pager")]
import time
started = time.time()
time.sleep(float(os.environ.get("FAKE_SYSTEMCTL_SLEEP", "0")))
with open(os.environ["FAKE_SYSTEMCTL_LOG"], "a") as log:
    log.write(json.dumps(args) + "\n")
if os.environ.get("FAKE_SYSTEMCTL_TIMES"):
    with open(os.environ["FAKE_SYSTEMCTL_TIMES"], "a") as times:
        times.write(f"{args[0]} {started} {time.time()}\n")
verb = args[0]
names = [a for a in args[1:] if not a.startswith("-")]
if verb == "show":
    props = [a.split("=", 1)[1] for a in args if a.startswith("--property=")]
    blocks = []
    for name in names:
        running = name == "openloop@p1.service"
        values = {
            "Id": name,
            "ActiveState": "active" if running else "inactive",
            "UnitFileState": "enabled",
            "SubState": "running" if running else "dead",
            "Result": "success",
            "StatusText": "agent: editing" if running else "",
            "ExecMainStatus": "0",
            "ExecCondition": "",
            "ExecMainStartTimestampMonotonic": "5" if running else "0",
            "InactiveExitTimestampMonotonic": "5" if running else "0",
        }
        blocks.append("\n".join(f"{p}={values.get(p, '')}" for p in props))
    print("\n\n".join(blocks))
elif verb == "list-timers":
    rows = [
        {"unit": n, "next": 1_800_000_000_000_000 + i, "last": 0}
        for i, n in enumerate(names)
        if n.endswith(".timer") and "*" not in n
    ]
    print(json.dumps(rows))
"""


def _fake_systemctl(tmp_path: Path, env):
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    script = bin_dir / "systemctl"
    script.write_text(FAKE)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "systemctl.log"
    log.touch()
    environ = {
        **env.environ,
        "PATH": f"{bin_dir}:{env.environ['PATH']}",
        "FAKE_SYSTEMCTL_LOG": str(log),
    }
    return replace(env, environ=environ), log


def _link(ol, env, tmp_path: Path, count: int) -> None:
    from tests.conftest import make_repo

    for i in range(count):
        repo = make_repo(tmp_path / f"p{i}")
        assert ol("project", "add", f"p{i}", str(repo), "--init").code == 0


def _calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_status_asks_systemd_twice_for_all_projects_and_reads_the_registry_once(
    ol, env, tmp_path, monkeypatch
):
    _link(ol, env, tmp_path, 6)
    fake_env, log = _fake_systemctl(tmp_path, env)
    reads = []
    real = registry_module.load_registry
    monkeypatch.setattr(
        "openloop.actions.dashboard.load_registry", lambda e: reads.append(1) or real(e)
    )

    data = dashboard.dashboard(fake_env, with_systemd=True)

    verbs = sorted(c[0] for c in _calls(log))
    assert verbs == ["list-timers", "show"], verbs
    assert len(reads) == 1
    rows = {r["project"]: r for r in data["projects"]}
    assert rows["p1"]["running"] is True and rows["p1"]["status"] == "agent: editing"
    assert rows["p0"]["running"] is False and rows["p0"]["lastResult"] == "never-run"
    assert rows["p0"]["nextRun"] and rows["p5"]["nextRun"]

    # The same answers as asking unit by unit, as before.
    log.write_text("")
    for alias in ("p0", "p1"):
        project = service.resolve(fake_env, alias)
        alone = unit_status.project_status(fake_env, project)
        assert (alone["running"], alone["nextRun"], alone["lastResult"]) == (
            rows[alias]["running"],
            rows[alias]["nextRun"],
            rows[alias]["lastResult"],
        )
    assert len(_calls(log)) == 6  # three per project outside a snapshot


def test_service_status_uses_the_snapshot_too(ol, env, tmp_path):
    _link(ol, env, tmp_path, 4)
    fake_env, log = _fake_systemctl(tmp_path, env)
    data = unit_status.status(fake_env)
    assert [p["project"] for p in data["projects"]] == ["p0", "p1", "p2", "p3"]
    per_unit = [c for c in _calls(log) if c[0] in ("show", "list-timers") and "--all" in c]
    # One list-timers for every project; `show` once for the projects (+ the target).
    assert sum(1 for c in _calls(log) if c[0] == "list-timers") == 1, per_unit
    assert sum(1 for c in _calls(log) if c[0] == "show") == 2


def test_show_many_maps_blocks_to_units(env, tmp_path):
    fake_env, _ = _fake_systemctl(tmp_path, env)
    found = manager.show_many(fake_env, ["a.service", "b.timer"], "ActiveState")
    assert found == {
        "a.service": {"ActiveState": "inactive"},
        "b.timer": {"ActiveState": "inactive"},
    }


def test_the_two_questions_run_side_by_side_and_beside_the_files(ol, env, tmp_path, monkeypatch):
    # With a manager holding hundreds of timers each answer takes a while: the two calls
    # overlap, and the projects' files are read before the answers are awaited.
    _link(ol, env, tmp_path, 3)
    fake_env, _log = _fake_systemctl(tmp_path, env)
    times = tmp_path / "times"
    fake_env = replace(
        fake_env,
        environ={
            **fake_env.environ,
            "FAKE_SYSTEMCTL_SLEEP": "0.4",
            "FAKE_SYSTEMCTL_TIMES": str(times),
        },
    )
    files_read_at = []
    real = dashboard._row
    monkeypatch.setattr(dashboard, "_row", lambda *a: files_read_at.append(time.time()) or real(*a))
    data = dashboard.dashboard(fake_env, with_systemd=True)
    spans = {
        verb: (float(a), float(b))
        for verb, a, b in (line.split() for line in times.read_text().splitlines())
    }
    (show_start, show_end), (timers_start, timers_end) = spans["show"], spans["list-timers"]
    assert show_start < timers_end and timers_start < show_end  # they overlap
    assert max(files_read_at) < min(show_end, timers_end)
    assert [r["nextRun"] is not None for r in data["projects"]] == [True, True, True]


def test_systemctl_that_cannot_start_fails_the_screen_not_each_row(ol, env, tmp_path):
    import pytest

    from openloop.adapters.units import SystemdError

    _link(ol, env, tmp_path, 2)
    broken = replace(env, environ={**env.environ, "PATH": str(tmp_path / "nothing-here")})
    with pytest.raises(SystemdError, match="systemctl not found"):
        dashboard.dashboard(broken, with_systemd=True)
