"""The task ledger's vocabulary: statuses, kinds, risks and the id pattern. Plain values with
no model behind them, so that option parsing and listings import them without pydantic's
models of a whole task (state/ledger.py re-exports them)."""

from __future__ import annotations

import re
from typing import Literal

LEDGER_VERSION = 2

Status = Literal[
    "proposed",
    "planned",
    "ready",
    "in_progress",
    "validating",
    "review",
    "done",
    "promoted",
    "blocked",
    "failed",
    "cancelled",
]
STATUSES: tuple[str, ...] = Status.__args__  # type: ignore[attr-defined]
Kind = Literal[
    "feature",
    "epic",
    "bugfix",
    "test",
    "refactor",
    "docs",
    "lint-fix",
    "type-fix",
    "localized-test-fix",
    "ci-heal",
    "discovery",
    "scope-proposal",
    "chore",
]
KINDS: tuple[str, ...] = Kind.__args__  # type: ignore[attr-defined]
Risk = Literal["low-risk", "medium-risk", "high-risk"]
RISKS: tuple[str, ...] = Risk.__args__  # type: ignore[attr-defined]

# Ids become branch names, worktree directories and file names: checked on every load, not
# only when the CLI creates them (a ledger can be hand-edited, versioned, or pulled).
TASK_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,99}$"
TASK_ID_RE = re.compile(TASK_ID_PATTERN)
