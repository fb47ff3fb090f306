#!/usr/bin/env python3
"""Write the bash, zsh and fish completion scripts, as `_OPENLOOP_COMPLETE=<shell>_source
openloop` prints them (click's shell completion; the scripts call `openloop` back at completion
time). Run at package build time:

    python3 scripts/gen_completions.py OUTDIR    # OUTDIR/openloop.bash, _openloop, openloop.fish
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILES = {"bash": "openloop.bash", "zsh": "_openloop", "fish": "openloop.fish"}


def generate(outdir: Path) -> list[Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    written = []
    for shell, name in FILES.items():
        proc = subprocess.run(
            [sys.executable, "-c", "from openloop.cli import main; main()"],
            env={**env, "_OPENLOOP_COMPLETE": f"{shell}_source"},
            capture_output=True,
            text=True,
            check=True,
        )
        if "_OPENLOOP_COMPLETE" not in proc.stdout:
            raise SystemExit(f"no {shell} completion script from openloop: {proc.stderr}")
        (outdir / name).write_text(proc.stdout, encoding="utf-8")
        written.append(outdir / name)
    return written


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: gen_completions.py OUTDIR")
    for p in generate(Path(sys.argv[1])):
        print(p)
