"""Daily spend across all projects, from the agents' real reported costs.

Stored in the state directory (`budget.json`), keyed by local calendar day, so the ceiling resets
at local midnight. Writes are locked: several projects' iterations may finish at once.
"""

from __future__ import annotations

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


class DaySpend(FileModel):
    spent_usd: float = 0.0
    runs: int = 0
    by_project: dict[str, float] = Field(default_factory=dict)


class BudgetLedger(FileModel):
    version: Literal[1] = 1
    days: dict[str, DaySpend] = Field(default_factory=dict)


def day_key(now: datetime) -> str:
    return now.astimezone().strftime("%Y-%m-%d")


def _load(env: Environment) -> BudgetLedger:
    text = read_text_or_none(env.budget_file)
    if text is None:
        return BudgetLedger()
    data = load_json_object(env.budget_file, text)
    file_version(data, 1, env.budget_file)
    return validate(BudgetLedger, data, env.budget_file)


def spent_today(env: Environment) -> float:
    return _load(env).days.get(day_key(env.now()), DaySpend()).spent_usd


def left_today(env: Environment, ceiling: float) -> float:
    return max(0.0, ceiling - spent_today(env))


def record_spend(env: Environment, alias: str, cost_usd: float) -> float:
    """Add a run's cost to today's total; returns the new total."""
    key = day_key(env.now())
    with locked(env.budget_file, what="budget ledger"):
        ledger = _load(env)
        day = ledger.days.setdefault(key, DaySpend())
        day.spent_usd = round(day.spent_usd + cost_usd, 6)
        day.runs += 1
        day.by_project[alias] = round(day.by_project.get(alias, 0.0) + cost_usd, 6)
        for old in sorted(ledger.days)[:-KEEP_DAYS]:
            del ledger.days[old]
        atomic_write_text(env.budget_file, dump_json(ledger.to_data()))
        return day.spent_usd
