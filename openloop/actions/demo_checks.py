"""Did the demo show what it promises? The five outcomes, read from the ledger, the run records
and the git history (never from the demo's own bookkeeping)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from openloop.actions import demo_script as script
from openloop.actions.demo_world import World
from openloop.adapters import demo_model


@dataclass
class Outcome:
    name: str
    ok: bool
    detail: str


def ledger(w: World) -> dict[str, dict[str, Any]]:
    data = json.loads((w.repo / ".openloop" / "tasks.json").read_text())
    return {t["id"]: t for t in data["tasks"]}


def records(w: World) -> list[dict[str, Any]]:
    runs = w.repo / ".openloop" / "runs"
    found = [json.loads(p.read_text()) for p in runs.glob("*.json")]
    return sorted(found, key=lambda r: r.get("startedAt") or "")


def _on_main(w: World, path: str) -> str:
    return w.git("show", f"{script.BRANCH}:{path}", check=False)


def check_outcomes(w: World, model: demo_model.DemoModel | None) -> list[Outcome]:
    tasks = ledger(w)
    runs = records(w)
    ops = _on_main(w, "calc/ops.py")
    log = w.git("log", "--format=%s", script.BRANCH)
    outcomes = []

    def by_task(task_id: str) -> list[dict[str, Any]]:
        return [r for r in runs if r.get("taskId") == task_id]

    heals = [t for t in tasks.values() if t["id"].startswith(script.HEAL_PREFIX)]
    heal = heals[0] if heals else {}
    stats = _on_main(w, "calc/stats.py")
    heal_runs = by_task(heal["id"]) if heal else []
    first = runs[0].get("taskId") if runs else None
    ok = (
        len(heals) == 1
        and heal.get("status") == "promoted"
        and (heal.get("source") or {}).get("type") == "ci"
        and any(r.get("role") == "ci-healer" for r in heal_runs)
        and first == heal.get("id")
        and "def mean" in stats
        and "print(" not in stats
    )
    outcomes.append(
        Outcome(
            "broken default branch healed first",
            ok,
            f"{heal.get('id') or 'no healing task'} is {heal.get('status')} "
            f"(role {', '.join(str(r.get('role')) for r in heal_runs) or 'none'}; the first run "
            f"was {first}); calc/stats.py on {script.BRANCH} "
            f"{'has no print()' if 'print(' not in stats else 'still prints'}",
        )
    )

    sub = tasks.get("add-subtract", {})
    ok = sub.get("status") == "promoted" and "def subtract" in ops
    outcomes.append(
        Outcome(
            "low-risk task auto-merged",
            ok,
            f"add-subtract is {sub.get('status')}; subtract() "
            f"{'is' if 'def subtract' in ops else 'is NOT'} on {script.BRANCH}",
        )
    )

    div = tasks.get("add-safe-divide", {})
    branch_ops = w.git("show", "openloop/add-safe-divide:calc/ops.py", check=False)
    ok = div.get("status") == "review" and "def divide" in branch_ops and "def divide" not in ops
    outcomes.append(
        Outcome(
            "medium-risk task left for review",
            ok,
            f"add-safe-divide is {div.get('status')}; divide() is "
            f"{'on' if 'def divide' in branch_ops else 'NOT on'} openloop/add-safe-divide and "
            f"{'NOT ' if 'def divide' not in ops else ''}on {script.BRANCH}",
        )
    )

    dep = tasks.get("raise-production-workers", {})
    dep_runs = by_task("raise-production-workers")
    untouched = "workers = 2" in _on_main(w, "deploy/production.ini")
    ok = (
        dep.get("status") == "blocked"
        and any(r.get("outcome") == "blocked-by-policy" for r in dep_runs)
        and untouched
    )
    outcomes.append(
        Outcome(
            "denied path blocked by policy",
            ok,
            f"raise-production-workers is {dep.get('status')} "
            f"({', '.join(r.get('outcome', '?') for r in dep_runs) or 'no run'}); "
            f"deploy/production.ini on {script.BRANCH} "
            f"{'unchanged' if untouched else 'CHANGED'}",
        )
    )

    mul = tasks.get("add-multiply", {})
    mul_runs = [r.get("outcome") for r in by_task("add-multiply")]
    retried_with_failure = model is None or any(
        s.task_id == "add-multiply" and s.retry and "print" in s.prompt for s in model.seen
    )
    ok = (
        mul_runs[:1] == ["validation-failed"]
        and mul_runs[-1:] == ["completed"]
        and retried_with_failure
        and mul.get("status") == "promoted"
        and "def multiply" in ops
        and 'print("multiply"' not in ops
    )
    outcomes.append(
        Outcome(
            "failed check retried, then passing",
            ok,
            f"add-multiply runs: {' -> '.join(mul_runs) or 'none'}; the retry's prompt "
            f"{'carried' if retried_with_failure else 'did NOT carry'} the lint failure; "
            f"task {mul.get('status')}",
        )
    )
    if not any("openloop" in s.lower() or "subtract" in s.lower() for s in log.splitlines()):
        outcomes[1].ok = False
        outcomes[1].detail += f"; no merge in the history of {script.BRANCH}"
    return outcomes
