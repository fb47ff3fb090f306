"""Role prompts: templates under templates/prompts/, overridable per project in
`<repo>/.openloop/prompts/<role>.md`. Everything that comes from users or issue trackers goes in
delimited data blocks so the agent can tell data from instructions: the title, description,
acceptance criteria and source, the scope, the spec and the previous failure."""

from __future__ import annotations

import re
from pathlib import Path
from string import Template

from openloop.resources import template_path
from openloop.state.ledger import Task
from openloop.text import escape, escape_text

ROLES = ("implementer", "sdd-planner", "repo-improver", "ci-healer")
SELF_HEALING_KINDS = frozenset({"lint-fix", "type-fix", "localized-test-fix", "ci-heal"})


def role_for(task: Task, mode: str) -> str:
    if task.kind in SELF_HEALING_KINDS:
        return "ci-healer"
    if task.kind in ("discovery", "scope-proposal") or task.source.type == "discovery":
        return "repo-improver"
    return "sdd-planner" if mode == "plan" else "implementer"


# Anything a reader might take for the block's opening or closing tag, in any case and spacing:
# `</TASK_DATA >`, `< /task-data>`, `</task data>`, with tabs, newlines or invisible characters
# (zero-width space, soft hyphen...) in between. The reader is a language model, which is
# lenient about tags, so the match is lenient too; false positives only cost an `&lt;`.
_GAP = r"[\s\u00ad\u200b-\u200f\u2060\ufeff]*"
_TAG_LOOKALIKE = re.compile(rf"<(?={_GAP}/?{_GAP}task{_GAP}[-_.:]?{_GAP}data)", re.IGNORECASE)


def data_block(label: str, text: str) -> str:
    """Wrap untrusted text; nothing inside the data can end the block early or open another.

    The `<` of every tag lookalike becomes `&lt;`, a visible escape the agent reads as text.
    A per-prompt random delimiter was the alternative: it needs no escaping, but the delimiter
    changes on every run (prompts stop being reproducible and comparable across attempts) and
    the data can still print a plausible-looking `</task-data>` that a lenient reader may
    honour. Escaping keeps the one documented tag and makes every lookalike inert.
    """
    safe = _TAG_LOOKALIKE.sub("&lt;", text)
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
    # One-line fields are escaped so they stay one line even from a hand-edited ledger: a title
    # cannot forge a "description:" line of its own. Input checks refuse such text earlier.
    task_fields = [f"title: {escape(task.title)}"]
    if task.source.type != "human" and task.source.ref:
        task_fields.append(f"source: {task.source.type} {escape(task.source.ref)}")
    if task.description:
        task_fields.append(f"description:\n{escape_text(task.description)}")
    if task.acceptance_criteria:
        task_fields.append(
            "acceptance criteria:\n" + "\n".join(f"- {escape(c)}" for c in task.acceptance_criteria)
        )
    lines.append(data_block("task", "\n".join(task_fields)))
    scope = task.scope_paths()
    # The heading is ours; the globs are the user's text, so they go in a data block too.
    scope_block = (
        "## Scope\nChange only paths matching these globs, one per line:\n"
        + data_block("scope", "\n".join(escape(p) for p in scope))
        + "\n"
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
