"""The default branch's health: validate its tip once per tree, classify what fails, and judge a
task's checks against it.

Validation runs the approved checks in a fresh workspace of their own at the tip, under the
guard (they run the repository's code), and caches the verdict by tree and commands in the
user's state directory (state/baseline.py). A failing check is classified:

- `lint-fix` / `type-fix`: the lint / typecheck command ran and its output names files of the
  repository (`path:line`);
- `localized-test-fix`: the test command ran and its output names failing tests (pytest,
  jest/vitest, go test, cargo test);
- not auto-healable: anything else (a timeout, a command that is missing, a suite that does not
  even run: collection or build errors, no test found, nothing named). Recorded and shown by
  `status` and `doctor`, never attempted.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from openloop.adapters import gitops, guard, workspace
from openloop.loop import userstate, validation
from openloop.state import baseline as cache
from openloop.state import trust

HEAL_KIND = {"lint": "lint-fix", "typecheck": "type-fix", "test": "localized-test-fix"}
LOG_LIMIT = 200_000
MAX_ITEMS = 200

# --- reading a check's output -------------------------------------------------------------------

_PATH = r"(?:\./)?((?:[\w.@+-]+/)*[\w.@+-]+\.[A-Za-z0-9]+)"
_PATH_LINE = re.compile(_PATH + r"(?::\d+|\(\d+)")  # src/a.py:3 (ruff, grep -n, tsc: a.ts(3,)
_PY_FRAME = re.compile(r'File "([^"]+)", line \d+')
_PYTEST = re.compile(r"^(?:FAILED|ERROR) (\S+?::\S+)", re.M)
_JEST_FAIL = re.compile(r"^\s*FAIL\s+(\S+)(?:\s+>\s+(.+?))?\s*$", re.M)
_JEST_BULLET = re.compile(r"^\s*●\s+(.+?)\s*$", re.M)
_VITEST_CROSS = re.compile(r"^\s*[×✕]\s+(.+?)(?:\s+\d+\s?ms)?\s*$", re.M)
_GO_FAIL = re.compile(r"^\s*--- FAIL: (\S+)", re.M)
_CARGO_FAIL = re.compile(r"^test (\S+) \.\.\. FAILED", re.M)
_DID_NOT_RUN = (
    ("ERROR collecting", "the test suite does not collect"),
    ("errors during collection", "the test suite does not collect"),
    ("no tests ran", "no test ran"),
    ("Test suite failed to run", "a test suite failed to run"),
    ("[build failed]", "the tests do not build"),
    ("[setup failed]", "the tests do not build"),
    ("could not compile", "the tests do not build"),
    ("No tests found", "no test ran"),
)
_NUMBERS = re.compile(r"(?<=:)\d+(?::\d+)?|\(\d+,\d+\)")


def _full_output(check: validation.CheckResult) -> str:
    if check.log:
        try:
            data = Path(check.log).read_bytes()
            return data[-LOG_LIMIT:].decode("utf-8", "replace")
        except OSError:
            pass
    return check.tail


def _clean_path(raw: str, roots: tuple[str, ...]) -> str:
    for root in roots:
        if raw.startswith(root):
            raw = raw[len(root) :]
    return raw.lstrip("/").removeprefix("./")


def test_names(text: str) -> list[str]:
    """Failing tests named in the output of pytest, jest/vitest, go test or cargo test."""
    names: list[str] = []
    names += _PYTEST.findall(text)
    for path, rest in _JEST_FAIL.findall(text):
        if "::" in path or path.startswith("["):  # pytest's FAILED is matched above
            continue
        names.append(f"{path} > {rest}" if rest else path)
    names += [b for b in _JEST_BULLET.findall(text) if "Test suite failed to run" not in b]
    names += _VITEST_CROSS.findall(text)
    names += _GO_FAIL.findall(text)
    names += _CARGO_FAIL.findall(text)
    return sorted(dict.fromkeys(n.strip() for n in names if n.strip()))[:MAX_ITEMS]


def read_failure(
    check: validation.CheckResult, exists, roots: tuple[str, ...] = ()
) -> dict[str, Any]:
    """What a failed check says: the repository files it names, the failing tests, and its
    diagnostics (lines naming a file, with line numbers masked), plus why it is not healable."""
    text = _full_output(check)
    files: list[str] = []
    for raw in [*_PATH_LINE.findall(text), *_PY_FRAME.findall(text)]:
        path = _clean_path(raw, roots)
        if path and path not in files and ".." not in path.split("/") and exists(path):
            files.append(path)
    diagnostics = []
    for line in text.splitlines():
        found = _PATH_LINE.search(line)
        if found and _clean_path(found.group(1), roots) in files:
            masked = _NUMBERS.sub("#", line.replace("./", "", 1)).strip()
            for root in roots:
                masked = masked.replace(root, "")
            diagnostics.append(masked)
    tests = test_names(text) if check.name == "test" else []
    why = None
    if check.status == "timed-out":
        why = f"{check.name} timed out"
    elif check.status != "failed":
        why = f"{check.name} did not finish ({check.status})"
    elif check.exit_code in (126, 127):
        why = f"{check.name}: the command could not run (exit {check.exit_code})"
    elif check.name == "test":
        why = next((w for marker, w in _DID_NOT_RUN if marker in text), None)
        if why is None and not tests:
            why = "no failing test is named in the output"
    elif not files:
        why = f"{check.name} names no file of the repository"
    return {
        "files": files[:MAX_ITEMS],
        "tests": tests,
        "diagnostics": sorted(dict.fromkeys(diagnostics))[:MAX_ITEMS],
        "why": why,
        "masked": hashlib.sha256(validation.mask_volatile(check.tail).encode()).hexdigest()[:16],
    }


def classify(check: validation.CheckResult, exists, roots: tuple[str, ...] = ()) -> dict[str, Any]:
    """One failing check of the baseline, classified, with a signature that stays the same
    while the same things fail (line numbers and timings do not count)."""
    found = read_failure(check, exists, roots)
    kind = None if found["why"] else HEAL_KIND.get(check.name)
    what = found["tests"] or found["diagnostics"] or [found["masked"]]
    digest = hashlib.sha256("\n".join([check.name, *what]).encode()).hexdigest()[:12]
    return {
        "check": check.name,
        "command": check.command,
        "status": check.status,
        "exitCode": check.exit_code,
        "kind": kind,
        "healable": kind is not None,
        "why": found["why"] or f"{kind}: {len(found['tests'] or found['files'])} named",
        "signature": f"{kind or 'unhealable'}:{check.name}:{digest}",
        "files": found["files"],
        "tests": found["tests"],
        "diagnostics": found["diagnostics"],
        "masked": found["masked"],
        "output": check.tail[-3000:],
        "log": check.log,
    }


# --- validating the default branch --------------------------------------------------------------


SCRATCH_PREFIX = "_baseline-"  # the checkout the checks run in, under worktrees/<alias>/


def run_prefix(alias: str) -> str:
    return f"baseline:{alias}:"  # aliases hold no ":"


def tree_of(repo: Path, commit: str) -> str:
    return gitops.tree_of(repo, commit)


def key_for(repo: Path, commit: str, commands: dict[str, str | None]) -> tuple[str, str]:
    tree = tree_of(repo, commit)
    return tree, cache.cache_key(tree, commands)


def cached(env, project, pconf, commit: str) -> dict[str, Any] | None:
    """The verdict on `commit`'s tree if it was validated (no check runs here: the gate uses it)."""
    _tree, key = key_for(project.repo, commit, pconf.validation.commands())
    return cache.lookup(env, project.alias, key)


