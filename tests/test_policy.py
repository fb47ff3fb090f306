from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from openloop.errors import ConfigError, InputError
from openloop.state.judge import (
    Assessment,
    Change,
    assess,
    assess_declared_scope,
    summary_for_prompt,
)
from openloop.state.policy import (
    CHECK_DEFINITIONS,
    PROTECTED_DEFAULTS,
    RISKS,
    Policy,
    dump_policy,
    load_policy,
    max_risk,
    parse_policy,
)

TEMPLATE = Path(__file__).resolve().parents[1] / "templates/project/.openloop/policy.yaml"


def policy_with(**scope: object) -> Policy:
    return Policy.model_validate({"scope": scope})


def judge(
    paths: list[str] | list[Change],
    policy: Policy | None = None,
    *,
    risk: str = "low-risk",
    scope: list[str] | None = None,
    lines: int = 10,
    validated: bool | None = True,
) -> Assessment:
    changes = [c if isinstance(c, Change) else Change("M", c) for c in paths]
    return assess(
        changes,
        policy or Policy(),
        declared_risk=risk,
        declared_scope=scope,
        lines_changed=lines,
        validations_passed=validated,
    )


# --- glob semantics ----------------------------------------------------------------------------

GLOB_CASES = [
    # (patterns, path, matched)
    (["src/**"], "src/a.py", True),
    (["src/**"], "src/deep/er/a.py", True),
    (["src/**"], "src", False),  # '**' after a slash needs something below
    (["src/**"], "lib/src/a.py", False),  # a middle slash anchors the pattern
    (["src"], "src", True),
    (["src"], "src/a.py", True),
    (["src"], "lib/src/a.py", True),  # no slash: any depth
    (["build/"], "build/out.o", True),
    (["build/"], "pkg/build/x/out.o", True),
    (["build/"], "build.txt", False),
    (["*.pem"], "certs/deep/key.pem", True),
    (["*"], ".env", True),  # gitignore wildcards match dotfiles
    (["*.env"], ".env", True),
    (["*.env"], "config/.env", True),
    ([".env*"], ".env.local", True),
    (["/setup.py"], "setup.py", True),
    (["/setup.py"], "pkg/setup.py", False),
    (["/foo"], "foo/bar.txt", True),
    (["a/**/b"], "a/b", True),
    (["a/**/b"], "a/x/y/b", True),
    (["a/**/b"], "a/x/b/c.txt", True),
    (["**/node_modules/**"], "web/node_modules/x.js", True),
    (["secrets/**", "!secrets/README.md"], "secrets/key", True),
    (["secrets/**", "!secrets/README.md"], "secrets/README.md", False),
    (["build/", "!build/keep.txt"], "build/keep.txt", False),  # differs from git: see policy.py
    (["!foo"], "foo", False),  # a lone negation matches nothing
    (["docs/**", "!docs/**", "docs/api/**"], "docs/api/x.md", True),  # last match wins
]


@pytest.mark.parametrize(("patterns", "path", "matched"), GLOB_CASES)
def test_deny_glob_semantics(patterns: list[str], path: str, matched: bool) -> None:
    result = judge([path], policy_with(denyGlobs=patterns), scope=["**"])
    assert result.blocked is matched
    assert result.denied == ((path,) if matched else ())


@pytest.mark.parametrize(("patterns", "path", "matched"), GLOB_CASES)
def test_allow_glob_semantics_are_the_same(patterns: list[str], path: str, matched: bool) -> None:
    result = judge([path], policy_with(allowGlobs=patterns), scope=["**"])
    assert result.outside_allow == (() if matched else (path,))


# --- assess rules ------------------------------------------------------------------------------


def test_clean_low_risk_change_auto_merges() -> None:
    result = judge(["src/a.py"], policy_with(allowGlobs=["src/**"]), scope=["src"])
    assert result == Assessment("low-risk", False, True, ())


def test_denied_path_blocks_and_names_the_rule() -> None:
    result = judge(["secrets/key.pem", "src/a.py"], policy_with(denyGlobs=["secrets/**"]))
    assert result.blocked and not result.auto_merge
    assert result.risk == "high-risk"
    assert result.denied == ("secrets/key.pem",)
    assert "denied path: secrets/key.pem (denyGlobs 'secrets/**')" in result.reasons


