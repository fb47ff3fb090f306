"""The one typed outcome every iteration ends in, and the exit status that goes with it.

The ledger, the run summary and the process exit status all derive from the same value. Task
outcomes (the agent or the code failed) exit with 10-19 so systemd can tell them from a crash of
OpenLoop itself (1) with `SuccessExitStatus=`.
"""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    COMPLETED = "completed"  # validated; handed to promotion
    PLANNED = "planned"  # the planner wrote a spec
    IDLE = "idle"  # nothing to do
    SKIPPED = "skipped"  # a gate said not now (paused, budget, busy, untrusted)
    VALIDATION_FAILED = "validation-failed"
    AGENT_ERROR = "agent-error"
    STALLED = "stalled"
    TIMED_OUT = "timed-out"
    BUDGET_STOPPED = "budget-stopped"
    NO_PROGRESS = "no-progress"
    BLOCKED_BY_POLICY = "blocked-by-policy"
    INTERRUPTED = "interrupted"  # killed from outside; recorded by the next iteration's repair
    ESCAPED = "escaped"  # the agent (or its checks) changed something outside its own repository
    # The agent could not work at all (pi missing, Node too old, the API key refused, the quota
    # spent): not the task's fault. No attempt is counted; the project backs off instead.
    ENVIRONMENT_ERROR = "environment-error"

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self]

    @property
    def is_failure(self) -> bool:
        return self.exit_code >= 10


EXIT_CODES: dict[Outcome, int] = {
    Outcome.COMPLETED: 0,
    Outcome.PLANNED: 0,
    Outcome.IDLE: 0,
    Outcome.SKIPPED: 0,
    Outcome.VALIDATION_FAILED: 10,
    Outcome.AGENT_ERROR: 11,
    Outcome.STALLED: 12,
    Outcome.TIMED_OUT: 13,
    Outcome.BUDGET_STOPPED: 14,
    Outcome.NO_PROGRESS: 15,
    Outcome.BLOCKED_BY_POLICY: 16,
    Outcome.INTERRUPTED: 17,
    Outcome.ESCAPED: 18,
    Outcome.ENVIRONMENT_ERROR: 19,
}

TASK_FAILURE_EXIT_CODES = tuple(sorted({c for c in EXIT_CODES.values() if c >= 10}))
