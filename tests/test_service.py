"""Service actions that need no user manager: unit rendering, drop-ins, the gate, record-exit,
notifications once per event, the foreground fallback loop, doctor."""

from __future__ import annotations

import json
import stat

import pytest

from openloop.actions import service, unit_hooks
from openloop.adapters import manager, notifications, units
from openloop.loop.outcomes import Outcome
from openloop.state.config import GlobalConfig
from openloop.state.project import resolve
from openloop.state.projectconfig import ProjectConfig
from tests.test_iteration import FakeAgent, add, once, set_project, task_of, write


@pytest.fixture
def demo(ol, project):
    set_project(project, validation={"lintCommand": "true"})
    assert ol("project", "trust", "demo").code == 0
    return project


def test_rendered_units_point_at_this_installation():
    rendered = units.render_templates(["/opt/ol/bin/openloop"])
    assert set(rendered) == set(units.TEMPLATES)
    service_unit = rendered["openloop@.service"]
    assert "ExecStart=/opt/ol/bin/openloop run-once --project %i --quiet" in service_unit
    assert "/usr/bin/openloop" not in service_unit
    assert "Type=notify" in service_unit and "RuntimeMaxSec=" in service_unit
    from openloop.loop.outcomes import TASK_FAILURE_EXIT_CODES

    codes = " ".join(map(str, TASK_FAILURE_EXIT_CODES))
    assert f"SuccessExitStatus={codes}\n" in service_unit
    spaced = units.render_templates(["/opt/my tools/python", "-m", "openloop"])
    assert "ExecStart='/opt/my tools/python' -m openloop run-once" in spaced["openloop@.service"]


def test_dropins_follow_the_project_config():
    pconf = ProjectConfig.model_validate(
        {
            "schedule": {"intervalMinutes": 7, "memoryMax": "2G", "cpuWeight": 20},
            "runtime": {"runTimeoutSeconds": 600, "inactivityTimeoutSeconds": 100},
            "validation": {"timeoutSeconds": 60},
        }
    )
    from pathlib import Path

    text = units.service_dropin(GlobalConfig(), pconf, Path("/src/web"), sandbox=False)
    assert "RuntimeMaxSec=1260s" in text  # 600 + 9 * 60 + 120
    assert "WatchdogSec=220s" in text  # 100 + 120
    assert "MemoryMax=2G" in text and "CPUWeight=20" in text
    timer = units.timer_dropin(GlobalConfig(), pconf, "web")
    # One reset, then the whole schedule (a reset clears every trigger of a timer).
    assert timer.count("OnActiveSec=\n") == 1 and "OnUnitInactiveSec=\n" not in timer
    assert "OnUnitInactiveSec=7min" in timer


def test_invalid_memory_limit_is_refused_by_the_model():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        ProjectConfig.model_validate({"schedule": {"memoryMax": "lots\nExecStart=/bin/evil"}})


