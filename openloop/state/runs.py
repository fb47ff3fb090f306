"""Run records: `.openloop/runs/<run-id>.json` (summary) and `.openloop/runs/<run-id>/` (transcript,
validation logs, prompt). A record is written when a run starts (outcome "running") and
rewritten when it ends, so a run killed from outside is visible and the next iteration can close
it as interrupted."""

from __future__ import annotations

import json
import re
import secrets
from datetime import datetime
from pathlib import Path
from typing import Any

from openloop.errors import ConfigError
from openloop.state.storage import atomic_write_text, dump_json, read_text_or_none

RUNNING = "running"


def new_run_id(now: datetime, task_id: str | None) -> str:
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{task_id or 'adhoc'}-{secrets.token_hex(2)}"


def record_path(runs_dir: Path, run_id: str) -> Path:
    return runs_dir / f"{run_id}.json"


def write_record(runs_dir: Path, record: dict[str, Any]) -> Path:
    path = record_path(runs_dir, record["runId"])
    atomic_write_text(path, dump_json({"version": 1, **record}))
    return path


def read_record(path: Path) -> dict[str, Any] | None:
    """The record, or None when there is none or it is not one (not JSON, not UTF-8, not a
    regular file)."""
    try:
        text = read_text_or_none(path)
    except ConfigError:
        return None
    if text is None:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


RUN_ID = re.compile(r"\d{8}T\d{6}Z-[a-z0-9][a-z0-9-]{0,99}-[0-9a-f]{4}")


def unfinished(runs_dir: Path) -> list[dict[str, Any]]:
    """Records still marked running (their iteration died), oldest first. Only records whose
    run id is one OpenLoop makes and names their own file: repair rewrites the record and reads
    the run's transcript by that id, so a planted `../../x` must never become a path."""
    found = []
    if not runs_dir.is_dir():
        return found
    for path in sorted(runs_dir.glob("*.json")):
        data = read_record(path)
        run_id = data.get("runId") if data else None
        if (
            data
            and data.get("outcome") == RUNNING
            and isinstance(run_id, str)
            and RUN_ID.fullmatch(run_id)
            and path.stem == run_id
        ):
            found.append(data)
    return found


def list_records(runs_dir: Path, limit: int | None = None) -> list[dict[str, Any]]:
    if not runs_dir.is_dir():
        return []
    paths = sorted(runs_dir.glob("*.json"), reverse=True)
    records = [r for r in (read_record(p) for p in paths[:limit] if p.is_file()) if r]
    return records


def prune(runs_dir: Path, keep: int) -> int:
    """Keep the newest `keep` runs (summary and artifact directory); returns how many were
    removed. An older one still marked running stays too: the next repair closes it."""
    import shutil

    if not runs_dir.is_dir():
        return 0
    paths = sorted(runs_dir.glob("*.json"))  # run ids start with their time: oldest first
    removed = 0
    # Only those beyond `keep` are read (to spare the unfinished): a project at its keepRuns
    # reads one record per run, not all of them.
    for path in paths[: max(len(paths) - max(keep, 0), 0)]:
        record = read_record(path)
        if record is not None and record.get("outcome") == RUNNING:
            continue
        shutil.rmtree(runs_dir / path.stem, ignore_errors=True)
        path.unlink(missing_ok=True)
        removed += 1
    return removed


# --- the phase of the iteration running now ----------------------------------------------


def phase_file(state_dir: Path, alias: str) -> Path:
    """`<state>/phase/<alias>.json`: what the project's running iteration is doing, for
    `status` (written by the iteration at each phase; valid only while its pid holds the
    project's iteration lock, so a stale file is never shown as running)."""
    return state_dir / "phase" / f"{alias}.json"


def note_phase(state_dir: Path, alias: str, record: dict[str, Any]) -> None:
    try:
        atomic_write_text(phase_file(state_dir, alias), dump_json(record), durable=False)
    except OSError:
        pass  # progress for `status` only: never a reason to fail an iteration


def read_phase(state_dir: Path, alias: str) -> dict[str, Any] | None:
    try:
        return read_record(phase_file(state_dir, alias))
    except Exception:  # noqa: BLE001 - a damaged progress file means "phase not known"
        return None


def clear_phase(state_dir: Path, alias: str) -> None:
    phase_file(state_dir, alias).unlink(missing_ok=True)
