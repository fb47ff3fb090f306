"""The Debian package, built and used for real: packaging/check-deb.sh debootstraps Debian 13
(trixie), builds the .deb there, checks its contents (dpkg-deb -c), installs it with apt into a
fresh trixie root and runs it (--version, --help, man -w, systemd-analyze verify, one run-once
with a stand-in agent). About 1.5 minutes, as root, with Debian's package mirror reachable.

Runs when CI=true (CI is root) and fails there, never skips, when it cannot run; elsewhere only
with OPENLOOP_TEST_PACKAGING=1."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WANTED = os.environ.get("CI") == "true" or os.environ.get("OPENLOOP_TEST_PACKAGING") == "1"


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("the .deb check needs root (debootstrap, chroot)", pytrace=False)


@pytest.mark.skipif(
    not WANTED, reason="builds a .deb in a chroot: CI=true or OPENLOOP_TEST_PACKAGING=1"
)
def test_deb_builds_installs_and_runs_in_debian_13(tmp_path):
    _need_root()
    proc = subprocess.run(
        ["bash", str(ROOT / "packaging/check-deb.sh"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=1800,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-10000:]
    assert "deb-smoke: ok" in proc.stderr and "check-deb-contents: ok" in proc.stderr
    debs = list((tmp_path / "out").glob("openloop_*_all.deb"))
    assert len(debs) == 1, debs
    # The phase times (debootstrap, build, install test), for the CI log.
    print("\n".join(line for line in proc.stderr.splitlines() if re.search(r": \d+s\b", line)))


@pytest.mark.skipif(not WANTED, reason="installs rpm, rpmlint and makepkg: CI=true or opt-in")
def test_rpm_spec_and_pkgbuild_lint():
    _need_root()
    proc = subprocess.run(
        ["bash", str(ROOT / "packaging/lint-recipes.sh")],
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    assert "0 errors" in proc.stdout
