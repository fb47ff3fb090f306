"""The judgement of a real git diff against the policy (openloop.state.policy): risk, scope,
denied and protected paths, symlink targets, and whether auto-merge is allowed.

Matching is gitignore-style (pathspec's GitIgnoreSpec), applied to every path a change touches,
both sides of a rename. Two places deliberately differ from git itself, because git answers
"which files to ignore while walking a tree" and we answer "is this one path covered":
- `*` and other wildcards match dotfiles (`*` matches `.env`): that is what gitignore does too,
  unlike shell globbing, so a deny rule cannot be dodged by a leading dot.
- `!pattern` re-includes a path even under a directory excluded by an earlier pattern
  (`build/` then `!build/keep.txt`): git would not descend into `build/`, we judge each path
  on its own, so the last matching pattern in the list always decides.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from pathspec import GitIgnoreSpec

from openloop.errors import InputError
from openloop.state.policy import (
    PROTECTED_DEFAULTS,
    Policy,
    _check_glob,
    max_risk,
)


@dataclass(frozen=True)
class Change:
    status: str
    path: str
    old_path: str | None = None

    def paths(self) -> tuple[str, ...]:
        # The source side counts too: moving a denied file out of its area is a change to it.
        if self.old_path and self.old_path != self.path:
            return (self.old_path, self.path)
        return (self.path,)


@dataclass(frozen=True)
class Assessment:
    risk: str
    blocked: bool
    auto_merge: bool
    reasons: tuple[str, ...]
    denied: tuple[str, ...] = ()
    high_risk: tuple[str, ...] = ()
    outside_allow: tuple[str, ...] = ()
    outside_scope: tuple[str, ...] = ()
    protected: tuple[str, ...] = ()
    symlinks: tuple[str, ...] = ()  # every new or changed link: none is auto-merged as low-risk
    symlinks_blocked: tuple[str, ...] = ()  # links whose target blocks the change


# A symlink in the diff is a path the change points at without touching it: `src/pw ->
# /etc/passwd` adds one harmless-looking path, yet whatever reads or writes through it (the app,
# the checks, the next agent) reaches the target. So a link is judged by its target too.
# (link path, target text as git stores it; None for a blob too long to be a link target).
Symlink = tuple[str, str | None]


def resolve_link_target(link: str, target: str) -> str | None:
    """Where `target` names, relative to the repository root, resolved lexically from the
    directory of `link` (posix, both as git stores them); None when it is outside the repository
    (absolute, or climbing above the root). "" is the root itself.

    Lexical on purpose: the link is never followed on disk, which is not what git holds (the
    checks run in the worktree after the commit). A link is checked out with symlink(2), which
    stops at the first NUL byte, and so does this: a blob crafted as '..\\0/x' is the link '..'.

    A target that passes through another link (a chain, or `d/../x` where d is a link) is judged
    as written, not chased: the other link is judged on its own if it is new, and either way
    every link keeps the change out of low-risk, so a chain can at worst reach human review,
    never an automatic merge."""
    target = target.split("\0", 1)[0]
    if target.startswith("/"):
        return None
    parts = [p for p in link.split("/")[:-1] if p not in ("", ".")]
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(part)
    return "/".join(parts)


def _shown(text: str) -> str:
    """A link or its target in a reason: as written, unless it carries control characters (a
    reason goes into the journal and the terminal, where a newline could forge a line)."""
    return text if text.isprintable() else ascii(text)


def _matcher(patterns: Iterable[str]) -> Callable[[Iterable[str]], str | None]:
    """Return a function giving the pattern that includes the first of some paths, or None."""
    spec = GitIgnoreSpec.from_lines(list(patterns))

    def first_hit(paths: Iterable[str]) -> str | None:
        for path in paths:
            result = spec.check_file(path)
            if result.include and result.index is not None:
                return spec.patterns[result.index].pattern
        return None

    return first_hit


def _is_glob(entry: str) -> bool:
    return re.search(r"[*?\[]", entry) is not None


def _scope_matcher(declared: Sequence[str]) -> Callable[[Iterable[str]], str | None]:
    """Declared scope entries: globs are gitignore patterns, plain paths are anchored at the root
    and cover themselves and everything under them ('docs' must not match 'src/docs')."""
    patterns = []
    for entry in declared:
        negate, body = (True, entry[1:]) if entry.startswith("!") else (False, entry)
        if not _is_glob(body):
            body = "/" + body.removeprefix("./").strip("/")
        try:
            patterns.append(_check_glob(("!" if negate else "") + body))
        except ValueError as exc:
            raise InputError(f"task scope.paths: {exc}") from None
    return _matcher(patterns)


def _probes(entry: str) -> tuple[str, ...]:
    """Sample paths standing for a declared scope entry, for judging it before any diff exists.
    A glob becomes one concrete instance; a plain path stands for itself and for a file below it,
    so declaring 'secrets' is caught by a 'secrets/**' deny rule."""
    body = entry.removeprefix("./").strip("/")
    if _is_glob(body):
        body = re.sub(r"\[!?(.)[^\]]*\]", r"\1", body)
        return (re.sub(r"\*\*|\*|\?", "x", body),)
    return (body, f"{body}/openloop-probe")


def _judge(
    items: Sequence[tuple[str, tuple[str, ...]]],
    policy: Policy,
    declared_risk: str,
    declared_scope: Sequence[str] | None,
    *,
    noun: str = "path",
    check_scope: bool = True,
    gates: Sequence[str] = (),
    symlinks: Sequence[Symlink] = (),
    command_files: Mapping[str, str] | None = None,
) -> Assessment:
    if isinstance(declared_scope, str):  # would silently iterate over characters
        raise TypeError("declared_scope must be a sequence of paths, not a string")
    scope, rules = policy.scope, policy.auto_merge
    deny, high, allow = map(_matcher, (scope.deny_globs, scope.high_risk_areas, scope.allow_globs))
    protected_default, protected_user = map(_matcher, (PROTECTED_DEFAULTS, policy.protected_paths))
    declared = [s for s in (declared_scope or ()) if s.strip()]
    in_scope = _scope_matcher(declared) if declared and check_scope else None
    found: dict[str, list[str]] = {
        k: []
        for k in (
            "denied",
            "high_risk",
            "outside_allow",
            "outside_scope",
            "protected",
            "symlinks",
            "symlinks_blocked",
        )
    }
    reasons: list[str] = []

    def note(kind: str, name: str, reason: str) -> None:
        found[kind].append(name)
        reasons.append(reason)

    for name, probes in items:
        if hit := deny(probes):
            note("denied", name, f"denied {noun}: {name} (denyGlobs {hit!r})")
        if hit := high(probes):
            note("high_risk", name, f"high-risk {noun}: {name} (highRiskAreas {hit!r})")
        if scope.allow_globs and not allow(probes):
            note("outside_allow", name, f"{noun} outside allowGlobs: {name}")
        if in_scope and not in_scope(probes):
            note("outside_scope", name, f"path outside the task's declared scope: {name}")
        if hit := protected_default(probes) or protected_user(probes):
            note("protected", name, f"protected {noun}: {name} (protectedPaths {hit!r})")
        elif why := next((command_files[p] for p in probes if p in (command_files or {})), None):
            note("protected", name, why)

    for link, target in symlinks:
        found["symlinks"].append(link)
        if problem := _link_problem(link, target, deny, high, protected_default, protected_user):
            note("symlinks_blocked", link, f"symlink {_shown(link)} {problem}")
        else:
            shown = f"{_shown(link)} -> {_shown(target or '')}"
            reasons.append(f"symlink {shown}: links are never auto-merged as low-risk")

    risk = max_risk(declared_risk)
    blocked = bool(found["denied"] or found["symlinks_blocked"])
    # A denied change is as risky as it gets, even though it will never be promoted.
    if blocked or found["high_risk"]:
        risk = max_risk(risk, "high-risk")
    if found["outside_allow"] or found["outside_scope"] or found["symlinks"]:
        risk = max_risk(risk, "medium-risk")
    if not declared and (scope.allow_globs or scope.deny_globs or scope.high_risk_areas):
        risk = max_risk(risk, scope.unknown_scope_risk)
        reasons.append(f"no declared scope: at least {scope.unknown_scope_risk} (unknownScopeRisk)")

    refusals = []
    if not rules.enabled:
        refusals.append("auto-merge is disabled (autoMerge.enabled)")
    if found["denied"]:
        refusals.append("blocked by denyGlobs: never promoted")
    if found["symlinks_blocked"]:
        refusals.append("blocked by a symlink's target: never promoted")
    if risk not in rules.risk_levels:
        levels = ", ".join(rules.risk_levels) or "none"
        refusals.append(f"{risk} is not auto-mergeable (autoMerge.riskLevels: {levels})")
    if found["protected"]:
        refusals.append("touches protected (governance) paths: always needs review")
    refusals += gates
    return Assessment(
        risk=risk,
        blocked=blocked,
        auto_merge=not refusals,
        reasons=tuple(reasons + refusals),
        **{k: tuple(v) for k, v in found.items()},
    )


def _link_problem(
    link: str,
    target: str | None,
    deny: Callable[[Iterable[str]], str | None],
    high: Callable[[Iterable[str]], str | None],
    *protected: Callable[[Iterable[str]], str | None],
) -> str | None:
    """Why a link's target blocks the change (the end of a reason naming the link), or None."""
    if target is None:
        return "has a target too long to be a path (a crafted blob)"
    where = resolve_link_target(link, target)
    if where is None:
        return f"points outside the repository ({_shown(target)})"
    # The target itself and a path under it: a link to the directory 'secrets' opens 'secrets/**'.
    probes = (where, f"{where}/openloop-probe") if where else ("openloop-probe",)
    shown = _shown(where or ".")
    if hit := deny(probes):
        return f"points into a denied path: {shown} (denyGlobs {hit!r})"
    if hit := high(probes):
        return f"points into a high-risk area: {shown} (highRiskAreas {hit!r})"
    for matcher in protected:
        if hit := matcher(probes):
            return f"points into a protected path: {shown} (protectedPaths {hit!r})"
    return None


