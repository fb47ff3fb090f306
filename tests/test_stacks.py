"""Validation-command detection against small fixture repositories built on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from openloop.errors import InputError
from openloop.state.stacks import Detected, Detection, detect_validation, make_targets

NPM_PLACEHOLDER = 'echo "Error: no test specified" && exit 1'


def make_repo(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def package_json(scripts: dict[str, str], **extra: object) -> str:
    return json.dumps({"name": "demo", "scripts": scripts, **extra})


def commands(detection: Detection) -> tuple[str | None, str | None, str | None]:
    found = detection.as_commands()
    return found["lintCommand"], found["typecheckCommand"], found["testCommand"]


# --- empty and invalid -------------------------------------------------------------------------


def test_empty_repo_detects_nothing(tmp_path: Path) -> None:
    detection = detect_validation(tmp_path)
    assert detection == Detection(None, None, None, ())
    assert detection.as_commands() == {
        "lintCommand": None,
        "typecheckCommand": None,
        "testCommand": None,
    }


def test_missing_directory_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        detect_validation(tmp_path / "nope")


def test_invalid_package_json_is_input_error(tmp_path: Path) -> None:
    make_repo(tmp_path, {"package.json": "{not json"})
    with pytest.raises(InputError, match=r"package\.json: invalid JSON: "):
        detect_validation(tmp_path)


def test_package_json_that_is_not_an_object_is_input_error(tmp_path: Path) -> None:
    make_repo(tmp_path, {"package.json": "[1, 2]"})
    with pytest.raises(InputError, match="invalid JSON"):
        detect_validation(tmp_path)


def test_invalid_pyproject_is_input_error(tmp_path: Path) -> None:
    make_repo(tmp_path, {"pyproject.toml": "[tool.ruff\n"})
    with pytest.raises(InputError, match=r"pyproject\.toml: invalid TOML"):
        detect_validation(tmp_path)


# --- make --------------------------------------------------------------------------------------

MAKEFILE = """\
# Project entry points
SHELL := /bin/bash
PY ?= python3
SRC = src tests
LINT_FLAGS += --fix
VERSION != git describe
.PHONY: lint test typecheck check deploy

lint: deps
\truff check $(SRC)
\techo not-a-target: here

test:
\t$(PY) -m pytest

deps:: ; pip install -e .

%.o: %.c
\tcc -c $<

define HELP
typecheck:
\tmypy .
endef