def test_high_risk_area_raises_risk() -> None:
    result = judge(["infra/main.tf"], policy_with(highRiskAreas=["infra/"]), scope=["infra"])
    assert (result.risk, result.high_risk) == ("high-risk", ("infra/main.tf",))
    assert not result.auto_merge
    assert not result.blocked


def test_path_outside_allow_globs_is_at_least_medium() -> None:
    result = judge(["README.md"], policy_with(allowGlobs=["src/**"]), scope=["README.md"])
    assert (result.risk, result.outside_allow) == ("medium-risk", ("README.md",))
    assert not result.auto_merge
    assert "path outside allowGlobs: README.md" in result.reasons


def test_declared_high_risk_is_never_lowered() -> None:
    assert judge(["src/a.py"], risk="high-risk", scope=["src"]).risk == "high-risk"


@pytest.mark.parametrize(
    ("declared", "path", "inside"),
    [
        (["src"], "src/a.py", True),
        (["src/"], "src/x/y.py", True),
        (["./src"], "src/a.py", True),
        (["src/a.py"], "src/a.py", True),
        (["src/a.py"], "src/a.py.orig", False),
        (["src"], "lib/src/a.py", False),  # a plain declared path is anchored at the root
        (["src"], "srcs/a.py", False),
        (["src/**/*.py"], "src/x/a.py", True),
        (["src/**/*.py"], "src/x/a.txt", False),
        (["*.md"], "docs/guide.md", True),
        (["src", "!src/gen"], "src/gen/out.py", False),
    ],
)
def test_declared_scope(declared: list[str], path: str, inside: bool) -> None:
    result = judge([path], scope=declared)
    assert result.outside_scope == (() if inside else (path,))
    assert result.risk == ("low-risk" if inside else "medium-risk")
    assert result.auto_merge is inside


def test_no_declared_scope_takes_unknown_scope_risk_when_rules_exist() -> None:
    rules = policy_with(allowGlobs=["**"], unknownScopeRisk="high-risk")
    for scope in (None, []):
        result = judge(["src/a.py"], rules, scope=scope)
        assert result.risk == "high-risk" and not result.auto_merge
        assert any("unknownScopeRisk" in r for r in result.reasons)
    # Without any scope rule there is nothing to be unknown about.
    assert judge(["src/a.py"], Policy(), scope=None).auto_merge


def test_protected_paths_are_never_auto_merged() -> None:
    result = judge([".openloop/policy.yaml"], scope=[".openloop"])
    assert result.protected == (".openloop/policy.yaml",)
    assert result.risk == "low-risk" and not result.blocked and not result.auto_merge
    assert any("protected path: .openloop/policy.yaml" in r for r in result.reasons)


def test_protected_defaults_cannot_be_removed_or_negated() -> None:
    policy = Policy.model_validate({"protectedPaths": ["docs/**", "!.pi/**", "!.openloop/x"]})
    assert policy.protected_paths[:3] == list(PROTECTED_DEFAULTS)
    for path in (".pi/agent.md", ".openloop/x", ".agents/a", "docs/a.md"):
        assert judge([path], policy, scope=["**"]).protected == (path,)
    assert parse_policy("protectedPaths: []\n", "p").protected_paths == list(PROTECTED_DEFAULTS)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"lines": 401}, "401 lines changed > autoMerge.maxLines 400"),
        ({"validated": None}, "no validations are configured: nothing auto-merges without them"),
        ({"validated": False}, "validations did not all run and pass"),
        (
            {"risk": "medium-risk"},
            "medium-risk is not auto-mergeable (autoMerge.riskLevels: low-risk)",
        ),
    ],
)
def test_auto_merge_gates(kwargs: dict, reason: str) -> None:
    result = judge(["src/a.py"], scope=["src"], **kwargs)
    assert not result.auto_merge and reason in result.reasons
    assert judge(["src/a.py"], scope=["src"], lines=400).auto_merge  # limits are inclusive


def test_max_files_and_disabled() -> None:
    many = [f"src/{i}.py" for i in range(21)]
    assert not judge(many, scope=["src"]).auto_merge
    assert judge(many[:20], scope=["src"]).auto_merge
    off = Policy.model_validate({"autoMerge": {"enabled": False}})
    result = judge(["src/a.py"], off, scope=["src"])
    assert not result.auto_merge and "auto-merge is disabled (autoMerge.enabled)" in result.reasons