def assess(
    changes: Sequence[Change],
    policy: Policy,
    *,
    declared_risk: str,
    declared_scope: Sequence[str] | None,
    lines_changed: int,
    validations_passed: bool | None,
    symlinks: Sequence[Symlink] = (),
    command_files: Mapping[str, str] | None = None,
) -> Assessment:
    """Judge the real diff. validations_passed: True all configured ones ran and passed, False
    one failed or did not run, None none are configured (then nothing auto-merges).
    symlinks: (path, target) of every link the diff adds or changes (gitops.changed_symlinks);
    a target outside the repository or in a denied, high-risk or protected path blocks the
    change, any other link makes it at least medium-risk.
    command_files: repository paths the approved commands run or read, each with the reason a
    change to it needs review (checkfiles.command_files); protected whatever the policy says,
    since the checks that passed cannot vouch for a change to themselves."""
    rules = policy.auto_merge
    gates = []
    if len(changes) > rules.max_files:
        gates.append(f"{len(changes)} files changed > autoMerge.maxFiles {rules.max_files}")
    if lines_changed > rules.max_lines:
        gates.append(f"{lines_changed} lines changed > autoMerge.maxLines {rules.max_lines}")
    if validations_passed is None:
        gates.append("no validations are configured: nothing auto-merges without them")
    elif not validations_passed:
        gates.append("validations did not all run and pass")
    paths = dict.fromkeys(p for change in changes for p in change.paths())
    items = [(p, (p,)) for p in paths]
    return _judge(
        items,
        policy,
        declared_risk,
        declared_scope,
        gates=gates,
        symlinks=symlinks,
        command_files=command_files,
    )


