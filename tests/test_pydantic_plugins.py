"""No pydantic plugin runs inside OpenLoop: a package with a `pydantic` entry point (which the
agent could install where the user's Python finds it) would otherwise be imported and called on
every validation of OpenLoop's own files. Each case runs in a fresh interpreter, with a real
distribution planted on its path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import openloop

SOURCE = str(Path(openloop.__file__).resolve().parent.parent)


def plant_plugin(site: Path, marker: Path) -> None:
    dist = site / "evil_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: evil-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[pydantic]\nevil = evil_plugin:plugin\n")
    (site / "evil_plugin.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('loaded')\n"
        "class _P:\n"
        "    def new_schema_validator(self, *a, **k):\n"
        "        return None, None, None\n"
        "plugin = _P()\n"
    )


def run(code: str, site: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), SOURCE])}
    env.pop("PYDANTIC_DISABLE_PLUGINS", None)
    env["OPENLOOP_HOME"] = str(tmp_path / "home")
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path
    )


def test_pydantic_loads_the_planted_plugin_without_openloop(tmp_path):
    # The control: the plant is a working plugin, so the test below can fail.
    site, marker = tmp_path / "site", tmp_path / "marker"
    plant_plugin(site, marker)
    code = "import pydantic\nclass M(pydantic.BaseModel):\n    x: int = 1\nM(x=2)\n"
    proc = run(code, site, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert marker.read_text() == "loaded"


def test_openloop_validates_its_files_without_loading_any_plugin(tmp_path):
    site, marker = tmp_path / "site", tmp_path / "marker"
    plant_plugin(site, marker)
    code = (
        "import sys\n"
        "from openloop.state.ledger import parse_ledger\n"
        "at = '2026-01-01T00:00:00.000Z'\n"
        "task = {'id': 'a', 'title': 'A', 'createdAt': at, 'updatedAt': at}\n"
        "ledger = parse_ledger({'version': 2, 'tasks': [task]}, 'x')\n"
        "assert ledger.tasks[0].title == 'A'\n"
        "import pydantic\n"
        "class M(pydantic.BaseModel):\n    x: int = 1\nM(x=2)\n"
        "print('importlib.metadata' in sys.modules)\n"
    )
    proc = run(code, site, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists()
    # Nor is the plugin machinery paid for: that was the point for start-up.
    assert proc.stdout.strip() == "False"


def test_other_names_of_the_loader_still_come_from_pydantic(tmp_path):
    proc = run(
        "import openloop.state\n"
        "from pydantic.plugin import _loader\n"
        "print(_loader.PYDANTIC_ENTRY_POINT_GROUP, list(_loader.get_plugins()))\n",
        tmp_path / "empty",
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["pydantic", "[]"]
