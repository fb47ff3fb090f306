"""What the sdd-planner leaves: `.openloop/specs/<task-id>.md` on the task's branch.

The spec is a change like any other: it stays on `openloop/<task-id>` (never copied into the
user's checkout), the implementation is built on top of it, and both are reviewed and merged
together (`.openloop/` is protected: always reviewed). OpenLoop reads it from the planner's
recorded commit.

Two parts of it are machine-readable:

- the "Files to touch" section: its list of paths (one per bullet, `backquoted` or plain)
  becomes the task's declared scope when the task has none;
- an optional fenced block with the info string `openloop-subtasks`, a YAML list that splits the
  task. Each item: `title` (required), `id` (a local name for `dependsOn`), `description`,
  `kind`, `risk`, `scope` (list), `acceptance` (list), `priority`, `dependsOn` (local ids of
  earlier items, or ids of tasks already in the ledger). Items are validated like
  `openloop task add`; one bad item refuses the whole block and the planner is asked again.

      ```openloop-subtasks
      - id: parser
        title: Parse the new config key
        scope: [src/config.py]
      - title: Use the key in the server
        dependsOn: [parser]
      ```

The subtasks become `ready` tasks sharing the spec; the planned task waits for them (it
depends on them) and then implements what is left.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from openloop.errors import InputError
from openloop.state.ledger import (
    HEALING_KINDS,
    KINDS,
    RISKS,
    StatusChange,
    Task,
    TaskLedger,
    TaskScope,
    TaskSource,
    check_task_id,
    new_task_id,
)
from openloop.state.policy import max_risk
from openloop.state.taskinput import check_scope
from openloop.text import check_line, check_text

MAX_SUBTASKS = 20
SPEC_DIR = ".openloop/specs"
_FENCE = re.compile(r"^```+\s*openloop-subtasks\s*\n(.*?)^```+\s*$", re.M | re.S)
_HEADING = re.compile(r"^#{1,6}\s*(.+?)\s*$", re.M)
_BULLET = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+(.+?)\s*$")
_KEYS = {
    "id",
    "title",
    "description",
    "kind",
    "risk",
    "scope",
    "acceptance",
    "priority",
    "dependsOn",
}


def spec_path(task_id: str) -> str:
    return f"{SPEC_DIR}/{task_id}.md"


def files_to_touch(spec: str) -> list[str]:
    """The paths listed under the spec's "Files to touch" heading (invalid ones dropped)."""
    headings = list(_HEADING.finditer(spec))
    for i, heading in enumerate(headings):
        if "files to touch" not in heading.group(1).lower():
            continue
        end = headings[i + 1].start() if i + 1 < len(headings) else len(spec)
        paths: list[str] = []
        for line in spec[heading.end() : end].splitlines():
            bullet = _BULLET.match(line)
            if not bullet:
                continue
            text = bullet.group(1)
            quoted = re.match(r"`([^`]+)`", text)
            raw = quoted.group(1) if quoted else text.split()[0]
            try:
                paths += [p for p in check_scope([raw]) if p not in paths]
            except InputError:
                continue
        return paths[:50]
    return []