def assess_declared_scope(
    policy: Policy, declared_risk: str, declared_scope: Sequence[str] | None
) -> Assessment:
    """Judge the task's declared scope before the agent runs, with the same rules as assess().
    auto_merge here means "could still auto-merge": size and validations are not known yet."""
    declared = [s for s in (declared_scope or ()) if s.strip() and not s.startswith("!")]
    items = [(s, _probes(s)) for s in declared]
    return _judge(
        items, policy, declared_risk, declared_scope, noun="declared scope", check_scope=False
    )


def summary_for_prompt(policy: Policy) -> str:
    scope, rules = policy.scope, policy.auto_merge
    lines = ["Repository policy (enforced on your actual git diff when you finish):"]
    if scope.deny_globs:
        lines.append(f"- Never change: {', '.join(scope.deny_globs)} (the change is rejected).")
    protected = ", ".join(policy.protected_paths)
    lines.append(
        "- Changes to these always go to human review; avoid them unless the task is about "
        f"them: {protected}."
    )
    if scope.allow_globs:
        lines.append(f"- Stay within: {', '.join(scope.allow_globs)}.")
    if scope.high_risk_areas:
        lines.append(f"- High-risk areas (human review): {', '.join(scope.high_risk_areas)}.")
    lines.append("- Change only files inside the task's declared scope.")
    if rules.enabled and rules.risk_levels:
        lines.append(
            f"- Auto-merge needs a {'/'.join(rules.risk_levels)} change of at most "
            f"{rules.max_files} files and {rules.max_lines} changed lines that passes "
            "validation: keep the diff small and focused."
        )
    else:
        lines.append("- Nothing is auto-merged: every change goes to human review.")
    return "\n".join(lines)
