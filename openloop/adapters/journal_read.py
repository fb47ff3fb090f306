"""Reading OpenLoop's journal records back for `openloop logs` and `openloop events`: through
systemd-python's reader when installed, else `journalctl --user -o json`; matched by unit OR by
OpenLoop's own fields (adapters/journal.py says why), and only this OpenLoop home's."""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from openloop.adapters import journal
from openloop.adapters.journal import HOME_FIELD, IDENTIFIER, INFO
from openloop.errors import InputError, MissingFeatureError, OpenLoopError

# ------------------------------------------------------------------------------------ reading


@dataclass(frozen=True)
class Entry:
    time: datetime
    message: str
    priority: int
    unit: str | None
    project: str | None
    task: str | None
    run: str | None
    event: str | None
    fields: dict[str, str]


def _unit_project(unit: str | None, prefix: str) -> str | None:
    if unit and unit.startswith(prefix) and unit.endswith(".service"):
        return unit[len(prefix) : -len(".service")] or None
    return None


@dataclass(frozen=True)
class _Filter:
    project: str | None
    task: str | None
    run: str | None
    event_only: bool
    since: datetime | None
    prefix: str
    home: str | None = None  # OPENLOOP_HOME_ID of the home whose records are wanted
    aliases: frozenset[str] = frozenset()  # its projects: untagged records must name one

    def groups(self, unique: Callable[[str], set[str]]) -> list[list[str]]:
        """Journal matches: ORed groups of ANDed FIELD=value (matches() is the exact rule)."""
        if self.project is not None:
            unit = f"{self.prefix}{self.project}.service"
            # USER_UNIT= marks the manager's lines about the unit (started, timeout, failed).
            base = [f"_SYSTEMD_USER_UNIT={unit}", f"USER_UNIT={unit}",
                    f"OPENLOOP_PROJECT={self.project}"]  # fmt: skip
        else:  # matches cannot say "openloop@*", so list the values the journal holds
            units = {f"{f}={u}" for f in ("_SYSTEMD_USER_UNIT", "USER_UNIT") for u in unique(f)
                     if _unit_project(u, self.prefix)}  # fmt: skip
            projects = {f"OPENLOOP_PROJECT={p}" for p in unique("OPENLOOP_PROJECT")}
            base = [*sorted(units | projects), f"SYSLOG_IDENTIFIER={IDENTIFIER}"]
        # Our uid only, as `journalctl --user -u` does: other users' records are not ours.
        extra = [f"_UID={os.getuid()}"]
        extra += [f"OPENLOOP_TASK={self.task}"] if self.task is not None else []
        extra += [f"OPENLOOP_RUN={self.run}"] if self.run is not None else []
        return [[b, *extra] for b in base]

    def matches(self, e: Entry) -> bool:
        own = _unit_project(e.unit, self.prefix)
        if self.home is not None:
            tag = e.fields.get(HOME_FIELD)
            if tag is not None and tag != self.home:
                return False  # another OpenLoop home's record, whatever its project
            if tag is None and not (e.project in self.aliases or own in self.aliases):
                return False  # untagged (the unit's output, an older OpenLoop): by alias only
        if self.project is not None and self.project not in (e.fields.get("OPENLOOP_PROJECT"), own):
            return False
        if self.project is None and not (
            own
            or e.fields.get("SYSLOG_IDENTIFIER") == IDENTIFIER
            or any(k.startswith("OPENLOOP_") for k in e.fields)
        ):
            return False  # fmt: skip
        return ((self.task is None or e.task == self.task)
                and (self.run is None or e.run == self.run)
                and (e.event is not None or not self.event_only)
                and (self.since is None or e.time >= self.since))  # fmt: skip