def test_risk_levels_can_include_medium() -> None:
    policy = Policy.model_validate(
        {
            "scope": {"allowGlobs": ["src/**"]},
            "autoMerge": {"riskLevels": ["low-risk", "medium-risk"]},
        }
    )
    assert judge(["README.md"], policy, scope=["README.md"]).auto_merge


def test_rename_into_a_denied_path_is_caught() -> None:
    policy = policy_with(allowGlobs=["src/**"], denyGlobs=["secrets/**"])
    result = judge([Change("R", "secrets/key.pem", old_path="src/key.pem")], policy, scope=["src"])
    assert result.blocked and result.denied == ("secrets/key.pem",)
    assert result.outside_scope == ("secrets/key.pem",)


def test_rename_out_of_a_denied_path_is_caught() -> None:
    policy = policy_with(denyGlobs=["secrets/**"])
    change = Change("R", "src/key.pem", old_path="secrets/key.pem")
    assert change.paths() == ("secrets/key.pem", "src/key.pem")
    result = judge([change], policy, scope=["src"])
    assert result.blocked and result.denied == ("secrets/key.pem",)


def test_rename_counts_as_one_file() -> None:
    policy = Policy.model_validate({"autoMerge": {"maxFiles": 1}})
    assert judge([Change("R", "src/b.py", old_path="src/a.py")], policy, scope=["src"]).auto_merge


def test_unknown_declared_risk_is_refused() -> None:
    with pytest.raises(ValueError, match="critical"):
        judge(["a"], risk="critical")


def test_invalid_declared_scope_pattern() -> None:
    with pytest.raises(InputError, match="task scope.paths"):
        judge(["a"], scope=["src/\\"])
    with pytest.raises(TypeError):
        judge(["a"], scope="src")  # type: ignore[arg-type]


# --- pre-run check of the declared scope -------------------------------------------------------


def test_declared_scope_inside_a_denied_area_is_blocked() -> None:
    policy = policy_with(denyGlobs=["secrets/**"], highRiskAreas=["infra/**"])
    for scope in (["secrets"], ["secrets/"], ["secrets/key.pem"], ["secrets/*.pem"]):
        result = assess_declared_scope(policy, "low-risk", scope)
        assert result.blocked and not result.auto_merge, scope
        assert result.denied == (scope[0],)
    result = assess_declared_scope(policy, "low-risk", ["infra/**/*.tf"])
    assert (result.blocked, result.risk) == (False, "high-risk")
    assert "high-risk declared scope: infra/**/*.tf (highRiskAreas 'infra/**')" in result.reasons


def test_declared_scope_pre_run_other_rules() -> None:
    policy = policy_with(allowGlobs=["src/**"], denyGlobs=["**/*.pem"])
    ok = assess_declared_scope(policy, "low-risk", ["src", "src/**/*.py"])
    assert ok == Assessment("low-risk", False, True, ())
    outside = assess_declared_scope(policy, "low-risk", ["docs"])
    assert (outside.risk, outside.outside_allow) == ("medium-risk", ("docs",))
    unknown = assess_declared_scope(policy, "low-risk", None)
    assert unknown.risk == "medium-risk" and not unknown.auto_merge
    governance = assess_declared_scope(Policy(), "low-risk", [".openloop"])
    assert governance.protected == (".openloop",) and not governance.auto_merge


# --- loading, migration, dumping ---------------------------------------------------------------


def test_missing_file_gives_defaults(tmp_path: Path) -> None:
    assert load_policy(tmp_path / "nope.yaml") == Policy()
    assert parse_policy("", "p") == Policy()
    assert parse_policy("# only a comment\n", "p") == Policy()


