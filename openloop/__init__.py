"""OpenLoop: run a coding agent over a project's backlog, one safe iteration at a time.

Layers, lowest first; a module imports only its own layer and those below (tests/test_layers.py):
the primitives here (env, errors, progress, resources), state (files and their models),
adapters (the outside world: agents, git, systemd, journal), loop (one iteration and
promotion), actions (what each command does), cli (click commands).
"""

__version__ = "0.1.0"
