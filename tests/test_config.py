"""Global config, project model settings, and the one rule for choosing a model."""

from __future__ import annotations

import json

import pytest

from openloop.state.config import resolve_model, settable_keys


def test_defaults(ol):
    shown = ol("config", "show").json()
    assert shown["budgets"]["dailyCostUsd"] == 25
    assert shown["runtime"]["runTimeoutSeconds"] == 1800
    assert shown["runtime"]["maxAttemptsPerTask"] == 3
    assert shown["runtime"]["noProgressRepeatLimit"] == 2


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("budgets.dailyCostUsd", "10.5", 10.5),
        ("runtime.runTimeoutSeconds", "600", 600),
        ("runtime.maxAttemptsPerTask", "5", 5),
        ("runtime.noProgressRepeatLimit", "3", 3),
        ("runtime.inactivityTimeoutSeconds", "120", 120),
        ("notifications.onTaskFailed", "notify-send 'task failed'", "notify-send 'task failed'"),
        ("notifications.onTaskFailed", "null", None),
        ("model", "claude-sonnet-4-5", "claude-sonnet-4-5"),
    ],
)
def test_set_valid_keys(ol, env, key, value, expected):
    result = ol("config", "set", key, value)
    assert result.code == 0, result.err
    section, _, leaf = key.rpartition(".")
    data = json.loads(env.config_file.read_text())
    assert (data[section][leaf] if section else data[leaf]) == expected


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "budgets.dailyCostUsd",
            "-1",
            "budgets.dailyCostUsd: Input should be greater than or equal to 0",
        ),
        ("budgets.dailyCostUsd", "lots", "budgets.dailyCostUsd: Input should be a valid number"),
        ("runtime.runTimeoutSeconds", "0", "runtime.runTimeoutSeconds"),
        ("runtime.maxAttemptsPerTask", "2.5", "runtime.maxAttemptsPerTask"),
        ("runtime.bogus", "1", "'runtime.bogus' is not a settable config key"),
        ("version", "3", "'version' is not a settable config key"),
    ],
)
def test_set_rejects_bad_keys_and_values_without_writing(ol, env, key, value, message):
    ol("config", "set", "budgets.dailyCostUsd", "7")
    before = env.config_file.read_bytes()
    result = ol("config", "set", key, value)
    assert result.code == 2
    assert message in result.err
    assert env.config_file.read_bytes() == before


def test_set_help_lists_every_key(ol):
    help_text = ol("config", "set", "--help").out
    for key in settable_keys():
        assert key in help_text


def test_invalid_config_file_is_reported_not_rewritten(ol, env):
    env.config_dir.mkdir(parents=True)
    env.config_file.write_text('{"version": 2, "budgets": {"dailyCostUsd": "free"}}')
    result = ol("config", "set", "model", "x")
    assert result.code == 2
    assert f"{env.config_file}: budgets.dailyCostUsd:" in result.err
    assert env.config_file.read_text() == '{"version": 2, "budgets": {"dailyCostUsd": "free"}}'


@pytest.mark.parametrize(
    ("cli", "project", "global_", "expected", "source"),
    [
        ("cli-m", "proj-m", "glob-m", "cli-m", "cli"),
        (None, "proj-m", "glob-m", "proj-m", "project"),
        ("", "proj-m", "glob-m", "proj-m", "project"),
        ("  ", None, "glob-m", "glob-m", "global"),
        (None, None, "glob-m", "glob-m", "global"),
        (None, "", "", None, "agent default"),
        (None, None, None, None, "agent default"),
    ],
)
def test_model_resolution_order(cli, project, global_, expected, source):
    choice = resolve_model(cli, project, global_)
    assert (choice.model, choice.source) == (expected, source)


def test_provider_resolution_follows_the_same_order():
    assert (
        resolve_model(
            None, "m", None, project_provider="anthropic", global_provider="openai"
        ).provider
        == "anthropic"
    )
    assert (
        resolve_model("m", None, None, cli_provider="mock", project_provider="anthropic").provider
        == "mock"
    )
    assert resolve_model(None, None, "g", global_provider="openai").provider == "openai"


def test_set_model_global_and_project(ol, project):
    assert ol("config", "set-model", "glob-model", "--provider", "openai").code == 0
    shown = ol("config", "project-show", "demo").json()
    assert shown["effectiveModel"] == {
        "model": "glob-model",
        "provider": "openai",
        "source": "global",
    }
    assert ol("config", "project-set-model", "demo", "proj-model").code == 0
    shown = ol("config", "project-show", "demo").json()
    assert shown["effectiveModel"]["model"] == "proj-model"
    assert shown["effectiveModel"]["source"] == "project"
    assert shown["config"]["pi"]["model"] == "proj-model"


def test_project_show_reports_detected_commands_and_their_source(ol, tmp_path):
    from tests.conftest import make_repo

    repo = make_repo(
        tmp_path / "node",
        {
            "package.json": json.dumps({"scripts": {"lint": "eslint .", "test": "vitest"}}),
            "pnpm-lock.yaml": "lockfileVersion: 9\n",
        },
    )
    assert ol("project", "add", "node", str(repo), "--init").code == 0
    shown = ol("config", "project-show", "node").json()
    assert shown["config"]["validation"]["lintCommand"] == "pnpm run lint"
    assert shown["detected"]["lint"]["command"] == "pnpm run lint"
    assert "package.json" in shown["detected"]["lint"]["source"]
    assert shown["detected"]["typecheck"] is None
