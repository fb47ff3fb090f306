"""The `openloop` command: click groups that parse, call the core, and print.

Errors from the core are OpenLoopError subclasses; `main()` is the one place that turns them into
a one-line message and an exit code (0 ok, 1 operation failed, 2 usage or invalid input).
Must not: hold logic a script or the service would need (that is openloop.actions or
openloop.loop); a command parses its arguments, calls one function below, and prints.
"""

from __future__ import annotations

import gc
import os
import sys

import click

from openloop import __version__
from openloop.env import Environment, serve_home
from openloop.errors import OpenLoopError
from openloop.text import escape

# name -> (module:attribute, one-line help shown by `openloop --help` without importing it)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "openloop.cli.demo_cmds:demo_cmd",
        "See the whole loop on a sample repository: real pi, scripted model, no API key.",
    ),
    "project": (
        "openloop.cli.project_cmds:project",
        "Link git repositories and manage their control planes.",
    ),
    "task": ("openloop.cli.task_cmds:task", "Manage a project's task backlog."),
    "enqueue": (
        "openloop.cli.task_cmds:enqueue",
        "Queue an issue as a task (same as 'task add --from-ref').",
    ),
    "config": (
        "openloop.cli.config_cmds:config",
        "Read and change global and per-project configuration.",
    ),
    "promotion": (
        "openloop.cli.promotion_cmds:promotion_group",
        "Review, merge or reject what iterations produced.",
    ),
    "service": (
        "openloop.cli.service_cmds:service_group",
        "Install, start, stop and inspect the systemd units.",
    ),
    "pause": ("openloop.cli.service_cmds:pause_cmd", "Pause all iterations, or one project's."),
    "resume": ("openloop.cli.service_cmds:resume_cmd", "Resume after 'openloop pause'."),
    "gate": ("openloop.cli.service_cmds:gate_cmd", ""),
    "record-exit": ("openloop.cli.service_cmds:record_exit_cmd", ""),
    "notify-failure": ("openloop.cli.service_cmds:notify_failure_cmd", ""),
    "status": (
        "openloop.cli.observe_cmds:status_cmd",
        "One screen across projects: tasks, reviews, spend, next run.",
    ),
    "watch": ("openloop.cli.observe_cmds:watch_cmd", "The status screen, refreshed."),
    "logs": ("openloop.cli.observe_cmds:logs_cmd", "Read the iterations' journal records."),
    "events": ("openloop.cli.observe_cmds:events_cmd", "The audit trail from the journal."),
    "doctor": ("openloop.cli.observe_cmds:doctor_cmd", "Check everything an unattended run needs."),
    "run-once": (
        "openloop.cli.run_cmds:run_once_cmd",
        "Run one iteration for a project (what the systemd service runs).",
    ),
    "run": (
        "openloop.cli.run_cmds:run_cmd",
        "Run the agent on a one-off prompt, isolated and accounted like an iteration.",
    ),
}


class LazyGroup(click.Group):
    """Subcommand modules are imported only when used, to keep `openloop --help` fast."""

    def __init__(self, *args, lazy: dict[str, tuple[str, str]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}

    def list_commands(self, ctx):
        return sorted({*super().list_commands(ctx), *self.lazy})

    def format_commands(self, ctx, formatter):
        # Commands with no help line are internal (called by the units): not listed.
        rows = [(name, self.lazy[name][1]) for name in sorted(self.lazy) if self.lazy[name][1]]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def get_command(self, ctx, name):
        if name in self.lazy:
            module_name, attr = self.lazy[name][0].rsplit(":", 1)
            module = __import__(module_name, fromlist=[attr])
            _imported()
            return getattr(module, attr)
        return super().get_command(ctx, name)


# main() holds the cyclic garbage collector off until the command's modules are imported: they
# make only objects that live as long as the process (pydantic models, click commands), and
# collections that walked through them again and again took ~10 ms of every command. Then what
# the imports made is frozen (never walked again) and collection goes on as usual.
_HELD: list[bool] = []


def _imported() -> None:
    if _HELD:
        _HELD.clear()
        gc.freeze()
        gc.enable()


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="\b\nQuick start:\n"
    "  openloop demo                       # the whole loop on a sample repo, no API key\n"
    "  openloop project add web ~/src/web --init\n"
    "  openloop task add -p web --title 'Add a /health endpoint' --risk low-risk\n"
    "  openloop task list -p web\n\n"
    "Set OPENLOOP_DEBUG=1 (or --debug) to see tracebacks.",
)
@click.version_option(__version__, "--version", "-V", prog_name="openloop")
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.option(
    "--color",
    type=click.Choice(["auto", "always", "never"]),
    default=None,
    help="Colour on terminal output (default auto: off when NO_COLOR is set or piped).",
)
@click.pass_context
def cli(ctx: click.Context, debug: bool, color: str | None) -> None:
    """OpenLoop: hand a backlog to the pi coding agent and walk away.

    Each linked git repository gets a control plane in <repo>/.openloop/ (config, policy, task
    ledger). An iteration picks a task, runs the agent in a repository of its own, validates the
    result and promotes it by policy. systemd timers schedule the iterations.
    """
    _imported()  # the command is resolved by now, lazy or not: collection goes on
    if debug:
        os.environ["OPENLOOP_DEBUG"] = "1"
    if color:
        ctx.meta["openloop.color"] = color  # read by openloop.cli.render.color_choice
    if ctx.obj is None:
        ctx.obj = Environment.from_os()
    serve_home(ctx.obj)  # journal records of this command carry the home's id


def main(argv: list[str] | None = None, env: Environment | None = None) -> None:
    if gc.isenabled():
        gc.disable()
        _HELD.append(True)
    sys.exit(run(argv, env))


def run(argv: list[str] | None = None, env: Environment | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        result = cli.main(args=args, prog_name="openloop", obj=env, standalone_mode=False)
        return result if isinstance(result, int) else 0
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except click.ClickException as exc:
        # Messages quote the offending value ("'x' is not one of..."): it may hold controls.
        exc.message = escape(exc.message)
        exc.show()
        return exc.exit_code
    except OpenLoopError as exc:
        if os.environ.get("OPENLOOP_DEBUG"):
            import traceback  # only here: importing it costs every command's start-up

            traceback.print_exc()
        # One line, whatever value the message quotes (an unknown id, a bad alias...).
        click.echo(f"openloop: error: {escape(str(exc))}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug: say so in one line, show the traceback only on request
        if os.environ.get("OPENLOOP_DEBUG"):
            import traceback  # only here: importing it costs every command's start-up

            traceback.print_exc()
        click.echo(
            f"openloop: internal error: {type(exc).__name__}: {escape(str(exc))} "
            "(run with OPENLOOP_DEBUG=1 for the traceback)",
            err=True,
        )
        return 1
