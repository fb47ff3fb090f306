"""Role prompts: templates under templates/prompts/, overridable per project in
`<repo>/.openloop/prompts/<role>.md`. Everything that comes from users or issue trackers goes in
delimited data blocks so the agent can tell data from instructions."""

from __future__ import annotations

from pathlib import Path
from string import Template

from openloop.resources import template_path
from openloop.state.ledger import Task

ROLES = ("implementer", "sdd-planner", "repo-improver", "ci-healer")
SELF_HEALING_KINDS = frozenset({"lint-fix", "type-fix", "localized-test-fix", "ci-heal"})


def role_for(task: Task, mode: str) -> str:
    if task.kind in SELF_HEALING_KINDS:
        return "ci-healer"
    if task.kind in ("discovery", "scope-proposal"):
        return "repo-improver"
    return "sdd-planner" if mode == "plan" else "implementer"


def data_block(label: str, text: str) -> str:
    """Wrap untrusted text; a closing tag inside the data cannot end the block early."""
    safe = text.replace("<task-data", "<\u200btask-data").replace(
        "</task-data", "<\u200b/task-data"
    )
    return f'<task-data name="{label}">\n{safe.rstrip()}\n</task-data>'


def _template(role: str, repo: Path) -> str:
    override = repo / ".openloop" / "prompts" / f"{role}.md"
    if override.is_file():
        return override.read_text(encoding="utf-8")
    return template_path("prompts", f"{role}.md").read_text(encoding="utf-8")


def runtime_rules() -> str:
    return template_path("prompts", "runtime-rules.md").read_text(encoding="utf-8")


def build_prompt(
    *,
    role: str,
    repo: Path,
    task: Task,
    attempt: int,
    validation: dict[str, str | None],
    policy_summary: str,
    spec_text: str | None = None,
    spec_path: str | None = None,
    previous_failure: str | None = None,
) -> str:
    lines = [f"Task {task.id} (kind {task.kind}, declared risk {task.risk}, attempt {attempt})"]
    task_fields = [f"title: {task.title}"]
    if task.source.type != "human" and task.source.ref:
        task_fields.append(f"source: {task.source.type} {task.source.ref}")
    if task.description:
        task_fields.append(f"description:\n{task.description}")
    if task.acceptance_criteria:
        task_fields.append(
            "acceptance criteria:\n" + "\n".join(f"- {c}" for c in task.acceptance_criteria)
        )
    lines.append(data_block("task", "\n".join(task_fields)))
    scope = task.scope_paths()
    scope_block = (
        "## Scope\nChange only paths matching:\n" + "\n".join(f"- `{p}`" for p in scope) + "\n"
        if scope
        else ""
    )
    retry_block = ""
    if previous_failure:
        retry_block = (
            "## The previous attempt failed\nIt started from the same commit you start from; "
            "its changes are gone. What failed:\n"
            + data_block("previous-failure", previous_failure)
            + "\n"
        )
    spec_block = f"## Specification\n{data_block('spec', spec_text)}\n" if spec_text else ""
    configured = [(n, c) for n, c in validation.items() if c]
    validation_block = (
        "\n".join(f"- {name}: `{command}`" for name, command in configured)
        if configured
        else "- (no checks configured: your change will go to human review)"
    )
    values = {
        "task_block": "\n".join(lines) + "\n",
        "scope_block": scope_block,
        "retry_block": retry_block,
        "spec_block": spec_block,
        "validation_block": validation_block,
        "policy_block": f"\n## Policy\n{policy_summary.strip()}\n" if policy_summary else "",
        "spec_path": spec_path or f".openloop/specs/{task.id}.md",
    }
    return Template(_template(role, repo)).safe_substitute(values)
