"""Request bodies of the gateway's API: strict pydantic models (unknown fields refused, lengths capped,
control characters refused), turned into the services' own domain objects by `to_*` methods.

Responses are the services' own dataclasses (Dataset, Grant; DataRequest plus its grant id), declared as
response models so /openapi.json describes them: enums as their value, money as decimal strings (exact),
times as ISO 8601.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    create_model,
)

from pdo.authorization.public import DataRequest, Narrowing, RequestSpec
from pdo.catalog.public import DatasetChanges, DatasetRegistration
from pdo.core.ids import ID_RULE
from pdo.core.vocabulary import (
    AggregateFunction,
    AggregateSpec,
    Classification,
    Domain,
    GrantKind,
    MaskingRule,
    Openness,
    PriceKind,
    PricePlan,
    PriceTier,
    SensitiveField,
)

MAX_LIST = 500
MAX_RECORDS = 10**12
# Avro decimal(18, 2), as the catalog keeps prices.
Money = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=2)]


def _no_control(text: str, allow_newlines: bool = False) -> str:
    for position, char in enumerate(text):
        if allow_newlines and char in "\n\t":
            continue
        if not char.isprintable() and char != " ":
            raise ValueError(f"must not contain control characters (found U+{ord(char):04X} at {position})")
    return text


def _no_control_multiline(text: str) -> str:
    return _no_control(text, allow_newlines=True)


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be blank")
    return text


# Ids: what the services accept is narrower still; this only keeps hostile strings out early.
Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$", max_length=128)]
# A new dataset's id: the rule every id that becomes part of a topic name keeps (see pdo.core.ids).
NewDatasetId = Annotated[
    str,
    StringConstraints(pattern=ID_RULE),
    Field(description="1 to 63 lower-case letters, digits and '-', starting with a letter or digit"),
]
FieldName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)]
Line = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200),
    AfterValidator(_no_control),
    AfterValidator(_not_blank),
]
Text = Annotated[
    str,
    StringConstraints(min_length=1, max_length=4000),
    AfterValidator(_no_control_multiline),
    AfterValidator(_not_blank),
]
Expression = Annotated[
    str, StringConstraints(min_length=1, max_length=2000), AfterValidator(_no_control_multiline)
]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Records = Annotated[int, Field(ge=0, le=MAX_RECORDS)]


class Body(BaseModel):
    """Every body: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


# -- catalog -------------------------------------------------------------------------------------------


class SensitiveFieldIn(Body):
    field: FieldName
    masking: MaskingRule
    doc: Text | None = None

    def to_domain(self) -> SensitiveField:
        return SensitiveField(field=self.field, masking=self.masking, doc=self.doc)


class PriceTierIn(Body):
    up_to_records: Annotated[int, Field(ge=1, le=MAX_RECORDS)] | None = Field(
        default=None, description="upper bound of the tier in records per statement; null for the last tier"
    )
    unit_price: Money

    def to_domain(self) -> PriceTier:
        return PriceTier(up_to_records=self.up_to_records, unit_price=self.unit_price)


class PricePlanIn(Body):
    kind: PriceKind
    unit_price: Money = Decimal("0.00")
    tiers: Annotated[list[PriceTierIn], Field(max_length=50)] = []
    currency: Currency = "CNY"

    def to_domain(self) -> PricePlan:
        return PricePlan(
            kind=self.kind,
            unit_price=self.unit_price,
            tiers=tuple(tier.to_domain() for tier in self.tiers),
            currency=self.currency,
        )


RecordSchema = Annotated[
    dict[str, Any] | str,
    Field(description="the dataset's Avro record schema, as a JSON object or as its JSON text"),
]


def schema_text(schema: dict[str, Any] | str) -> str:
    return schema if isinstance(schema, str) else json.dumps(schema)


class DatasetIn(Body):
    dataset_id: NewDatasetId
    owner_department: Line
    title: Line
    domain: Domain
    classification: Classification
    openness: Openness
    record_schema: RecordSchema
    sensitive_fields: Annotated[list[SensitiveFieldIn], Field(max_length=MAX_LIST)] = []
    price_plan: PricePlanIn
    description: Text | None = None
    asset_registration_number: Line | None = None
    terms: Text | None = None
    derived_from: Annotated[list[Identifier], Field(max_length=16)] = Field(
        default_factory=list,
        description="lineage: the registered datasets this one is derived from (a derived data product's sources)",
    )

    def to_domain(self) -> DatasetRegistration:
        return DatasetRegistration(
            dataset_id=self.dataset_id,
            owner_department=self.owner_department,
            title=self.title,
            domain=self.domain,
            classification=self.classification,
            openness=self.openness,
            record_schema=schema_text(self.record_schema),
            sensitive_fields=tuple(item.to_domain() for item in self.sensitive_fields),
            price_plan=self.price_plan.to_domain(),
            description=self.description,
            asset_registration_number=self.asset_registration_number,
            terms=self.terms,
            derived_from=tuple(self.derived_from),
        )


class DatasetPatch(Body):
    """Only what is sent changes; sensitive_fields, when sent, replaces the whole list."""

    owner_department: Line | None = None
    title: Line | None = None
    description: Text | None = None
    domain: Domain | None = None
    classification: Classification | None = None
    openness: Openness | None = None
    record_schema: RecordSchema | None = None
    sensitive_fields: Annotated[list[SensitiveFieldIn], Field(max_length=MAX_LIST)] | None = None
    price_plan: PricePlanIn | None = None
    asset_registration_number: Line | None = None
    terms: Text | None = None

    def to_domain(self) -> DatasetChanges:
        return DatasetChanges(
            owner_department=self.owner_department,
            title=self.title,
            description=self.description,
            domain=self.domain,
            classification=self.classification,
            openness=self.openness,
            record_schema=None if self.record_schema is None else schema_text(self.record_schema),
            sensitive_fields=None
            if self.sensitive_fields is None
            else tuple(item.to_domain() for item in self.sensitive_fields),
            price_plan=None if self.price_plan is None else self.price_plan.to_domain(),
            asset_registration_number=self.asset_registration_number,
            terms=self.terms,
        )


