"""The scope/risk policy (.openloop/policy.yaml): its model, defaults, strict loading with
line numbers, and the original tool's format. Judging a diff against it is
openloop.state.judge."""

from __future__ import annotations

from collections.abc import Sequence
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

from openloop.errors import ConfigError
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
