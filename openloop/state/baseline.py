"""The default branch's health, cached per tree (`$XDG_STATE_HOME/openloop/baseline/<alias>.json`).

The checks run on the default branch tip once per (tree, approved commands): a tree is its
content, so an unchanged branch (or a branch moved back to a tree already seen) is validated
once, ever. The file is user-side state, never in the repository: nothing the agent commits can
plant a "healthy" verdict. The systemd gate reads it (cheap); only an iteration writes it.

Also here: what discovery (idle mode) has already proposed, by fingerprint and by day.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from openloop.env import Environment
from openloop.state.storage import atomic_write_text, dump_json, locked, read_text_or_none

VERSION = 1
KEEP_ENTRIES = 50

HEALTHY = "healthy"  # every configured check passed
FAILING = "failing"  # at least one check failed; see `failures`
UNCONFIGURED = "unconfigured"  # no check configured: nothing to heal, nothing to judge against


def cache_file(env: Environment, alias: str) -> Path:
    return env.state_dir / "baseline" / f"{alias}.json"


def logs_dir(env: Environment, alias: str, key: str) -> Path:
    return env.state_dir / "baseline" / alias / key[:16]


def cache_key(tree: str, commands: dict[str, str | None]) -> str:
    """The tree and the commands that judged it: other commands, other verdict."""
    text = json.dumps({"tree": tree, "commands": commands}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _load(path: Path) -> dict[str, Any]:
    text = read_text_or_none(path)
    try:
        data = json.loads(text) if text else {}
    except json.JSONDecodeError:
        data = {}
    if not isinstance(data, dict) or data.get("version") != VERSION:
        data = {"version": VERSION}
    data.setdefault("validations", 0)
    data.setdefault("entries", {})
    data.setdefault("discovery", {})
    return data


def load(env: Environment, alias: str) -> dict[str, Any]:
    return _load(cache_file(env, alias))


def lookup(env: Environment, alias: str, key: str) -> dict[str, Any] | None:
    entry = load(env, alias)["entries"].get(key)
    return entry if isinstance(entry, dict) else None


def store(env: Environment, alias: str, key: str, entry: dict[str, Any]) -> None:
    """Record one validation of the default branch (and count it)."""
    path = cache_file(env, alias)
    with locked(path, what=f"baseline cache of {alias}"):
        data = _load(path)
        data["validations"] += 1
        entries = data["entries"]
        entries.pop(key, None)
        entries[key] = {**entry, "key": key}
        for old in list(entries)[:-KEEP_ENTRIES]:
            del entries[old]
        data["latest"] = key
        atomic_write_text(path, dump_json(data))


def latest(env: Environment, alias: str) -> dict[str, Any] | None:
    """The most recently validated default branch, for status and doctor."""
    data = load(env, alias)
    return data["entries"].get(data.get("latest") or "")


# --- discovery bookkeeping ----------------------------------------------------------------------


def discovery_state(env: Environment, alias: str) -> dict[str, Any]:
    state = load(env, alias)["discovery"]
    state.setdefault("fingerprints", [])
    state.setdefault("days", {})
    state.setdefault("trees", [])
    return state


def update_discovery(env: Environment, alias: str, change) -> dict[str, Any]:
    """Apply `change(state)` to the discovery record under the cache's lock."""
    path = cache_file(env, alias)
    with locked(path, what=f"baseline cache of {alias}"):
        data = _load(path)
        state = data["discovery"]
        for key, empty in (("fingerprints", []), ("days", {}), ("trees", [])):
            state.setdefault(key, empty)
        change(state)
        state["trees"] = state["trees"][-KEEP_ENTRIES:]
        state["days"] = dict(sorted(state["days"].items())[-14:])
        atomic_write_text(path, dump_json(data))
        return state


def summary(env: Environment, alias: str) -> dict[str, Any] | None:
    """The latest validated default branch, for status and doctor: its health and the failures
    OpenLoop will not heal (recorded, never attempted)."""
    entry = latest(env, alias)
    if not entry:
        return None
    failures = entry.get("failures") or []
    return {
        "status": entry.get("status"),
        "branch": entry.get("branch"),
        "commit": entry.get("commit"),
        "checkedAt": entry.get("checkedAt"),
        "validations": load(env, alias)["validations"],
        "healable": [
            {"check": f.get("check"), "kind": f.get("kind")} for f in failures if f.get("healable")
        ],
        "unhealable": [
            {"check": f.get("check"), "why": f.get("why")}
            for f in failures
            if not f.get("healable")
        ],
    }
