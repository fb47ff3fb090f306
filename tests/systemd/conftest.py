"""Fixtures for tests that need a real systemd user manager and journald.

``user_manager`` (session) starts them once per session for an unprivileged test user (see
tests/systemd/manager.py for how and why) and stops what it started at the end. When that is not
possible the tests are skipped locally, and fail when ``CI=true`` or ``OPENLOOP_REQUIRE_SYSTEMD=1``.

There is deliberately no ``__init__.py`` here: with one, pytest would import this directory as a
top-level package named ``systemd`` and shadow systemd-python for the whole test session.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.systemd.manager import (
    Unavailable,
    UserManager,
    open_for_traversal,
    start,
    systemd_required,
    systemd_unavailable,
)

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]

_session_manager: UserManager | None = None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "systemd: needs a real systemd user manager and journald")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # This hook sees every collected item, not only ours: mark just those below this directory.
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.systemd)


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    if _session_manager is not None:
        terminalreporter.write_line(f"systemd fixture: {_session_manager.describe()}")


@pytest.fixture(scope="session")
def user_manager() -> Iterator[UserManager]:
    """A running ``systemd --user`` for the test user, plus journald; see UserManager."""
    global _session_manager
    try:
        um = start()
    except Unavailable as exc:
        systemd_unavailable(str(exc))
    except Exception as exc:  # noqa: BLE001 - any failure to start is "unavailable"
        systemd_unavailable(f"starting the user manager failed: {exc!r}")
    um.repo_root = REPO_ROOT  # type: ignore[attr-defined]
    _session_manager = um
    try:
        yield um
    finally:
        um.close()


@pytest.fixture(autouse=True)
def _remove_units_written_by_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """Units a test writes are stopped (all template instances) and deleted after it."""
    if "user_manager" not in request.fixturenames:
        yield
        return
    um: UserManager = request.getfixturevalue("user_manager")
    before = set(um.written_units())
    yield
    um.remove_units([n for n in um.written_units() if n not in before])


@pytest.fixture
def user_tmp_path(user_manager: UserManager, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A fresh directory owned by the test user (pytest's tmp_path is not reachable by it);
    e.g. for OPENLOOP_HOME."""
    base = user_manager.home / "tmp"
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in request.node.name)[:60]
    path = base / name
    if path.exists():
        shutil.rmtree(path)
    user_manager.make_user_dir(path)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _find_openloop() -> Path | None:
    override = os.environ.get("OPENLOOP_TEST_EXE")
    candidates = [
        Path(override) if override else None,
        Path(sys.executable).parent / "openloop",  # the venv running pytest (not resolved)
        REPO_ROOT / ".venv" / "bin" / "openloop",
    ]
    which = shutil.which("openloop")
    candidates.append(Path(which) if which else None)
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


@pytest.fixture(scope="session")
def openloop_exe(user_manager: UserManager) -> Path:
    """Absolute path of the ``openloop`` command, checked to be runnable by the test user
    (every directory up to it, its interpreter and the checkout must be traversable)."""
    exe = _find_openloop()
    if exe is None:
        systemd_unavailable(
            "no openloop executable found (set OPENLOOP_TEST_EXE, or install the checkout into"
            f" {REPO_ROOT / '.venv'})"
        )
    readable = [REPO_ROOT / "pyproject.toml"]
    problem = user_manager.check_can_execute(exe, readable=readable)
    if problem and systemd_required():
        # CI clones into a directory of its own choosing, possibly private (mode 0700). On that
        # throwaway machine, let the test user traverse (not list) the directories above the
        # checkout rather than fail; a developer's machine is never changed this way.
        open_for_traversal(user_manager, [exe, *readable])
        problem = user_manager.check_can_execute(exe, readable=readable)
    if problem:
        systemd_unavailable(problem)
    return exe


@pytest.fixture
def pi_for_units(user_manager):
    """The pinned pi, checked to be runnable by the test user."""
    from tests.support.model_server import find_pi

    pi = find_pi()
    if pi is None:
        pytest.fail("pi not found: run scripts/install-pi.sh", pytrace=False)
    problem = user_manager.check_can_execute(pi.resolve())
    if problem and systemd_required():
        open_for_traversal(user_manager, [pi.resolve()])
        problem = user_manager.check_can_execute(pi.resolve())
    if problem:
        pytest.fail(problem, pytrace=False)
    return pi
