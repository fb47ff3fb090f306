"""Detect a repository's validation commands (lint, typecheck, test) from the files it already has.

Precedence, per slot: the first ecosystem below that yields a command for that slot wins, and
later ones only fill the slots still empty.

1. make   - GNUmakefile / makefile / Makefile (GNU make's own lookup order) with rules named
            `lint`, `typecheck` (else `check`) and `test`. Makefile targets come first because they
            are the project's own entry points and usually wrap the right tool with the right flags.
2. node   - package.json `scripts`, run through the package manager the repo actually uses.
3. python - tool configuration first (pyproject/setup.cfg/tox.ini/dedicated config files), then
            declared dependencies, matched by normalized distribution name.
4. rust   - Cargo.toml: clippy, cargo check, cargo test.
5. go     - go.mod: `go vet ./...` and `go test ./...`. There is no typecheck command for Go: go vet
            type-checks every package, test files included, so a `go build` step would only repeat
            that work (and skip the test files).

`Detection.stacks` lists every ecosystem whose marker files exist, in the order above, whether or
not it contributed a command. Nothing here runs a command; it only reads files.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openloop.errors import InputError


@dataclass(frozen=True)
class Detected:
    command: str
    source: str


@dataclass(frozen=True)
class Detection:
    lint: Detected | None
    typecheck: Detected | None
    test: Detected | None
    stacks: tuple[str, ...]

    def as_commands(self) -> dict[str, str | None]:
        return {
            "lintCommand": self.lint.command if self.lint else None,
            "typecheckCommand": self.typecheck.command if self.typecheck else None,
            "testCommand": self.test.command if self.test else None,
        }


# slot -> what one ecosystem found; None from a probe means "this ecosystem is absent".
Found = dict[str, Detected]


def detect_validation(repo: Path) -> Detection:
    repo = Path(repo)
    if not repo.is_dir():
        raise InputError(f"{repo}: not a directory")
    chosen: Found = {}
    stacks: list[str] = []
    for name, probe in _PROBES:
        found = probe(repo)
        if found is None:
            continue
        stacks.append(name)
        for slot, detected in found.items():
            chosen.setdefault(slot, detected)
    return Detection(chosen.get("lint"), chosen.get("typecheck"), chosen.get("test"), tuple(stacks))


def _read(path: Path) -> str:
    # Detection is advisory; a stray non-UTF-8 byte in a Makefile comment must not stop it.
    return path.read_text(encoding="utf-8", errors="replace")


def _table(data: Any, key: str) -> dict[str, Any]:
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, dict) else {}


def _by_name(
    wanted: dict[str, tuple[str, ...]], available: set[str], make: Callable[[str], Detected]
) -> Found:
    """For each slot, the first of its candidate names that is available."""
    found: Found = {}
    for slot, names in wanted.items():
        name = next((n for n in names if n in available), None)
        if name:
            found[slot] = make(name)
    return found


# --- make --------------------------------------------------------------------------------------

MAKEFILE_NAMES = ("GNUmakefile", "makefile", "Makefile")
MAKE_TARGETS = {"lint": ("lint",), "typecheck": ("typecheck", "check"), "test": ("test",)}

# A rule line: targets, then ':' or '::'. Targets cannot contain '=' so `X = a:b` never matches.
_RULE = re.compile(r"^(?P<targets>[^:=#\t][^:=#]*?)\s*(?P<colons>::?)(?P<rest>.*)$")
# `target: VAR = value` sets a target-specific variable; it does not define a rule on its own.
_TARGET_VAR = re.compile(r"^\s*(?:(?:export|override|private)\s+)*[^\s=:]+\s*(?::{1,3}|[?+!])?=")
_DEFINE = re.compile(r"^\s*(?:(?:override|export|private)\s+)*define\b")


def make_targets(text: str) -> set[str]:
    """Names of explicit rules in a makefile's text (not special targets, patterns or variables).

    Included makefiles are not followed.
    """
    targets: set[str] = set()
    in_define = False
    for line in re.sub(r"\\\r?\n", " ", text).splitlines():  # join continuation lines
        if in_define:
            in_define = line.split("#", 1)[0].strip() != "endef"
            continue
        if line.startswith("\t"):
            continue  # recipe line
        line = line.split("#", 1)[0].rstrip()
        if _DEFINE.match(line):
            in_define = True
            continue
        match = _RULE.match(line)
        if not match:
            continue
        rest = match["rest"]
        if rest.startswith(("=", ":=")):  # `X := y`, `X ::= y`, `X :::= y`
            continue
        if _TARGET_VAR.match(rest.split(";", 1)[0]):
            continue
        for name in match["targets"].split():
            name = name.rstrip("&")  # grouped targets `a b &: deps`
            # Leading dots are special targets (.PHONY, .DEFAULT); a .PHONY entry without a rule
            # would make `make lint` succeed while checking nothing.
            if name and not name.startswith(".") and "%" not in name and "$" not in name:
                targets.add(name)
    return targets


def _probe_make(repo: Path) -> Found | None:
    filename = next((name for name in MAKEFILE_NAMES if (repo / name).is_file()), None)
    if filename is None:
        return None
    targets = make_targets(_read(repo / filename))
    return _by_name(
        MAKE_TARGETS, targets, lambda n: Detected(f"make {n}", f"{filename} target '{n}'")
    )


# --- node --------------------------------------------------------------------------------------

NODE_SCRIPTS = {
    "lint": ("lint",),
    "typecheck": ("typecheck", "type-check", "check"),
    "test": ("test",),
}
NODE_RUNNERS = ("npm", "pnpm", "yarn", "bun")
LOCKFILES = (
    ("bun.lock", "bun"), ("bun.lockb", "bun"), ("pnpm-lock.yaml", "pnpm"), ("yarn.lock", "yarn"),
    ("package-lock.json", "npm"), ("npm-shrinkwrap.json", "npm"),
)  # fmt: skip
# `npm init` writes this test script; running it can only fail.
_NPM_PLACEHOLDER = "Error: no test specified"


def _load_package_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: invalid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path}: invalid JSON: expected an object at the top level")
    return data


def _node_runner(repo: Path, manifest: dict[str, Any]) -> tuple[str, str]:
    # corepack enforces `packageManager`, so it outranks whatever lock file happens to be around.
    field = manifest.get("packageManager")
    if isinstance(field, str):
        name = field.split("@", 1)[0].strip()
        if name in NODE_RUNNERS:
            return name, f"runner {name} from package.json packageManager"
    for filename, runner in LOCKFILES:
        if (repo / filename).is_file():
            return runner, f"runner {runner} from {filename}"
    return "npm", "runner npm, no lock file"


def _probe_node(repo: Path) -> Found | None:
    path = repo / "package.json"
    if not path.is_file():
        return None
    manifest = _load_package_json(path)
    scripts = manifest.get("scripts", {})
    if not isinstance(scripts, dict):
        raise InputError(f"{path}: scripts: expected an object")
    runner, why = _node_runner(repo, manifest)
    usable = {
        name
        for name, script in scripts.items()
        if isinstance(script, str) and script.strip() and _NPM_PLACEHOLDER not in script
    }
    # `run` everywhere: `bun test` would start bun's own runner instead of the script.
    return _by_name(
        NODE_SCRIPTS,
        usable,
        lambda n: Detected(f"{runner} run {n}", f"package.json scripts.{n} ({why})"),
    )


# --- python ------------------------------------------------------------------------------------

_PY_MARKERS = (
    "pyproject.toml", "setup.py", "setup.cfg", "tox.ini", "Pipfile", "ruff.toml", ".ruff.toml",
    ".flake8", "mypy.ini", ".mypy.ini", "pytest.ini", "pyrightconfig.json",
)  # fmt: skip
# (slot, command, [tool.X] key, config files, (ini file, section) pairs, dependency name), in
# preference order per slot. Evidence order within a tool: pyproject, config file, ini, dependency.
_PY_TOOLS = (
    ("lint", "ruff check .", "ruff", ("ruff.toml", ".ruff.toml"), (), "ruff"),
    ("lint", "flake8", "", (".flake8",),
     (("setup.cfg", "flake8"), ("tox.ini", "flake8")), "flake8"),
    ("typecheck", "mypy .", "mypy", ("mypy.ini", ".mypy.ini"), (("setup.cfg", "mypy"),), "mypy"),
    ("typecheck", "pyright", "pyright", ("pyrightconfig.json",), (), "pyright"),
    ("test", "pytest", "pytest", ("pytest.ini",),
     (("setup.cfg", "tool:pytest"), ("tox.ini", "pytest")), "pytest"),
)  # fmt: skip
_REQ_NAME = re.compile(r"\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)(?=\s*(?:$|[\[<>=!~;@(,]))")
_INI_SECTION = re.compile(r"^\s*\[([^\]\n]+)\]", re.MULTILINE)


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _load_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: invalid TOML: {exc}") from exc


def _ini_sections(path: Path) -> set[str]:
    # Only section names matter; configparser would reject files the tools themselves accept.
    return {s.strip() for s in _INI_SECTION.findall(_read(path))} if path.is_file() else set()


def _req_names(requirements: Any) -> list[str]:
    if not isinstance(requirements, list):
        return []
    matches = (_REQ_NAME.match(r) for r in requirements if isinstance(r, str))
    return [m[1] for m in matches if m]


def _requirements_file(path: Path) -> list[str]:
    # pip: '#' starts a comment at line start or after whitespace; '-r', '-e', '--hash' are options.
    lines = (re.split(r"(?:^|\s)#", line, maxsplit=1)[0] for line in _read(path).splitlines())
    return _req_names([line for line in lines if not line.strip().startswith("-")])


def _python_deps(repo: Path, pyproject: dict[str, Any]) -> dict[str, str]:
    """Normalized dependency name -> where it is declared (first declaration wins)."""
    deps: dict[str, str] = {}

    def add(names: Iterable[str], where: str) -> None:
        for name in names:
            deps.setdefault(_normalize(name), f"{where} lists {name}")

    project = _table(pyproject, "project")
    add(_req_names(project.get("dependencies")), "pyproject.toml [project.dependencies]")
    for extra, reqs in _table(project, "optional-dependencies").items():
        add(_req_names(reqs), f"pyproject.toml [project.optional-dependencies].{extra}")
    for group, reqs in _table(pyproject, "dependency-groups").items():
        add(_req_names(reqs), f"pyproject.toml [dependency-groups].{group}")
    poetry = _table(_table(pyproject, "tool"), "poetry")
    for key in ("dependencies", "dev-dependencies"):
        add(_table(poetry, key), f"pyproject.toml [tool.poetry.{key}]")
    for group, table in _table(poetry, "group").items():
        where = f"pyproject.toml [tool.poetry.group.{group}.dependencies]"
        add(_table(table, "dependencies"), where)
    for path in sorted(repo.glob("requirements*.txt")) + sorted(repo.glob("requirements/*.txt")):
        if path.is_file():
            add(_requirements_file(path), path.relative_to(repo).as_posix())
    return deps


def _tests_dir(repo: Path) -> str | None:
    for name in ("tests", "test"):
        folder = repo / name
        if folder.is_dir() and any(folder.rglob("test_*.py")):
            return f"{name}/ contains test_*.py files"
    return None


def _probe_python(repo: Path) -> Found | None:
    has_requirements = any(repo.glob("requirements*.txt")) or (repo / "requirements").is_dir()
    tests = _tests_dir(repo)
    if not (any((repo / m).is_file() for m in _PY_MARKERS) or has_requirements or tests):
        return None
    pyproject = _load_toml(repo / "pyproject.toml")
    tool = _table(pyproject, "tool")
    deps = _python_deps(repo, pyproject)
    ini = {name: _ini_sections(repo / name) for name in ("setup.cfg", "tox.ini")}
    found: Found = {}
    for slot, command, key, files, sections, dep in _PY_TOOLS:
        if slot in found:
            continue
        suffix = ".ini_options" if "ini_options" in _table(tool, key) else ""
        checks = [(bool(key) and key in tool, f"pyproject.toml [tool.{key}{suffix}]")]
        checks += [((repo / name).is_file(), name) for name in files]
        checks += [(section in ini[name], f"{name} [{section}]") for name, section in sections]
        checks.append((dep in deps, deps.get(dep, "")))
        if dep == "pytest" and tests:
            checks.append((True, tests))
        source = next((where for ok, where in checks if ok), None)
        if source:
            found[slot] = Detected(command, source)
    return found


# --- rust, go ----------------------------------------------------------------------------------


def _probe_rust(repo: Path) -> Found | None:
    if not (repo / "Cargo.toml").is_file():
        return None
    source = "Cargo.toml (cargo project)"
    return {
        "lint": Detected("cargo clippy -- -D warnings", source),
        "typecheck": Detected("cargo check", source),
        "test": Detected("cargo test", source),
    }


def _probe_go(repo: Path) -> Found | None:
    if not (repo / "go.mod").is_file():
        return None
    source = "go.mod (go module)"
    return {"lint": Detected("go vet ./...", source), "test": Detected("go test ./...", source)}


_PROBES = (
    ("make", _probe_make),
    ("node", _probe_node),
    ("python", _probe_python),
    ("rust", _probe_rust),
    ("go", _probe_go),
)
