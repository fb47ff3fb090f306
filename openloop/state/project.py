"""A linked project as the rest of OpenLoop sees it (registry entry + control plane), and how a
command finds it. Lives in the state layer so that the iteration and the actions both import it
downward."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from openloop.env import Environment
from openloop.errors import InputError, NotFoundError
from openloop.state.controlplane import ControlPlane
from openloop.state.projectconfig import ProjectConfig, load_project_config
from openloop.state.registry import ProjectEntry, load_registry
from openloop.text import check_line


@dataclass(frozen=True)
class Project:
    """A linked project as the rest of OpenLoop sees it: registry entry + control plane."""

    entry: ProjectEntry
    plane: ControlPlane

    @property
    def alias(self) -> str:
        return self.entry.alias

    @property
    def repo(self) -> Path:
        return self.plane.repo

    def config(self) -> ProjectConfig:
        return load_project_config(self.plane.project_file)


def resolve(env: Environment, alias: str | None) -> Project:
    """The project named by --project, else the active one, else the only one linked."""
    if alias:
        # Named neutrally: the alias comes from --project or from an ALIAS argument.
        check_line(alias, "project alias", "aliases")
    registry = load_registry(env)
    if not alias:
        from openloop.state.config import load_config  # only without --project

        alias = load_config(env).active_project
    if not alias:
        if len(registry.projects) == 1:
            alias = registry.projects[0].alias
        elif not registry.projects:
            raise InputError("no project linked yet: run 'openloop project add ALIAS PATH --init'")
        else:
            raise InputError(
                "--project: which project? pass --project ALIAS or set a default with "
                "'openloop project activate ALIAS'"
            )
    return project_of(registry.get(alias))


def project_of(entry: ProjectEntry) -> Project:
    """The project of a registry entry already read (a loop over all projects reads the
    registry once, not once per project)."""
    plane = ControlPlane(Path(entry.path))
    if not plane.repo.is_dir():
        raise NotFoundError(f"project '{entry.alias}': its path {entry.path} no longer exists")
    return Project(entry, plane)


def require_initialized(project: Project) -> None:
    if not project.plane.exists():
        raise InputError(
            f"project '{project.alias}' has no control plane yet: run "
            f"'openloop project init {project.alias}'"
        )