def ensure(it) -> dict[str, Any] | None:
    """The baseline verdict for the iteration's base commit: from the cache, or by running the
    approved checks once on a fresh checkout of it (guarded like every check). None when the
    checks may not run now (not approved)."""
    env, project, commit = it.env, it.project, it.base_commit
    commands = it.pconf.validation.commands()
    tree, key = key_for(project.repo, commit, commands)
    entry = cache.lookup(env, project.alias, key)
    if entry is not None:
        return entry
    base = {"tree": tree, "commit": commit, "branch": it.base_branch, "commands": commands}
    if not any(commands.values()):
        entry = {**base, "status": cache.UNCONFIGURED, "checkedAt": env.now_iso(), "failures": []}
        cache.store(env, project.alias, key, entry)
        return entry
    if trust.recheck(env, project.entry, it.pconf):
        return None
    it.reporter.phase("baseline", commit=commit[:12])
    scratch = env.worktrees_dir / project.alias / f"{SCRATCH_PREFIX}{commit[:12]}"
    logs = cache.logs_dir(env, project.alias, key)
    run_env = {
        **dict(env.environ),
        # A later repair finds what a killed baseline run left by this prefix (run_prefix).
        "OPENLOOP_RUN_ID": f"{run_prefix(project.alias)}{commit[:12]}",
        "OPENLOOP_PROJECT": project.alias,
    }
    workspace.make_workspace(project.repo, scratch, commit)
    before = guard.take(project.repo, dict(env.environ))
    # The default branch holds code agents wrote (merged): guarded like a task's checks.
    user_before = userstate.take(env, project.alias)
    try:
        checks = validation.run_all(
            commands, scratch, logs, float(it.limit("validation_timeout_seconds")), run_env
        )
    finally:
        workspace.remove_workspace(scratch)
    found = guard.verify(project.repo, before, dict(env.environ))
    found += userstate.verify(env, user_before)
    if any(c.status == "interrupted" for c in checks):
        from openloop.loop.iteration import Stop
        from openloop.loop.outcomes import Outcome

        # Nothing is cached: the verdict is incomplete, the next iteration validates again.
        raise Stop(Outcome.INTERRUPTED, "interrupted while validating the default branch")
    if found:
        entry = {
            **base,
            "status": cache.FAILING,
            "checkedAt": env.now_iso(),
            "escaped": found,
            "failures": [
                {
                    "check": "all",
                    "kind": None,
                    "healable": False,
                    "why": "escaped: the checks changed something outside their workspace: "
                    + "; ".join(found),
                    "signature": f"unhealable:escaped:{tree[:12]}",
                }
            ],
        }
        cache.store(env, project.alias, key, entry)
        return entry
    files = set(gitops.git(project.repo, "ls-tree", "-r", "--name-only", commit).stdout.split("\n"))
    roots = (f"{scratch}/", f"{scratch.resolve()}/")
    failures = [
        classify(c, files.__contains__, roots)
        for c in checks
        if c.status not in ("passed", "not-configured")
    ]
    entry = {
        **base,
        "status": cache.FAILING if failures else cache.HEALTHY,
        "checkedAt": env.now_iso(),
        "checks": [{"name": c.name, "status": c.status, "exitCode": c.exit_code} for c in checks],
        "failures": failures,
    }
    cache.store(env, project.alias, key, entry)
    return entry


