"""Environment failures: why an agent could not work at all, whatever the task (pi missing or
not runnable, Node.js missing or too old, no credentials or the key refused, quota or rate
limit). They are not the task's fault: the run ends as environment-error, costs no attempt, and
the project backs off (openloop.state.backoff). Pure classification of what pi printed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from openloop.env import Environment

PI_MISSING = "'pi' not found: install it or set OPENLOOP_PI_BIN"
MIN_NODE = 20  # pi's package.json: "engines": {"node": ">=20.6.0"}


@dataclass(frozen=True)
class EnvironmentProblem:
    """Why the agent could not work at all, whatever the task: error = f"{what}: {fix}"."""

    kind: str  # one of ENVIRONMENT_KINDS
    what: str  # "'pi' not found", "the provider refused the API key (401 ...)"
    fix: str  # what the user does about it
    retry_after: float | None = None  # seconds, when the provider said when to try again

    @property
    def message(self) -> str:
        return f"{self.what}: {self.fix}"


# agent-missing: no binary; node: pi cannot start; agent-config: pi does not know the provider;
# auth: no key or the key refused; quota: rate limit or quota exhausted.
ENVIRONMENT_KINDS = ("agent-missing", "node", "agent-config", "auth", "quota")


# --- environment failures: not the task's fault ------------------------------------------------

# What pi and the providers print (observed with pi 0.73 against HTTP errors, see
# tests/e2e/test_environment_pi.py): an HTTP failure is the assistant's errorMessage (and an
# auto_retry_end's finalError) as "<status> <provider's message>", e.g.
# "401 Incorrect API key provided: sk-...", "429 Rate limit reached. Please try again in 20s.";
# a missing key or an unknown provider ends pi before any event, on stderr:
# "No API key found for anthropic.", 'Error: Unknown provider "mock". Use --list-models ...';
# without node, `#!/usr/bin/env node` fails with "/usr/bin/env: 'node': No such file or
# directory" (exit 127).
_AUTH = re.compile(
    r"^\s*(401|403)\b|unauthori[sz]ed|authentication[ _]?(error|failed)"
    r"|invalid[ _-]?(x-)?api[ _-]?key|incorrect api key|api key not valid|no api key"
    r"|permission[ _]denied",
    re.IGNORECASE,
)
_QUOTA = re.compile(
    r"^\s*429\b|rate[ _-]?limit|quota|resource[ _]exhausted|too many requests"
    r"|credit balance is too low",
    re.IGNORECASE,
)
_RETRY_IN = re.compile(
    r"(?:try again|retry)(?:[ -]after)?(?:\s+in)?\s*:?\s*((?:\d+(?:\.\d+)?\s*"
    r"(?:milliseconds?|ms|seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h)?(?![a-z])\s*"
    r"(?:and\s+)?)+)",
    re.IGNORECASE,
)
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)", re.IGNORECASE)
_RESETS_AT = re.compile(
    r"resets?\s+(?:at\s+)?(\d{4}-\d\d-\d\d[T ]\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:Z|[+-]\d\d:?\d\d)?)",
    re.IGNORECASE,
)
_UNITS = {"ms": 0.001, "milli": 0.001, "s": 1, "m": 60, "h": 3600}
_PI_CONFIG = re.compile(r"Unknown (?:provider|model)\b[^|]*", re.IGNORECASE)
_NO_NODE = re.compile(r"\bnode\b\W*:?\s*(?:No such file or directory|not found)", re.IGNORECASE)
_NODE_VERSION = re.compile(r"\bNode\.js v(\d+)\.\d+")
_NODE_CRASH = re.compile(r"SyntaxError|Unsupported engine|ERR_REQUIRE_ESM|ERR_UNKNOWN_FILE_EXT")


def classify_provider_error(
    message: str, *, key_file: str = "~/.config/openloop/environment", now: datetime | None = None
) -> EnvironmentProblem | None:
    """A model failure that no task can get past: the key refused or missing (auth), the rate
    limit or quota spent (quota, with when to retry if the provider said). Anything else (a
    5xx after retries, an overloaded model, a bad request) stays the task's agent-error."""
    text = " ".join(message.split())[:400]
    if _QUOTA.search(text):
        after = retry_after_seconds(text, now)
        return EnvironmentProblem(
            "quota",
            f"the provider's rate limit or quota is exhausted ({text})",
            "wait for it to reset, or raise the account's limits",
            after,
        )
    if _AUTH.search(text):
        return EnvironmentProblem(
            "auth", f"the provider refused the API key ({text})", f"set it in {key_file}"
        )
    return None


