"""The demo's model: a scripted OpenAI-compatible chat server on 127.0.0.1, so `openloop demo`
can drive the real `pi` end to end with no API key and no network.

Only the demo uses it; nothing else in OpenLoop may depend on it. pi sends
`POST /v1/chat/completions` with `stream: true` and the whole conversation so far; the server
answers with Server-Sent Events (`data: {chat.completion.chunk}` lines, then `data: [DONE]`):
either tool calls (pi runs them against the real files and asks again with the results) or a
final text reply (pi's run ends).

Which reply comes next is decided from the request alone, so the server keeps no session state:
the task id in OpenLoop's prompt ("Task <id> (kind ...") picks the task's script, the
"previous attempt failed" section picks the retry's script (a key ending in `*` matches ids
by prefix), and the number of assistant turns
already in the conversation picks the turn. A task the script does not know gets a polite
refusal (no change: OpenLoop records no progress).

Stdlib only.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

PROVIDER = "openloop-demo"
MODEL = "scripted-demo"
# Demo dollars per million tokens (input, output): the figures pi multiplies its token counts by.
PRICE = (3.0, 15.0)
USAGE = (1200, 80)  # (prompt, completion) tokens reported for every turn

_TASK_ID = re.compile(r"Task ([a-z0-9][a-z0-9._-]*) \(kind ")
RETRY_MARKER = "## The previous attempt failed"


@dataclass(frozen=True)
class Call:
    """One tool call: `read`, `bash`, `edit` or `write` with pi's arguments."""

    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Turn:
    """The model's answer to one request: tool calls, or (with no calls) the final reply."""

    calls: tuple[Call, ...] = ()
    text: str = ""


@dataclass(frozen=True)
class TaskScript:
    """What the model does for one task: on a first attempt, and on a retry (the prompt then
    carries the previous failure)."""

    first: tuple[Turn, ...]
    retry: tuple[Turn, ...] | None = None


UNKNOWN_TASK = Turn(
    text="I am the demo's scripted model and only know the demo's own tasks; "
    "configure a real model to work on this one."
)


@dataclass
class Seen:
    """What the server was asked, for the demo's own checks."""

    task_id: str | None
    retry: bool
    turn: int
    prompt: str


@dataclass
class DemoModel:
    """Serves `scripts` (task id -> TaskScript) on 127.0.0.1 from a background thread."""

    scripts: Mapping[str, TaskScript]
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, daemon=True, name="openloop-demo-model"
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> DemoModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def answer(self, request: dict[str, Any]) -> Turn:
        messages = request.get("messages") or []
        prompt = _first_user_text(messages)
        match = _TASK_ID.search(prompt)
        task_id = match.group(1) if match else None
        retry = RETRY_MARKER in prompt
        turn = sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "assistant")
        with self._lock:
            self.seen.append(Seen(task_id, retry, turn, prompt))
        script = script_for(self.scripts, task_id)
        if script is None:
            return UNKNOWN_TASK
        turns = script.retry if retry and script.retry is not None else script.first
        return turns[turn] if turn < len(turns) else Turn(text="Done.")

    def chunks(self, turn: Turn) -> Iterator[dict[str, Any]]:
        base = {
            "id": f"chatcmpl-demo-{next(self._ids)}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": MODEL,
        }

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict:
            return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]} | (
                extra
            )

        yield chunk({"role": "assistant", "content": ""})
        if turn.calls:
            for index, call in enumerate(turn.calls):
                tool_call = {
                    "index": index,
                    "id": f"call_{next(self._ids)}",
                    "type": "function",
                    "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
                }
                yield chunk({"tool_calls": [tool_call]})
            finish = "tool_calls"
        else:
            yield chunk({"content": turn.text})
            finish = "stop"
        prompt, completion = USAGE
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        yield chunk({}, finish, usage=usage)


def script_for(scripts: Mapping[str, TaskScript], task_id: str | None) -> TaskScript | None:
    """The task's script: by its id, else by a key ending in `*` that its id starts with
    (OpenLoop names a healing task after its failure's signature, unknown in advance)."""
    if not task_id:
        return None
    if task_id in scripts:
        return scripts[task_id]
    for key, script in scripts.items():
        if key.endswith("*") and task_id.startswith(key[:-1]):
            return script
    return None


def _first_user_text(messages: Sequence[Any]) -> str:
    for message in messages:
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "\n".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _handler_for(model: DemoModel) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # Every response closes its connection: no keep-alive socket outlives the demo.
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
            pass

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/models"):
                entry = {"id": MODEL, "object": "model", "created": 0, "owned_by": "openloop"}
                self._json(200, {"object": "list", "data": [entry]})
            else:
                self._json(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._json(404, {"error": {"message": f"no route {self.path}"}})
                return
            try:
                request = json.loads(self._body() or b"{}")
            except ValueError as err:
                self._json(400, {"error": {"message": f"bad JSON: {err}"}})
                return
            turn = model.answer(request if isinstance(request, dict) else {})
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            try:
                for payload in model.chunks(turn):
                    self.wfile.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass  # pi was stopped mid-stream

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                body = b""
                while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                    body += self.rfile.read(size)
                    self.rfile.readline()
                return body
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _json(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def write_pi_config(home: Path, base_url: str) -> Path:
    """pi's models.json (the demo provider) and settings.json (no retries: a scripted model
    never fails transiently) under `home`/.pi/agent, a HOME of the demo's own."""
    agent_dir = home / ".pi" / "agent"
    agent_dir.mkdir(parents=True, exist_ok=True)
    models = {
        "providers": {
            PROVIDER: {
                "baseUrl": base_url,
                "api": "openai-completions",
                "apiKey": "demo-no-key-needed",
                "compat": {"supportsDeveloperRole": False, "supportsReasoningEffort": False},
                "models": [
                    {
                        "id": MODEL,
                        "name": "OpenLoop demo (scripted)",
                        "cost": {
                            "input": PRICE[0],
                            "output": PRICE[1],
                            "cacheRead": 0,
                            "cacheWrite": 0,
                        },
                    }
                ],
            }
        }
    }
    settings = {"retry": {"enabled": False, "provider": {"maxRetries": 0}}}
    (agent_dir / "models.json").write_text(json.dumps(models, indent=2) + "\n")
    (agent_dir / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    return agent_dir
