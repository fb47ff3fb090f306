"""main() holds the garbage collector off while a command's modules are imported: every
command, lazy or not, must run with it on again (a long `logs -f` or `service run` would
otherwise only grow)."""

from __future__ import annotations

import gc

import click
import pytest

from openloop import cli


def test_a_command_that_is_not_lazy_runs_with_the_collector_on(monkeypatch):
    seen = []

    @click.command("zz-gc-probe")
    def probe() -> None:
        seen.append(gc.isenabled())

    monkeypatch.setitem(cli.cli.commands, "zz-gc-probe", probe)
    with pytest.raises(SystemExit):
        cli.main(["zz-gc-probe"])
    assert seen == [True] and gc.isenabled()


def test_a_lazy_command_runs_with_the_collector_on(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENLOOP_HOME", str(tmp_path))
    seen = []
    real = click.Command.invoke

    def spy(self, ctx):
        seen.append((self.name, gc.isenabled()))
        return real(self, ctx)

    monkeypatch.setattr(click.Command, "invoke", spy)
    with pytest.raises(SystemExit):
        cli.main(["task", "list", "-p", "nope"])
    assert ("list", True) in seen and gc.isenabled()