def test_empty_sections_mean_defaults_and_empty_lists_mean_empty() -> None:
    text = "scope:\nautoMerge:\n  riskLevels:\nprotectedPaths:\nselfHealing:\n"
    policy = parse_policy(text, "p")
    assert policy.scope == Policy().scope
    assert policy.auto_merge.risk_levels == []  # never the more permissive default
    assert policy.protected_paths == list(PROTECTED_DEFAULTS)
    with pytest.raises(
        ConfigError, match="line 2: autoMerge.enabled: Input should be a valid bool"
    ):
        parse_policy("autoMerge:\n  enabled:\n", "p")


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_bytes(b"scope: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_policy(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_policy(tmp_path)


def test_template_loads_and_equals_defaults() -> None:
    assert load_policy(TEMPLATE) == Policy()


def test_defaults() -> None:
    policy = Policy()
    assert policy.auto_merge.risk_levels == ["low-risk"]
    assert (policy.auto_merge.max_files, policy.auto_merge.max_lines) == (20, 400)
    assert policy.scope.unknown_scope_risk == "medium-risk"
    assert policy.protected_paths == [*PROTECTED_DEFAULTS, *CHECK_DEFINITIONS]
    assert policy.self_healing.allowed_task_kinds == ["lint-fix", "type-fix", "localized-test-fix"]


V1 = """\
version: 1
scope:
  allowGlobs: [src/**]
  denyGlobs: [secrets/**]
  highRiskAreas: [src/payments/**]
riskClasses:
  low-risk: {autoMergeAllowed: true, requiresHumanReview: false}
  medium-risk: {autoMergeAllowed: true, requiresHumanReview: false}
  high-risk: {autoMergeAllowed: false, requiresHumanReview: true}
selfHealing:
  enabled: false
  allowedTaskKinds: [lint-fix]
promotion:
  lowRiskMode: auto-merge
  mediumRiskMode: pull-request
  highRiskMode: manual-only
"""


def test_v1_migrates() -> None:
    policy = parse_policy(V1, "p")
    assert policy.version == 2
    assert policy.scope.allow_globs == ["src/**"]
    assert policy.scope.deny_globs == ["secrets/**"]
    assert policy.scope.high_risk_areas == ["src/payments/**"]
    # medium-risk may auto-merge by class, but its promotion mode says pull-request: both must agree
    assert policy.auto_merge.risk_levels == ["low-risk"]
    assert not policy.self_healing.enabled
    assert policy.self_healing.allowed_task_kinds == ["lint-fix"]
    assert policy.protected_paths == [*PROTECTED_DEFAULTS, *CHECK_DEFINITIONS]


def test_v1_sections_are_consumed_by_the_migration() -> None:
    # riskClasses/promotion become autoMerge.riskLevels; a version 2 policy has no such keys.
    dumped = yaml.safe_load(dump_policy(parse_policy(V1, "p")))
    assert dumped["version"] == 2
    assert "riskClasses" not in dumped and "promotion" not in dumped
    assert dumped["autoMerge"]["riskLevels"] == ["low-risk"]
    assert parse_policy(dump_policy(parse_policy(V1, "p")), "p") == parse_policy(V1, "p")


def test_a_versionless_file_with_v1_sections_is_migrated_as_v1() -> None:
    text = (
        "riskClasses: {medium-risk: {autoMergeAllowed: true}}\n"
        "promotion: {mediumRiskMode: auto-merge}\n"
    )
    assert parse_policy(text, "p").auto_merge.risk_levels == ["low-risk", "medium-risk"]


@pytest.mark.parametrize(
    ("text", "levels"),
    [
        ("version: 1\n", ["low-risk"]),  # the original tool's minimal file
        ("version: 1\npromotion: {mediumRiskMode: auto-merge}\n", ["low-risk"]),
        (
            "version: 1\npromotion: {mediumRiskMode: auto-merge}\n"
            "riskClasses: {medium-risk: {autoMergeAllowed: true}}\n",
            ["low-risk", "medium-risk"],
        ),
        ("version: 1\npromotion: {lowRiskMode: pull-request}\n", []),
        ("version: 1\nriskClasses: {low-risk: {autoMergeAllowed: false}}\n", []),
    ],
)
def test_v1_risk_levels(text: str, levels: list[str]) -> None:
    assert parse_policy(text, "p").auto_merge.risk_levels == levels


def test_a_round_trip_keeps_every_setting() -> None:
    text = "version: 2\nautoMerge:\n  maxFiles: 5\nscope:\n  denyGlobs: [secrets/**]\n"
    policy = parse_policy(text, "p")
    dumped = yaml.safe_load(dump_policy(policy))
    assert dumped["autoMerge"]["maxFiles"] == 5 and dumped["scope"]["denyGlobs"] == ["secrets/**"]
    assert parse_policy(dump_policy(policy), "p") == policy


def test_dump_of_defaults_reloads_equal() -> None:
    assert parse_policy(dump_policy(Policy()), "p") == Policy()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "version: 2\nscope:\n  denyGlobs: secrets/**\n",
            "P: line 3: scope.denyGlobs: Input should be a valid list (got 'secrets/**')",
        ),
        (
            "autoMerge:\n  maxFiles: twenty\n",
            "P: line 2: autoMerge.maxFiles: Input should be a valid integer (got 'twenty')",
        ),
        (
            "autoMerge:\n  riskLevels:\n    - low-risk\n    - critical\n",
            "P: line 4: autoMerge.riskLevels[1]: Input should be 'low-risk', 'medium-risk' or "
            "'high-risk' (got 'critical')",
        ),
        (
            "scope:\n  unknownScopeRisk: extreme\n",
            "P: line 2: scope.unknownScopeRisk: Input should be 'low-risk', 'medium-risk' or "
            "'high-risk' (got 'extreme')",
        ),
        (
            "scope:\n  denyGlobs:\n    - ok/**\n    - '\\'\n",
            "P: line 4: scope.denyGlobs[1]: invalid glob '\\\\': Invalid git pattern: '\\\\'",
        ),
        (
            "scope:\n  highRiskAreas:\n    - '#comment'\n",
            "P: line 3: scope.highRiskAreas[0]: glob '#comment' matches nothing "
            "(blank or a '#' comment)",
        ),
        (
            "version: 2\nscope:\n  allowGlobs: [src/**\n",
            "P: line 4: invalid YAML: expected ',' or ']', but got '<stream end>'",
        ),
        ("scope:\n  denyGlobs: [a]\n bad: 1\n", "P: line 3: invalid YAML:"),
        ("version: 7\n", "P: line 1: version: unsupported version 7 (expected 1 or 2)"),
        ("- a\n", "P: line 1: (top level): expected a mapping"),
        (
            "autoMerge:\n  requireValidation: false\n",
            "P: line 2: autoMerge.requireValidation: must be true",
        ),
        (
            "version: 1\nriskClasses:\n  low-risk: {autoMergeAllowed: maybe}\n",
            "P: line 3: riskClasses.low-risk.autoMergeAllowed: Input should be a valid boolean",
        ),
        (
            "version: 1\npromotion:\n  lowRiskMode: yolo\n",
            "P: line 3: promotion.lowRiskMode: Input should be 'auto-merge'",
        ),
    ],
)
def test_errors_name_the_line_and_field(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_policy(text, "P")
    message = str(info.value)
    assert message.startswith(expected), message
    assert "\n" not in message


def test_several_errors_report_the_first_by_line() -> None:
    text = "autoMerge:\n  maxLines: x\nscope:\n  denyGlobs: y\n"
    with pytest.raises(ConfigError, match=r"^P: line 2: autoMerge\.maxLines: .*\(and 1 more\)$"):
        parse_policy(text, "P")


def test_load_policy_reports_the_path(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("autoMerge:\n  enabled: sometimes\n")
    with pytest.raises(ConfigError, match=rf"^{path}: line 2: autoMerge\.enabled: "):
        load_policy(path)
    assert ConfigError.exit_code == 2


# --- small helpers -----------------------------------------------------------------------------


def test_max_risk() -> None:
    assert RISKS == ("low-risk", "medium-risk", "high-risk")
    assert max_risk("low-risk", "high-risk", "medium-risk") == "high-risk"
    assert max_risk("medium-risk") == "medium-risk"
    assert max_risk() == "low-risk"
    with pytest.raises(ValueError):
        max_risk("severe")


def test_summary_for_prompt_mentions_the_rules() -> None:
    policy = policy_with(denyGlobs=["secrets/**"], allowGlobs=["src/**"], highRiskAreas=["db/**"])
    summary = summary_for_prompt(policy)
    for needle in ("secrets/**", "src/**", "db/**", ".openloop/**", "20 files", "400"):
        assert needle in summary
    off = summary_for_prompt(Policy.model_validate({"autoMerge": {"enabled": False}}))
    assert "Nothing is auto-merged" in off
