"""Text that is not one line: which characters a field may hold, and how the rest is shown.

Task text is data that may be hostile (a pasted title, a fetched issue, a hand-edited ledger).
Three rules, applied at the three edges:

- input from the command line is refused when it holds a control character (`check_line`,
  `check_text`): the user can retype it, and nothing half-valid reaches the ledger;
- input from an issue tracker cannot be retyped, so it is cleaned instead (`clean_line`,
  `clean_text`) and the caller says what was removed;
- output for a terminal escapes whatever the file holds (`escape`), because a ledger can be
  written by hand or by an older version; the models stay lax so such a ledger still loads.

"Control character" here is wider than Unicode's Cc: C0, DEL and C1, plus the characters that
move text around without being visible: the line and paragraph separators U+2028/U+2029 and the
bidirectional controls (Unicode's Bidi_Control property, the "Trojan Source" characters).
"""

from __future__ import annotations

import re

from openloop.errors import InputError

# Names for the error message; anything else is named by its code point.
_NAMES = {
    "\n": "newline",
    "\r": "carriage return",
    "\t": "tab",
    "\x1b": "escape",
    "\x00": "NUL",
    "\x7f": "delete",
    "\x85": "next line",
    "\u2028": "line separator U+2028",
    "\u2029": "paragraph separator U+2029",
}
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_CONTROL_CLASS = f"\x00-\x1f\x7f-\x9f\u2028\u2029{_BIDI}"
CONTROL_RE = re.compile(f"[{_CONTROL_CLASS}]")
# Multi-line text keeps newlines and tabs; every other control is still refused or removed.
_TEXT_CONTROL_RE = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029{_BIDI}]")
# The ASCII part of _TEXT_CONTROL_RE, one character at a time.
_ASCII_CONTROLS = tuple(chr(c) for c in (*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F))
# The line ends a fetched body may use; each becomes one newline.
_LINE_BREAKS = re.compile(r"\r\n|[\r\u2028\u2029\x85\x0b\x0c]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def describe(ch: str) -> str:
    """'newline', 'escape', 'U+202E'... for messages."""
    name = _NAMES.get(ch)
    if name:
        return name
    if "\u202a" <= ch <= "\u202e" or "\u2066" <= ch <= "\u2069" or ch in "\u061c\u200e\u200f":
        return f"bidirectional control U+{ord(ch):04X}"
    return f"U+{ord(ch):04X}"


def _refuse(match: re.Match[str], option: str, rule: str) -> InputError:
    # The value itself is not echoed: it is what must not reach the terminal.
    return InputError(
        f"{option}: contains a control character ({describe(match.group())}) "
        f"at position {match.start() + 1}; {rule}"
    )


def check_line(value: str, option: str, what: str = "values") -> str:
    """A one-line field from the command line (title, scope, ref, id, reason...): refused with
    exit 2 on any control character, tab and newline included."""
    match = CONTROL_RE.search(value)
    if match:
        raise _refuse(match, option, f"{what} are one line")
    return value


def check_text(value: str, option: str) -> str:
    """A multi-line field (a description): newlines and tabs are fine, other controls are not.
    Windows line ends (CRLF) are taken as newlines rather than refused; a lone CR is refused
    (it rewrites the terminal line it is printed on)."""
    value = value.replace("\r\n", "\n")
    match = _TEXT_CONTROL_RE.search(value)
    if match:
        raise _refuse(match, option, "only newlines and tabs are allowed")
    return value


def control_names(value: str) -> list[str]:
    """The distinct control characters in `value`, named, in order of first appearance."""
    return list(dict.fromkeys(describe(c) for c in CONTROL_RE.findall(value)))


def clean_line(value: str) -> tuple[str, list[str]]:
    """An external one-line value (a fetched issue title): whitespace and line breaks collapse to
    single spaces, other controls are dropped. Returns the text and the names of the controls it
    held (empty when there were none), so the caller can say so."""
    found = control_names(value)
    text = " ".join(CONTROL_RE.sub(_space_or_nothing, value).split())
    return text, found


def _space_or_nothing(match: re.Match[str]) -> str:
    return " " if match.group().isspace() else ""


def clean_text(value: str) -> tuple[str, list[str]]:
    """An external multi-line value (a fetched issue body): line ends become newlines (bodies
    from GitHub carry CRLF, which is not worth a note), other controls are dropped and named."""
    text = _LINE_BREAKS.sub("\n", value)
    found = list(dict.fromkeys(describe(c) for c in _TEXT_CONTROL_RE.findall(text)))
    return _TEXT_CONTROL_RE.sub("", text), found


def _escape_one(match: re.Match[str]) -> str:
    ch = match.group()
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape(value: str) -> str:
    """For a terminal: every control character as a visible escape (`\\n`, `\\x1b`,
    `\\u202e`), so a title cannot break a table, move the cursor or reorder the line."""
    return CONTROL_RE.sub(_escape_one, value)


def escape_text(value: str) -> str:
    """`escape` for multi-line output: newlines and tabs stay, everything else is escaped."""
    return _TEXT_CONTROL_RE.sub(_escape_one, value)


def escape_json(encoded: str) -> str:
    """Encoded JSON with the controls JSON encoders leave raw (DEL, C1, U+2028/U+2029, bidi
    controls) turned into `\\uXXXX`: it decodes to exactly the same data, and nothing in it acts
    on a terminal. Safe on pretty-printed JSON: the only raw C0 characters an encoder writes
    are the newlines between tokens, which this leaves alone (C0 inside strings is already
    escaped by every encoder)."""
    if encoded.isascii() and not any(c in encoded for c in _ASCII_CONTROLS):
        # Nothing to replace: the common case, found by C-speed scans (the regex walks a
        # megabytes-long listing in Python's engine).
        return encoded
    return _TEXT_CONTROL_RE.sub(_unicode_escape, encoded)


def _unicode_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


# --- durations typed by a person ----------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+)\s*([hms])", re.IGNORECASE)
_DURATION_RE = re.compile(r"\s*(?:\d+\s*(?:h|m|s)\s*)+\s*|\s*\d+\s*", re.IGNORECASE)
_UNIT_SECONDS = {"h": 3600, "m": 60, "s": 1}


def parse_duration(raw: str, option: str, unit: str = "seconds") -> int:
    """'90s', '20m', '1h30m' or a bare number (already in `unit`) -> whole `unit`s.

    `unit` is 'seconds' or 'minutes'; a duration that is not a whole number of minutes is
    refused for a minutes setting rather than rounded."""
    text = raw.strip()
    if not text or not _DURATION_RE.fullmatch(text):
        raise InputError(
            f"{option}: '{escape(raw)}' is not a duration (examples: 90s, 20m, 1h30m, or a "
            f"number of {unit})"
        )
    if text.isdigit():
        return int(text)
    seconds = sum(
        int(number) * _UNIT_SECONDS[suffix.lower()]
        for number, suffix in _DURATION_PART.findall(text)
    )
    if unit == "minutes":
        if seconds % 60:
            raise InputError(f"{option}: '{escape(raw)}' is not a whole number of minutes")
        return seconds // 60
    return seconds


def duration_unit(key: str) -> str | None:
    """'seconds' or 'minutes' for a setting named like runTimeoutSeconds/intervalMinutes."""
    if key.endswith("Seconds"):
        return "seconds"
    if key.endswith("Minutes"):
        return "minutes"
    return None
