"""The policy file: each default rule fires where it should, first match wins, bad files are refused."""

from __future__ import annotations

import pytest

from pdo.authorization.policy import Outcome, Policy, PolicyError, RequestFacts
from pdo.authorization.public import load_policy
from pdo.core.config import PROJECT_ROOT, Settings
from pdo.core.vocabulary import Classification, GrantKind, Openness, TenantKind

SHIPPED_POLICY = PROJECT_ROOT / "services" / "authorization" / "policy.yaml"


def facts(
    classification=Classification.GENERAL,
    openness=Openness.OPEN,
    sensitive=False,
    tenant=TenantKind.COMPANY,
    kind=GrantKind.ROWS,
) -> RequestFacts:
    return RequestFacts(classification, openness, sensitive, tenant, kind)


AGGREGATE = GrantKind.AGGREGATE


@pytest.fixture(scope="module")
def policy() -> Policy:
    return Policy.load(SHIPPED_POLICY)


@pytest.mark.parametrize(
    ("request_facts", "outcome", "rule"),
    [
        (facts(classification=Classification.CORE), Outcome.DENY, "deny-core-data"),
        # Core data is denied even when it is open and asks for nothing sensitive: the first rule wins.
        (facts(classification=Classification.CORE, openness=Openness.OPEN), Outcome.DENY, "deny-core-data"),
        (facts(openness=Openness.NOT_OPEN), Outcome.DENY, "deny-not-open"),
        (facts(openness=Openness.OPEN, sensitive=False), Outcome.APPROVE, "auto-approve-open-non-sensitive"),
        (
            facts(classification=Classification.IMPORTANT, openness=Openness.OPEN),
            Outcome.APPROVE,
            "auto-approve-open-non-sensitive",
        ),
        (facts(openness=Openness.OPEN, sensitive=True), Outcome.REVIEW, "review-everything-else"),
        (facts(openness=Openness.CONDITIONAL), Outcome.REVIEW, "review-everything-else"),
        (
            facts(openness=Openness.CONDITIONAL, tenant=TenantKind.GOVERNMENT),
            Outcome.REVIEW,
            "review-everything-else",
        ),
        # Aggregates of IMPORTANT (or conditional) data are approved where rows of it wait for review...
        (
            facts(Classification.IMPORTANT, Openness.CONDITIONAL, sensitive=True, kind=AGGREGATE),
            Outcome.APPROVE,
            "auto-approve-aggregates",
        ),
        (
            facts(Classification.IMPORTANT, Openness.CONDITIONAL, sensitive=True),
            Outcome.REVIEW,
            "review-everything-else",
        ),
        # ... but the hard denials stay denials for aggregates too.
        (facts(Classification.CORE, kind=AGGREGATE), Outcome.DENY, "deny-core-data"),
        (facts(openness=Openness.NOT_OPEN, kind=AGGREGATE), Outcome.DENY, "deny-not-open"),
    ],
)
def test_default_rules(policy, request_facts, outcome, rule):
    decision = policy.decide(request_facts)
    assert (decision.outcome, decision.rule_id) == (outcome, rule)
    assert decision.reason  # the rule's description, shown to the tenant


def test_the_default_policy_is_the_shipped_file(monkeypatch):
    monkeypatch.delenv("PDO_POLICY_FILE", raising=False)
    assert Settings.from_env().policy_file == SHIPPED_POLICY
    assert [rule.id for rule in load_policy().rules] == [
        "deny-core-data",
        "deny-not-open",
        "auto-approve-aggregates",
        "auto-approve-open-non-sensitive",
        "review-everything-else",
    ]


def test_pdo_policy_file_points_at_another_policy(monkeypatch, tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(
        """
rules:
  - id: government-shares-freely
    description: Departments share with each other.
    when: {tenant_kind: [government], classification: [GENERAL, IMPORTANT]}
    outcome: APPROVE
  - id: everything-else
    description: Reviewed.
    outcome: REVIEW
"""
    )
    monkeypatch.setenv("PDO_POLICY_FILE", str(path))
    policy = load_policy()
    government = facts(openness=Openness.CONDITIONAL, sensitive=True, tenant=TenantKind.GOVERNMENT)
    assert policy.decide(government).rule_id == "government-shares-freely"
    assert policy.decide(facts()).rule_id == "everything-else"


RULE_TAIL = "  - id: rest\n    description: Reviewed.\n    outcome: REVIEW\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rules: []", "has no rules"),
        ("rules: {}", "a list under 'rules'"),
        ("[1, 2]", "a list under 'rules'"),
        (
            "rules:\n  - id: a\n    description: A.\n    outcome: MAYBE\n",
            "outcome is 'MAYBE'; expected one of",
        ),
        ("rules:\n  - description: A.\n    outcome: DENY\n" + RULE_TAIL, "needs an 'id'"),
        ("rules:\n  - id: a\n    outcome: DENY\n" + RULE_TAIL, "needs a 'description'"),
        (
            "rules:\n  - id: a\n    description: A.\n    when: {colour: [red]}\n    outcome: DENY\n"
            + RULE_TAIL,
            "unknown conditions ['colour']",
        ),
        (
            "rules:\n  - id: a\n    description: A.\n    when: {openness: [SECRET]}\n    outcome: DENY\n"
            + RULE_TAIL,
            "openness is 'SECRET'",
        ),
        (
            "rules:\n  - id: a\n    description: A.\n    when: {grant_kind: [MODEL]}\n    outcome: DENY\n"
            + RULE_TAIL,
            "grant_kind is 'MODEL'",
        ),
        (
            "rules:\n  - id: a\n    description: A.\n    when: {has_sensitive_fields_requested: maybe}\n"
            "    outcome: DENY\n" + RULE_TAIL,
            "must be true or false",
        ),
        (
            "rules:\n  - id: rest\n    description: A.\n    outcome: DENY\n" + RULE_TAIL,
            "two rules are named 'rest'",
        ),
        (
            "rules:\n  - id: a\n    description: A.\n    when: {openness: OPEN}\n    outcome: APPROVE\n",
            "the last rule ('a') has conditions",
        ),
        ("rules:\n  - id: a\n    descripton: A.\n    outcome: DENY\n", "unknown keys ['descripton']"),
        ("rules: [\n", "is not valid YAML"),
    ],
)
def test_a_bad_policy_file_is_refused_with_the_reason(tmp_path, text, message):
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError) as refused:
        Policy.load(path)
    assert message in refused.value.message
    assert str(path) in refused.value.message


def test_a_missing_policy_file_names_the_variable(tmp_path):
    with pytest.raises(PolicyError) as refused:
        Policy.load(tmp_path / "absent.yaml")
    assert "PDO_POLICY_FILE" in refused.value.hint


def test_a_single_value_condition_is_a_one_item_list():
    policy = Policy.from_data(
        {
            "rules": [
                {"id": "a", "description": "A.", "when": {"openness": "OPEN"}, "outcome": "APPROVE"},
                {"id": "b", "description": "B.", "outcome": "DENY"},
            ]
        }
    )
    assert policy.decide(facts(openness=Openness.OPEN)).rule_id == "a"
    assert policy.decide(facts(openness=Openness.CONDITIONAL)).rule_id == "b"
