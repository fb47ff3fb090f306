"""Pruning run records at the end of every run: the newest `keep` stay, an older one still
marked running stays for the next repair, and a project at its limit reads only the records it
may remove (it holds runtime.keepRuns of them, 500 by default, at every run)."""

from __future__ import annotations

import json
from pathlib import Path

from openloop.state import runs


def _record(runs_dir: Path, n: int, outcome: str) -> str:
    run_id = f"20260101T0000{n:02d}Z-task-{n}-abcd"
    (runs_dir / f"{run_id}.json").write_text(json.dumps({"runId": run_id, "outcome": outcome}))
    (runs_dir / run_id).mkdir()
    (runs_dir / run_id / "transcript.jsonl").write_text("{}\n")
    return run_id


def test_prune_keeps_the_newest_and_the_unfinished(tmp_path, monkeypatch):
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    ids = [_record(runs_dir, n, "running" if n == 1 else "completed") for n in range(6)]
    read = []
    real = runs.read_record
    monkeypatch.setattr(runs, "read_record", lambda p: read.append(p.name) or real(p))

    assert runs.prune(runs_dir, 3) == 2
    left = sorted(p.stem for p in runs_dir.glob("*.json"))
    assert left == [ids[1], ids[3], ids[4], ids[5]]
    assert sorted(p.name for p in runs_dir.iterdir() if p.is_dir()) == left
    assert read == [f"{i}.json" for i in ids[:3]]  # the three beyond `keep`, nothing newer


def test_prune_under_the_limit_reads_nothing(tmp_path, monkeypatch):
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    for n in range(3):
        _record(runs_dir, n, "completed")
    monkeypatch.setattr(runs, "read_record", lambda p: (_ for _ in ()).throw(AssertionError(p)))
    assert runs.prune(runs_dir, 3) == 0
    assert len(list(runs_dir.glob("*.json"))) == 3