def _str(value: Any) -> str:
    if isinstance(value, list):  # journalctl: binary data as a byte list; repeated field: a list
        if value and all(isinstance(v, int) for v in value):
            return bytes(value).decode("utf-8", "replace")
        return _str(value[-1]) if value else ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def entry_from_fields(raw: dict[str, Any], prefix: str = "openloop@") -> Entry | None:
    """An Entry from a record's fields (a Reader dict or a journalctl JSON object)."""
    f = {k: _str(v) for k, v in raw.items() if v is not None}
    try:
        when = datetime.fromtimestamp(int(f["__REALTIME_TIMESTAMP"]) / 1e6).astimezone()
    except (KeyError, ValueError):
        return None
    prio = f.get("PRIORITY", "")
    # The manager's lines about a unit come from its init.scope and name the unit in USER_UNIT.
    unit = f.get("_SYSTEMD_USER_UNIT")
    unit = unit if _unit_project(unit, prefix) else f.get("USER_UNIT") or unit
    return Entry(when, f.get("MESSAGE", ""), int(prio) if prio.isdigit() else INFO, unit,
                 f.get("OPENLOOP_PROJECT") or _unit_project(unit, prefix), f.get("OPENLOOP_TASK"),
                 f.get("OPENLOOP_RUN"), f.get("OPENLOOP_EVENT"), f)  # fmt: skip


def parse_json_lines(text: str, prefix: str = "openloop@") -> list[Entry]:
    """Entries from `journalctl -o json` output, one object a line; anything else is skipped."""
    out = []
    for line in text.splitlines():
        try:
            raw = json.loads(line)
        except ValueError:
            continue
        if isinstance(raw, dict) and (entry := entry_from_fields(raw, prefix)):
            out.append(entry)
    return out


def _open_reader(flt: _Filter, groups: bool = True) -> Any:
    # Default flags (LOCAL_ONLY) plus the _UID match, not CURRENT_USER: that opens only
    # user-UID.journal, which journald writes only with persistent storage.
    r = journal._sd.Reader()
    # Strings everywhere, as journalctl gives them; these two come from the reader computed.
    r.converters = {"__REALTIME_TIMESTAMP": str, "__CURSOR": str,
                    "__MONOTONIC_TIMESTAMP": lambda _: None}  # fmt: skip
    for i, group in enumerate(flt.groups(r.query_unique) if groups else []):
        if i:
            r.add_disjunction()
        r.add_match(*group)
    return r


def _reader_entries(flt: _Filter, limit: int | None) -> list[Entry]:
    out: list[Entry] = []
    with _open_reader(flt) as r:
        if limit is None:
            if flt.since is not None:
                r.seek_realtime(flt.since.timestamp())
            entries = (entry_from_fields(raw, flt.prefix) for raw in iter(r.get_next, {}))
            return [e for e in entries if e and flt.matches(e)]
        r.seek_tail()  # newest first, so a short tail of a long journal stays cheap
        while len(out) < limit and (raw := r.get_previous()):
            e = entry_from_fields(raw, flt.prefix)
            if e and flt.since is not None and e.time < flt.since:
                break
            if e and flt.matches(e):
                out.append(e)
    return out[::-1]


def _journalctl(*args: str) -> list[str]:
    exe = shutil.which("journalctl")
    if exe is None:
        raise MissingFeatureError("reading the journal needs systemd-python"
                                  " (pip install 'openloop[journal]') or journalctl")  # fmt: skip
    return [exe, "--user", "--no-pager", "--output=json", "--all", *args]  # --all: >4 KiB values


def _run(argv: list[str]) -> str:
    cp = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    if cp.returncode != 0 and "No entries" not in cp.stderr:
        raise OpenLoopError(f"journalctl failed: {cp.stderr.strip() or cp.returncode}")
    return cp.stdout


def _journalctl_entries(flt: _Filter, limit: int | None) -> list[Entry]:
    args = [f"--since=@{flt.since.timestamp():.6f}"] if flt.since is not None else []

    def unique(field: str) -> set[str]:
        return set(_run(_journalctl(f"--field={field}")).splitlines())

    for i, group in enumerate(flt.groups(unique)):
        args += ["+", *group] if i else group  # journalctl's "+" is the disjunction
    found = [e for e in parse_json_lines(_run(_journalctl(*args)), flt.prefix) if flt.matches(e)]
    return found if limit is None else found[len(found) - limit :] if limit > 0 else []