# --- judging a task against it ------------------------------------------------------------------


def compare(
    checks: list[validation.CheckResult],
    entry: dict[str, Any] | None,
    exists,
    roots: tuple[str, ...] = (),
    must_fix: frozenset[str] = frozenset(),
) -> list[dict[str, str]]:
    """The task's failing checks that already fail on the base for the same reasons (no new
    failing test, no new diagnostic): [{check, reason}]. A check in `must_fix` (what a healing
    task is there to fix) is never excused."""
    if not entry or entry.get("status") != cache.FAILING:
        return []
    known = {f.get("check"): f for f in entry.get("failures", [])}
    excused = []
    for check in checks:
        if check.status not in ("failed", "timed-out") or check.name in must_fix:
            continue
        base = known.get(check.name)
        if base is None:
            continue
        if check.status == "timed-out" or base.get("status") == "timed-out":
            if check.status == base.get("status"):
                excused.append(_excuse(check, "times out on the default branch too"))
            continue
        now = read_failure(check, exists, roots)
        if now["masked"] == base.get("masked"):
            excused.append(_excuse(check, "it fails the same way on the default branch"))
        elif check.name == "test":
            # Named failing tests only: a suite the task broke (it no longer runs, names
            # nothing) is never excused by a base whose suite ran.
            if now["tests"] and not now["why"] and set(now["tests"]) <= set(base.get("tests", [])):
                excused.append(_excuse(check, "the same tests fail on the default branch"))
        elif now["diagnostics"] and base.get("diagnostics"):
            if set(now["diagnostics"]) <= set(base["diagnostics"]):
                excused.append(_excuse(check, "the same problems are on the default branch"))
    return excused


def _excuse(check: validation.CheckResult, why: str) -> dict[str, str]:
    return {
        "check": check.name,
        "reason": f"{check.name} already fails on the default branch ({why}): "
        "not held against the task",
    }
