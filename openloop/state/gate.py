"""Reasons not to run a project now (paused, commands or policy not approved, the day's budget
spent, backing off after an environment error): what the systemd gate (ExecCondition), run-once
and the status screen all ask. Reads state only, so the status screen can ask it for hundreds
of projects without importing the iteration's machinery."""

from __future__ import annotations

from typing import Any, NamedTuple

from openloop.env import Environment
from openloop.state import backoff, budget, pause, trust
from openloop.state.config import GlobalConfig
from openloop.state.project import Project
from openloop.state.projectconfig import ProjectConfig


class Shared(NamedTuple):
    """What every project's gate reads alike (the global pause, the day's budget): read once
    by a screen over many projects."""

    paused: dict[str, Any] | None
    day: budget.DaySpend


def shared(env: Environment) -> Shared:
    return Shared(pause.global_pause(env), budget.today(env))


def gate_reason(
    env: Environment,
    project: Project,
    gconf: GlobalConfig,
    pconf: ProjectConfig,
    common: Shared | None = None,
) -> str | None:
    common = common or shared(env)
    paused = common.paused
    if paused:
        return f"OpenLoop is paused (since {paused.get('pausedAt')}); 'openloop resume' to go on"
    if project.entry.paused:
        return f"project '{project.alias}' is paused; 'openloop resume -p {project.alias}'"
    if untrusted := trust.untrusted_reason(project.entry, pconf):
        return untrusted
    conf, day = gconf.budgets, common.day
    if day.total() >= conf.daily_cost_usd:
        return (
            f"daily budget of ${conf.daily_cost_usd:.2f} is spent; runs resume tomorrow "
            "(or raise budgets.dailyCostUsd)"
        )
    own = conf.project_daily_cost_usd
    if own is not None and day.total(project.alias) >= own:
        return (
            f"project '{project.alias}' spent its daily budget of ${own:.2f}; runs resume "
            "tomorrow (or raise budgets.projectDailyCostUsd)"
        )
    # The agent's environment failed (pi missing, the key refused, the quota spent): wait.
    return backoff.gate_reason(env, project.alias)