build: CFLAGS = -O2
"""


def test_make_targets_ignores_variables_phony_recipes_patterns_and_defines() -> None:
    assert make_targets(MAKEFILE) == {"lint", "test", "deps"}


def test_make_targets_handles_continuations_multiple_targets_and_grouped() -> None:
    text = "fmt lint \\\n  typecheck: deps\n\ta\nx y &: z\nX :::= 1\ncheck:: a ; b=c\n"
    assert make_targets(text) == {"fmt", "lint", "typecheck", "x", "y", "check"}


def test_makefile_targets_win_over_other_stacks(tmp_path: Path) -> None:
    make_repo(
        tmp_path,
        {
            "Makefile": MAKEFILE,
            "package.json": package_json({"lint": "eslint .", "typecheck": "tsc --noEmit"}),
        },
    )
    detection = detect_validation(tmp_path)
    # make has no typecheck/check rule (only a .PHONY entry), so node fills that slot.
    assert commands(detection) == ("make lint", "npm run typecheck", "make test")
    assert detection.stacks == ("make", "node")
    assert detection.lint == Detected("make lint", "Makefile target 'lint'")


def test_makefile_check_is_the_typecheck_fallback(tmp_path: Path) -> None:
    make_repo(tmp_path, {"GNUmakefile": "check:\n\tmypy .\n"})
    detection = detect_validation(tmp_path)
    assert commands(detection) == (None, "make check", None)
    assert detection.typecheck is not None
    assert detection.typecheck.source == "GNUmakefile target 'check'"


def test_makefile_typecheck_preferred_over_check(tmp_path: Path) -> None:
    make_repo(tmp_path, {"makefile": "check: typecheck test\ntypecheck:\n\tmypy .\n"})
    assert detect_validation(tmp_path).typecheck == Detected(
        "make typecheck", "makefile target 'typecheck'"
    )


def test_makefile_without_targets_is_still_a_stack(tmp_path: Path) -> None:
    make_repo(tmp_path, {"Makefile": "all:\n\techo hi\n"})
    assert detect_validation(tmp_path) == Detection(None, None, None, ("make",))


# --- node --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lockfile", "runner"),
    [
        (None, "npm"),
        ("package-lock.json", "npm"),
        ("yarn.lock", "yarn"),
        ("pnpm-lock.yaml", "pnpm"),
        ("bun.lock", "bun"),
        ("bun.lockb", "bun"),
    ],
)
def test_node_runner_from_lock_file(tmp_path: Path, lockfile: str | None, runner: str) -> None:
    files = {"package.json": package_json({"lint": "eslint .", "test": "vitest run"})}
    if lockfile:
        files[lockfile] = ""
    make_repo(tmp_path, files)
    detection = detect_validation(tmp_path)
    assert commands(detection) == (f"{runner} run lint", None, f"{runner} run test")
    assert detection.stacks == ("node",)
    assert detection.lint is not None
    why = f"runner {runner} from {lockfile}" if lockfile else "runner npm, no lock file"
    assert detection.lint.source == f"package.json scripts.lint ({why})"


def test_package_manager_field_beats_lock_file(tmp_path: Path) -> None:
    make_repo(
        tmp_path,
        {
            "package.json": package_json({"lint": "eslint ."}, packageManager="pnpm@9.1.0"),
            "package-lock.json": "{}",
        },
    )
    lint = detect_validation(tmp_path).lint
    assert lint == Detected(
        "pnpm run lint", "package.json scripts.lint (runner pnpm from package.json packageManager)"
    )


def test_unknown_package_manager_falls_back_to_lock_file(tmp_path: Path) -> None:
    make_repo(
        tmp_path,
        {"package.json": package_json({"lint": "x"}, packageManager="deno@2"), "yarn.lock": ""},
    )
    assert commands(detect_validation(tmp_path))[0] == "yarn run lint"


def test_npm_placeholder_test_script_is_ignored(tmp_path: Path) -> None:
    make_repo(tmp_path, {"package.json": package_json({"test": NPM_PLACEHOLDER})})
    detection = detect_validation(tmp_path)
    assert detection == Detection(None, None, None, ("node",))


def test_npm_placeholder_lets_a_later_stack_provide_tests(tmp_path: Path) -> None:
    make_repo(
        tmp_path,
        {
            "package.json": package_json({"test": NPM_PLACEHOLDER}),
            "pyproject.toml": "[tool.pytest.ini_options]\naddopts = '-q'\n",
        },
    )
    detection = detect_validation(tmp_path)
    assert detection.test == Detected("pytest", "pyproject.toml [tool.pytest.ini_options]")
    assert detection.stacks == ("node", "python")


@pytest.mark.parametrize(
    ("scripts", "expected"),
    [
        ({"typecheck": "tsc", "type-check": "tsc -b", "check": "svelte-check"}, "typecheck"),
        ({"type-check": "tsc -b", "check": "svelte-check"}, "type-check"),
        ({"check": "svelte-check"}, "check"),
        ({"typecheck": "  ", "check": "svelte-check"}, "check"),
        ({"build": "tsc"}, None),
    ],
)
def test_node_typecheck_script_preference(
    tmp_path: Path, scripts: dict[str, str], expected: str | None
) -> None:
    make_repo(tmp_path, {"package.json": package_json(scripts)})
    typecheck = detect_validation(tmp_path).typecheck
    assert (typecheck.command if typecheck else None) == (
        f"npm run {expected}" if expected else None
    )


def test_node_scripts_must_be_an_object(tmp_path: Path) -> None:
    make_repo(tmp_path, {"package.json": json.dumps({"scripts": ["lint"]})})
    with pytest.raises(InputError, match="scripts"):
        detect_validation(tmp_path)


# --- python ------------------------------------------------------------------------------------


def test_python_tool_sections_in_pyproject(tmp_path: Path) -> None:
    make_repo(
        tmp_path,
        {
            "pyproject.toml": (
                "[project]\nname = 'x'\n"
                "[tool.ruff]\nline-length = 100\n"
                "[tool.mypy]\nstrict = true\n"
                "[tool.pytest.ini_options]\ntestpaths = ['tests']\n"
            )
        },
    )
    detection = detect_validation(tmp_path)
    assert detection == Detection(
        Detected("ruff check .", "pyproject.toml [tool.ruff]"),
        Detected("mypy .", "pyproject.toml [tool.mypy]"),
        Detected("pytest", "pyproject.toml [tool.pytest.ini_options]"),
        ("python",),
    )


def test_python_dependencies_across_pyproject_tables(tmp_path: Path) -> None:
    make_repo(
        tmp_path,
        {
            "pyproject.toml": (
                "[project]\nname = 'x'\ndependencies = ['requests>=2']\n"
                "[project.optional-dependencies]\ntest = ['pytest>=7 ; python_version>\"3\"']\n"
                "[dependency-groups]\ndev = ['Ruff==0.4', {include-group = 'test'}]\n"
                "[tool.poetry.group.types.dependencies]\npyright = '*'\n"
            )
        },
    )
    detection = detect_validation(tmp_path)
    assert detection.lint == Detected(
        "ruff check .", "pyproject.toml [dependency-groups].dev lists Ruff"
    )
    assert detection.typecheck == Detected(
        "pyright", "pyproject.toml [tool.poetry.group.types.dependencies] lists pyright"
    )
    assert detection.test == Detected(
        "pytest", "pyproject.toml [project.optional-dependencies].test lists pytest"
    )


def test_python_dependencies_match_whole_names_not_substrings(tmp_path: Path) -> None:
    make_repo(
        tmp_path,
        {
            "pyproject.toml": (
                "[project]\nname = 'x'\n"
                "dependencies = ['pytest-cov', 'ruff-lsp', 'mypy_extensions', 'flake8-bugbear']\n"
            )
        },
    )
    assert commands(detect_validation(tmp_path)) == (None, None, None)


def test_poetry_dev_dependencies_with_normalized_names(tmp_path: Path) -> None:
    make_repo(
        tmp_path,
        {"pyproject.toml": "[tool.poetry.dev-dependencies]\nMyPy = '^1'\nFlake8 = '*'\n"},
    )
    assert commands(detect_validation(tmp_path)) == ("flake8", "mypy .", None)


def test_python_setup_cfg_sections(tmp_path: Path) -> None:
    make_repo(
        tmp_path,
        {
            "setup.cfg": (
                "[metadata]\nname = x\n[flake8]\nmax-line-length = 100\n"
                "[mypy]\nstrict = True\n[tool:pytest]\naddopts = -q\n"
            )
        },
    )
    detection = detect_validation(tmp_path)
    assert detection == Detection(
        Detected("flake8", "setup.cfg [flake8]"),
        Detected("mypy .", "setup.cfg [mypy]"),
        Detected("pytest", "setup.cfg [tool:pytest]"),
        ("python",),
    )


def test_python_tox_ini_sections(tmp_path: Path) -> None:
    # `%(x)s`-style text that configparser would choke on must not matter.
    make_repo(tmp_path, {"tox.ini": "[tox]\nenvlist = py311 %(\n[flake8]\n[pytest]\n"})
    assert detect_validation(tmp_path) == Detection(
        Detected("flake8", "tox.ini [flake8]"),
        None,
        Detected("pytest", "tox.ini [pytest]"),
        ("python",),
    )


def test_python_requirements_files(tmp_path: Path) -> None:
    make_repo(
        tmp_path,
        {
            "requirements.txt": "requests==2.31  # http\n",
            "requirements-dev.txt": (
                "-r requirements.txt\n# pytest is below\n-e .\n"
                "git+https://example.com/mypy.git\nflake8>=7\n"
                "pytest[testing] ; python_version>'3'\n"
            ),
        },
    )
    detection = detect_validation(tmp_path)
    assert detection.lint == Detected("flake8", "requirements-dev.txt lists flake8")
    assert detection.typecheck is None
    assert detection.test == Detected("pytest", "requirements-dev.txt lists pytest")


def test_ruff_config_file_beats_flake8(tmp_path: Path) -> None:
    make_repo(tmp_path, {".ruff.toml": "line-length = 90\n", ".flake8": "[flake8]\n"})
    assert detect_validation(tmp_path).lint == Detected("ruff check .", ".ruff.toml")


def test_mypy_and_pyright_config_files(tmp_path: Path) -> None:
    make_repo(tmp_path, {"pyrightconfig.json": "{}", "mypy.ini": "[mypy]\n"})
    assert detect_validation(tmp_path).typecheck == Detected("mypy .", "mypy.ini")
    (tmp_path / "mypy.ini").unlink()
    assert detect_validation(tmp_path).typecheck == Detected("pyright", "pyrightconfig.json")


def test_tests_directory_alone_means_pytest(tmp_path: Path) -> None:
    make_repo(tmp_path, {"tests/unit/test_thing.py": "def test_x():\n    pass\n"})
    detection = detect_validation(tmp_path)
    assert detection == Detection(
        None, None, Detected("pytest", "tests/ contains test_*.py files"), ("python",)
    )


def test_tests_directory_without_python_tests_is_ignored(tmp_path: Path) -> None:
    make_repo(tmp_path, {"tests/app.spec.js": ""})
    assert detect_validation(tmp_path) == Detection(None, None, None, ())


# --- rust, go, mixtures ------------------------------------------------------------------------


def test_rust(tmp_path: Path) -> None:
    make_repo(tmp_path, {"Cargo.toml": "[package]\nname = 'x'\n"})
    detection = detect_validation(tmp_path)
    assert commands(detection) == ("cargo clippy -- -D warnings", "cargo check", "cargo test")
    assert detection.stacks == ("rust",)
    assert detection.test is not None and "Cargo.toml" in detection.test.source


def test_go_has_no_typecheck(tmp_path: Path) -> None:
    make_repo(tmp_path, {"go.mod": "module example.com/x\n\ngo 1.22\n"})
    detection = detect_validation(tmp_path)
    assert commands(detection) == ("go vet ./...", None, "go test ./...")
    assert detection.stacks == ("go",)
    assert detection.lint is not None and "go.mod" in detection.lint.source


def test_each_slot_taken_from_the_first_stack_that_has_it(tmp_path: Path) -> None:
    make_repo(
        tmp_path,
        {
            "Makefile": "test:\n\tgo test ./...\n",
            "pyproject.toml": "[tool.mypy]\n",
            "Cargo.toml": "[package]\n",
            "go.mod": "module x\n",
        },
    )
    detection = detect_validation(tmp_path)
    assert commands(detection) == ("cargo clippy -- -D warnings", "mypy .", "make test")
    assert detection.stacks == ("make", "python", "rust", "go")
