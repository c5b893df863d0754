"""The authorization policy: rules as data (policy.yaml), first match wins, each decision names its rule.

The policy only sees facts about a request (the dataset's classification and openness, whether a sensitive
field is asked for, what kind of tenant asks), so it can be tested, read and changed without code.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from pdo.core.config import Settings
from pdo.core.errors import PdoError
from pdo.core.vocabulary import Classification, GrantKind, Openness, TenantKind


class Outcome(StrEnum):
    APPROVE = "APPROVE"
    DENY = "DENY"
    REVIEW = "REVIEW"


class PolicyError(PdoError):
    """The policy file cannot be used; the message names the file, the rule and what is wrong."""


@dataclass(frozen=True)
class RequestFacts:
    """Everything a rule may look at."""

    classification: Classification
    openness: Openness
    has_sensitive_fields_requested: bool
    tenant_kind: TenantKind
    # ROWS (records) or AGGREGATE (windowed aggregates only): aggregates may be decided more leniently.
    grant_kind: GrantKind = GrantKind.ROWS


@dataclass(frozen=True)
class Rule:
    id: str
    description: str
    outcome: Outcome
    classification: frozenset[Classification] | None = None
    openness: frozenset[Openness] | None = None
    has_sensitive_fields_requested: bool | None = None
    tenant_kind: frozenset[TenantKind] | None = None
    grant_kind: frozenset[GrantKind] | None = None

    @property
    def unconditional(self) -> bool:
        return all(
            condition is None
            for condition in (
                self.classification,
                self.openness,
                self.has_sensitive_fields_requested,
                self.tenant_kind,
                self.grant_kind,
            )
        )

    def applies_to(self, facts: RequestFacts) -> bool:
        """True when every condition the rule states holds; an absent condition holds always."""
        return (
            (self.classification is None or facts.classification in self.classification)
            and (self.openness is None or facts.openness in self.openness)
            and (
                self.has_sensitive_fields_requested is None
                or facts.has_sensitive_fields_requested == self.has_sensitive_fields_requested
            )
            and (self.tenant_kind is None or facts.tenant_kind in self.tenant_kind)
            and (self.grant_kind is None or facts.grant_kind in self.grant_kind)
        )


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    rule_id: str
    reason: str


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...]
    source: str = field(default="<memory>", compare=False)

    def __post_init__(self) -> None:
        _check_rules(self.rules, self.source)

    def decide(self, facts: RequestFacts) -> Decision:
        """The first rule that applies decides; validation guarantees the last one always applies."""
        for rule in self.rules:
            if rule.applies_to(facts):
                return Decision(rule.outcome, rule.id, rule.description)
        raise AssertionError("unreachable: the last rule is unconditional")

    @classmethod
    def from_data(cls, data: Any, source: str = "<memory>") -> Policy:
        if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
            raise PolicyError(f"{source}: a policy is a mapping with a list under 'rules'")
        return cls(tuple(_rule(raw, index, source) for index, raw in enumerate(data["rules"])), source)

    @classmethod
    def load(cls, path: Path | str) -> Policy:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as error:
            raise PolicyError(
                f"cannot read the policy file {path}: {error.strerror}",
                hint="set PDO_POLICY_FILE to a readable file, or unset it for the default",
            ) from None
        except yaml.YAMLError as error:
            raise PolicyError(f"{path} is not valid YAML: {error}") from None
        return cls.from_data(data, str(path))


def load_policy(settings: Settings | None = None) -> Policy:
    """The policy in force: PDO_POLICY_FILE, by default the policy.yaml shipped beside this module."""
    return Policy.load((settings or Settings.from_env()).policy_file)


# ---------------------------------------------------------------------------------------------- parsing

_CONDITIONS = {"classification", "openness", "has_sensitive_fields_requested", "tenant_kind", "grant_kind"}
_RULE_KEYS = {"id", "description", "when", "outcome"}


def _rule(raw: Any, index: int, source: str) -> Rule:
    where = f"{source}: rule {index + 1}"
    if not isinstance(raw, dict):
        raise PolicyError(f"{where} must be a mapping with id, description, when and outcome")
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise PolicyError(f"{where} has unknown keys {sorted(unknown)}; allowed: {sorted(_RULE_KEYS)}")
    rule_id, description = raw.get("id"), raw.get("description")
    if not isinstance(rule_id, str) or not rule_id.strip():
        raise PolicyError(f"{where} needs an 'id' (text)")
    where = f"{source}: rule {rule_id!r}"
    if not isinstance(description, str) or not description.strip():
        raise PolicyError(f"{where} needs a 'description' (the reason shown to tenants)")
    when = raw.get("when") or {}
    if not isinstance(when, dict):
        raise PolicyError(f"{where}: 'when' must be a mapping of conditions")
    unknown = set(when) - _CONDITIONS
    if unknown:
        raise PolicyError(f"{where}: unknown conditions {sorted(unknown)}; allowed: {sorted(_CONDITIONS)}")
    return Rule(
        id=rule_id,
        description=description.strip(),
        outcome=_choice(Outcome, raw.get("outcome"), f"{where}: outcome"),
        classification=_choices(Classification, when.get("classification"), f"{where}: classification"),
        openness=_choices(Openness, when.get("openness"), f"{where}: openness"),
        has_sensitive_fields_requested=_flag(
            when.get("has_sensitive_fields_requested"), f"{where}: has_sensitive_fields_requested"
        ),
        tenant_kind=_choices(TenantKind, when.get("tenant_kind"), f"{where}: tenant_kind"),
        grant_kind=_choices(GrantKind, when.get("grant_kind"), f"{where}: grant_kind"),
    )


def _choice(kind: type[StrEnum], raw: Any, where: str) -> Any:
    try:
        return kind(raw)
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise PolicyError(f"{where} is {raw!r}; expected one of {allowed}") from None


def _choices(kind: type[StrEnum], raw: Any, where: str) -> frozenset | None:
    if raw is None:
        return None
    values = [raw] if isinstance(raw, str) else raw
    if not isinstance(values, list) or not values:
        raise PolicyError(f"{where} must be a value or a non-empty list of values")
    return frozenset(_choice(kind, value, where) for value in values)


def _flag(raw: Any, where: str) -> bool | None:
    if raw is None or isinstance(raw, bool):
        return raw
    raise PolicyError(f"{where} must be true or false, not {raw!r}")


def _check_rules(rules: Iterable[Rule], source: str) -> None:
    rules = list(rules)
    if not rules:
        raise PolicyError(f"{source}: the policy has no rules")
    seen: set[str] = set()
    for rule in rules:
        if rule.id in seen:
            raise PolicyError(f"{source}: two rules are named {rule.id!r}; ids must be unique")
        seen.add(rule.id)
    if not rules[-1].unconditional:
        raise PolicyError(
            f"{source}: the last rule ({rules[-1].id!r}) has conditions",
            hint="end the policy with a rule without 'when', so every request is decided by a named rule",
        )
