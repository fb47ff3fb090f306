"""OpenLoop: run a coding agent over a project's backlog, one safe iteration at a time."""

__version__ = "0.1.0"
