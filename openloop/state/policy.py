"""The scope/risk policy (.openloop/policy.yaml) and the judgement of a real git diff against it.

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
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pathspec import GitIgnoreSpec
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from openloop.errors import ConfigError, InputError
from openloop.state.models_base import unknown_key_message

RISKS = ("low-risk", "medium-risk", "high-risk")
PROTECTED_DEFAULTS = (".openloop/**", ".pi/**", ".agents/**")
# Files that decide how the project's checks run: an agent that edits them could make its own
# change pass. Protected by default (review, never auto-merge); a policy may drop them. A pattern
# without a '/' matches at any depth (gitignore rules): a nested package.json or conftest.py
# steers the checks as much as the top one. Files the approved commands themselves name
# (`bash scripts/test.sh`) are protected on top of these, always: see checkfiles.py.
CHECK_DEFINITIONS = (
    "Makefile",
    "makefile",
    "GNUmakefile",
    "Justfile",
    "justfile",
    "Taskfile.yml",
    "package.json",
    "pyproject.toml",
    "setup.py",
    "setup.cfg",
    "tox.ini",
    "noxfile.py",
    "pytest.ini",
    "conftest.py",
    ".coveragerc",
    "mypy.ini",
    ".flake8",
    "ruff.toml",
    ".ruff.toml",
    ".pre-commit-config.yaml",
    "tsconfig.json",
    "tsconfig.*.json",
    ".eslintrc*",
    "eslint.config.*",
    ".prettierrc*",
    "jest.config.*",
    "vitest.config.*",
    "babel.config.*",
    "go.mod",
    ".golangci.yml",
    "Cargo.toml",
    "rust-toolchain.toml",
    # git runs filter and diff drivers named here, and submodules swap in other code.
    ".gitattributes",
    ".gitmodules",
    ".envrc",  # direnv: the environment every command in the directory runs with
    ".github/**",
    ".gitlab-ci.yml",
)
_V1_MODE_FIELD = {r: r.split("-")[0] + "_risk_mode" for r in RISKS}  # low-risk -> low_risk_mode


def max_risk(*risks: str) -> str:
    for risk in risks:
        if risk not in RISKS:
            raise ValueError(f"unknown risk level {risk!r} (expected one of {', '.join(RISKS)})")
    return max(risks, key=RISKS.index, default=RISKS[0])


def _check_glob(pattern: str) -> str:
    try:
        spec = GitIgnoreSpec.from_lines([pattern])
    except Exception as exc:  # pathspec raises its own error types, all "this pattern is bad"
        raise ValueError(f"invalid glob {pattern!r}: {exc}") from None
    # A blank line or a '#...' comment compiles to a pattern that matches nothing: in a policy that
    # is a silently dead rule, so refuse it (write '\#name' for a file starting with '#').
    if not spec.patterns or spec.patterns[0].include is None:
        raise ValueError(f"glob {pattern!r} matches nothing (blank or a '#' comment)")
    return pattern


Glob = Annotated[str, AfterValidator(_check_glob)]
Risk = Literal["low-risk", "medium-risk", "high-risk"]
_Mode = Literal["auto-merge", "pull-request", "manual-only"]


class _Model(BaseModel):
    # extra="forbid": a misspelled key (denyGlob for denyGlobs) would otherwise drop its rule.
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        strict=True,
        frozen=True,
        defer_build=True,
    )

    @model_validator(mode="before")
    @classmethod
    def _empty_means_default(cls, data: Any) -> Any:
        # A key left empty in YAML (its entries commented out) is null: read an empty section as
        # its defaults and an empty list as [] (never as the default list: for riskLevels that
        # would be more permissive); a null scalar stays an error.
        if not isinstance(data, dict):
            return data
        fixed = dict(data)
        for name, field in cls.model_fields.items():
            key = field.alias or name
            if key in fixed and fixed[key] is None:
                if isinstance(field.default, list):
                    fixed[key] = []
                elif isinstance(field.default, dict | BaseModel):
                    del fixed[key]
        return fixed


class ScopeRules(_Model):
    allow_globs: list[Glob] = []
    deny_globs: list[Glob] = []
    high_risk_areas: list[Glob] = []
    unknown_scope_risk: Risk = "medium-risk"


class AutoMerge(_Model):
    enabled: bool = True
    risk_levels: list[Risk] = ["low-risk"]
    max_files: int = Field(20, ge=0)
    max_lines: int = Field(400, ge=0)
    require_validation: bool = True

    @field_validator("require_validation")
    @classmethod
    def _validation_is_mandatory(cls, value: bool) -> bool:
        # Refused rather than ignored: a file saying `false` would otherwise promise something
        # OpenLoop never does.
        if not value:
            raise ValueError(
                "must be true: OpenLoop never auto-merges unvalidated changes "
                "(use autoMerge.enabled: false to stop auto-merging)"
            )
        return value


HealKind = Literal["lint-fix", "type-fix", "localized-test-fix"]


class SelfHealing(_Model):
    """Repairs of a broken default branch (loop/baseline.py classifies what fails)."""

    enabled: bool = True
    allowed_task_kinds: list[HealKind] = ["lint-fix", "type-fix", "localized-test-fix"]
    # A healing task is made once per failure signature and gets this many attempts.
    max_attempts_per_signature: int = Field(2, ge=1, le=10)


class Discovery(_Model):
    """Idle mode: what OpenLoop proposes when nothing is eligible and the default branch is
    healthy. Proposals land as `proposed` (`openloop task accept`)."""

    enabled: bool = True
    max_proposals_per_day: int = Field(3, ge=0, le=50)
    # Low-risk proposals start `ready` instead of waiting for `openloop task accept`.
    auto_accept_low_risk: bool = False


class Policy(_Model):
    version: Literal[2] = 2
    scope: ScopeRules = ScopeRules()
    auto_merge: AutoMerge = AutoMerge()
    protected_paths: list[Glob] = [*PROTECTED_DEFAULTS, *CHECK_DEFINITIONS]
    self_healing: SelfHealing = SelfHealing()
    discovery: Discovery = Discovery()

    @field_validator("protected_paths")
    @classmethod
    def _keep_defaults(cls, value: list[str]) -> list[str]:
        # Users may add governance paths, never drop ours; matching also checks the defaults on
        # their own, so a user's '!.openloop/x' cannot carve a hole either.
        return [p for p in PROTECTED_DEFAULTS if p not in value] + value


class _V1RiskClass(_Model):
    auto_merge_allowed: bool = False
    requires_human_review: bool = True


class _V1Promotion(_Model):
    low_risk_mode: _Mode = "auto-merge"
    medium_risk_mode: _Mode = "pull-request"
    high_risk_mode: _Mode = "manual-only"


class _V1(_Model):
    # Reads only the v1 sections; the rest of the file is checked as version 2 after migration.
    model_config = ConfigDict(extra="ignore")

    # Absent classes take the original tool's stance: only low-risk may auto-merge.
    risk_classes: dict[Risk, _V1RiskClass] = {}
    promotion: _V1Promotion = _V1Promotion()


_V1_KEYS = {"riskClasses", "promotion"}


def _migrate_v1(raw: dict[str, Any]) -> dict[str, Any]:
    v1 = _V1.model_validate(raw)
    levels = []
    for risk in RISKS:
        cls = v1.risk_classes.get(risk)
        allowed = cls.auto_merge_allowed if cls else risk == "low-risk"
        mode = getattr(v1.promotion, _V1_MODE_FIELD[risk])
        if allowed and mode == "auto-merge":
            levels.append(risk)
    # riskClasses/promotion are consumed here: what they decide about auto-merging is now
    # autoMerge.riskLevels; the rest (requiresHumanReview, pull-request vs manual-only) has no v2
    # meaning, and keeping them would make version-2 policies accept two dead keys.
    migrated = {k: v for k, v in raw.items() if k not in _V1_KEYS} | {"version": 2}
    auto_merge = migrated.get("autoMerge")
    if auto_merge is None or isinstance(auto_merge, dict):
        migrated["autoMerge"] = {"riskLevels": levels, **(auto_merge or {})}
    return migrated


# --- loading -------------------------------------------------------------------------------


def load_policy(path: Path) -> Policy:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Policy()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: line 1: not UTF-8 text") from None
    return parse_policy(text, str(path))


# libyaml when present: the pure-Python parser is a visible part of every iteration's cost.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _node_tree(text: str) -> yaml.Node | None:
    """The YAML node tree, for line numbers in error messages (only built on an error)."""
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None


def parse_policy(text: str, source: str) -> Policy:
    try:
        try:
            raw = yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader
        except yaml.YAMLError:
            raw = yaml.safe_load(text)  # the same error, in the pure-Python parser's words
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}: line {line}: invalid YAML: {problem}") from None
    if raw is None:
        return Policy()
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: line 1: (top level): expected a mapping of policy keys")
    # No version key: version 2, unless the file carries the original tool's sections.
    version = raw.get("version", 1 if _V1_KEYS & raw.keys() else 2)
    try:
        if type(version) is int and version == 1:
            raw = _migrate_v1(raw)
        elif not (type(version) is int and version == 2):
            line = _line_of(_node_tree(text), ("version",))
            raise ConfigError(
                f"{source}: line {line}: version: unsupported version {version!r} (expected 1 or 2)"
            )
        return Policy.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, _node_tree(text), source)) from None


def _line_of(root: yaml.Node | None, loc: Sequence[str | int]) -> int:
    """Walk the composed YAML as far as the error location reaches and return that node's line."""
    if (node := root) is None:
        return 1
    parts = list(loc)
    for i, part in enumerate(parts):
        child = None
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            for key, value in node.value:
                if key.value == part:
                    # A bad dict key (loc ends in '[key]') is best shown at the key itself.
                    child = key if parts[i + 1 : i + 2] == ["[key]"] else value
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if 0 <= part < len(node.value):
                child = node.value[part]
        if child is None:
            break
        node = child
    return node.start_mark.line + 1


def _describe(exc: ValidationError, root: yaml.Node | None, source: str) -> str:
    errors = sorted(exc.errors(), key=lambda e: _line_of(root, e["loc"]))
    first = errors[0]
    where = ""
    for part in first["loc"]:
        if part == "[key]":
            continue
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    msg = first["msg"].removeprefix("Value error, ")
    given = first.get("input")
    loc = first["loc"]
    if first["type"] == "extra_forbidden":
        # The v1 sections are checked on their own model, before migration.
        msg = unknown_key_message(_V1 if exc.title == _V1.__name__ else Policy, loc)
        if tuple(loc) in {(k,) for k in _V1_KEYS}:
            msg += " (version 1 only; version 2 says what may auto-merge in autoMerge.riskLevels)"
        loc = (*loc, "[key]")  # the line of the key itself, not of its value
    elif type(given) in (str, int, float) and repr(given) not in msg:  # type(): not for bools
        msg += f" (got {given!r})"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    line = _line_of(root, loc)
    return f"{source}: line {line}: {where or '(top level)'}: {msg}{more}"


def dump_policy(policy: Policy) -> str:
    """The policy as YAML, always version 2."""
    data = policy.model_dump(by_alias=True)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)


# --- judging -------------------------------------------------------------------------------


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
