"""`openloop demo`: the whole loop on a sample repository, with the real pi and no API key."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import click

from openloop.cli.options import examples


def _openloop_command() -> str:
    """How the user runs this OpenLoop: the script next to our interpreter, else `-m`."""
    script = Path(sys.executable).with_name("openloop")
    if script.exists():
        return shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m openloop"


@click.command(
    "demo",
    epilog=examples(
        "openloop demo",
        "openloop demo --keep              # keep the sample repository and state to explore",
        "openloop demo --dir /tmp/ol-demo --keep",
        "openloop demo --ci                # no pauses; exit 1 unless all five outcomes happened",
        "openloop demo --no-units          # call run-once directly even with a user manager",
    ),
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Run in DIR (new or empty) instead of a temporary directory.",
)
@click.option("--keep", is_flag=True, help="Keep the demo directory for exploring afterwards.")
@click.option(
    "--ci", is_flag=True, help="No pauses; exit 1 if any of the five outcomes is missing."
)
@click.option(
    "--units/--no-units",
    default=None,
    help="Run the iterations through the demo's own systemd timer and service (--units: fail "
    "if no user manager is reachable) or call run-once directly (--no-units). Default: the "
    "units when 'systemctl --user' works.",
)
def demo_cmd(directory: Path | None, keep: bool, ci: bool, units: bool | None) -> int:
    """Run the whole loop on a sample repository: the real pi, a scripted model, no API key.

    \b
    Creates a sample git repository (a tiny Python package with lint and test commands), links
    it under an OPENLOOP_HOME of its own (your projects, config and ~/.pi are never touched),
    installs the pinned pi locally if it is missing, starts a scripted OpenAI-compatible model
    on 127.0.0.1 and runs iterations until the demo backlog is done:
      - a lint error a teammate committed to main is found by the baseline check and healed
        by a ci-healer task before any feature work;
      - a low-risk task is implemented, validated and auto-merged;
      - a change fails the lint check and is retried with the failure in the prompt, then merges;
      - a medium-risk task is validated and left for review (promotion show/apply/reject);
      - a task touching a path the committed policy denies is blocked.
    With a reachable user manager, the iterations run through systemd: OpenLoop's units under
    a name of the demo's (openloop_demo_XXXXXX.timer fires openloop_demo_XXXXXX.service every
    few seconds) and the demo follows their journal; your own units and drop-ins are never
    used or changed, and the demo's are removed at the end. Without one, it calls 'openloop
    run-once' directly, as the unit would, and says so. Then it checks the five outcomes in
    the ledger and the git history, shows the status screen, and removes the demo directory
    unless --keep.
    """
    from openloop.actions import demo

    interactive = not ci and sys.stdout.isatty()

    def pause() -> None:
        if interactive:
            time.sleep(1.2)

    def report(w: demo.World, result: demo.DemoResult) -> None:
        _report(w, result, keep)

    click.echo("OpenLoop demo: the real pi agent, a scripted model on 127.0.0.1, no API key.")
    result = demo.run_demo(
        directory=directory,
        keep=keep,
        say=lambda s: click.echo(s),
        pause=pause,
        report=report,
        units=units,
    )
    click.echo("")
    for outcome in result.outcomes:
        mark = "ok     " if outcome.ok else "MISSING"
        click.echo(f"{mark} {outcome.name}: {outcome.detail}")
    click.echo(
        f"\nDemo {'passed' if result.ok else 'FAILED'} in {result.seconds:.0f} s "
        f"(iterations by {result.via}), {result.spent_usd:.4f} demo dollars."
    )
    if not keep:
        click.echo("The demo directory was removed; 'openloop demo --keep' keeps it for exploring.")
    return 0 if result.ok else 1


def _report(w, result, keep: bool) -> None:
    from openloop.actions import demo

    home = shlex.quote(str(w.home))
    ol = f"OPENLOOP_HOME={home} {_openloop_command()}"
    click.echo("\n== openloop status ==")
    click.echo(demo.status_screen(w).rstrip())
    if result.via == "systemd":
        click.echo(f"\n== the journal: openloop logs -p {w.alias} (the last lines) ==")
        click.echo(demo.journal_tail(w).rstrip() or "(no records: 'openloop doctor' says why)")
        click.echo(
            f"  the demo's units are removed; their records stay: "
            f"journalctl --user -u {result.unit}"
        )
    click.echo("\n== waiting for review: add-safe-divide (medium-risk) ==")
    click.echo(demo.review_summary(w, "add-safe-divide").rstrip())
    click.echo("\nDecide with:")
    for line in (
        f"{ol} promotion show -p {w.alias} --task add-safe-divide",
        f"{ol} promotion apply -p {w.alias} --task add-safe-divide",
        f"{ol} promotion reject -p {w.alias} --task add-safe-divide --reason 'not now'",
    ):
        click.echo(f"  {line}")
    after = "" if keep else " (after 'openloop demo --keep', which keeps this directory)"
    click.echo(f"\nWhat to try next{after}:")
    for line in (
        f"{ol} task list -p {w.alias}",
        f"{ol} task show -p {w.alias} --task raise-production-workers   # why it is blocked",
        f"{ol} task show -p {w.alias} --task add-multiply   # the failed attempt and the retry",
        f"git -C {shlex.quote(str(w.repo))} log --oneline --graph --all",
        f"ls {shlex.quote(str(w.repo / '.openloop' / 'runs'))}   # run records, transcripts",
    ):
        click.echo(f"  {line}")
    click.echo(
        "  (the scripted model stops with the demo: new iterations there need a real provider)"
    )
    click.echo(
        "Your own repository: see the README's 'Quick start' "
        "(openloop project add NAME PATH --init)."
    )
