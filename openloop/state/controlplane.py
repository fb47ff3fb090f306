"""A repository's control plane (`<repo>/.openloop/` and friends) and how `init` materializes it.

Re-running init never clobbers a file the user edited: `.openloop/templates.json` records the hash
of what OpenLoop last wrote, so an untouched file can be upgraded while an edited one is kept.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from openloop.resources import data_dir
from openloop.state.projectconfig import ProjectConfig, load_project_config
from openloop.state.storage import atomic_write_text, dump_json, read_text_or_none

if TYPE_CHECKING:
    from openloop.state import stacks
STATE_DIRS = ("specs", "runs", "promotions", "promotion-results")


@dataclass(frozen=True)
class ControlPlane:
    repo: Path

    @property
    def dir(self) -> Path:
        return self.repo / ".openloop"

    @property
    def project_file(self) -> Path:
        return self.dir / "project.json"

    @property
    def policy_file(self) -> Path:
        return self.dir / "policy.yaml"

    @property
    def ledger_file(self) -> Path:
        return self.dir / "tasks.json"

    @property
    def manifest_file(self) -> Path:
        return self.dir / "templates.json"

    @property
    def specs_dir(self) -> Path:
        return self.dir / "specs"

    @property
    def runs_dir(self) -> Path:
        return self.dir / "runs"

    @property
    def promotions_dir(self) -> Path:
        return self.dir / "promotions"

    @property
    def promotion_results_dir(self) -> Path:
        return self.dir / "promotion-results"

    def exists(self) -> bool:
        return self.project_file.exists()


def gitignore_text(ledger_versioned: bool) -> str:
    lines = [
        "# Written by 'openloop project init'. OpenLoop's local state stays out of git;",
        "# project.json, policy.yaml and specs/ are meant to be committed.",
        "runs/",
        "promotions/",
        "promotion-results/",
        "backup/",
        ".*.lock",
        ".*.tmp",
    ]
    if not ledger_versioned:
        # The archive holds what the ledger held: versioned with it, or not at all.
        lines[2:2] = ["tasks.json", "archive/"]
    return "\n".join(lines) + "\n"


def _sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def template_files() -> dict[str, str]:
    """Relative path in the repo -> content, for every file under templates/project/."""
    root = data_dir("templates") / "project"
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            files[path.relative_to(root).as_posix()] = path.read_text(encoding="utf-8")
    return files


@dataclass
class InitReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    backed_up: list[str] = field(default_factory=list)
    detection: stacks.Detection | None = None


def _plan_project_config(
    plane: ControlPlane, name: str, now: str, detection: stacks.Detection, force: bool
) -> tuple[ProjectConfig, bool]:
    """The project.json to write and whether it differs from what is on disk."""
    existed = plane.project_file.exists()
    config = load_project_config(plane.project_file)  # raises on an invalid file: nothing written
    before = config.to_data() if existed else None
    if not config.project.name:
        config.project.name = name
    if not config.project.initialized_at:
        config.project.initialized_at = now
    # Detected commands only fill empty slots: a command the user set is theirs, unless --force.
    for key, value in detection.as_commands().items():
        attr = {
            "lintCommand": "lint_command",
            "typecheckCommand": "typecheck_command",
            "testCommand": "test_command",
        }[key]
        if value and (force or getattr(config.validation, attr) is None):
            setattr(config.validation, attr, value)
    return config, config.to_data() != before


def materialize(plane: ControlPlane, name: str, now: str, *, force: bool = False) -> InitReport:
    """Create or merge the control plane; everything is checked before anything is written."""
    # Only init needs detection and the ledger's models: both stay off every other command's
    # start-up (a project is resolved by every command).
    from openloop.state import stacks
    from openloop.state.ledger import TaskLedger, load_ledger

    detection = stacks.detect_validation(plane.repo)
    config, config_changed = _plan_project_config(plane, name, now, detection, force)
    ledger_exists = plane.ledger_file.exists()
    if ledger_exists:
        load_ledger(plane.ledger_file)  # refuse to go on over a corrupt ledger
    manifest_text = read_text_or_none(plane.manifest_file)
    manifest: dict[str, str] = json.loads(manifest_text).get("files", {}) if manifest_text else {}

    wanted = template_files()
    wanted[".openloop/.gitignore"] = gitignore_text(config.ledger.versioned)

    report = InitReport(detection=detection)
    writes: list[tuple[Path, str]] = []
    backup_root = plane.dir / "backup" / now.replace(":", "-").replace(".", "-")
    for rel, content in wanted.items():
        target = plane.repo / rel
        current = read_text_or_none(target)
        if current is None:
            report.added.append(rel)
        elif current == content:
            report.unchanged.append(rel)
            continue
        elif manifest.get(rel) == _sha(current):
            report.updated.append(rel)
        elif force:
            report.backed_up.append(rel)
            report.updated.append(rel)
        else:
            report.kept.append(rel)
            continue
        writes.append((target, content))

    if ".openloop/policy.yaml" in report.kept:
        # The user's own policy stays: say now if it is invalid, rather than at every run.
        from openloop.state.policy import load_policy

        load_policy(plane.policy_file)

    rel_config = ".openloop/project.json"
    if not plane.project_file.exists():
        report.added.append(rel_config)
    elif config_changed:
        if force:
            report.backed_up.append(rel_config)
        report.updated.append(rel_config)
    else:
        report.unchanged.append(rel_config)

    # --- writes start here --------------------------------------------------------------------
    for rel in report.backed_up:
        source = plane.repo / rel
        dest = backup_root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest)
    for target, content in writes:
        atomic_write_text(target, content)
    if config_changed or not plane.project_file.exists():
        atomic_write_text(plane.project_file, dump_json(config.to_data()))
    if not ledger_exists:
        atomic_write_text(plane.ledger_file, dump_json(TaskLedger(updated_at=now).to_data()))
        report.added.append(".openloop/tasks.json")
    for sub in STATE_DIRS:
        (plane.dir / sub).mkdir(parents=True, exist_ok=True)
    for rel, content in wanted.items():
        if rel not in report.kept:
            manifest[rel] = _sha(content)
    atomic_write_text(plane.manifest_file, dump_json({"version": 1, "files": manifest}))
    return report


def replace_with_templates(
    plane: ControlPlane, rels: tuple[str, ...], now: str
) -> tuple[list[str], str | None]:
    """Put the current template in place of each of `rels` that differs from it, the file as it
    was backed up first under .openloop/backup/<now>/ (as init --force does); recorded in the
    manifest as ours. Returns (the files replaced, the backup folder or None)."""
    wanted = template_files()
    backup_root = plane.dir / "backup" / now.replace(":", "-").replace(".", "-")
    manifest_text = read_text_or_none(plane.manifest_file)
    manifest: dict[str, str] = json.loads(manifest_text).get("files", {}) if manifest_text else {}
    replaced = []
    for rel in rels:
        target = plane.repo / rel
        current = read_text_or_none(target)
        if current == wanted[rel]:
            continue
        if current is not None:
            dest = backup_root / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(target, dest)
        atomic_write_text(target, wanted[rel])
        manifest[rel] = _sha(wanted[rel])
        replaced.append(rel)
    if replaced:
        atomic_write_text(plane.manifest_file, dump_json({"version": 1, "files": manifest}))
    return replaced, str(backup_root) if backup_root.is_dir() else None