def test_install_writes_units_and_a_private_environment_file(ol, demo, env, tmp_path, monkeypatch):
    monkeypatch.setitem(env.environ, "XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    report = service.install(env, reload=False)
    unit_dir = tmp_path / "xdg" / "systemd" / "user"
    assert report.unit_dir == unit_dir
    assert (unit_dir / "openloop@.service").is_file()
    assert (unit_dir / "openloop@demo.service.d" / "50-openloop.conf").is_file()
    env_dropin = (unit_dir / "openloop@.service.d" / "10-environment.conf").read_text()
    assert f"OPENLOOP_HOME={env.environ['OPENLOOP_HOME']}" in env_dropin
    envfile = env.config_dir / "environment"
    assert stat.S_IMODE(envfile.stat().st_mode) == 0o600
    again = service.install(env, reload=False)
    assert again.written == []  # idempotent


def test_gate_skips_paused_idle_and_broke_projects_and_notifies_once(ol, demo, env, tmp_path):
    log = tmp_path / "notified.log"
    ol("config", "set", "notifications.onQueueEmpty", f"echo $OPENLOOP_EVENT >> {log}")
    ol("config", "set", "notifications.onBudgetExhausted", f"echo $OPENLOOP_EVENT >> {log}")
    # A default branch never validated is work (healing, discovery): one iteration looks.
    assert "not validated yet" in unit_hooks.gate(env, "demo").reason
    assert once(env, FakeAgent()).outcome == Outcome.IDLE
    for _ in range(3):
        decision = unit_hooks.gate(env, "demo")
        assert not decision.run and "no eligible task" in decision.reason
    add(ol, "Work")
    assert unit_hooks.gate(env, "demo").run
    ol("config", "set", "budgets.dailyCostUsd", "0")
    for _ in range(3):
        assert "budget" in unit_hooks.gate(env, "demo").reason
    assert log.read_text().split() == ["queue-empty", "budget-exhausted"]
    assert unit_hooks.last_gate(env, "demo")["run"] is False


def test_record_exit_records_a_systemd_timeout_on_the_task(ol, demo, env):
    from openloop.loop import attempt, scheduler

    tid = add(ol, "Killed")
    it = scheduler._load(env, resolve(env, "demo"), None, None, scheduler.NullReporter(), None)
    scheduler.select(it)
    attempt.start(it)
    attempt.prepare_worktree(it)  # ... and here systemd kills the unit
    assert unit_hooks.record_exit(env, "demo", {"SERVICE_RESULT": "exec-condition"}) is None
    assert (
        unit_hooks.record_exit(
            env, "demo", {"SERVICE_RESULT": "exit-code", "EXIT_CODE": "exited", "EXIT_STATUS": "10"}
        )
        is None
    )
    summary = unit_hooks.record_exit(
        env, "demo", {"SERVICE_RESULT": "timeout", "EXIT_CODE": "killed", "EXIT_STATUS": "TERM"}
    )
    assert "timeout" in summary and tid in summary
    task = task_of(demo, tid)
    assert (task.status, task.attempts) == ("ready", 1)
    record = json.loads(next((demo / ".openloop/runs").glob("*.json")).read_text())
    assert record["outcome"] == "timed-out"
    assert not it.worktree.exists()


def test_task_outcomes_notify_once_per_event(ol, demo, env, tmp_path):
    log = tmp_path / "events.log"
    ol(
        "config",
        "set",
        "notifications.onTaskComplete",
        f"echo $OPENLOOP_EVENT $OPENLOOP_PROJECT $OPENLOOP_TASK_ID >> {log}",
    )
    tid = add(ol, "Notify me")
    once(env, FakeAgent([write("n.py", "n = 1\n")]))
    assert log.read_text().strip() == f"task-complete demo {tid}"


def test_foreground_loop_runs_each_project_through_the_gate(ol, demo, env, monkeypatch):
    lines = []
    set_project(demo, agent={"type": "custom", "command": "sh -c 'cat >/dev/null; echo x > f'"})
    ol("project", "trust", "demo")
    tid = add(ol, "Loop")
    unit_hooks.run_foreground(env, interval=0, iterations=2, echo=lines.append)
    assert task_of(demo, tid).status == "review"
    assert lines[0] == "demo: completed: validated; kept for review"
    # Then idle with a healthy default branch: discovery proposes (no agent runs).
    assert lines[1:] == [] or "discovery proposed" in lines[1]


def test_notify_clear_allows_the_next_state_change(env):
    assert notifications._remember(env, "k")
    assert not notifications._remember(env, "k")
    notifications.clear(env, "k")
    assert notifications._remember(env, "k")


def test_doctor_reports_each_problem_with_a_fix(ol, demo, env):
    set_project(demo, validation={"testCommand": "curl x | sh"})
    result = ol("doctor", "--json")
    checks = {c["name"]: c for c in json.loads(result.out)}
    assert result.code == 1
    assert not checks["project demo"]["ok"]
    assert checks["project demo"]["fix"] == "openloop project trust demo"
    assert checks["budget"]["ok"]


def test_a_gate_that_cannot_read_the_ledger_fails_with_255_not_a_skip(ol, demo, env):
    (demo / ".openloop/tasks.json").write_text("{broken")
    with pytest.raises(unit_hooks.GateFailure):
        unit_hooks.gate(env, "demo")
    assert unit_hooks.last_gate(env, "demo")["error"] is True
    gate = ol("gate", "-p", "demo")
    # ExecCondition: 1-254 all mean "skip"; only 255 fails the unit (and fires OnFailure=).
    assert gate.code == 255 and "tasks.json" in gate.err
    # record-exit sees the failed gate and leaves the (unreadable) ledger alone.
    environ = {"SERVICE_RESULT": "exit-code", "EXIT_CODE": "exited", "EXIT_STATUS": "255"}
    assert unit_hooks.record_exit(env, "demo", environ) is None


def test_a_failure_notifies_once_and_again_only_after_recovery(
    ol, demo, env, tmp_path, monkeypatch
):
    log = tmp_path / "failed.log"
    ol("config", "set", "notifications.onTaskFailed", f"echo $OPENLOOP_PROJECT >> {log}")
    monkeypatch.setattr(
        manager, "show", lambda env, unit, *p: {"Result": "exit-code", "ExecMainStatus": "1"}
    )
    for _ in range(3):
        unit_hooks.notify_unit_failure(env, "openloop@demo.service")
    assert log.read_text().split() == ["demo"]
    # A skip or a good run means the project works again ...
    unit_hooks.record_exit(env, "demo", {"SERVICE_RESULT": "exec-condition"})
    unit_hooks.notify_unit_failure(env, "openloop@demo.service")
    assert log.read_text().split() == ["demo", "demo"]
    # ... and a different failure is a new notice even without recovery.
    (demo / ".openloop/tasks.json").write_text("{broken")
    with pytest.raises(unit_hooks.GateFailure):
        unit_hooks.gate(env, "demo")
    unit_hooks.notify_unit_failure(env, "openloop@demo.service")
    unit_hooks.notify_unit_failure(env, "openloop@demo.service")
    assert log.read_text().split() == ["demo", "demo", "demo"]


def test_the_host_cap_skips_in_the_gate_and_in_run_once(ol, demo, env):
    from openloop.loop import scheduler
    from openloop.loop.outcomes import Outcome
    from openloop.state.locks import iteration_slot, slots_in_use

    ol("config", "set", "runtime.maxConcurrentIterations", "2")
    add(ol, "Capped")
    assert unit_hooks.gate(env, "demo").run
    with iteration_slot(env, 2), iteration_slot(env, 2):
        assert slots_in_use(env, 2) == 2
        decision = unit_hooks.gate(env, "demo")
        assert not decision.run and "maxConcurrentIterations" in decision.reason
        agent = FakeAgent([write("c.py", "c = 1\n")])
        result = scheduler.run_once(env, "demo", adapter_factory=lambda kind: agent)
        assert result.outcome == Outcome.SKIPPED and agent.requests == []
    assert slots_in_use(env, 2) == 0
    assert unit_hooks.gate(env, "demo").run


def test_record_exit_of_a_user_stop_that_killed_the_run_costs_no_attempt(ol, demo, env):
    from openloop.loop import attempt, scheduler

    tid = add(ol, "Stopped")
    it = scheduler._load(env, resolve(env, "demo"), None, None, scheduler.NullReporter(), None)
    scheduler.select(it)
    attempt.start(it)
    environ = {"SERVICE_RESULT": "success", "EXIT_CODE": "killed", "EXIT_STATUS": "TERM"}
    summary = unit_hooks.record_exit(env, "demo", environ)
    assert "stopped by the user" in summary
    task = task_of(demo, tid)
    assert (task.status, task.attempts) == ("ready", 0)
    record = json.loads(next((demo / ".openloop/runs").glob("*.json")).read_text())
    assert record["outcome"] == "interrupted"


def test_doctor_sees_stopped_timers_and_stale_drop_ins(ol, demo, env, monkeypatch):
    monkeypatch.setattr(service, "installed", lambda env: True)
    monkeypatch.setattr(manager, "scheduled_timers", lambda env: {})
    checks = {c["name"]: c for c in ol("doctor", "--json").json()}
    assert not checks["timers"]["ok"] and checks["timers"]["fix"] == "openloop service start"
    assert not checks["drop-ins"]["ok"] and "demo" in checks["drop-ins"]["detail"]
    # As `service install` and `service start` would leave them: nothing to say.
    for path, text in service.dropins_for(env, "demo").items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    monkeypatch.setattr(manager, "scheduled_timers", lambda env: {"openloop@demo.timer": 1})
    checks = {c["name"]: c for c in ol("doctor", "--json").json()}
    assert checks["timers"]["ok"] and "drop-ins" not in checks
    # A project.json edit since: the drop-in no longer says what the project asks for.
    set_project(demo, schedule={"cpuWeight": 50})
    checks = {c["name"]: c for c in ol("doctor", "--json").json()}
    assert not checks["drop-ins"]["ok"]
