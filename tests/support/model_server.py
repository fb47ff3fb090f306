"""A scripted OpenAI-compatible model on loopback, so tests can run the real `pi` binary offline.

Each POST /v1/chat/completions plays the next turn of a `Scenario`; pi then executes its real
tools against the real repository. Stdlib only, and deliberately independent of `openloop`, so
the end-to-end tests exercise pi itself and not our own code.

    scenario = write_file_scenario("hello.txt", "hi\\n")
    with ScriptedModel(scenario) as model:
        write_pi_models_json(home, model.url)
        subprocess.run([pi, "--offline", "--provider", "mock", "--model", "scripted", ...],
                       env=pi_env(home), stdin=subprocess.DEVNULL, ...)
        assert model.requests[-1]["messages"][-1]["role"] == "tool"
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_USAGE = (900, 30)  # (prompt_tokens, completion_tokens): a small but realistic turn


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any]


@dataclass
class ToolCalls:
    """The model asks pi to run these tools (in order); pi answers with a new request."""

    calls: list[ToolCall]
    usage: tuple[int, int] | None = None


@dataclass
class Reply:
    """Final text answer: ends pi's run."""

    text: str
    usage: tuple[int, int] | None = None


@dataclass
class Hang:
    """Sends the first SSE chunk, then stalls until the server is closed."""


@dataclass
class HttpError:
    """Answers with a plain HTTP error (pi treats 5xx as transient and may retry)."""

    status: int = 500
    message: str = "scripted failure"


Turn = ToolCalls | Reply | Hang | HttpError


@dataclass
class Scenario:
    """Turns played one per request; once exhausted, every request gets `after`."""

    turns: list[Turn]
    after: Turn = field(default_factory=lambda: Reply("done"))

    def __post_init__(self) -> None:
        self._next = 0
        self._lock = threading.Lock()

    def next_turn(self) -> Turn:
        with self._lock:
            if self._next < len(self.turns):
                self._next += 1
                return self.turns[self._next - 1]
            return self.after

    @property
    def played(self) -> int:
        """How many scripted turns (not counting `after`) were consumed."""
        return self._next


def write_file_scenario(path: str, content: str, final: str = "done") -> Scenario:
    """One `write` tool call creating `path` (relative to pi's cwd), then a final reply."""
    return Scenario(
        [ToolCalls([ToolCall("write", {"path": path, "content": content})]), Reply(final)]
    )


class ScriptedModel:
    """Serves a Scenario on 127.0.0.1 (ephemeral port) from a background thread."""

    def __init__(self, scenario: Scenario, model: str = "scripted") -> None:
        self.scenario = scenario
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self._closing = threading.Event()
        self._ids = itertools.count(1)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, daemon=True, name="scripted-model"
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def close(self) -> None:
        """Stops serving; hanging handlers see `_closing` and return at once."""
        if self._closing.is_set():
            return
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> ScriptedModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # The handler calls back into these, so the state lives on the model, not on the handler.

    def _record(self, body: dict[str, Any]) -> None:
        self.requests.append(body)

    def _chunks(self, turn: ToolCalls | Reply) -> Iterator[dict[str, Any]]:
        base = {
            "id": f"chatcmpl-{next(self._ids)}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model,
        }

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            return {**base, "choices": [choice], **extra}

        yield chunk({"role": "assistant", "content": ""})
        if isinstance(turn, Reply):
            # Two pieces, so pi's delta accumulation is exercised as with a real model.
            half = len(turn.text) // 2
            for piece in (turn.text[:half], turn.text[half:]):
                if piece:
                    yield chunk({"content": piece})
            finish = "stop"
        else:
            for index, call in enumerate(turn.calls):
                args = json.dumps(call.arguments)
                half = len(args) // 2
                yield chunk(
                    {
                        "tool_calls": [
                            {
                                "index": index,
                                "id": f"call_{next(self._ids)}",
                                "type": "function",
                                "function": {"name": call.name, "arguments": args[:half]},
                            }
                        ]
                    }
                )
                yield chunk(
                    {"tool_calls": [{"index": index, "function": {"arguments": args[half:]}}]}
                )
            finish = "tool_calls"
        prompt, completion = turn.usage or DEFAULT_USAGE
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        yield chunk({}, finish, usage=usage)