def _entries(flt: _Filter, limit: int | None) -> list[Entry]:
    if journal._sd is not None:
        try:
            return _reader_entries(flt, limit)
        except OSError:
            pass  # e.g. no readable journal files: journalctl may still manage or explain
    return _journalctl_entries(flt, limit)


def _local(since: datetime | None) -> datetime | None:
    return since.astimezone() if since is not None and since.tzinfo is None else since


def read(*, project: str | None = None, task: str | None = None, run: str | None = None,
         event_only: bool = False, since: datetime | None = None, unit_prefix: str = "openloop@",
         limit: int | None = None, home: str | None = None,
         aliases: Collection[str] = ()) -> list[Entry]:  # fmt: skip
    """OpenLoop's entries, oldest first (with ``limit``, the last ``limit`` of them). A project's
    are those of unit <unit_prefix><project>.service (its output and the manager's lines about
    it) and those with OPENLOOP_PROJECT=<project>; project=None: all of OpenLoop's. With
    ``home``, only that home's: records tagged with its id, and untagged ones (the units' own
    output, records of an OpenLoop without the tag) of a project in ``aliases``."""
    flt = _Filter(project, task, run, event_only, _local(since), unit_prefix, home,
                  frozenset(aliases))  # fmt: skip
    return _entries(flt, limit)


def untagged_record(entry: Entry) -> bool:
    """A structured record of OpenLoop's without the home tag: written by an older version."""
    return HOME_FIELD not in entry.fields and any(
        k in entry.fields for k in ("OPENLOOP_PROJECT", "OPENLOOP_EVENT", "OPENLOOP_RUN")
    )


def follow(*, project: str | None = None, task: str | None = None, run: str | None = None,
           event_only: bool = False, since: datetime | None = None,
           unit_prefix: str = "openloop@", limit: int | None = 0,
           stop: threading.Event | None = None, poll: float = 0.5, home: str | None = None,
           aliases: Collection[str] = ()) -> Iterator[Entry]:  # fmt: skip
    """The last ``limit`` entries as read() gives them (None: all since ``since``), then each
    new one as it arrives, until ``stop`` is set or the generator is closed. Wakes every
    ``poll`` seconds, so Ctrl-C and ``stop`` take effect promptly."""
    flt = _Filter(project, task, run, event_only, _local(since), unit_prefix, home,
                  frozenset(aliases))  # fmt: skip
    stop = stop or threading.Event()
    if journal._sd is not None:
        with _open_reader(flt, groups=False) as r:
            r.add_match(f"_UID={os.getuid()}")  # units that appear later must match: in Python
            r.seek_tail()
            r.get_previous()  # a reader at the tail returns only what is appended from now on
            seen = set()
            for e in _entries(flt, limit) if limit != 0 else []:
                seen.add(e.fields.get("__CURSOR"))
                yield e
            while not stop.is_set():
                if not (raw := r.get_next()):
                    r.wait(poll)
                elif (e := entry_from_fields(raw, flt.prefix)) and flt.matches(e):
                    if e.fields.get("__CURSOR") not in seen:
                        yield e
        return
    yield from _follow_journalctl(flt, limit, stop, poll)


