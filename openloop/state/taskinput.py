"""Checks on task fields that every way of creating a task shares (`task add`, the planner's
subtasks, healing and discovery)."""

from __future__ import annotations

from pathlib import PurePosixPath

from openloop.errors import InputError
from openloop.state.projectconfig import Planning
from openloop.text import check_line


def check_scope(paths: list[str] | tuple[str, ...]) -> list[str]:
    """Scope entries are repo-relative paths or globs; de-duplicated, order kept."""
    clean: list[str] = []
    for raw in paths:
        check_line(raw, "--scope", "scopes")
        path = raw.strip().replace("\\", "/")
        if not path:
            raise InputError("--scope: empty path")
        if path.startswith("/"):
            raise InputError(f"--scope: '{raw}' must be relative to the repository root")
        if ".." in PurePosixPath(path).parts:
            raise InputError(f"--scope: '{raw}' must not contain '..'")
        path = path.removeprefix("./")
        if path not in clean:
            clean.append(path)
    if clean:
        from openloop.state.judge import _scope_matcher

        try:
            _scope_matcher(clean)  # the same parser the policy check uses after the run
        except InputError as exc:
            raise InputError(f"--scope: {exc}".replace("task scope.paths: ", "")) from None
    return clean


def needs_plan(kind: str, description: str | None, planning: Planning) -> bool:
    """A new task the sdd-planner sees first: a kind that is planned (feature, epic) or a
    description longer than planning.descriptionChars."""
    return kind in planning.kinds or len(description or "") > planning.description_chars
