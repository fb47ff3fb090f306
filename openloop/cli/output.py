"""Printing: tables for people, JSON for scripts (the default when stdout is not a terminal)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click


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

    click.echo(to_json(data, indent=2, by_alias=True).decode())


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
        return ",".join(str(v) for v in value) or "-"
    return str(value)


def truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def info(message: str) -> None:
    """Progress and hints go to stderr so stdout stays parseable."""
    click.echo(message, err=True)