def _follow_journalctl(flt: _Filter, limit: int | None, stop: threading.Event,
                       poll: float) -> Iterator[Entry]:  # fmt: skip
    start = time.time()  # before the backlog: what arrives meanwhile comes twice, deduplicated
    seen = set()
    for e in _journalctl_entries(flt, limit) if limit != 0 else []:
        seen.add(e.fields.get("__CURSOR"))
        yield e
    argv = _journalctl("--follow", "--lines=all", f"--since=@{start:.6f}", f"_UID={os.getuid()}")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    fd, buf = proc.stdout.fileno(), b""  # type: ignore[union-attr]
    try:
        while not stop.is_set():
            if not select.select([fd], [], [], poll)[0]:
                continue
            if not (chunk := os.read(fd, 65536)):
                raise OpenLoopError(f"journalctl --follow exited with {proc.wait()}")
            *lines, buf = (buf + chunk).split(b"\n")
            text = b"\n".join(lines).decode("utf-8", "replace")
            for e in parse_json_lines(text, flt.prefix):
                if e.fields.get("__CURSOR") not in seen and flt.matches(e):
                    yield e
    finally:
        proc.terminate()
        proc.wait()


# ------------------------------------------------------------------------------ for humans

_DURATION = re.compile(r"(?:\d{1,9}[smhdw])+")
_PART = re.compile(r"(\d{1,9})([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime) -> datetime:
    """A time back from now: 30s, 90m, 1h, 1h30m, 2d, 1w, also as -1h (journalctl's relative
    form) or "1h ago"; an absolute time: 2026-11-25, 2026-11-25T10:00, "2026-11-25 10:00", ISO
    with an offset or Z; today, yesterday. Dates are local wall time; the result is aware when
    ``now`` is. Anything else is an InputError: the original tool silently read a bad value as
    1h."""
    t = text.strip()
    local = (lambda d: d.astimezone()) if now.tzinfo else (lambda d: d)
    lower = t.lower()
    both = lower.startswith("-") and lower.endswith("ago")  # "-1h ago": which way?
    relative = lower.removeprefix("-").removesuffix("ago").replace(" ", "")
    try:
        if relative and not both and _DURATION.fullmatch(relative):
            delta = timedelta()
            for amount, unit in _PART.findall(relative):
                delta += timedelta(**{_UNITS[unit]: int(amount)})
            return now - delta
        if t.lower() in ("today", "yesterday"):
            day = (now.astimezone() if now.tzinfo else now).date()
            day -= timedelta(days=t.lower() == "yesterday")
            return local(datetime(day.year, day.month, day.day))  # local midnight, DST-correct
        if re.match(r"\d{4}-\d{2}-\d{2}(?:$|[T ])", t):
            parsed = datetime.fromisoformat(t)
            if parsed.tzinfo is None:
                return local(parsed)
            return parsed if now.tzinfo else parsed.astimezone().replace(tzinfo=None)
    except (ValueError, OverflowError):
        pass
    raise InputError(
        f"--since: {text!r} is not a duration (30s, 15m, 1h, 1h30m, 2d, 1w; also -1h or 1h ago),"
        " a date (2026-11-25), a date and time (2026-11-25T10:00, '2026-11-25 10:00', ISO with"
        " an offset), today or yesterday"
    )


def format_entry(entry: Entry, *, with_project: bool = True, now: datetime | None = None) -> str:
    """`HH:MM:SS project [task] message`, with the date in front when it is not today."""
    when = entry.time.astimezone()
    today = (now or datetime.now()).astimezone().date()
    parts = [when.strftime("%H:%M:%S" if when.date() == today else "%Y-%m-%d %H:%M:%S")]
    parts += [entry.project] if with_project and entry.project else []
    parts += [f"[{entry.task}]"] if entry.task else []
    return " ".join([*parts, entry.message.rstrip("\n")])


def entry_to_json(entry: Entry) -> dict[str, Any]:
    """Without journald's trusted (_*) and address (__*) fields: they are not OpenLoop's."""
    fields = {k: v for k, v in entry.fields.items()
              if not k.startswith("_") and k not in ("MESSAGE", "PRIORITY")}  # fmt: skip
    return {"time": entry.time.isoformat(), "priority": entry.priority, "message": entry.message,
            "unit": entry.unit, "project": entry.project, "task": entry.task,
            "role": entry.fields.get("OPENLOOP_ROLE"), "run": entry.run, "event": entry.event,
            "fields": fields}  # fmt: skip
