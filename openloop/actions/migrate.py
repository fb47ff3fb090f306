"""`openloop project import-v1`: bring the projects of the original TypeScript OpenLoop (its home
is ~/.openloop) under this OpenLoop, with a summary of what moved.

What moves, per project of its `projects.json`:
- the link (registry entry; the repository's commands start unapproved: `project trust`);
- its ledger, rewritten in the current format (v1 ledgers are read by state.ledger as they are);
- its pending promotion requests (`promotions/<stamp>-<task>.json`), as the requests
  `promotion show/apply/reject` read (`promotions/<task>.json`); the originals are kept,
  moved to `promotions/v1/`; a request whose task branch does not exist (the original let the
  agent commit onto the checked-out branch) cannot be reviewed as a branch: said, not mapped;
- its run summaries (`runs/*.md`) stay where they are; `task show` lists a task's;
- its prompt files (SKILL.md, .pi/SYSTEM.md, .pi/APPEND_SYSTEM.md tell the agent to commit by
  itself and to read the ledger, which no longer fits) are replaced by the current templates,
  the originals backed up under `.openloop/backup/<stamp>/`.
The global config.json is copied when this home has none (its format is read as it is).
Nothing of the original home is changed.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openloop.adapters import gitops
from openloop.env import Environment
from openloop.errors import InputError, OpenLoopError
from openloop.state.controlplane import ControlPlane, materialize, replace_with_templates
from openloop.state.ledger import StatusChange, edit_ledger
from openloop.state.registry import load_registry
from openloop.state.storage import atomic_write_text, dump_json, read_text_or_none

PROMPT_FILES = (".agents/skills/openloop/SKILL.md", ".pi/SYSTEM.md", ".pi/APPEND_SYSTEM.md")
V1_REQUEST = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z-(?P<task>.+)\.json")


def v1_home(env: Environment, home: Path | None = None) -> Path:
    return (home or Path(env.environ.get("HOME") or Path.home()) / ".openloop").expanduser()


def v1_home_present(env: Environment) -> Path | None:
    """The original's home, when it exists and is not this OpenLoop's own home."""
    home = v1_home(env)
    if not (home / "projects.json").is_file():
        return None
    try:
        if home.resolve() == env.config_dir.resolve():
            return None
    except OSError:
        return None
    return home


@dataclass
class ProjectImport:
    alias: str
    path: str
    linked: bool = False
    skipped: str | None = None
    tasks: int = 0
    promotions: list[str] = field(default_factory=list)  # task ids now reviewable
    promotions_kept: list[str] = field(default_factory=list)  # originals not mapped, and why
    run_summaries: int = 0
    prompts_replaced: list[str] = field(default_factory=list)
    backup: str | None = None

    def to_data(self) -> dict[str, Any]:
        return {
            "alias": self.alias,
            "path": self.path,
            "linked": self.linked,
            "skipped": self.skipped,
            "tasks": self.tasks,
            "promotions": self.promotions,
            "promotionsNotMapped": self.promotions_kept,
            "runSummaries": self.run_summaries,
            "promptsReplaced": self.prompts_replaced,
            "backup": self.backup,
        }


@dataclass
class ImportReport:
    home: str
    config: str  # "copied", "kept" (this home has its own), "absent"
    projects: list[ProjectImport] = field(default_factory=list)

    def to_data(self) -> dict[str, Any]:
        return {
            "home": self.home,
            "config": self.config,
            "projects": [p.to_data() for p in self.projects],
        }


def import_v1(env: Environment, home: Path | None = None) -> ImportReport:
    from openloop.actions import projects

    root = v1_home(env, home)
    registry_file = root / "projects.json"
    text = read_text_or_none(registry_file)
    if text is None:
        raise InputError(f"--home: no original OpenLoop home at {root} (no projects.json)")
    try:
        data = json.loads(text)
        entries = [e for e in data.get("projects", []) if isinstance(e, dict)]
    except (json.JSONDecodeError, AttributeError):
        raise InputError(f"{registry_file}: not the original OpenLoop's projects.json") from None
    report = ImportReport(str(root), _import_config(env, root))
    linked = {e.alias: e for e in load_registry(env).projects}
    for raw in entries:
        alias, path = str(raw.get("alias") or ""), str(raw.get("path") or "")
        item = ProjectImport(alias, path)
        report.projects.append(item)
        if alias in linked:
            item.skipped = f"'{alias}' is already linked here (to {linked[alias].path})"
            continue
        try:
            projects.add(env, alias, Path(path), init=False)
            item.linked = True
            _migrate_plane(env, ControlPlane(gitops.work_tree_root(Path(path))), alias, item)
        except OpenLoopError as exc:
            item.skipped = str(exc)
    return report


def _import_config(env: Environment, root: Path) -> str:
    source = root / "config.json"
    if not source.is_file():
        return "absent"
    if env.config_file.exists():
        return "kept"
    env.config_file.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, env.config_file)
    return "copied"


def _migrate_plane(env: Environment, plane: ControlPlane, alias: str, item: ProjectImport) -> None:
    now = env.now_iso()
    materialize(plane, alias, now)  # adds what is missing; keeps the policy and edited files
    replaced, backup = replace_with_templates(plane, PROMPT_FILES, now)
    item.prompts_replaced, item.backup = replaced, backup
    with edit_ledger(plane.ledger_file, now) as ledger:  # written back in the current format
        item.tasks = len(ledger.tasks)
        for task_id, request in _v1_requests(plane).items():
            task = ledger.find(task_id)
            why = _map_request(plane, task, request, now)
            if why is None:
                item.promotions.append(task_id)
            else:
                item.promotions_kept.append(f"{task_id}: {why}")
    item.run_summaries = len(list(plane.runs_dir.glob("*.md"))) if plane.runs_dir.is_dir() else 0


def _v1_requests(plane: ControlPlane) -> dict[str, dict[str, Any]]:
    """The newest pending original request of each task; every original file moves to
    promotions/v1/ (kept byte for byte; this OpenLoop's listing does not read them there)."""
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    folder = plane.promotions_dir
    if not folder.is_dir():
        return {}
    keep = folder / "v1"
    for path in sorted(folder.glob("*.json")):
        match = V1_REQUEST.fullmatch(path.name)
        if not match:
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        keep.mkdir(exist_ok=True)
        path.rename(keep / path.name)
        if isinstance(data, dict) and data.get("status") == "pending":
            task_id = str(data.get("taskId") or match["task"])
            found[task_id] = (path.name, {**data, "originalFile": f"promotions/v1/{path.name}"})
    return {task: request for task, (_name, request) in sorted(found.items())}


def _map_request(plane: ControlPlane, task, request: dict[str, Any], now: str) -> str | None:
    """Write the request `promotion show/apply/reject` read, and put its task in review; or
    say why not (None: done)."""
    if task is None:
        return "its task is not in the ledger"
    if (plane.promotions_dir / f"{task.id}.json").exists():
        return "a request of this OpenLoop exists for it already"
    if request.get("action") not in ("queue-review", "queue-auto-merge"):
        return f"its action {request.get('action')!r} asks for no review"
    branch = task.branch or f"openloop/{task.id}"
    base = request.get("baseBranch") or (task.last_run or {}).get("baseBranch")
    repo = plane.repo
    if not gitops.ref_exists(repo, f"refs/heads/{branch}"):
        return (
            f"no branch {branch}: the original let the agent commit onto the branch checked out, "
            "so its work is already there; nothing to apply"
        )
    head = gitops.rev_parse(repo, f"refs/heads/{branch}")
    base_commit = None
    if base and gitops.ref_exists(repo, f"refs/heads/{base}"):
        base_commit = _merge_base(repo, base, branch)
    changed = _changed_files(repo, base_commit, head)
    mapped = {
        "version": 1,
        "taskId": task.id,
        "title": task.title,
        "createdAt": request.get("createdAt") or now,
        "status": "pending",
        "action": "review",
        "branch": branch,
        "baseBranch": base,
        "baseCommit": base_commit,
        "headCommit": head,
        "risk": task.risk,
        "reasons": [
            f"imported from the original OpenLoop: {request.get('decision')} "
            f"({request.get('action')}); review it before it merges"
        ],
        "diffstat": gitops.diffstat(repo, base_commit, head) if base_commit else None,
        "changedFiles": changed,
        "validation": request.get("validation") or [],
        "runIds": [],
        "costUsd": 0.0,
        "importedFrom": request["originalFile"],
    }
    atomic_write_text(plane.promotions_dir / f"{task.id}.json", dump_json(mapped))
    task.branch = branch
    task.last_run = {**(task.last_run or {}), "headCommit": head}
    if task.status != "review":
        task.history.append(
            StatusChange(
                at=now,
                from_=task.status,
                to="review",
                reason="imported from the original OpenLoop with a pending review",
            )
        )
        task.status = "review"
        task.updated_at = now
    return None


def _merge_base(repo: Path, base: str, branch: str) -> str | None:
    try:
        return gitops.out(repo, "merge-base", f"refs/heads/{base}", f"refs/heads/{branch}")
    except OpenLoopError:
        return None


def _changed_files(repo: Path, base: str | None, head: str) -> list[str]:
    if not base:
        return []
    try:
        out = gitops.out(repo, "diff", "--name-only", "--no-renames", base, head)
    except OpenLoopError:
        return []
    return [line for line in out.splitlines() if line]


# --- the original's run summaries --------------------------------------------------------------


def run_summaries(plane: ControlPlane, task_id: str | None = None) -> list[dict[str, Any]]:
    """The original's `runs/<stamp>-<task>.md`, newest first: their `- key: value` lines (and
    the file), for `task show`."""
    if not plane.runs_dir.is_dir():
        return []
    found = []
    for path in sorted(plane.runs_dir.glob("*.md"), reverse=True):
        fields = _summary_fields(read_text_or_none(path) or "")
        if task_id is not None and fields.get("task") != task_id:
            continue
        found.append({"file": str(path), **fields})
    return found


def _summary_fields(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("## "):
            break  # the validation and prompt sections follow the summary's own lines
        if line.startswith("- ") and ": " in line:
            key, value = line[2:].split(": ", 1)
            fields[key.strip()] = value.strip()
    return fields
