"""The screens of the `show` commands (task, promotion, config, project, the run-once plan),
built from the JSON each prints otherwise, with cli/render.py's Screen."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from openloop.cli.render import Screen, _count, _list, _money, when
from openloop.text import escape

# --- task show ------------------------------------------------------------------------------------


def task_screen(data: Mapping[str, Any], now: datetime, color: bool) -> Screen:
    """`task show`: the task, its last run, its promotion, its history."""
    s = Screen(color)
    task = data.get("task") or {}
    alias = escape(str(data.get("project", "")))
    tid = escape(str(task.get("id", "")))
    s.title(tid, escape(str(task.get("title", ""))))
    history = task.get("history") or []
    since = f"  since {when(history[-1].get('at'), now)}" if history else ""
    s.field("status", s.status(task.get("status")) + since)
    s.field(
        "risk",
        f"{escape(str(task.get('risk')))}   kind {escape(str(task.get('kind')))}   "
        f"priority {task.get('priority')}   attempts {task.get('attempts')}",
    )
    scope = (task.get("scope") or {}).get("paths") or []
    s.field("scope", _list(scope))
    if task.get("dependsOn"):
        s.field("depends on", _list(task.get("dependsOn")))
    if task.get("branch"):
        s.field("branch", escape(str(task["branch"])))
    source = task.get("source") or {}
    if source.get("ref"):
        s.field("source", f"{escape(str(source.get('type', '')))}: {escape(str(source['ref']))}")
    s.field("created", when(task.get("createdAt"), now))
    if task.get("description"):
        s.section("Description")
        s.text(task["description"])
    if task.get("acceptanceCriteria"):
        s.section("Acceptance criteria")
        for crit in task["acceptanceCriteria"]:
            s.item(str(crit))
    if task.get("lastFailure") or task.get("noProgressStreak"):
        s.section("Last failure")
        if task.get("lastFailure"):
            s.text(str(task["lastFailure"]))
        if task.get("noProgressStreak"):
            s.field("no progress", f"{task['noProgressStreak']} in a row")
    last = task.get("lastRun")
    if last:
        s.section("Last run")
        s.field("run", escape(str(last.get("runId", "-"))))
        s.field(
            "outcome",
            f"{s.status(last.get('outcome'))}: {escape(str(last.get('reason', '')))}",
        )
        s.field("finished", when(last.get("completedAt"), now))
    request = data.get("promotion")
    if request:
        s.section("Promotion")
        s.field(
            "status",
            f"{s.status(request.get('status'))} ({escape(str(request.get('action', '')))}) "
            f"on {escape(str(request.get('branch', '-')))}",
        )
        if request.get("status") in ("pending", "deferred"):
            s.field("review", s.bold(f"openloop promotion show -p {alias} {tid}"))
    notes = [n for n in task.get("notes") or [] if n]
    if notes:
        s.section("Notes")
        for note in notes:
            s.item(str(note.get("text", note) if isinstance(note, dict) else note))
    if history:
        s.section("History")
        _history(s, history, now)
    promo_history = data.get("promotionHistory") or []
    if promo_history:
        s.section("Promotion history")
        _promotion_history(s, promo_history, now)
    v1_runs = data.get("v1Runs") or []
    if v1_runs:
        s.section("Runs of the original OpenLoop")
        for run in v1_runs:
            exit_code = run.get("exitCode", "?")
            s.item(
                f"{run.get('createdAt', '?')}  {run.get('mode', '?')}  exit {exit_code}"
                f"  {run.get('taskStatus', '')}  ({run.get('file')})"
            )
    return s


def _history(s: Screen, history: list[Mapping[str, Any]], now: datetime) -> None:
    for entry in history:
        move = f"{escape(str(entry.get('from') or '-'))} -> {s.status(entry.get('to'))}"
        s.lines.append(f"  {when(entry.get('at'), now, seconds=True)}  {move}")
        if entry.get("reason"):
            s.lines.extend(
                "      " + line
                for line in textwrap.wrap(escape(str(entry["reason"])), s.width - 6) or [""]
            )


def _promotion_history(s: Screen, entries: list[Mapping[str, Any]], now: datetime) -> None:
    for entry in entries:
        head = f"{escape(str(entry.get('kind', '')))} {s.status(entry.get('status'))}"
        s.lines.append(f"  {when(entry.get('at'), now, seconds=True)}  {head}")
        detail = entry.get("note") or entry.get("reason") or ", ".join(entry.get("reasons") or [])
        if detail:
            s.lines.extend(
                "      " + line for line in textwrap.wrap(escape(str(detail)), s.width - 6) or [""]
            )


# --- promotion show -------------------------------------------------------------------------------


def promotion_screen(request: Mapping[str, Any], alias: str, now: datetime, color: bool) -> Screen:
    s = Screen(color)
    tid = escape(str(request.get("taskId", "")))
    alias = escape(alias)
    s.title(f"Promotion of {tid}", escape(str(request.get("title", ""))))
    s.field(
        "status",
        f"{s.status(request.get('status'))} ({escape(str(request.get('action', '')))})   "
        f"created {when(request.get('createdAt'), now)}",
    )
    s.field("risk", s.status(request.get("risk")) if request.get("risk") else "-")
    branch = escape(str(request.get("branch", "-")))
    exists = request.get("branchExists")
    s.field(
        "branch",
        f"{branch} -> {escape(str(request.get('baseBranch', '-')))}"
        + ("" if exists is None or exists else s.style("  (branch is gone)", fg="red")),
    )
    base, head = str(request.get("baseCommit") or ""), str(request.get("headCommit") or "")
    if base and head:
        s.field("commits", f"{escape(base[:12])}..{escape(head[:12])}")
    if request.get("mergedCommit"):
        s.field("merged as", escape(str(request["mergedCommit"])[:12]))
    s.field("cost", f"{_money(request.get('costUsd'))}   runs {_list(request.get('runIds'))}")
    if request.get("note"):
        s.field("note", escape(str(request["note"])))
    reasons = request.get("reasons") or []
    if reasons:
        s.section("Why it needs a human" if request.get("action") == "review" else "Reasons")
        for reason in reasons:
            s.item(str(reason))
    checks = request.get("validation") or []
    if checks:
        s.section("Checks")
        for check in checks:
            status = str(check.get("status", ""))
            mark = {"passed": "ok", "failed": "FAIL", "not-configured": "-"}.get(status, status)
            name = escape(str(check.get("name", ""))).ljust(10)
            command = check.get("command")
            detail = f"`{escape(str(command))}`" if command else s.dim("not configured")
            duration = check.get("duration")
            took = f" {float(duration):.1f}s" if duration and status != "not-configured" else ""
            s.lines.append(
                f"  {s.status(status) if mark == status else _mark(s, mark)} {name} {detail}{took}"
            )
            if status == "failed" and check.get("tail"):
                s.verbatim(str(check["tail"]), indent=6)
            if status == "failed" and check.get("log"):
                s.lines.append("      log: " + escape(str(check["log"])))
    files = request.get("changedFiles") or []
    lines = request.get("linesChanged")
    s.section(
        f"Changes ({_count(len(files), 'file')}"
        + (f", {_count(lines, 'line')})" if isinstance(lines, int) else ")")
    )
    if request.get("diffstat"):
        s.verbatim(str(request["diffstat"]), indent=1)
    else:
        for path in files:
            s.item(str(path))
    history = request.get("history") or []
    if history:
        s.section("History")
        _promotion_history(s, history, now)
    if request.get("status") in ("pending", "deferred"):
        s.section("Next")
        for cmd in (
            f"openloop promotion diff -p {alias} {tid}       # the diff, in git's pager",
            f"openloop promotion apply -p {alias} {tid}      # re-check and merge",
            f"openloop promotion reject -p {alias} {tid} --retry --reason '...'",
        ):
            s.lines.append("  " + cmd)
    return s


def _mark(s: Screen, mark: str) -> str:
    colour = {"ok": "green", "FAIL": "red"}.get(mark)
    return s.style(mark, fg=colour, bold=True) if colour else mark


# --- config / project -----------------------------------------------------------------------------


def _flatten(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(data, Mapping) and data:
        out: list[tuple[str, Any]] = []
        for key, value in data.items():
            out.extend(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return [(prefix, data)]


def _value(s: Screen, value: Any) -> str:
    if value is None:
        return s.dim("-")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return _list(value)
    return escape(str(value))


def settings_section(s: Screen, data: Mapping[str, Any], skip: Iterable[str] = ()) -> None:
    pairs = [(k, v) for k, v in _flatten(data) if k and k.split(".")[0] not in set(skip)]
    width = max((len(k) for k, _ in pairs), default=10)
    for key, value in pairs:
        s.field(key, _value(s, value), width=width)


def config_screen(data: Mapping[str, Any], color: bool) -> Screen:
    """`config show`: every key, dotted as `config set` takes it."""
    s = Screen(color)
    s.title("Global configuration", s.dim(escape(str(data.get("_path", "")))))
    settings_section(s, data, skip=("_path", "version"))
    s.line()
    s.line(s.dim("Change one with: openloop config set KEY VALUE  (openloop config set --help)"))
    return s


def project_config_screen(data: Mapping[str, Any], color: bool) -> Screen:
    """`config project-show`."""
    s = Screen(color)
    s.title("Project settings", s.dim(escape(str(data.get("path", "")))))
    settings_section(s, data.get("config") or {}, skip=("version",))
    model = data.get("effectiveModel") or {}
    s.section("Effective model")
    s.field("model", _value(s, model.get("model")))
    s.field("provider", _value(s, model.get("provider")))
    s.field("from", _value(s, model.get("source")))
    s.section("Detected checks")
    for slot, found in (data.get("detected") or {}).items():
        if found:
            s.field(
                slot,
                f"{escape(str(found.get('command')))}  "
                + s.dim(f"(from {escape(str(found.get('source')))})"),
            )
        else:
            s.field(slot, s.dim("-"))
    s.field("stacks", _list(data.get("stacks")))
    return s


def project_screen(data: Mapping[str, Any], now: datetime, color: bool) -> Screen:
    """`project show`."""
    s = Screen(color)
    alias = escape(str(data.get("alias", "")))
    s.title(alias, escape(str(data.get("path", ""))))
    s.field("default", _value(s, data.get("defaultBranch")))
    s.field("paused", "yes" if data.get("paused") else "no")
    s.field("initialized", "yes" if data.get("initialized") else "no")
    s.field(
        "control",
        escape(str(data.get("controlPlane", "")))
        + ("" if data.get("controlPlaneExists") else s.style("  (missing)", fg="red")),
    )
    s.field("linked", when(data.get("createdAt"), now))
    if data.get("controlPlaneExists"):
        s.section("Trust")
        ok = s.style("approved", fg="green")
        bad = s.style("NOT approved", fg="red", bold=True)
        s.field("commands", ok if data.get("commandsTrusted") else bad)
        s.field(
            "policy",
            (ok if data.get("policyApproved") else bad)
            + s.dim(f"  ({escape(str(data.get('policySource', '')))})"),
        )
        trust = data.get("trust") or {}
        for name, command in (trust.get("commands") or {}).items():
            if command:
                s.field("", f"{escape(name)}: `{escape(str(command))}`")
        if trust.get("approvedAt"):
            s.field("approved", when(trust.get("approvedAt"), now))
        if not (data.get("commandsTrusted") and data.get("policyApproved")):
            s.field("fix", s.bold(f"openloop project trust {alias}"))
    return s


# --- run-once --dry-run -------------------------------------------------------------------------


def plan_screen(plan: Mapping[str, Any], alias: str | None, color: bool) -> Screen:
    s = Screen(color)
    mode = str(plan.get("mode", ""))
    s.title("Next iteration" + (f" of {escape(alias)}" if alias else ""), s.dim("(dry run)"))
    s.field("mode", s.bold(escape(mode)))
    if plan.get("outcome"):
        s.field("outcome", escape(str(plan["outcome"])))
    if plan.get("taskId"):
        s.field("task", escape(str(plan["taskId"])))
        s.field("role", escape(str(plan.get("role", ""))))
        s.field("attempt", str(plan.get("attempt", "")))
        model = plan.get("model") or "pi's default"
        provider = f" ({escape(str(plan['provider']))})" if plan.get("provider") else ""
        s.field("model", escape(str(model)) + provider)
    s.field("why", escape(str(plan.get("reason", ""))))
    for key, label in (("wouldRepair", "would repair"), ("running", "running")):
        if plan.get(key):
            s.field(label, _list(plan[key]))
    if plan.get("prompt"):
        s.section("Prompt (what pi gets on stdin)")
        s.text(str(plan["prompt"]))
    return s
