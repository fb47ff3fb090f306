"""Adapters: the outside world OpenLoop drives: agents and their supervision, git, systemd units,
the journal, sd_notify, notification commands and issue-tracker refs.

Belongs here: code that runs another program or speaks another system's protocol, and turns
its answers into plain values. Must not: decide what an iteration does next or which task runs
(openloop.loop), or parse command lines (openloop.cli). May import openloop.state and the
top-level primitives, never openloop.loop, openloop.actions or openloop.cli.
"""
