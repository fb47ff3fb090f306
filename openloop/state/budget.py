"""Daily spend across all projects, from the agents' real reported costs, shared live.

Stored in the state directory (`budget.json`), keyed by local calendar day, so the ceiling resets
at local midnight. Every write is locked and atomic: several projects' iterations run at once.

A day holds what finished runs were charged (`spentUsd`, `byProject`) and what running ones have
spent so far (`live`: run id -> project and cost, published as the agent reports each cost).
The day's total is charged + live. When a run ends its final cost is charged and its live entry
removed in the same locked write, so nothing is counted twice or lost; a run that died without
ending is folded the same way by the next repair, from its transcript.

Each running iteration checks the day's total after each of its own cost events and while its
agent is silent (`LiveSpend`): it stops once the total reaches a ceiling. The check that lets a
run go on and the publication of its new cost are one locked step, so with N iterations running
the day ends at most one model call per iteration above the ceiling.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import Field

from openloop.env import Environment
from openloop.state.models_base import FileModel, file_version, validate
from openloop.state.storage import (
    atomic_write_text,
    dump_json,
    load_json_object,
    locked,
    read_text_or_none,
)

KEEP_DAYS = 31


class LiveEntry(FileModel):
    project: str
    cost_usd: float = 0.0


class DaySpend(FileModel):
    spent_usd: float = 0.0  # charged: runs that ended
    runs: int = 0
    by_project: dict[str, float] = Field(default_factory=dict)
    live: dict[str, LiveEntry] = Field(default_factory=dict)  # run id -> running spend
    # run id -> what it was charged: a run is charged once, even if the iteration died after
    # charging and before closing its record (the next repair would charge it again).
    charged: dict[str, float] = Field(default_factory=dict)

    def live_usd(self, alias: str | None = None) -> float:
        return sum(e.cost_usd for e in self.live.values() if alias in (None, e.project))

    def total(self, alias: str | None = None) -> float:
        """Charged + live, for the whole day or one project."""
        charged = self.spent_usd if alias is None else self.by_project.get(alias, 0.0)
        return round(charged + self.live_usd(alias), 6)


class BudgetLedger(FileModel):
    version: Literal[1] = 1
    days: dict[str, DaySpend] = Field(default_factory=dict)


@dataclass(frozen=True)
class Ceilings:
    """The day's ceiling across all projects, and optionally each project's own."""

    daily_usd: float
    project_daily_usd: float | None = None


def day_key(now: datetime) -> str:
    return now.astimezone().strftime("%Y-%m-%d")


def _load(env: Environment) -> BudgetLedger:
    text = read_text_or_none(env.budget_file)
    if text is None:
        return BudgetLedger()
    data = load_json_object(env.budget_file, text)
    file_version(data, 1, env.budget_file)
    return validate(BudgetLedger, data, env.budget_file)


def _save(env: Environment, ledger: BudgetLedger) -> None:
    for old in sorted(ledger.days)[:-KEEP_DAYS]:
        del ledger.days[old]
    atomic_write_text(env.budget_file, dump_json(ledger.to_data()))


def today(env: Environment) -> DaySpend:
    """Today's entry as last written (an atomic replace: readable without the lock)."""
    return _load(env).days.get(day_key(env.now()), DaySpend())


def spent_today(env: Environment, alias: str | None = None) -> float:
    """Charged + live today, across all projects or for one."""
    return today(env).total(alias)


def left_today(env: Environment, ceiling: float, alias: str | None = None) -> float:
    return max(0.0, ceiling - spent_today(env, alias))


def over_reason(day: DaySpend, alias: str, ceilings: Ceilings, own_usd: float = 0.0) -> str | None:
    """Why no model call may start now (a ceiling is reached), or None. `own_usd` is the
    caller's running spend where it is newer than its published live entry."""
    total = day.total() + own_usd
    if total >= ceilings.daily_usd:
        return f"the day's spend ${total:.4f} reached the daily budget ${ceilings.daily_usd:.2f}"
    if ceilings.project_daily_usd is not None:
        mine = day.total(alias) + own_usd
        if mine >= ceilings.project_daily_usd:
            return (
                f"project '{alias}' spent ${mine:.4f} today, reaching its daily budget "
                f"${ceilings.project_daily_usd:.2f}"
            )
    return None


def exhausted_reason(env: Environment, alias: str, ceilings: Ceilings) -> str | None:
    """The gate's question: may this project start a run at all today?"""
    return over_reason(today(env), alias, ceilings)


def publish_live(env: Environment, run_id: str, alias: str, cost_usd: float) -> DaySpend:
    """Record a running run's spend so far in today's live map (moved from an earlier day if
    the run crossed midnight); returns today's entry as written."""
    with locked(env.budget_file, what="budget ledger"):
        ledger = _load(env)
        day = _pop_live(ledger, run_id, day_key(env.now()))
        day.live[run_id] = LiveEntry(project=alias, cost_usd=round(cost_usd, 6))
        _save(env, ledger)
        return day


