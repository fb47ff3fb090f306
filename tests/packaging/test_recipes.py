"""The packaging recipes agree with the source (one version: openloop/__init__.py), and the man
pages and shell completions generate from the click tree. Fast, no root."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from openloop import __version__
from openloop.adapters import units

ROOT = Path(__file__).resolve().parents[2]
PACKAGING = ROOT / "packaging"


def test_every_recipe_has_the_version_of_openloop_init():
    changelog = (PACKAGING / "debian/changelog").read_text().splitlines()[0]
    assert re.match(rf"openloop \({re.escape(__version__)}-\d+\) ", changelog), changelog
    spec = (PACKAGING / "rpm/openloop.spec").read_text()
    assert re.search(rf"^Version:\s+{re.escape(__version__)}$", spec, re.M)
    pkgbuild = (PACKAGING / "arch/PKGBUILD").read_text()
    assert f"\npkgver={__version__}\n" in pkgbuild
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and "\nversion =" not in pyproject


def test_recipes_ship_every_unit_and_enable_none():
    install = (PACKAGING / "debian/openloop.install").read_text()
    spec = (PACKAGING / "rpm/openloop.spec").read_text()
    pkgbuild = (PACKAGING / "arch/PKGBUILD").read_text()
    for name in units.TEMPLATES:
        assert f"units/{name} usr/lib/systemd/user/" in install
        assert f"%{{_userunitdir}}/{name}" in spec and f"units/{name}" in spec
        assert f"units/{name}" in pkgbuild
    rules = (PACKAGING / "debian/rules").read_text()
    assert "override_dh_installsystemduser:\n" in rules  # no deb-systemd-helper --user enable
    assert "systemctl" not in spec.replace("%systemd_user_post", "").replace(
        "%systemd_user_preun", ""
    )


def test_debian_depends_on_debian_packages_of_every_runtime_dependency():
    control = (PACKAGING / "debian/control").read_text()
    binary = control.split("Package: openloop", 1)[1]
    for dep in ("python3-click", "python3-yaml", "python3-pydantic (>= 2)", "python3-pathspec",
                "python3-sdnotify", "python3-systemd", "git,"):  # fmt: skip
        assert dep in binary, dep
    assert "debhelper-compat (= 13)" in control and "pybuild-plugin-pyproject" in control


def test_man_pages_one_per_group_from_the_click_tree(tmp_path):
    env = {"SOURCE_DATE_EPOCH": "1800000000", "PATH": "/usr/bin:/bin"}
    argv = [sys.executable, str(ROOT / "scripts/gen_man.py"), str(tmp_path)]
    subprocess.run(argv, check=True, capture_output=True, env=env)
    pages = sorted(p.name for p in tmp_path.iterdir())
    assert pages == ["openloop-config.1", "openloop-project.1", "openloop-promotion.1",
                     "openloop-service.1", "openloop-task.1", "openloop.1"]  # fmt: skip
    main = (tmp_path / "openloop.1").read_text()
    assert main.startswith('.\\" Generated') and '.TH OPENLOOP 1 "2027-01-15"' in main
    assert f'"openloop {__version__}"' in main
    # Single commands, the unit-only commands and the environment are on the main page.
    for text in (".SS openloop run\\-once", ".SS openloop gate", "OPENLOOP_PI_BIN",
                 "openloop\\-service\\fR(1)", "/usr/lib/systemd/user"):  # fmt: skip
        assert text in main, text
    service_page = (tmp_path / "openloop-service.1").read_text()
    assert ".SS openloop service install" in service_page and "\\-\\-sandbox" in service_page
    assert not re.search(r"^[.'](?!\\\"|TH|SH|SS|TP|PP|RS|RE|nf|fi|B |I )", main, re.M)


def test_completion_scripts_for_bash_zsh_and_fish(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "scripts/gen_completions.py"), str(tmp_path)],
                   check=True, capture_output=True)  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_openloop", "openloop.bash",
                                                          "openloop.fish"]  # fmt: skip
    assert (
        "complete -o nosort -F _openloop_completion openloop"
        in (tmp_path / "openloop.bash").read_text()
    )
    assert "#compdef openloop" in (tmp_path / "_openloop").read_text()
    assert "complete --no-files --command openloop" in (tmp_path / "openloop.fish").read_text()
