"""The hooks the service unit runs around each iteration: the gate (ExecCondition=), the
exit record (ExecStopPost=) and the failure notice (OnFailure=); and `service run`, the
fallback for hosts without a user manager."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openloop.adapters import manager, notifications
from openloop.env import Environment
from openloop.errors import OpenLoopError
from openloop.state import budget
from openloop.state.config import load_config
from openloop.state.project import resolve
from openloop.state.registry import load_registry

# --- the hooks around each iteration -------------------------------------------------------------


@dataclass(frozen=True)
class GateDecision:
    run: bool
    reason: str


class GateFailure(OpenLoopError):
    """The gate could not decide: OpenLoop cannot read this project's state (a corrupt ledger,
    an unreadable registry...). Not a skip: the unit must fail, so that OnFailure= notifies and
    `status`/`doctor` show the project as broken instead of it quietly never running again."""

    # ExecCondition: exit 1-254 means "skip"; only 255 (or a signal) fails the unit.
    exit_code = 255


def gate(env: Environment, alias: str) -> GateDecision:
    """ExecCondition: should this project's iteration run now? Cheap: it writes only its own
    decision (for `service status`) and once-per-state notifications. Raises GateFailure when
    it cannot tell."""
    try:
        decision = _gate(env, alias)
    except Exception as exc:  # noqa: BLE001 - any crash here is "cannot read the state"
        message = f"{type(exc).__name__}: {exc}" if not isinstance(exc, OpenLoopError) else str(exc)
        try:
            _remember_gate(env, alias, GateDecision(False, message), error=True)
        except Exception:  # noqa: BLE001,S110 - the state dir itself may be what is broken
            pass
        raise GateFailure(f"{alias}: the gate cannot read the project's state: {message}") from exc
    _remember_gate(env, alias, decision)
    return decision


def _gate_file(env: Environment, alias: str) -> Path:
    return env.state_dir / "gate" / f"{alias}.json"


def _remember_gate(
    env: Environment, alias: str, decision: GateDecision, *, error: bool = False
) -> None:
    from openloop.state.storage import atomic_write_text, dump_json

    record: dict[str, Any] = {"at": env.now_iso(), "run": decision.run, "reason": decision.reason}
    if error:
        record["error"] = True
    atomic_write_text(_gate_file(env, alias), dump_json(record))


def last_gate(env: Environment, alias: str) -> dict[str, Any] | None:
    from openloop.state.storage import read_text_or_none

    text = read_text_or_none(_gate_file(env, alias))
    try:
        return json.loads(text) if text else None
    except json.JSONDecodeError:
        return None


def _gate(env: Environment, alias: str) -> GateDecision:
    from openloop.errors import BusyError
    from openloop.loop import governance
    from openloop.loop.scheduler import has_work
    from openloop.state.gate import gate_reason
    from openloop.state.locks import iteration_lock

    project = resolve(env, alias)
    try:
        with iteration_lock(env, project.alias):
            pass
    except BusyError:
        return GateDecision(False, "another iteration of this project is running")
    gconf = load_config(env)
    # An invalid project.json or policy.yaml raises: run-once would only skip on it, but under
    # the timer a project whose rules cannot be read must fail (OnFailure=, one notice), not go
    # quiet until someone looks.
    pconf = project.config()
    governance.load_current(project, pconf)
    reason = gate_reason(env, project, gconf, pconf)
    if reason:
        if "budget" in reason:
            day = budget.day_key(env.now())
            notifications.notify(
                env,
                "budget-exhausted",
                project=alias,
                message=reason,
                # The day's ceiling notifies once a day; each project's own once for it.
                once_key=f"budget-exhausted:{day}"
                if "budgets.dailyCostUsd" in reason
                else f"budget-exhausted:{alias}:{day}",
            )
        return GateDecision(False, reason)
    work = has_work(env, project, gconf)
    if work:
        from openloop.state.locks import slots_in_use

        cap = gconf.runtime.max_concurrent_iterations
        if slots_in_use(env, cap) >= cap:
            return GateDecision(
                False,
                f"{cap} iteration(s) already running on this host "
                "(runtime.maxConcurrentIterations); trying again at the next tick",
            )
    if not work:
        notifications.notify(
            env,
            "queue-empty",
            project=alias,
            once_key=f"queue-empty:{alias}",
            message=f"{alias}: no eligible task",
        )
        return GateDecision(False, "no eligible task and nothing to repair")
    notifications.clear(env, f"queue-empty:{alias}")
    return GateDecision(True, work)


KILLED_RESULTS = {
    "timeout": "timed-out",
    "watchdog": "stalled",
    "oom-kill": "interrupted",
    "signal": "interrupted",
    "core-dump": "interrupted",
    "exit-code": "interrupted",
}

# What run-once exits with when a stop signal ended it cleanly (Outcome.INTERRUPTED).
STOPPED_BY_SIGNAL = "17"
# A stop signal systemd sends on `systemctl stop`, seen as the main process's death.
STOP_SIGNALS = ("TERM", "INT", "HUP")


def record_exit(env: Environment, alias: str, environ: dict[str, str]) -> str | None:
    """ExecStopPost, after every start of the unit (also a skip, also a failed gate).

    - a run that ended well or a normal skip: the project works; a past failure is over, so
      the next one notifies again;
    - the gate failed (exit 255): nothing ran; OnFailure= notifies, nothing to record;
    - the user stopped the run (`service stop`): `interrupted`, no attempt, no notice;
    - systemd killed it (timeout, watchdog, OOM, signal) or it crashed: recorded on the task
      now (attempt counted, reason kept, worktree removed)."""
    from openloop.loop.scheduler import repair_after_kill, settle_stopped_run

    result = environ.get("SERVICE_RESULT", "")
    code = environ.get("EXIT_CODE", "")
    status_ = environ.get("EXIT_STATUS", "")
    if result == "exec-condition" or (result == "success" and code != "killed"):
        notifications.clear_prefix(env, failure_key_prefix(alias))
        if result == "success" and status_ == STOPPED_BY_SIGNAL:
            settle_stopped_run(env, alias, "interrupted", "", user_stop=True)
            return "stopped by the user; the task keeps its attempts"
        return None
    if result == "" and code != "killed":
        return None
    if result == "exit-code" and status_ == "255" and (last_gate(env, alias) or {}).get("error"):
        return None  # the gate failed: no iteration ran; the OnFailure= handler notifies
    if result == "exit-code" and status_.isdigit() and int(status_) >= 10:
        return None  # a task outcome exit status (SuccessExitStatus): already recorded
    outcome = KILLED_RESULTS.get(result, "interrupted")
    reason = f"systemd stopped the iteration: {result or 'stopped'} ({code} {status_})".strip()
    if code == "exited" and status_ == STOPPED_BY_SIGNAL:
        # run-once handled systemd's SIGTERM (RuntimeMaxSec) and closed the run itself.
        task_id = settle_stopped_run(env, alias, outcome, reason, user_stop=False)
        return f"{reason}; settled: {task_id or 'nothing'}"
    user_stop = result == "success" and code == "killed" and status_ in STOP_SIGNALS
    if user_stop:
        reason = f"stopped by the user before it finished ({status_})"
    repaired = repair_after_kill(env, alias, outcome, reason, user_stop=user_stop)
    return f"{reason}; repaired: {', '.join(repaired) or 'nothing running'}"


def failure_key_prefix(alias: str) -> str:
    return f"unit-failed:{alias}:"


def notify_unit_failure(env: Environment, unit: str) -> bool:
    """OnFailure= handler: OpenLoop itself failed in UNIT. One notice per distinct failure (the
    gate's error, or systemd's result and status), and none again until the project has worked
    once more (record_exit clears it): a crash that lasts must not notify at every tick."""
    import hashlib

    alias = unit.removeprefix("openloop@").removesuffix(".service")
    props = manager.show(env, unit, "Result", "ExecMainStatus", "ExecMainCode")
    result = props.get("Result")
    if result in ("timeout", "watchdog"):
        return False  # a hung task, already recorded and notified by record-exit: not a crash
    gate_ = last_gate(env, alias) or {}
    if gate_.get("error"):
        what = f"its state cannot be read: {gate_.get('reason')}"
    else:
        what = f"{result or 'failed'} (exit status {props.get('ExecMainStatus') or '?'})"
    digest = hashlib.sha256(what.encode()).hexdigest()[:12]
    return notifications.notify(
        env,
        "task-failed",
        project=alias,
        once_key=f"{failure_key_prefix(alias)}{digest}",
        message=f"OpenLoop unit {unit} failed: {what}; see 'openloop logs -p {alias}'",
    )


# --- the fallback for hosts without a user manager ------------------------------------------------


def run_foreground(
    env: Environment, *, interval: float | None = None, iterations: int | None = None, echo=print
) -> None:
    """`service run`: each project on its own schedule, in this process, via run-once logic.
    No pid files: the per-project lock is what keeps two iterations apart."""
    from openloop.errors import OpenLoopError
    from openloop.loop import interrupt
    from openloop.loop.scheduler import run_once

    next_at: dict[str, float] = {}
    done = 0
    while iterations is None or done < iterations:
        gconf = load_config(env)
        now = time.monotonic()
        for entry in load_registry(env).projects:
            if next_at.get(entry.alias, 0) > now:
                continue
            minutes = None
            try:  # one broken project must not stop the others
                decision = gate(env, entry.alias)
                if decision.run:
                    result = run_once(env, entry.alias)
                    echo(f"{entry.alias}: {result.outcome.value}: {result.reason}")
                    if interrupt.requested():  # a stop signal: the loop ends with the run
                        return
                minutes = resolve(env, entry.alias).config().schedule.interval_minutes
            except OpenLoopError as exc:
                echo(f"{entry.alias}: error: {exc}")
            pause_s = (
                interval
                if interval is not None
                else 60 * (minutes or gconf.runtime.interval_minutes)
            )
            next_at[entry.alias] = time.monotonic() + pause_s
        done += 1
        if iterations is not None and done >= iterations:
            break
        wake = min(next_at.values(), default=time.monotonic() + 60)
        time.sleep(max(0.5, wake - time.monotonic()))