def record_spend(
    env: Environment, alias: str, cost_usd: float, *, run_id: str | None = None
) -> float:
    """Charge a run's final cost to today and drop its live entry, in one locked write.

    The charge is the larger of the final cost and what the run last published live: the live
    figure is never more than the final one for the same event stream, but if it were, nothing
    published is lost. Returns today's total (charged + live)."""
    key = day_key(env.now())
    with locked(env.budget_file, what="budget ledger"):
        ledger = _load(env)
        live = already = 0.0
        if run_id is not None:
            for day in ledger.days.values():
                entry = day.live.pop(run_id, None)
                live = max(live, entry.cost_usd if entry else 0.0)
                already = max(already, day.charged.get(run_id, 0.0))
        # Top up to the run's cost, never charge it twice.
        cost = max(0.0, max(cost_usd, live) - already)
        if not cost:
            if live:
                _save(env, ledger)  # its live entry is gone now
            return ledger.days.get(key, DaySpend()).total()
        day = ledger.days.setdefault(key, DaySpend())
        if run_id is not None:
            day.charged[run_id] = round(already + cost, 6)
        day.spent_usd = round(day.spent_usd + cost, 6)
        day.runs += 1
        day.by_project[alias] = round(day.by_project.get(alias, 0.0) + cost, 6)
        _save(env, ledger)
        return day.total()


def live_cost(env: Environment, run_id: str) -> float:
    """What a run last published live (0 when it has no live entry)."""
    entries = (d.live.get(run_id) for d in _load(env).days.values())
    return max((e.cost_usd for e in entries if e is not None), default=0.0)


def _pop_live(ledger: BudgetLedger, run_id: str, key: str) -> DaySpend:
    for day in ledger.days.values():
        day.live.pop(run_id, None)
    return ledger.days.setdefault(key, DaySpend())


class LiveSpend:
    """One running iteration's side of the shared budget: called with the run's cost so far,
    after each of the agent's cost events and periodically while it is silent; returns why the
    agent must stop now, or None.

    A higher cost than last published is checked and published in one locked step; an
    unchanged one is only checked (a lock-free read: the file is replaced atomically, and the
    day's total only grows). A stop is decided before anything is written, so the caller can
    stop its agent at once; the final charge (record_spend with the run id) counts it."""

    def __init__(self, env: Environment, run_id: str, alias: str, ceilings: Ceilings) -> None:
        self.env, self.run_id, self.alias, self.ceilings = env, run_id, alias, ceilings
        self.published = 0.0

    def __call__(self, cost_usd: float) -> str | None:
        unpublished = max(0.0, cost_usd - self.published)
        # A stop seen without the lock is final: totals only grow within a day.
        if reason := over_reason(today(self.env), self.alias, self.ceilings, unpublished):
            return reason
        if not unpublished:
            return None
        with locked(self.env.budget_file, what="budget ledger"):
            ledger = _load(self.env)
            day = _pop_live(ledger, self.run_id, day_key(self.env.now()))  # own: cost_usd
            if reason := over_reason(day, self.alias, self.ceilings, cost_usd):
                return reason
            day.live[self.run_id] = LiveEntry(project=self.alias, cost_usd=round(cost_usd, 6))
            _save(self.env, ledger)
            self.published = cost_usd
        return None


def charged_days(env: Environment) -> dict[str, DaySpend]:
    """Every day's charges as they stand (for the guard: charges only ever grow)."""
    try:
        return {k: v.model_copy(deep=True) for k, v in _load(env).days.items()}
    except Exception:  # noqa: BLE001 - an unreadable file counts as "nothing charged"
        return {}


def restore_charges(env: Environment, before: dict[str, DaySpend]) -> list[str]:
    """Charges that went down since `before` (only someone else's write of budget.json can do
    that: the agent deleting or rewriting it to spend again) are put back, under the lock,
    keeping whatever was charged meanwhile. Returns what was put back."""
    lowered: list[str] = []
    with locked(env.budget_file, what="budget ledger"):
        try:
            ledger = _load(env)
        except Exception:  # noqa: BLE001 - unreadable: rebuilt from what was known before
            ledger = BudgetLedger()
        for key, old in before.items():
            day = ledger.days.setdefault(key, DaySpend())
            if day.spent_usd + 1e-9 < old.spent_usd:
                lowered.append(f"{key}: ${day.spent_usd:.4f} back to ${old.spent_usd:.4f}")
                day.spent_usd = old.spent_usd
                day.runs = max(day.runs, old.runs)
            for alias, cost in old.by_project.items():
                day.by_project[alias] = max(day.by_project.get(alias, 0.0), cost)
            for run_id, cost in old.charged.items():
                day.charged[run_id] = max(day.charged.get(run_id, 0.0), cost)
        if lowered:
            _save(env, ledger)
    return lowered