def subtasks(spec: str, ledger: TaskLedger, parent: Task) -> list[dict[str, Any]]:
    """The validated `openloop-subtasks` block, or [] without one; InputError names the first
    problem (the planner sees it on its next attempt)."""
    blocks = _FENCE.findall(spec)
    if not blocks:
        return []
    if len(blocks) > 1:
        raise InputError("more than one openloop-subtasks block")
    try:
        items = yaml.safe_load(blocks[0])
    except yaml.YAMLError as exc:
        raise InputError(f"openloop-subtasks: invalid YAML: {exc}") from None
    if not isinstance(items, list) or not items:
        raise InputError("openloop-subtasks: expected a non-empty list of tasks")
    if len(items) > MAX_SUBTASKS:
        raise InputError(f"openloop-subtasks: at most {MAX_SUBTASKS} subtasks")
    local: set[str] = set()
    out = []
    for n, item in enumerate(items, 1):
        where = f"openloop-subtasks item {n}"
        if not isinstance(item, dict):
            raise InputError(f"{where}: expected a mapping with a title")
        if unknown := set(item) - _KEYS:
            raise InputError(f"{where}: unknown key(s): {', '.join(sorted(map(str, unknown)))}")
        title = item.get("title")
        if not isinstance(title, str) or not title.strip():
            raise InputError(f"{where}: title: required text")
        check_line(title, f"{where}: title", "titles")
        local_id = item.get("id")
        if local_id is not None:
            check_task_id(str(local_id), option=f"{where}: id")
            if local_id in local:
                raise InputError(f"{where}: id '{local_id}' is used twice")
        description = item.get("description")
        if description is not None:
            if not isinstance(description, str):
                raise InputError(f"{where}: description: expected text")
            description = check_text(description, f"{where}: description")
        kind = item.get("kind", "chore")
        if kind not in KINDS or kind in HEALING_KINDS or kind in ("feature", "epic"):
            raise InputError(f"{where}: kind: '{kind}' is not a kind a subtask may have")
        risk = item.get("risk", parent.risk)
        if risk not in RISKS:
            raise InputError(f"{where}: risk: '{risk}' (one of: {', '.join(RISKS)})")
        # The planner is the agent: it may raise a subtask's risk, never lower it below what
        # the user declared for the whole (a low-risk subtask could auto-merge unreviewed).
        risk = max_risk(risk, parent.risk)
        scope = _strings(item, "scope", where)
        try:
            scope = check_scope(scope)
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None
        acceptance = _strings(item, "acceptance", where)
        for criterion in acceptance:
            check_line(criterion, f"{where}: acceptance", "acceptance criteria")
        priority = item.get("priority", parent.priority)
        if type(priority) is not int:
            raise InputError(f"{where}: priority: expected a whole number")
        depends = _strings(item, "dependsOn", where)
        for dep in depends:
            if dep not in local and ledger.find(dep) is None:
                raise InputError(
                    f"{where}: dependsOn: '{dep}' is neither an earlier item's id nor a task"
                )
            if dep == parent.id:
                raise InputError(f"{where}: dependsOn: a subtask cannot wait for its parent")
        if local_id is not None:
            local.add(str(local_id))
        out.append(
            {
                "localId": None if local_id is None else str(local_id),
                "title": title.strip(),
                "description": description,
                "kind": kind,
                "risk": risk,
                "scope": scope,
                "acceptance": acceptance,
                "priority": priority,
                "dependsOn": depends,
            }
        )
    return out


def _strings(item: dict[str, Any], key: str, where: str) -> list[str]:
    value = item.get(key) or []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputError(f"{where}: {key}: expected a list of text")
    return value


def create_subtasks(
    ledger: TaskLedger, parent: Task, items: list[dict[str, Any]], spec_commit: str, now: str
) -> list[str]:
    """Add the validated subtasks as `ready` tasks sharing the parent's spec; returns ids."""
    ids: dict[str, str] = {}
    made = []
    for item in items:
        task_id = new_task_id(ledger, f"{parent.id} {item['localId'] or item['title']}")
        if item["localId"]:
            ids[item["localId"]] = task_id
        task = Task(
            id=task_id,
            title=item["title"],
            description=item["description"],
            kind=item["kind"],
            status="ready",
            risk=item["risk"],
            priority=item["priority"],
            scope=TaskScope(paths=item["scope"]) if item["scope"] else None,
            depends_on=[ids.get(d, d) for d in item["dependsOn"]],
            source=TaskSource(type="spec", ref=parent.id),
            spec_id=spec_path(parent.id),
            spec_commit=spec_commit,
            owner="openloop",
            acceptance_criteria=item["acceptance"],
            created_at=now,
            updated_at=now,
        )
        task.history.append(
            StatusChange(at=now, from_=None, to="ready", reason=f"subtask of {parent.id}")
        )
        ledger.tasks.append(task)
        made.append(task_id)
    return made
