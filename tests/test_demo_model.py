"""The demo's scripted model and pi lookup, without pi: replies keyed by the prompt, SSE over
HTTP on 127.0.0.1, and what the demo says when pi cannot be installed."""

from __future__ import annotations

import json
import urllib.request

import pytest

from openloop.actions import demo, demo_pi, demo_script
from openloop.adapters.demo_model import (
    MODEL,
    PROVIDER,
    UNKNOWN_TASK,
    Call,
    DemoModel,
    TaskScript,
    Turn,
    write_pi_config,
)

SCRIPTS = {
    "t1": TaskScript(
        first=(Turn((Call("read", {"path": "a"}),)), Turn(text="first done")),
        retry=(Turn(text="retry done"),),
    )
}


def request(task: str, *, retry: bool = False, turns: int = 0) -> dict:
    prompt = f"Task {task} (kind feature, declared risk low-risk, attempt 1)\n"
    if retry:
        prompt += "## The previous attempt failed\nlint: print() left\n"
    messages = [{"role": "system", "content": "rules"}, {"role": "user", "content": prompt}]
    for _ in range(turns):
        messages += [{"role": "assistant", "content": ""}, {"role": "tool", "content": "ok"}]
    return {"messages": messages}


def test_replies_are_keyed_by_task_retry_and_turn():
    with DemoModel(SCRIPTS) as model:
        assert model.answer(request("t1")).calls[0].name == "read"
        assert model.answer(request("t1", turns=1)).text == "first done"
        assert model.answer(request("t1", turns=5)).text == "Done."
        assert model.answer(request("t1", retry=True)).text == "retry done"
        assert model.answer(request("other")) == UNKNOWN_TASK
        assert [(s.task_id, s.retry, s.turn) for s in model.seen][:2] == [
            ("t1", False, 0),
            ("t1", False, 1),
        ]


def test_streams_tool_calls_as_server_sent_events():
    with DemoModel(SCRIPTS) as model:
        body = json.dumps({**request("t1"), "stream": True}).encode()
        req = urllib.request.Request(
            model.url + "/chat/completions", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback
            lines = [x for x in resp.read().decode().splitlines() if x.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(x[6:]) for x in lines[:-1]]
    call = chunks[1]["choices"][0]["delta"]["tool_calls"][0]
    assert call["function"]["name"] == "read"
    assert json.loads(call["function"]["arguments"]) == {"path": "a"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"]["total_tokens"] > 0


def test_pi_config_goes_under_the_given_home(tmp_path):
    agent = write_pi_config(tmp_path, "http://127.0.0.1:9/v1")
    models = json.loads((agent / "models.json").read_text())
    provider = models["providers"][PROVIDER]
    assert provider["baseUrl"] == "http://127.0.0.1:9/v1"
    assert provider["models"][0]["id"] == MODEL
    assert agent == tmp_path / ".pi" / "agent"


def test_every_demo_task_has_a_script():
    heal = demo_script.HEAL_PREFIX + "*"
    assert {t.id for t in demo_script.TASKS} | {heal} == set(demo_script.SCRIPTS)


def test_a_script_key_ending_in_a_star_matches_ids_by_prefix():
    from openloop.adapters.demo_model import script_for

    scripts = demo_script.SCRIPTS
    assert script_for(scripts, "fix-lint-9eb778") is scripts["fix-lint-*"]
    assert script_for(scripts, "add-subtract") is scripts["add-subtract"]
    assert script_for(scripts, "fix-lin") is None
    assert script_for(scripts, None) is None


def test_the_demos_units_are_standalone_and_check_that_the_demo_still_runs(tmp_path):
    """Not an instance of the user's openloop@ template (whose drop-ins would apply): a name
    with no '-' or '@', OpenLoop's unit text with the project filled in, the demo's
    environment, and a first condition that stops the timer once the demo is gone."""
    import os

    from openloop.actions import demo_units
    from openloop.env import Environment

    env = Environment.from_os(
        {
            "HOME": str(tmp_path),
            "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
            "PATH": os.environ["PATH"],
        }
    )
    world = {"OPENLOOP_HOME": "/d/o l", "HOME": "/d/h", "PI_CODING_AGENT_DIR": "/d/h/.pi/agent"}
    du = demo_units.DemoUnits(env, "demo-abc123", world, tmp_path / "demo.lock")
    unit_dir = tmp_path / "cfg/systemd/user"
    made = du.files("[Service]\nRuntimeMaxSec=300\n")
    files = {str(p.relative_to(unit_dir)): t for p, t in made.items()}
    assert du.service == "openloop_demo_abc123.service" and "-" not in du.name
    service, dropin = files[du.service], files[f"{du.service}.d/{demo_units.DROPIN}"]
    assert "%i" not in service and "OnFailure=" not in service
    assert "run-once --project demo-abc123" in service
    lines = dropin.splitlines()
    conditions = [line for line in lines if line.startswith("ExecCondition=")]
    assert conditions[0] == "ExecCondition="  # the unit file's gate is replaced, not added to
    assert "flock -n -E 0" in conditions[1] and str(tmp_path / "demo.lock") in conditions[1]
    assert conditions[2].endswith("gate --project demo-abc123")
    assert '"OPENLOOP_HOME=/d/o l"' in dropin and '"PI_CODING_AGENT_DIR=/d/h/.pi/agent"' in dropin
    assert "EnvironmentFile" not in service + dropin  # no file of the user's is read
    assert "RuntimeMaxSec=300" in dropin
    assert "PartOf=" not in files[du.timer]
    assert "OnActiveSec=1s" in files[f"{du.timer}.d/{demo_units.DROPIN}"]
    assert sorted(files) == sorted(
        [
            du.service,
            du.timer,
            f"{du.service}.d/{demo_units.DROPIN}",
            f"{du.timer}.d/{demo_units.DROPIN}",
        ]
    )


def test_without_pi_and_npm_the_demo_says_what_to_run(tmp_path, monkeypatch):
    monkeypatch.setattr(demo_pi, "_SOURCE_ROOT", tmp_path)  # no source checkout's .tools/ either
    environ = {"PATH": str(tmp_path), "HOME": str(tmp_path), "OPENLOOP_TOOLS_DIR": str(tmp_path)}
    with pytest.raises(demo.DemoError) as err:
        demo.ensure_pi(environ, lambda _: None)
    assert "npm install --prefix" in str(err.value)
    assert "@mariozechner/pi-coding-agent@0.73.1" in str(err.value)


def test_an_explicit_pi_wins(tmp_path):
    pi = tmp_path / "pi"
    pi.write_text("#!/bin/sh\n")
    pi.chmod(0o755)
    assert demo.find_pi({"OPENLOOP_PI_BIN": str(pi), "PATH": ""}) == pi