def _handler_for(model: ScriptedModel) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0: every response ends by closing the connection, so no keep-alive socket can
        # keep a handler thread blocked in a read after the test is over.
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
            pass  # keep pytest output clean

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/models"):
                self._json(
                    200,
                    {
                        "object": "list",
                        "data": [
                            {
                                "id": model.model,
                                "object": "model",
                                "created": 0,
                                "owned_by": "openloop",
                            }
                        ],
                    },
                )
            else:
                self._json(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._json(404, {"error": {"message": f"no route {self.path}"}})
                return
            try:
                model._record(json.loads(self._read_body() or b"{}"))
            except ValueError as err:
                self._json(400, {"error": {"message": f"bad JSON: {err}"}})
                return
            turn = model.scenario.next_turn()
            if isinstance(turn, HttpError):
                self._json(
                    turn.status,
                    {"error": {"message": turn.message, "type": "server_error", "code": None}},
                )
            elif isinstance(turn, Hang):
                self._start_sse()
                self._send_event(
                    {
                        "id": "chatcmpl-hang",
                        "object": "chat.completion.chunk",
                        "created": int(time.time()),
                        "model": model.model,
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": None,
                                "delta": {"role": "assistant", "content": ""},
                            }
                        ],
                    }
                )
                model._closing.wait()
            else:
                self._start_sse()
                for chunk in model._chunks(turn):
                    self._send_event(chunk)
                self._send_raw(b"data: [DONE]\n\n")

        def _read_body(self) -> bytes:
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

        def _start_sse(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()

        def _send_event(self, payload: dict[str, Any]) -> None:
            self._send_raw(b"data: " + json.dumps(payload).encode() + b"\n\n")

        def _send_raw(self, data: bytes) -> None:
            try:
                self.wfile.write(data)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass  # pi was killed or gave up mid-stream; nothing left to tell it

    return Handler


# --- running pi against the model -----------------------------------------------------------


def write_pi_models_json(
    home: Path,
    base_url: str,
    provider: str = "mock",
    model: str = "scripted",
    cost: tuple[float, float] = (3, 15),
) -> Path:
    """Registers the loopback model with pi; `cost` is (input, output) in $ per million tokens."""
    config = {
        "providers": {
            provider: {
                "baseUrl": base_url,
                "api": "openai-completions",
                "apiKey": "x",
                "compat": {"supportsDeveloperRole": False, "supportsReasoningEffort": False},
                "models": [
                    {
                        "id": model,
                        "cost": {
                            "input": cost[0],
                            "output": cost[1],
                            "cacheRead": 0,
                            "cacheWrite": 0,
                        },
                    }
                ],
            }
        }
    }
    return _write_agent_file(home, "models.json", config)


# pi retries a failing provider (twice in its HTTP client, three more times itself, with
# backoff): tests that script failures turn that off.
NO_RETRIES_SETTINGS: dict[str, Any] = {"retry": {"enabled": False, "provider": {"maxRetries": 0}}}


def write_pi_settings(home: Path, settings: dict[str, Any]) -> Path:
    """Writes pi's global settings.json, e.g. `{"retry": {"enabled": False}}`."""
    return _write_agent_file(home, "settings.json", settings)


def _write_agent_file(home: Path, name: str, payload: dict[str, Any]) -> Path:
    path = Path(home) / ".pi" / "agent" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


def pi_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """A minimal environment for pi: nothing from the caller's HOME, keys or proxies leaks in."""
    env = {
        k: os.environ[k]
        for k in ("PATH", "LANG", "LC_ALL", "TERM", "TMPDIR", "USER")
        if k in os.environ
    }
    node = shutil.which("node")
    if node and str(Path(node).parent) not in env.get("PATH", "").split(os.pathsep):
        env["PATH"] = os.pathsep.join(p for p in (str(Path(node).parent), env.get("PATH")) if p)
    env.update(
        {
            "HOME": str(home),
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "PI_OFFLINE": "1",
            "PI_SKIP_VERSION_CHECK": "1",
        }
    )
    env.update(extra or {})
    for var in _PROXY_VARS:
        env.pop(var, None)
    return env


def find_pi() -> Path | None:
    """$OPENLOOP_PI_BIN, else the copy scripts/install-pi.sh made, else `pi` on PATH."""
    if override := os.environ.get("OPENLOOP_PI_BIN"):
        return Path(override)
    tools = Path(os.environ.get("OPENLOOP_TOOLS_DIR") or REPO_ROOT / ".tools")
    local = tools / "pi" / "node_modules" / ".bin" / "pi"
    if local.exists():
        return local
    found = shutil.which("pi")
    return Path(found) if found else None
