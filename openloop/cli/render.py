"""Human output for the `show` commands: sections, wrapped text, relative times, colour.

One rule for every command (`want_json` in output.py): JSON when stdout is not a terminal or
with `--json`/`--format json`; this screen otherwise. The JSON keeps its exact shape; these
functions only read it.

Colour follows `--color auto|always|never` (auto: a terminal, `NO_COLOR` unset and `TERM` not
`dumb`). Everything quoted from a file goes through `escape`/`escape_text`, so task data can
neither move the cursor nor fake a colour.
"""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import click

from openloop.text import escape, escape_text

COLOR_CHOICES = ("auto", "always", "never")
_META_KEY = "openloop.color"


def color_option(func):
    """`--color auto|always|never` on a command (the root group has it too)."""
    return click.option(
        "--color",
        "color",
        type=click.Choice(COLOR_CHOICES),
        default=None,
        expose_value=False,
        callback=_remember_color,
        help="Colour on the terminal output (default auto: off when NO_COLOR is set).",
    )(func)


def _remember_color(ctx: click.Context, _param, value: str | None) -> str | None:
    if value is not None:
        ctx.meta[_META_KEY] = value
    return value


def color_choice() -> str | None:
    """The --color given to this command or to `openloop` itself, if any."""
    ctx = click.get_current_context(silent=True)
    return ctx.meta.get(_META_KEY) if ctx is not None else None


def use_color(env, choice: str | None = None) -> bool:
    """Whether to colour stdout: the command's or the root's --color, else auto."""
    choice = choice or color_choice() or "auto"
    if choice == "always":
        return True
    if choice == "never":
        return False
    environ = env.environ
    if environ.get("NO_COLOR"):
        return False
    if environ.get("TERM") == "dumb":
        return False
    return bool(env.stdout_isatty)


def terminal_width() -> int:
    return max(40, min(shutil.get_terminal_size((100, 24)).columns, 110))


# --- times --------------------------------------------------------------------------------------


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def relative(when: datetime, now: datetime) -> str:
    """'just now', '4 min ago', 'in 2 h', '3 days ago'."""
    seconds = (now - when).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 45:
        return "just now" if not future else "in a few seconds"
    if seconds < 3600:
        text = f"{round(seconds / 60)} min"
    elif seconds < 86400 * 2:
        hours = seconds / 3600
        text = f"{hours:.0f} h" if hours >= 10 else f"{hours:.1f}".rstrip("0").rstrip(".") + " h"
    else:
        text = f"{round(seconds / 86400)} days"
    return f"in {text}" if future else f"{text} ago"


def when(value: Any, now: datetime, *, seconds: bool = False) -> str:
    """Local time and how long ago: '2026-11-30 15:22 (4 min ago)'."""
    parsed = parse_time(value)
    if parsed is None:
        return "-" if not value else escape(str(value))
    fmt = "%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M"
    return f"{parsed.astimezone().strftime(fmt)} ({relative(parsed, now)})"


# --- a screen -----------------------------------------------------------------------------------


@dataclass
class Screen:
    """Lines built section by section, then printed at once."""

    color: bool
    width: int = field(default_factory=terminal_width)
    lines: list[str] = field(default_factory=list)

    # styles
    def style(self, text: str, **kw: Any) -> str:
        return click.style(text, **kw) if self.color else text

    def bold(self, text: str) -> str:
        return self.style(text, bold=True)

    def dim(self, text: str) -> str:
        return self.style(text, dim=True)

    def status(self, status: Any) -> str:
        text = escape(str(status)) if status is not None else "-"
        colour = STATUS_COLOURS.get(str(status))
        return self.style(text, fg=colour, bold=True) if colour else text

    # building
    def title(self, *parts: str) -> None:
        self.lines.append(self.bold("  ".join(p for p in parts if p)))

    def section(self, name: str) -> None:
        if self.lines:
            self.lines.append("")
        self.lines.append(self.style(name, fg="cyan", bold=True))

    def field(self, label: str, value: str, width: int = 11) -> None:
        """A 'label  value' line; `value` is already safe (escaped or styled)."""
        self.lines.append(f"  {label.ljust(width)}  {value}")

    def item(self, text: str, bullet: str = "-") -> None:
        indent = "  " + bullet + " "
        wrapped = textwrap.wrap(
            escape(text), self.width - len(indent), break_long_words=False, break_on_hyphens=False
        ) or [""]
        self.lines.append(indent + wrapped[0])
        self.lines.extend(" " * len(indent) + rest for rest in wrapped[1:])

    def text(self, body: str, indent: int = 2) -> None:
        """Multi-line text (a description): paragraphs wrapped, line breaks kept."""
        pad = " " * indent
        for raw in escape_text(body).rstrip().splitlines() or [""]:
            raw = raw.replace("\t", "    ")
            if not raw.strip():
                if self.lines and self.lines[-1]:
                    self.lines.append("")  # runs of blank lines show as one
                continue
            lead = len(raw) - len(raw.lstrip(" "))
            self.lines.extend(
                textwrap.wrap(
                    raw.strip(),
                    self.width - indent,
                    initial_indent=pad + " " * lead,
                    subsequent_indent=pad + " " * lead,
                    break_long_words=False,
                    break_on_hyphens=False,
                )
            )

    def verbatim(self, body: str, indent: int = 2) -> None:
        for raw in escape_text(body).rstrip("\n").splitlines():
            self.lines.append((" " * indent + raw.replace("\t", "    ")).rstrip())

    def line(self, text: str = "") -> None:
        self.lines.append(text)

    def echo(self) -> None:
        click.echo("\n".join(self.lines), color=self.color)


STATUS_COLOURS = {
    "ready": "blue",
    "proposed": "blue",
    "planned": "blue",
    "in_progress": "yellow",
    "validating": "yellow",
    "review": "magenta",
    "pending": "magenta",
    "deferred": "yellow",
    "promoted": "green",
    "merged": "green",
    "applied": "green",
    "done": "green",
    "passed": "green",
    "completed": "green",
    "blocked": "red",
    "failed": "red",
    "rejected": "red",
    "cancelled": "white",
    "not-configured": "white",
}


def _list(values: Iterable[Any] | None) -> str:
    items = [escape(str(v)) for v in values or ()]
    return ", ".join(items) if items else "-"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _money(value: Any) -> str:
    try:
        return f"${float(value):.4f}"
    except (TypeError, ValueError):
        return "-"
