"""What an operator sees of a run: every phase record carries the run id (`logs --run`), and a
dry run during a live iteration does not call its running task a leftover to repair."""

from __future__ import annotations

from openloop.adapters.watchdog import SystemdReporter
from openloop.loop import scheduler
from openloop.state.locks import iteration_lock
from tests.test_iteration import FakeAgent, add, demo, task_of, write  # noqa: F401
from tests.test_journal import _fields, sink  # noqa: F401


class _Quiet:
    def send(self, *lines: str) -> None:
        pass


def test_every_phase_record_of_a_run_carries_its_run_id(ol, demo, env, sink):  # noqa: F811
    add(ol, "Visible")
    reporter = SystemdReporter("demo", notifier=_Quiet())
    result = scheduler.run_once(
        env, "demo", reporter=reporter, adapter_factory=lambda kind: FakeAgent([write("v.py", "")])
    )
    records = []
    sink.settimeout(0.5)
    while True:
        try:
            records.append(_fields(sink.recv(65536)))
        except TimeoutError:
            break
    phases = [r for r in records if "OPENLOOP_EVENT" not in r]
    # From "started" on (the baseline's checks before it belong to no run):
    first = next(i for i, r in enumerate(phases) if "started" in r["MESSAGE"])
    of_the_run = phases[first:]
    assert len(of_the_run) >= 4  # started, worktree, agent, collect, validate...
    assert {r.get("OPENLOOP_RUN") for r in of_the_run} == {result.run_id}


def test_a_dry_run_during_a_live_iteration_repairs_nothing(ol, demo, env):  # noqa: F811
    tid = add(ol, "Running")
    with iteration_lock(env, "demo"):
        plan = scheduler.dry_run(env, "demo")
    assert plan["mode"] == "busy" and "wouldRepair" not in plan
    assert task_of(demo, tid).status == "ready"
