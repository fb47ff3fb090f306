"""`openloop config ...`"""

from __future__ import annotations

import click

from openloop.cli import render
from openloop.cli.options import examples, show_options
from openloop.cli.output import print_json, want_json
from openloop.state import config as cfg
from openloop.state import stacks
from openloop.state.project import require_initialized, resolve
from openloop.state.projectconfig import update_project_config


def _keys_epilog() -> str:
    # Built lazily from the model so the list cannot drift from what `set` accepts.
    return "\b\nKeys:\n" + "\n".join(
        f"  {key:34} {desc}" for key, desc in cfg.settable_keys().items()
    )


@click.group(
    epilog=examples(
        "openloop config show",
        "openloop config set budgets.dailyCostUsd 10",
        "openloop config set-model claude-sonnet-4-5",
        "openloop config project-show web",
    )
)
def config() -> None:
    """Read and change global and per-project configuration."""


@config.command("show", epilog=examples("openloop config show", "openloop config show --json"))
@show_options
@click.pass_obj
def show_cmd(env, fmt) -> None:
    """Print the global config with defaults filled in (JSON when piped or with --json)."""
    data = cfg.load_config(env).to_data()
    data["_path"] = str(env.config_file)
    if want_json(fmt, env.stdout_isatty):
        print_json(data)
        return
    render.config_screen(data, render.use_color(env)).echo()


class _SetCommand(click.Command):
    def format_epilog(self, ctx, formatter):
        self.epilog = (
            examples(
                "openloop config set budgets.dailyCostUsd 10",
                "openloop config set runtime.runTimeoutSeconds 1200",
                "openloop config set notifications.onTaskFailed 'notify-send OpenLoop failed'",
                "openloop config set notifications.onTaskFailed null",
            )
            + "\n\n"
            + _keys_epilog()
        )
        super().format_epilog(ctx, formatter)


@config.command("set", cls=_SetCommand, context_settings={"ignore_unknown_options": True})
@click.argument("key")
@click.argument("value")
@click.pass_obj
def set_cmd(env, key: str, value: str) -> None:
    """Set KEY (dotted, as in 'config show') to VALUE; 'null' clears it."""
    stored = cfg.set_key(env, key, value)
    click.echo(f"Set {key} = {stored!r}" if isinstance(stored, str) else f"Set {key} = {stored}")


@config.command(
    "set-model",
    epilog=examples(
        "openloop config set-model claude-sonnet-4-5",
        "openloop config set-model gpt-5 --provider openai",
    ),
)
@click.argument("model")
@click.option("--provider", help="Also set the default provider.")
@click.pass_obj
def set_model_cmd(env, model: str, provider: str | None) -> None:
    """Set the global default model (a project's own model, or --model, wins)."""
    with cfg.edit_config(env) as conf:
        conf.model = model
        if provider is not None:
            conf.provider = provider
    click.echo(f"Global model set to {model}")


@config.command("project-show", epilog=examples("openloop config project-show web"))
@click.argument("alias")
@show_options
@click.pass_obj
def project_show_cmd(env, alias: str, fmt) -> None:
    """Print a project's project.json, the effective model, and the detected commands.

    A readable screen on a terminal; JSON when piped or with --json.
    """
    proj = resolve(env, alias)
    require_initialized(proj)
    pconf = proj.config()
    gconf = cfg.load_config(env)
    choice = cfg.resolve_model(
        None,
        pconf.pi.model,
        gconf.model,
        project_provider=pconf.pi.provider,
        global_provider=gconf.provider,
    )
    detection = stacks.detect_validation(proj.repo)
    data = {
        "path": str(proj.plane.project_file),
        "config": pconf.to_data(),
        "effectiveModel": {
            "model": choice.model,
            "provider": choice.provider,
            "source": choice.source,
        },
        "detected": {
            slot: ({"command": d.command, "source": d.source} if d else None)
            for slot, d in (
                ("lint", detection.lint),
                ("typecheck", detection.typecheck),
                ("test", detection.test),
            )
        },
        "stacks": list(detection.stacks),
    }
    if want_json(fmt, env.stdout_isatty):
        print_json(data)
        return
    render.project_config_screen(data, render.use_color(env)).echo()


@config.command(
    "project-set-model", epilog=examples("openloop config project-set-model web claude-haiku-4-5")
)
@click.argument("alias")
@click.argument("model")
@click.option("--provider", help="Also set the project's provider.")
@click.pass_obj
def project_set_model_cmd(env, alias: str, model: str, provider: str | None) -> None:
    """Set a project's model (in its .openloop/project.json)."""
    proj = resolve(env, alias)
    require_initialized(proj)

    def change(conf):
        conf.pi.model = model
        if provider is not None:
            conf.pi.provider = provider

    update_project_config(proj.plane.project_file, change)
    click.echo(f"Project {proj.alias} model set to {model}")