def key_file(env: Mapping[str, str]) -> str:
    """The environment file the units read (`service install` creates it), where API keys go:
    found from the agent's environment, which is OpenLoop's own plus a few markers."""
    path = Environment.from_os(env).config_dir / "environment"
    home = env.get("HOME")
    if home and path.is_relative_to(home):
        return f"~/{path.relative_to(home)}"
    return str(path)


def retry_after_seconds(message: str, now: datetime | None = None) -> float | None:
    """When the provider said to retry: "try again in 20s", "retry after 120 seconds",
    "Retry-After: 30", "Please retry in 1m30s", "resets at 2026-01-01T00:00:00Z"."""
    if found := _RETRY_IN.search(message):
        total = 0.0
        for number, unit in _DURATION_PART.findall(found.group(1)):
            unit = unit.lower()
            key = "ms" if unit == "ms" else "milli" if unit.startswith("milli") else unit[:1]
            total += float(number) * _UNITS.get(key, 1)
        return total if total > 0 else None
    if found := _RESETS_AT.search(message):
        raw = found.group(1).replace(" ", "T")
        try:
            when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            return None
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
        return seconds if seconds > 0 else None
    return None


def pi_missing() -> EnvironmentProblem:
    what, fix = PI_MISSING.split(": ", 1)
    return EnvironmentProblem("agent-missing", what, fix)


def unstartable(err: OSError, binary: str) -> EnvironmentProblem | None:
    if err.filename != binary:
        return None
    if isinstance(err, FileNotFoundError):
        return pi_missing()
    if isinstance(err, PermissionError | IsADirectoryError):
        return EnvironmentProblem(
            "agent-missing", f"{binary} is not executable", "reinstall pi or set OPENLOOP_PI_BIN"
        )
    return None


def classify_pi_failure(
    last: Mapping[str, Any] | None, retry_failure: str | None, stderr: str, env: Mapping[str, str]
) -> EnvironmentProblem | None:
    """pi's run failed: was it the environment rather than the task? `last` is pi's last
    assistant message, `stderr` the tail of its error output."""
    keys = key_file(env)
    if last is not None:
        if retry_failure is not None:
            return classify_provider_error(retry_failure, key_file=keys)
        if last.get("stopReason") == "error":
            return classify_provider_error(str(last.get("errorMessage") or ""), key_file=keys)
        return None
    # No answer at all: pi (or node) did not get as far as the model.
    if _NO_NODE.search(stderr):
        return _node_problem("Node.js not found")
    if (old := _NODE_VERSION.search(stderr)) and int(old.group(1)) < MIN_NODE:
        return _node_problem(f"Node.js v{old.group(1)} is too old (pi needs {MIN_NODE}+)")
    if _NODE_CRASH.search(stderr):
        version = _node_version(env)
        if version is None:
            return _node_problem("Node.js not found")
        if version < MIN_NODE:
            return _node_problem(f"Node.js v{version} is too old (pi needs {MIN_NODE}+)")
    if (unknown := _PI_CONFIG.search(stderr)) is not None:
        return EnvironmentProblem(
            "agent-config",
            f"pi cannot use the configured model: {unknown.group(0).strip()}",
            "add it to ~/.pi/agent/models.json or change it with 'openloop config set-model'",
        )
    if "no api key" in stderr.lower():
        line = next(p for p in stderr.split(" | ") if "no api key" in p.lower())
        return EnvironmentProblem("auth", line.strip().rstrip("."), f"set it in {keys}")
    return None


def _node_problem(what: str) -> EnvironmentProblem:
    return EnvironmentProblem(
        "node",
        f"pi cannot start: {what}",
        f"install Node.js {MIN_NODE} or newer on the PATH the units get, "
        "then 'openloop service install'",
    )


def _node_version(env: Mapping[str, str]) -> int | None:
    """The major version of the node pi's `#!/usr/bin/env node` finds, or None."""
    node = shutil.which("node", path=env.get("PATH", ""))
    if node is None:
        return None
    try:
        out = subprocess.run(
            [node, "--version"],
            capture_output=True,
            text=True,
            env=dict(env),
            timeout=20,
            stdin=subprocess.DEVNULL,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.match(r"\s*v?(\d+)\.", out)
    return int(found.group(1)) if found else None
