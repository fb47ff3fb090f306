"""Printing: tables for people, JSON for scripts (the default when stdout is not a terminal).

Whatever a file holds is printed safely: tables and messages escape control characters (a
title with a newline or an escape sequence, from a hand-edited ledger or an older version,
shows as `\n`/`\x1b`), and JSON escapes the few controls JSON itself allows raw.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from openloop.text import escape, escape_json, escape_text


def want_json(fmt: str | None, isatty: bool) -> bool:
    if fmt is None:
        return not isatty
    return fmt == "json"


def print_json(data: Any) -> None:
    """Pretty JSON; pydantic models inside `data` are dumped with their file (camelCase) keys.

    pydantic-core's encoder is used because the stdlib's indenting encoder is pure Python and
    dominates `task list --json` on large ledgers.
    """
    from pydantic_core import to_json

    click.echo(escape_json(to_json(data, indent=2, by_alias=True).decode()))


def print_table(
    rows: Sequence[dict[str, Any]], columns: Sequence[str], empty: str = "(empty)"
) -> None:
    if not rows:
        click.echo(empty)
        return
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for r in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return escape(",".join(str(v) for v in value)) or "-"
    return escape(str(value))


def truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def info(message: str) -> None:
    """Progress and hints go to stderr so stdout stays parseable. They can quote task data or a
    repository's commands: controls other than the newline are escaped."""
    click.echo(escape_text(message), err=True)


def plain(text: str) -> None:
    """A line or a screen of plain output that may hold task data: newlines stay, every other
    control character is escaped."""
    click.echo(escape_text(text))
