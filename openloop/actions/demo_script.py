"""What `openloop demo` works on: the sample repository, its policy, its backlog, and the
scripted model's moves for each task (see openloop.adapters.demo_model).

A broken default branch first: a teammate's commit left a debug print() in calc/stats.py,
which the lint check refuses. OpenLoop's baseline check finds it before any feature work and
makes a healing task (fix-lint-<signature>) for the ci-healer role, which removes it; the fix
is low-risk inside the file the failure names, so it auto-merges.

Then four tasks, one per outcome a newcomer should see:
- add-subtract (low-risk): implemented, validated, auto-merged into main;
- add-multiply (low-risk): the first attempt leaves a debug print() that the lint check
  refuses; the retry's prompt carries the lint output, the fix passes and merges;
- add-safe-divide (medium-risk): validated, then left on its branch for review;
- raise-production-workers: the agent edits deploy/, which the committed policy denies: the
  change is blocked and never merges.
"""

from __future__ import annotations

from dataclasses import dataclass

from openloop.adapters.demo_model import Call, TaskScript, Turn

ALIAS = "sample"
BRANCH = "main"

OPS = '''"""Arithmetic for the calc package."""


def add(a, b):
    """Return a + b."""
    return a + b
'''

FILES: dict[str, str] = {
    ".gitignore": "__pycache__/\n",
    "README.md": "# calc\n\nA tiny arithmetic package, the sample repository of "
    "`openloop demo`.\n\n"
    "    python3 -m unittest discover -s tests -t .   # tests\n",
    "calc/__init__.py": '"""calc: small arithmetic helpers."""\n',
    "calc/ops.py": OPS,
    "tests/__init__.py": "",
    "tests/test_add.py": "import unittest\n\nfrom calc.ops import add\n\n\n"
    "class AddTest(unittest.TestCase):\n"
    "    def test_add(self):\n"
    "        self.assertEqual(add(2, 3), 5)\n",
    "deploy/production.ini": "# Production settings: changed by people, never by the agent.\n"
    "[server]\nworkers = 2\n",
}

STATS = '''"""Statistics for the calc package."""


def mean(values):
    """Return the arithmetic mean of values."""
    print("mean of", values)
    return sum(values) / len(values)
'''

# Committed on the default branch after the control plane, as a teammate would: the lint check
# fails on the branch's tip until OpenLoop heals it.
BROKEN_COMMIT = (
    "calc: mean() (a quick commit, with a debug print left in)",
    {"calc/stats.py": STATS},
)
HEAL_PREFIX = "fix-lint-"

# Checks that run anywhere Python runs: byte-compile everything, refuse print() in the library
# (a grep lint), run the unit tests.
LINT = (
    "python3 -m compileall -q calc tests && "
    "! grep -rnE --include='*.py' '^[[:space:]]*print[(]' calc"
)
TEST = "python3 -m unittest discover -s tests -t . -q"

POLICY = """\
# OpenLoop's policy for the demo repository (docs/policy.md lists every field).
# It is read from the committed default branch and approved with 'openloop project trust'.
version: 2
scope:
  # The agent may never change these: a change touching one is blocked.
  denyGlobs:
    - deploy/**
    - "*.env"
  # Changes here always go to review, whatever the task's declared risk.
  highRiskAreas: []
  # Risk of a change outside every task's declared scope.
  unknownScopeRisk: medium-risk
autoMerge:
  enabled: true
  riskLevels: [low-risk]
  maxFiles: 10
  maxLines: 200
"""


@dataclass(frozen=True)
class DemoTask:
    id: str
    title: str
    risk: str
    scope: tuple[str, ...]
    priority: int
    accept: str
    expected: str  # the outcome the demo checks


TASKS: tuple[DemoTask, ...] = (
    DemoTask(
        "add-subtract",
        "Add subtract",
        "low-risk",
        ("calc/**", "tests/**"),
        40,
        "calc.ops.subtract(a, b) returns a - b, with a unit test",
        "auto-merged",
    ),
    DemoTask(
        "add-multiply",
        "Add multiply",
        "low-risk",
        ("calc/**", "tests/**"),
        30,
        "calc.ops.multiply(a, b) returns a * b, with a unit test",
        "failed a check, retried, merged",
    ),
    DemoTask(
        "add-safe-divide",
        "Add safe divide",
        "medium-risk",
        ("calc/**", "tests/**"),
        20,
        "calc.ops.divide(a, b) returns None when b is 0",
        "left for review",
    ),
    DemoTask(
        "raise-production-workers",
        "Raise production workers to 8",
        "low-risk",
        (),  # no declared scope: the agent's real diff is what the policy judges
        10,
        "deploy/production.ini has workers = 8",
        "blocked by policy",
    ),
)