class Reason(Body):
    """A decision that must say why (retire, deny, suspend, revoke)."""

    reason: Text


class OptionalReason(Body):
    """A step where a reason is welcome but not required (withdraw, resume)."""

    reason: Text | None = None


# -- requests and grants -------------------------------------------------------------------------------


class AggregateIn(Body):
    """What an AGGREGATE request asks for: tumbling windows of event time, groups, aggregates."""

    window_seconds: Annotated[int, Field(ge=1, le=86_400, description="length of each tumbling window")]
    group_by: Annotated[list[FieldName], Field(max_length=16)] = Field(default_factory=list)
    numeric_fields: Annotated[list[FieldName], Field(max_length=MAX_LIST)] = Field(default_factory=list)
    functions: Annotated[list[AggregateFunction], Field(min_length=1, max_length=5)]
    epsilon: (
        Annotated[float, Field(gt=0, le=10, description="differential privacy: epsilon per window")] | None
    ) = None

    def to_domain(self) -> AggregateSpec:
        return AggregateSpec(
            window_seconds=self.window_seconds,
            group_by=tuple(self.group_by),
            numeric_fields=tuple(self.numeric_fields),
            functions=tuple(self.functions),
            epsilon=self.epsilon,
        )


class RequestIn(Body):
    request_id: Identifier | None = Field(default=None, description="your own id; generated when absent")
    dataset_id: Identifier
    purpose: Text
    fields: Annotated[list[FieldName], Field(min_length=1, max_length=MAX_LIST)]
    row_filter: Expression | None = None
    valid_from: AwareDatetime
    valid_until: AwareDatetime
    expected_daily_records: Records | None = None
    kind: GrantKind = Field(
        default=GrantKind.ROWS,
        description="ROWS: the records; AGGREGATE: only the aggregates `aggregate` asks for",
    )
    aggregate: AggregateIn | None = None

    def to_domain(self) -> RequestSpec:
        return RequestSpec(
            dataset_id=self.dataset_id,
            purpose=self.purpose,
            fields=tuple(self.fields),
            valid_from=self.valid_from,
            valid_until=self.valid_until,
            row_filter=self.row_filter,
            expected_daily_records=self.expected_daily_records,
            request_id=self.request_id,
            kind=self.kind,
            aggregate=None if self.aggregate is None else self.aggregate.to_domain(),
        )


class ApprovalIn(Body):
    """An operator's approval; each field given narrows what the tenant asked for."""

    fields: Annotated[list[FieldName], Field(min_length=1, max_length=MAX_LIST)] | None = None
    row_filter: Expression | None = None
    daily_quota_records: Annotated[int, Field(ge=1, le=MAX_RECORDS)] | None = None
    valid_from: AwareDatetime | None = None
    valid_until: AwareDatetime | None = None
    reason: Text | None = None

    def to_domain(self) -> Narrowing:
        return Narrowing(
            fields=None if self.fields is None else tuple(self.fields),
            row_filter=self.row_filter,
            daily_quota_records=self.daily_quota_records,
            valid_from=self.valid_from,
            valid_until=self.valid_until,
        )


# -- responses -----------------------------------------------------------------------------------------


class FieldProblem(BaseModel):
    field: str = Field(description="where, e.g. body.fields[0] or query.status")
    message: str


class ErrorOut(BaseModel):
    """Every refusal: a kind (invalid_input, not_found, conflict, unauthenticated, forbidden, ...)."""

    error: str
    message: str
    hint: str = ""
    details: list[FieldProblem] | None = Field(default=None, description="validation errors only")


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": description}
    for status, description in [
        (401, "no API key, or one that is unknown or revoked"),
        (403, "the key's role may not do this"),
        (404, "not found, or not yours to see"),
        (409, "clashes with the current state (duplicate id, illegal transition)"),
        (413, "body larger than the gateway accepts"),
        (422, "malformed input; `details` names each offending field"),
        (503, "a backing service (Kafka, registry, database) did not answer"),
    ]
}


def _view_model(cls: type, **extra: Any) -> type[BaseModel]:
    """A pydantic model with the fields of the dataclass `cls` (plus `extra`), for response schemas."""
    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {}
    for item in dataclasses.fields(cls):
        if item.default is not dataclasses.MISSING:
            fields[item.name] = (hints[item.name], item.default)
        elif item.default_factory is not dataclasses.MISSING:
            fields[item.name] = (hints[item.name], Field(default_factory=item.default_factory))
        else:
            fields[item.name] = (hints[item.name], ...)
    return create_model(cls.__name__, **fields, **extra)


if typing.TYPE_CHECKING:  # a model made at run time: to mypy, the routes that return it return a BaseModel
    DataRequestOut: typing.TypeAlias = BaseModel
else:
    DataRequestOut = _view_model(
        DataRequest,
        grant_id=(
            str | None,
            Field(default=None, description="the grant this request produced, once approved"),
        ),
    )


def request_view(data_request: DataRequest) -> BaseModel:
    """A data request as the API shows it: its fields and the id of its grant once approved."""
    values = {item.name: getattr(data_request, item.name) for item in dataclasses.fields(data_request)}
    return DataRequestOut(**values, grant_id=data_request.grant_id)
