"""OpenLoop's own units under a real user manager and journald: install, timers firing
run-once, isolation between projects, no overlap, RuntimeMaxSec and watchdog kills recorded on
the task by ExecStopPost, gate skips that do not fail the unit, logs and status read back."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

# An empty assignment clears every trigger of the timer, so one reset, then the schedule.
FAST_TIMER = """\
[Timer]
OnActiveSec=
OnActiveSec=1s
OnUnitInactiveSec=2s
RandomizedDelaySec=0
AccuracySec=100ms
"""


@dataclass
class Site:
    """One test user's OpenLoop installation with projects in the user's own directories."""

    um: object
    exe: Path
    root: Path
    env: dict[str, str]

    def ol(self, *args: str, timeout: float = 60, check: bool = True):
        cp = self.um.run([str(self.exe), *args], env=self.env, timeout=timeout)
        if check and cp.returncode != 0:
            raise AssertionError(f"openloop {' '.join(args)} -> {cp.returncode}: {cp.stderr}")
        return cp

    def make_project(self, alias: str, agent_script: str, **project: dict) -> Path:
        repo = self.root / alias
        self.um.make_user_dir(repo)
        script = self.root / f"{alias}-agent.sh"
        script.write_text("#!/bin/sh\n" + agent_script)
        script.chmod(0o755)
        self.um.run(["chown", "-R", f"{self.um.uid}:{self.um.gid}", str(self.root)])
        for argv in (
            ["git", "init", "-q", "-b", "main"],
            ["sh", "-c", "echo hi > README.md"],
            ["git", "add", "-A"],
            ["git", "commit", "-qm", "init"],
        ):
            assert self.um.run(argv, env=self.env, cwd=repo).returncode == 0
        self.ol("project", "add", alias, str(repo), "--init")
        pfile = repo / ".openloop/project.json"
        data = json.loads(pfile.read_text())
        data["agent"] = {"type": "custom", "command": str(script)}
        data["validation"] = {"lintCommand": "true"}
        for section, values in project.items():
            data.setdefault(section, {}).update(values)
        pfile.write_text(json.dumps(data))
        self.ol("project", "trust", alias)
        return repo

    def ledger(self, repo: Path) -> dict:
        return json.loads((repo / ".openloop/tasks.json").read_text())

    def records(self, repo: Path) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted((repo / ".openloop/runs").glob("*.json"))]

    def fast_timers(self) -> None:
        self.um.write_unit("openloop@.timer.d/90-test.conf", FAST_TIMER)
        self.um.daemon_reload()


@pytest.fixture
def site(user_manager, openloop_exe, user_tmp_path):
    env = {
        "OPENLOOP_HOME": str(user_tmp_path / "home"),
        "GIT_AUTHOR_NAME": "T",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "T",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }
    s = Site(user_manager, openloop_exe, user_tmp_path, env)
    yield s
    s.ol("service", "stop", check=False, timeout=300)
    s.ol("service", "uninstall", check=False, timeout=300)
    user_manager.systemctl("reset-failed", "openloop@*.service", "openloop-failure@*")
    shutil.rmtree(user_manager.unit_dir / "openloop@.timer.d", ignore_errors=True)


WRITE_FILE = 'cat > /dev/null\necho "change $(date +%s%N)" > work.txt\necho done\n'


def test_rendered_units_pass_systemd_analyze_verify(site):
    site.make_project("demo", WRITE_FILE)
    site.ol("service", "install")
    unit_dir = site.um.unit_dir
    for name in (
        "openloop@.service",
        "openloop@.timer",
        "openloop.target",
        "openloop-failure@.service",
    ):
        assert (unit_dir / name).is_file(), name
    argv = [
        "systemd-analyze",
        "--user",
        "verify",
        "--man=no",
        str(unit_dir / "openloop@demo.service"),
        str(unit_dir / "openloop@demo.timer"),
        str(unit_dir / "openloop.target"),
        str(unit_dir / "openloop-failure@x.service"),
    ]
    for name in ("openloop@demo.service", "openloop@demo.timer", "openloop-failure@x.service"):
        template = name.split("@")[0] + "@." + name.rsplit(".", 1)[1]
        (unit_dir / name).symlink_to(unit_dir / template)
    try:
        cp = site.um.run(argv, env=site.env)
    finally:
        for name in ("openloop@demo.service", "openloop@demo.timer", "openloop-failure@x.service"):
            (unit_dir / name).unlink()
    # verify exits 0 even for unknown keys: any output at all is a failure.
    assert cp.returncode == 0 and cp.stdout == "" and cp.stderr == "", cp.stdout + cp.stderr
    # The exposure score is tracked: 9.1 in user mode with the hardening that works in user
    # units (the namespace options are the opt-in --sandbox drop-in; a unit without any
    # hardening scores 9.6). Losing a hardening option fails this.
    sec = site.um.run(
        [
            "systemd-analyze",
            "--user",
            "security",
            "--offline=true",
            "--threshold=72",
            str(unit_dir / "openloop@.service"),
        ],
        env=site.env,
    )
    assert sec.returncode == 0, sec.stdout[-400:] + sec.stderr


def test_install_writes_dropins_that_systemctl_cat_shows(site):
    site.make_project(
        "demo",
        WRITE_FILE,
        schedule={"intervalMinutes": 7, "memoryMax": "2G", "cpuWeight": 50},
        runtime={"runTimeoutSeconds": 600},
    )
    site.ol("service", "install")
    cat = site.um.systemctl("cat", "openloop@demo.service").stdout
    assert f"ExecStart={site.exe} run-once --project %i --quiet" in cat
    assert "RuntimeMaxSec=" in cat and "MemoryMax=2G" in cat and "CPUWeight=50" in cat
    assert f"OPENLOOP_HOME={site.env['OPENLOOP_HOME']}" in cat
    assert "EnvironmentFile=-" in cat
    timer = site.um.systemctl("cat", "openloop@demo.timer").stdout
    assert "OnUnitInactiveSec=7min" in timer
    props = site.um.show("openloop@demo.service", "MemoryMax", "CPUWeight", "TasksMax", "Type")
    assert props["MemoryMax"] == str(2 * 1024**3) and props["CPUWeight"] == "50"
    assert props["Type"] == "notify"
    envfile = Path(site.env["OPENLOOP_HOME"]) / "environment"
    assert envfile.stat().st_mode & 0o777 == 0o600


def test_timer_runs_iterations_of_two_projects_independently(site):
    since = datetime.now().strftime("%Y-%m-%dT%H:%M:%S")  # the journal outlives each test
    a = site.make_project("alpha", WRITE_FILE)
    b = site.make_project("beta", WRITE_FILE)
    site.ol("task", "add", "-p", "alpha", "--title", "Alpha work")
    site.ol("task", "add", "-p", "beta", "--title", "Beta work")
    site.ol("service", "install")
    site.fast_timers()
    site.ol("service", "start")
    for repo in (a, b):
        site.um.wait_for(
            lambda repo=repo: [r["outcome"] for r in site.records(repo)] == ["completed"],
            timeout=40,
            what=f"an iteration of {repo.name} to complete",
        )
        assert site.ledger(repo)["tasks"][0]["status"] == "review"

    # With no work left the gate skips further ticks instead of running iterations.
    def alpha_status():
        status = json.loads(site.ol("service", "status", "--json").stdout)
        return next(p for p in status["projects"] if p["project"] == "alpha")

    site.um.wait_for(
        lambda: alpha_status()["lastResult"] == "skipped-by-gate",
        timeout=20,
        what="an idle tick skipped by the gate",
    )
    assert "no eligible task" in alpha_status()["lastGate"]["reason"]
    assert len(site.records(a)) == 1

    status = json.loads(site.ol("service", "status", "--json").stdout)
    alpha = next(p for p in status["projects"] if p["project"] == "alpha")
    assert alpha["lastRun"]["outcome"] == "completed"
    assert alpha["timer"] == "active"

    logs = json.loads(site.ol("logs", "-p", "alpha", "--json").stdout)
    assert any(e.get("event") == "iteration-finished" for e in logs)
    assert all(e.get("project") in ("alpha", None) for e in logs)
    events = json.loads(site.ol("events", "--since", since, "--json").stdout)
    assert {e["project"] for e in events if e.get("event") == "iteration-finished"} == {
        "alpha",
        "beta",
    }


def test_a_second_start_while_running_does_not_overlap(site):
    repo = site.make_project("slow", "cat > /dev/null\nsleep 4\necho x > f.txt\n")
    site.ol("task", "add", "-p", "slow", "--title", "One")
    site.ol("task", "add", "-p", "slow", "--title", "Two")
    site.ol("service", "install")
    site.um.systemctl("start", "--no-block", "openloop@slow.service")
    site.um.wait_for(
        lambda: site.um.show("openloop@slow.service", "ActiveState")["ActiveState"] == "active",
        timeout=15,
        what="the iteration to run",
    )
    site.um.systemctl("start", "--no-block", "openloop@slow.service")
    # A concurrent run-once from the shell is refused by the project lock as well.
    shell = site.ol("run-once", "-p", "slow", check=False)
    assert shell.returncode == 1 and "another iteration" in shell.stderr
    site.um.wait_for(
        lambda: (
            site.um.show("openloop@slow.service", "ActiveState")["ActiveState"]
            in ("inactive", "failed")
        ),
        timeout=30,
        what="the iteration to end",
    )
    records = site.records(repo)
    assert len(records) == 1
    statuses = sorted(t["status"] for t in site.ledger(repo)["tasks"])
    assert statuses == ["ready", "review"]


def _pids_with(text: str) -> list[str]:
    out = subprocess.run(["pgrep", "-f", text], capture_output=True, text=True).stdout
    return out.split()


def test_runtime_max_sec_kills_the_agent_tree_and_the_task_records_the_timeout(site):
    marker = f"sleep 3{int(time.time()) % 1000}7"
    repo = site.make_project(
        "hang",
        f"cat > /dev/null\n{marker} &\n{marker}\n",
        schedule={"hardTimeoutSeconds": 3},
        runtime={"inactivityTimeoutSeconds": 120},
    )
    site.ol("task", "add", "-p", "hang", "--title", "Never ends")
    site.ol("service", "install")
    site.um.systemctl("start", "--no-block", "openloop@hang.service")
    site.um.wait_for(lambda: _pids_with(marker), timeout=15, what="the agent to start")
    props = site.um.wait_for(
        lambda: (
            (p := site.um.show("openloop@hang.service", "Result", "ActiveState"))["ActiveState"]
            in ("inactive", "failed")
            and p
        ),
        timeout=30,
        what="the timeout kill",
    )
    assert props["Result"] == "timeout"
    assert _pids_with(marker) == []  # the agent and its background child are gone
    task = site.ledger(repo)["tasks"][0]
    assert (task["status"], task["attempts"]) == ("ready", 1)
    assert "timeout" in task["history"][-1]["reason"]
    assert [r["outcome"] for r in site.records(repo)] == ["timed-out"]
    worktrees = Path(site.env["OPENLOOP_HOME"]) / "state" / "worktrees" / "hang"
    assert not worktrees.exists() or not any(worktrees.iterdir())


def test_the_watchdog_catches_a_silent_agent(site):
    repo = site.make_project(
        "quiet",
        "cat > /dev/null\nsleep 120\n",
        schedule={"watchdogSeconds": 3},
        runtime={"inactivityTimeoutSeconds": 120},
    )
    site.ol("task", "add", "-p", "quiet", "--title", "Silent")
    site.ol("service", "install")
    site.um.systemctl("start", "--no-block", "openloop@quiet.service")
    props = site.um.wait_for(
        lambda: (
            (p := site.um.show("openloop@quiet.service", "Result", "ActiveState"))["ActiveState"]
            in ("inactive", "failed")
            and p
        ),
        timeout=40,
        what="the watchdog",
    )
    assert props["Result"] == "watchdog"
    assert [r["outcome"] for r in site.records(repo)] == ["stalled"]
    assert site.ledger(repo)["tasks"][0]["attempts"] == 1


def test_pause_and_an_exhausted_budget_skip_without_failing_the_unit(site):
    since = datetime.now().strftime("%Y-%m-%dT%H:%M:%S")
    repo = site.make_project("gated", WRITE_FILE)
    site.ol("task", "add", "-p", "gated", "--title", "Wait for me")
    site.ol("service", "install")
    site.ol("pause")
    site.um.systemctl("start", "openloop@gated.service")
    props = site.um.show("openloop@gated.service", "Result", "ActiveState")
    # Skipped, not failed (systemd 252 reports a first-ever skip as Result=success).
    assert props["ActiveState"] == "inactive" and props["Result"] in ("exec-condition", "success")
    site.ol("resume")
    site.ol("config", "set", "budgets.dailyCostUsd", "0")
    site.um.systemctl("start", "openloop@gated.service")
    props = site.um.show("openloop@gated.service", "Result", "ActiveState")
    # Skipped, not failed (systemd 252 reports a first-ever skip as Result=success).
    assert props["ActiveState"] == "inactive" and props["Result"] in ("exec-condition", "success")
    assert site.records(repo) == []
    assert site.ledger(repo)["tasks"][0]["status"] == "ready"
    status = json.loads(site.ol("service", "status", "--json").stdout)
    assert status["projects"][0]["lastResult"] == "skipped-by-gate"
    logs = site.ol("logs", "-p", "gated").stdout
    assert "budget" in logs
    events = json.loads(site.ol("events", "--since", since, "--json").stdout)
    names = [e["event"] for e in events]
    for expected in ("task-added", "paused", "skipped", "resumed"):
        assert expected in names, names
    assert names.index("paused") < names.index("skipped") < names.index("resumed")


def _sandbox_works(um) -> bool:
    um.write_unit(
        "probe-ns.service",
        "[Service]\nType=oneshot\nExecStart=/bin/true\n"
        "PrivateUsers=yes\nProtectSystem=strict\nPrivateTmp=yes\n",
    )
    um.daemon_reload()
    return um.systemctl("start", "probe-ns.service").returncode == 0


def test_sandbox_confines_the_agent_where_the_host_allows_it(site):
    escape = site.um.home / "escaped.txt"
    escape.unlink(missing_ok=True)
    repo = site.make_project(
        "boxed", f"cat > /dev/null\necho in > inside.txt\necho out > {escape} || true\n"
    )
    site.ol("task", "add", "-p", "boxed", "--title", "Stay inside")
    if not _sandbox_works(site.um):
        # Here mount namespaces are blocked (226/NAMESPACE). Installing the sandbox anyway
        # would make every gate "skip" quietly: OpenLoop must refuse, and write nothing.
        cp = site.ol("service", "install", "--sandbox", check=False)
        assert cp.returncode == 1 and "226/NAMESPACE" in cp.stderr, cp.stderr
        assert not (site.um.unit_dir / "openloop@.service.d" / "60-sandbox.conf").exists()
        assert not (site.um.unit_dir / "openloop@.service").exists()
        return
    site.ol("service", "install", "--sandbox")
    site.um.systemctl("start", "openloop@boxed.service", timeout=60)
    assert [r["outcome"] for r in site.records(repo)] == ["completed"]
    assert not escape.exists()  # the home directory is read-only inside the sandbox


def test_a_gate_that_cannot_run_is_reported_not_hidden_as_a_skip(site):
    site.make_project("broken", WRITE_FILE)
    site.ol("task", "add", "-p", "broken", "--title", "Never starts")
    site.ol("service", "install")
    # As if the installation the units point at had been removed.
    site.um.write_unit(
        "openloop@broken.service.d/99-broken.conf",
        "[Service]\nExecCondition=\nExecCondition=/nonexistent/openloop gate\n",
    )
    site.um.daemon_reload()
    site.um.systemctl("start", "openloop@broken.service")
    status = json.loads(site.ol("service", "status", "--json").stdout)
    assert status["projects"][0]["lastResult"] == "gate-error"


def test_the_timer_runs_the_real_pi_against_a_scripted_model(site, pi_for_units):
    from tests.support.model_server import (
        NO_RETRIES_SETTINGS,
        Reply,
        Scenario,
        ScriptedModel,
        ToolCall,
        ToolCalls,
        write_pi_models_json,
        write_pi_settings,
    )

    repo = site.make_project("real", "unused")
    pfile = repo / ".openloop/project.json"
    data = json.loads(pfile.read_text())
    data["agent"] = {"type": "pi"}
    data["pi"] = {"model": "scripted", "provider": "mock"}
    pfile.write_text(json.dumps(data))
    site.ol("project", "trust", "real")
    site.ol("task", "add", "-p", "real", "--title", "Write hello")
    scenario = Scenario(
        [ToolCalls([ToolCall("write", {"path": "hello.txt", "content": "hi\n"})]), Reply("done")]
    )
    with ScriptedModel(scenario) as model:
        write_pi_models_json(site.um.home, model.url)
        write_pi_settings(site.um.home, NO_RETRIES_SETTINGS)
        site.um.run(["chown", "-R", f"{site.um.uid}:{site.um.gid}", str(site.um.home / ".pi")])
        env = dict(site.env, OPENLOOP_PI_BIN=str(pi_for_units))
        cp = site.um.run([str(site.exe), "service", "install"], env=env)
        assert cp.returncode == 0, cp.stderr
        # Units do not see the caller's environment: pi's switches go in the environment file.
        envfile = Path(site.env["OPENLOOP_HOME"]) / "environment"
        envfile.write_text(envfile.read_text() + "PI_OFFLINE=1\nPI_SKIP_VERSION_CHECK=1\n")
        site.fast_timers()
        site.ol("service", "start")
        site.um.wait_for(
            lambda: [r["outcome"] for r in site.records(repo)] == ["completed"],
            timeout=60,
            what="an iteration with the real pi",
        )
    record = site.records(repo)[0]
    assert record["toolCalls"] == 1 and record["costUsd"] > 0
    assert "hello.txt" in [f["path"] for f in record["changedFiles"]]
    assert len(model.requests) == 2


def test_a_project_that_has_not_run_yet_is_not_reported_as_an_error(site):
    site.make_project("fresh", WRITE_FILE)
    site.ol("service", "install")
    site.ol("service", "start")
    status = json.loads(site.ol("service", "status", "--json").stdout)
    fresh = status["projects"][0]
    assert fresh["lastResult"] != "gate-error"
    assert fresh["nextRun"] is not None  # a wall-clock time, also for OnUnitInactiveSec timers


def test_install_refuses_a_unit_directory_the_manager_does_not_read(site):
    site.make_project("elsewhere", WRITE_FILE)
    other = site.root / "other-config"
    site.um.make_user_dir(other)
    cp = site.um.run(
        [str(site.exe), "service", "install"], env=dict(site.env, XDG_CONFIG_HOME=str(other))
    )
    assert cp.returncode == 1 and "your user manager reads" in cp.stderr
    assert not (other / "systemd" / "user" / "openloop@.service").exists()