def _after_add(code: str) -> Call:
    """Append `code` after add(): an edit anchored on add's body, so it applies on top of
    whatever earlier tasks merged."""
    anchor = '    """Return a + b."""\n    return a + b\n'
    edit = {"oldText": anchor, "newText": anchor + code}
    return Call("edit", {"path": "calc/ops.py", "edits": [edit]})


def _test_file(name: str, body: str) -> Call:
    return Call("write", {"path": f"tests/test_{name}.py", "content": body})


_RUN_TESTS = Call("bash", {"command": TEST})

SUBTRACT = '\n\ndef subtract(a, b):\n    """Return a - b."""\n    return a - b\n'
MULTIPLY_DEBUG = (
    '\n\ndef multiply(a, b):\n    """Return a * b."""\n'
    '    print("multiply", a, b)\n    return a * b\n'
)
MULTIPLY = '\n\ndef multiply(a, b):\n    """Return a * b."""\n    return a * b\n'
DIVIDE = (
    '\n\ndef divide(a, b):\n    """Return a / b, or None when b is 0."""\n'
    "    if b == 0:\n        return None\n    return a / b\n"
)


def _unit_test(func: str, cases: list[tuple[str, str]]) -> str:
    lines = ["import unittest", "", f"from calc.ops import {func}", "", ""]
    lines.append(f"class {func.capitalize()}Test(unittest.TestCase):")
    lines.append(f"    def test_{func}(self):")
    lines += [f"        self.assertEqual({call}, {want})" for call, want in cases]
    return "\n".join(lines) + "\n"


SCRIPTS: dict[str, TaskScript] = {
    # The healing task's id ends with its failure's signature: matched by prefix.
    HEAL_PREFIX + "*": TaskScript(
        first=(
            Turn((Call("read", {"path": "calc/stats.py"}),)),
            Turn(
                (
                    Call(
                        "edit",
                        {
                            "path": "calc/stats.py",
                            "edits": [{"oldText": '    print("mean of", values)\n', "newText": ""}],
                        },
                    ),
                )
            ),
            Turn((Call("bash", {"command": LINT}),)),
            Turn(text="Removed the debug print() from calc/stats.py; the lint check passes."),
        )
    ),
    "add-subtract": TaskScript(
        first=(
            Turn((Call("read", {"path": "calc/ops.py"}),)),
            Turn(
                (
                    _after_add(SUBTRACT),
                    _test_file("subtract", _unit_test("subtract", [("subtract(5, 3)", "2")])),
                )
            ),
            Turn((_RUN_TESTS,)),
            Turn(text="Added calc.ops.subtract() and tests/test_subtract.py; the tests pass."),
        )
    ),
    "add-multiply": TaskScript(
        first=(
            Turn((Call("read", {"path": "calc/ops.py"}),)),
            Turn(
                (
                    _after_add(MULTIPLY_DEBUG),
                    _test_file("multiply", _unit_test("multiply", [("multiply(4, 3)", "12")])),
                )
            ),
            Turn(text="Added calc.ops.multiply() with a test."),
        ),
        retry=(
            Turn((Call("read", {"path": "calc/ops.py"}),)),
            Turn(
                (
                    _after_add(MULTIPLY),
                    _test_file("multiply", _unit_test("multiply", [("multiply(4, 3)", "12")])),
                )
            ),
            Turn((_RUN_TESTS,)),
            Turn(
                text="Added calc.ops.multiply() without the debug print() the lint check "
                "refused last time; the tests pass."
            ),
        ),
    ),
    "add-safe-divide": TaskScript(
        first=(
            Turn((Call("read", {"path": "calc/ops.py"}),)),
            Turn(
                (
                    _after_add(DIVIDE),
                    _test_file(
                        "divide",
                        _unit_test("divide", [("divide(6, 3)", "2"), ("divide(1, 0)", "None")]),
                    ),
                )
            ),
            Turn((_RUN_TESTS,)),
            Turn(text="Added calc.ops.divide(), which returns None for a zero divisor."),
        )
    ),
    "raise-production-workers": TaskScript(
        first=(
            Turn((Call("read", {"path": "deploy/production.ini"}),)),
            Turn(
                (
                    Call(
                        "edit",
                        {
                            "path": "deploy/production.ini",
                            "edits": [{"oldText": "workers = 2", "newText": "workers = 8"}],
                        },
                    ),
                )
            ),
            Turn(text="Set workers = 8 in deploy/production.ini."),
        )
    ),
}
