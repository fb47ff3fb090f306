"""OpenLoop's journal records: writing them (structured, secrets masked). Reading them back
for `openloop logs` and `openloop events` is adapters/journal_read.py.

Every record OpenLoop writes carries OPENLOOP_PROJECT/TASK/ROLE/RUN/EVENT itself, because for user
units the unit name is not reliable (output of short-lived processes can miss _SYSTEMD_USER_UNIT,
and the user manager ignores LogExtraFields=). Reading therefore matches the unit OR the fields.
systemd-python is optional: without it records go out in the native protocol over the journal
socket and are read back from `journalctl --user -o json`.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import socket
import struct
import sys
from dataclasses import dataclass
from typing import Any, TextIO

from openloop.env import serving_home_id

try:
    from systemd import journal as _sd
except ImportError:  # optional: the `journal` extra
    _sd = None

JOURNAL_SOCKET = "/run/systemd/journal/socket"
IDENTIFIER = "openloop"
HOME_FIELD = "OPENLOOP_HOME_ID"
ERR, WARNING, NOTICE, INFO = 3, 4, 5, 6
_FIELD_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}")  # journald silently drops anything else
_SECRETS = [
    (re.compile(r"\bsk-(?=[A-Za-z0-9_-]*\d)[A-Za-z0-9_-]{16,}"), "sk-***"),
    (re.compile(r"\b(?:ghp|gho|ghs|ghu|github_pat)_[A-Za-z0-9_]{16,}"), "gh***"),
    (re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"), "xox***"),
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), "AKIA***"),
    (re.compile(r"(?i)\b((?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]{8,}"), r"\1***"),
    (
        re.compile(
            r"(?i)\b([\w-]*(?:api[_-]?key|token|secret|passw(?:or)?d)[\"']?\s*[:=]\s*[\"']?)"
            r"[^\s\"',;&]+"
        ),
        r"\1***",
    ),  # fmt: skip
]


def redact(text: str) -> str:
    """Masks what looks like a credential: the journal outlives any key rotation."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


# ------------------------------------------------------------------------------------ writing


def make_record(message: str, *, priority: int = INFO, event: str | None = None,
                project: str | None = None, task: str | None = None, role: str | None = None,
                run: str | None = None, **fields: Any) -> dict[str, str]:  # fmt: skip
    """The fields of one record. ValueError for a bad priority or field name: that is a bug in
    the caller, unlike a missing journal."""
    if not 0 <= priority <= 7:
        raise ValueError(f"journal priority must be 0..7, not {priority}")
    record = {"MESSAGE": redact(message), "PRIORITY": str(priority)}
    record["SYSLOG_IDENTIFIER"] = IDENTIFIER
    named = {"EVENT": event, "PROJECT": project, "TASK": task, "ROLE": role, "RUN": run,
             "HOME_ID": serving_home_id()}  # fmt: skip
    record |= {f"OPENLOOP_{k}": str(v) for k, v in named.items() if v is not None}
    for key, value in fields.items():
        name = key.upper()
        if not _FIELD_NAME.fullmatch(name):
            raise ValueError(f"not a journal field name: {key!r} (A-Z0-9_, no leading _/digit)")
        if name in record:
            raise ValueError(f"journal field {name} given twice")
        if value is not None:
            record[name] = redact(str(value))
    return record


def encode_native(record: dict[str, str]) -> bytes:
    """journald's native datagram; a value with a newline needs the length-prefixed form."""
    out = bytearray()
    for key, value in record.items():
        data = value.encode("utf-8", "surrogateescape")
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


def write_native(record: dict[str, str], path: str = JOURNAL_SOCKET) -> None:
    """Sends one record to the journal socket at ``path``; raises OSError."""
    data = encode_native(record)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2.0)  # a wedged journald must not stall an iteration
        try:
            sock.sendto(data, path)
        except OSError as exc:
            if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                raise
            # Too big for a datagram: journald takes the same payload in a sealed memfd.
            fd = os.memfd_create("openloop-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
                            | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL)  # fmt: skip
                rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))]
                sock.sendmsg([], rights, 0, path)
            finally:
                os.close(fd)


def send_record(record: dict[str, str]) -> bool:
    """False when there is no journal or it refused the record; never raises OSError."""
    if not os.path.exists(JOURNAL_SOCKET):  # libsystemd reports success when it is missing
        return False
    try:
        if _sd is not None:
            _sd.sendv(*(f"{k}={v}" for k, v in record.items()))
        else:
            write_native(record, JOURNAL_SOCKET)
    except (OSError, ValueError):
        return False
    return True


def send(message: str, *, priority: int = INFO, event: str | None = None,
         project: str | None = None, task: str | None = None, role: str | None = None,
         run: str | None = None, **fields: Any) -> bool:  # fmt: skip
    """Writes one structured record (see make_record); False when it could not be written."""
    return send_record(make_record(message, priority=priority, event=event, project=project,
                                   task=task, role=role, run=run, **fields))  # fmt: skip


def running_under_systemd(environ: dict[str, str] | None = None, fd: int = 2) -> bool:
    """Started by systemd with stderr going to the journal; systemd.exec(5) says JOURNAL_STREAM
    merely being set is not enough (it is inherited), it must name our stderr."""
    env = os.environ if environ is None else environ
    try:
        dev, ino = (int(p) for p in env.get("JOURNAL_STREAM", "").split(":"))
        st = os.fstat(fd)
    except (ValueError, OSError):
        return False
    return bool(env.get("INVOCATION_ID")) and (st.st_dev, st.st_ino) == (dev, ino)


@dataclass(frozen=True)
class IterationLog:
    """An iteration's log lines: journal records under systemd, stderr lines otherwise."""

    project: str | None = None
    run: str | None = None
    task: str | None = None
    role: str | None = None
    to_journal: bool | None = None  # None: running_under_systemd(), asked at each line
    stream: TextIO | None = None  # None: sys.stderr as it is at each line

    def info(self, msg: str, **fields: Any) -> None:
        self.log(INFO, msg, **fields)

    def notice(self, msg: str, **fields: Any) -> None:
        self.log(NOTICE, msg, **fields)

    def warning(self, msg: str, **fields: Any) -> None:
        self.log(WARNING, msg, **fields)

    def error(self, msg: str, **fields: Any) -> None:
        self.log(ERR, msg, **fields)

    def event(self, name: str, msg: str, *, priority: int = NOTICE, **fields: Any) -> None:
        self.log(priority, msg, event=name, **fields)

    def log(self, priority: int, msg: str, event: str | None = None, **fields: Any) -> None:
        record = make_record(msg, priority=priority, event=event, project=self.project,
                             task=self.task, role=self.role, run=self.run, **fields)  # fmt: skip
        journal = running_under_systemd() if self.to_journal is None else self.to_journal
        if journal and send_record(record):
            return
        # Under systemd stderr is the journal too, and the <N> prefix keeps the priority there.
        prefix = f"<{priority}>" if journal else ""
        label = {ERR: "error: ", WARNING: "warning: "}.get(priority, "")
        task = f"[{self.task}] " if self.task else ""
        print(f"{prefix}openloop: {task}{label}{record['MESSAGE']}", file=self.stream or sys.stderr,
              flush=True)  # fmt: skip
