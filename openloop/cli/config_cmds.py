"""`openloop config ...`"""

from __future__ import annotations

import click

from openloop.cli import render, screens
from openloop.cli.options import examples, format_options, show_options
from openloop.cli.output import info, print_json, want_json
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
    screens.config_screen(data, render.use_color(env)).echo()


class _SetCommand(click.Command):
    def format_epilog(self, ctx, formatter):
        self.epilog = (
            examples(
                "openloop config set budgets.dailyCostUsd 10",
                "openloop config set runtime.runTimeoutSeconds 1200",
                "openloop config set notifications.onTaskFailed 'notify-send OpenLoop failed'",
                "openloop config set notifications.onTaskFailed null",
                "openloop config set runtime.runTimeoutSeconds 20m",
                "openloop config set -p web schedule.intervalMinutes 1h --apply",
                "openloop config set -p web validation.testCommand 'make test' --trust",
            )
            + "\n\n"
            + _keys_epilog()
            + "\n\n\b\nProject keys (with -p ALIAS):\n"
            + "\n".join(f"  {key}" for key in _project_keys())
        )
        super().format_epilog(ctx, formatter)


def _project_keys() -> list[str]:
    from openloop.actions.settings import project_settable_keys

    return project_settable_keys()


@config.command("set", cls=_SetCommand, context_settings={"ignore_unknown_options": True})
@click.option(
    "--project",
    "-p",
    "alias",
    metavar="ALIAS",
    help="Set a key of this project's .openloop/project.json instead of the global config.",
)
@click.option("--trust", "do_trust", is_flag=True, help="With -p: approve changed commands.")
@click.option("--apply", "do_apply", is_flag=True, help="With -p: rewrite the systemd drop-ins.")
@click.argument("key")
@click.argument("value")
@click.pass_obj
def set_cmd(env, alias, do_trust, do_apply, key: str, value: str) -> None:
    """Set KEY (dotted, as in 'config show') to VALUE; 'null' clears it.

    Durations take units: 90s, 20m, 1h30m (a bare number is the key's own unit); the file keeps
    the number. With -p ALIAS the project's project.json is edited atomically and re-validated,
    and you are told whether 'project trust' or 'service install' is needed (--trust and
    --apply do it, after showing the change).
    """
    if alias is None:
        if do_trust or do_apply:
            raise click.UsageError("--trust and --apply go with -p ALIAS")
        stored = cfg.set_key(env, key, value)
        click.echo(
            f"Set {key} = {stored!r}" if isinstance(stored, str) else f"Set {key} = {stored}"
        )
        return
    from openloop.actions import settings

    done = settings.set_project_setting(env, alias, key, value)
    click.echo(
        f"{done.alias}: {key}: {settings.shown(done.old)} -> {settings.shown(done.new)}"
        + ("" if done.changed else " (unchanged)")
        + f"  ({done.path})"
    )
    if done.needs_trust:
        if do_trust:
            from openloop.actions import projects

            review = projects.trust_project(env, done.alias)
            for line in review.commands:
                info(line)
            click.echo(f"Approved the commands of {done.alias}.")
        else:
            info(
                f"The commands changed: runs skip {done.alias} until you approve them with "
                f"'openloop project trust {done.alias}' (or add --trust)."
            )
    if done.needs_install:
        if do_apply:
            if settings.apply_units(env, done.alias):
                click.echo(f"Updated the systemd drop-ins of {done.alias}.")
            else:
                info("The systemd units are not installed; nothing to update.")
        else:
            info(
                "systemd still runs with the old value: 'openloop service install' "
                "(or add --apply) to update the drop-ins."
            )


@config.command(
    "validate",
    epilog=examples("openloop config validate", "openloop config validate -p web --json"),
)
@click.option("--project", "-p", "alias", metavar="ALIAS", help="Only this project's files.")
@format_options
@click.pass_obj
def validate_cmd(env, alias, fmt) -> int:
    """Check the global config and each project's project.json and policy.yaml.

    Both policy files are read: the working file you edit and the one committed on the default
    branch, which the runs obey. Each problem names the file, the line (YAML) and the key.
    Exit 0 when everything is valid, 2 otherwise.
    """
    from openloop.actions import settings

    report = settings.validate_settings(env, alias)
    if want_json(fmt, env.stdout_isatty):
        print_json(report.to_data())
    else:
        for check in report.checks:
            mark = "ok  " if check.ok else "FAIL"
            click.echo(f"{mark} {check.what}  {check.path}")
            if check.problem:
                click.echo(f"     {check.problem}")
            if check.note:
                click.echo(f"     note: {check.note}")
        bad = sum(not c.ok for c in report.checks)
        click.echo("All valid." if report.ok else f"{bad} file(s) invalid.")
    return 0 if report.ok else 2


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
    screens.project_config_screen(data, render.use_color(env)).echo()


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
