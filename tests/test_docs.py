"""The documentation cannot rot silently: every relative link in README.md, docs/*.md and
CONTRIBUTING.md points at a file that exists, and every `openloop <command>` and
`openloop <group> <command>` they mention answers `--help` with exit 0."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from openloop.cli import cli, run

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted(
    p
    for p in [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *(ROOT / "docs").glob("*.md")]
    if p.is_file()
)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
# `openloop` as a command word (not a path component or a unit name), then one or two words.
COMMAND = re.compile(r"(?<![\w/.@-])openloop((?: [a-z][a-z0-9-]*){1,2})\b")


def _relative_links() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for target in LINK.findall(doc.read_text()):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # https:, mailto:, an anchor in the same page
            found.append((doc.name, target))
    return found


def _mentioned_commands() -> set[tuple[str, ...]]:
    """('task', 'add'), ('demo',) ...: resolved against the real command tree, so prose after
    a plain command (`openloop demo runs ...`) is not taken for a subcommand."""
    ctx = click.Context(cli)
    found: set[tuple[str, ...]] = set()
    for doc in DOCS:
        text = doc.read_text()
        for match in COMMAND.finditer(text):
            line_start = text.rfind("\n", 0, match.start()) + 1
            if re.search(r"\bruff \w+ $", text[line_start : match.start()]):
                continue  # `ruff check openloop tests`: the package directory
            first, *rest = match.group(1).split()
            command = cli.get_command(ctx, first)
            if isinstance(command, click.Group) and rest:
                found.add((first, rest[0]))
            else:
                found.add((first,))
    return found


def test_the_documents_exist():
    names = {d.relative_to(ROOT).as_posix() for d in DOCS}
    assert {"README.md", "CONTRIBUTING.md", "docs/architecture.md", "docs/policy.md"} <= names


@pytest.mark.parametrize(("doc", "target"), _relative_links())
def test_relative_links_point_at_existing_files(doc, target):
    base = ROOT / "docs" if doc not in ("README.md", "CONTRIBUTING.md") else ROOT
    path = (base / target.split("#", 1)[0]).resolve()
    assert path.exists(), f"{doc}: broken link {target}"


def test_some_commands_are_mentioned():
    mentioned = _mentioned_commands()
    assert ("demo",) in mentioned and ("task", "add") in mentioned


@pytest.mark.parametrize("words", sorted(_mentioned_commands()), ids=" ".join)
def test_every_mentioned_command_exists(words, capsys):
    code = run([*words, "--help"])
    out = capsys.readouterr()
    assert code == 0, f"openloop {' '.join(words)}: {out.err.strip()}"


def test_the_policy_examples_are_valid_policies():
    from openloop.state.policy import parse_policy

    text = (ROOT / "docs" / "policy.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    assert len(blocks) >= 4
    for block in blocks:
        parse_policy(block, "docs/policy.md")
