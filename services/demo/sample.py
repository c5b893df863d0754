"""The demo's cast: government providers and their datasets, tenants and what they ask for, an operator.

Datasets use the record schemas in schemas/datasets/ (their `pdo.sensitive` markings say what is masked).
Requests are chosen to show each path of the policy (services/authorization/policy.yaml): open data without
sensitive fields is approved by rule; sensitive fields or conditional data wait for the operator, who
approves most and denies one; one approved grant is revoked while records flow; a government department's
grant is free. One tenant is granted the demo's derived data product (products/ in this package).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Party:
    kind: str  # provider, tenant or operator
    name: str
    display_name: str
    government: bool = False

    @property
    def principal_id(self) -> str:
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True)
class DatasetSample:
    dataset_id: str
    provider: Party
    schema_file: str  # under schemas/datasets/
    title: str
    owner_department: str
    domain: str
    classification: str
    openness: str
    price_plan: dict[str, Any]
    description: str
    asset_registration_number: str  # the data asset registration authority's number, for listings
    terms: str  # the purpose limits a listing on a data exchange states

    def registration(self, home: Path) -> dict[str, Any]:
        """The body of POST /v1/datasets."""
        schema = json.loads((home / "schemas" / "datasets" / self.schema_file).read_text())
        return {
            "dataset_id": self.dataset_id,
            "owner_department": self.owner_department,
            "title": self.title,
            "domain": self.domain,
            "classification": self.classification,
            "openness": self.openness,
            "record_schema": schema,
            "price_plan": self.price_plan,
            "description": self.description,
            "asset_registration_number": self.asset_registration_number,
            "terms": self.terms,
        }


@dataclass(frozen=True)
class RequestSample:
    tenant: Party
    dataset_id: str
    fields: tuple[str, ...]
    purpose: str
    row_filter: str | None = None
    expected_daily_records: int | None = None
    operator_denies: bool = False  # when the request waits for review: deny it instead of approving
    revoked_later: bool = False  # the operator revokes the grant while records flow
    aggregate: dict[str, Any] | None = None  # an AGGREGATE request's spec (windows, groups, aggregates)

    @property
    def kind(self) -> str:
        return "AGGREGATE" if self.aggregate else "ROWS"

    @property
    def what(self) -> str:
        """What is asked for, in the demo's lines: the dataset, or its aggregates."""
        return f"aggregates of {self.dataset_id}" if self.aggregate else self.dataset_id


TRANSPORT = Party("provider", "transport-bureau", "Municipal Transport Bureau")
MARKET = Party("provider", "market-regulation", "Market Regulation Administration")
ENVIRONMENT = Party("provider", "environment-bureau", "Ecology and Environment Bureau")
PROVIDERS = (TRANSPORT, MARKET, ENVIRONMENT)

ACME = Party("tenant", "acme-logistics", "Acme Logistics Co.")
CITYLAB = Party("tenant", "citylab", "City Lab research institute")
CREDIT = Party("tenant", "credit-bureau", "Credit Information Services")
PLANNING = Party("tenant", "urban-planning", "Urban Planning Department", government=True)
TENANTS = (ACME, CITYLAB, CREDIT, PLANNING)

AGGREGATE_WINDOW_S = 10
# The demo's derived data product, declared in this folder (computed by the aggregation worker).
PRODUCTS_DIR = Path(__file__).parent / "products"
PRODUCT = "product-speeds"

OPERATOR = Party("operator", "demo-operator", "Demo operator")

DATASETS = (
    DatasetSample(
        dataset_id="traffic-flow",
        provider=TRANSPORT,
        schema_file="TrafficFlow.avsc",
        title="Checkpoint traffic flow",
        owner_department="Municipal Transport Bureau",
        domain="TRANSPORT",
        classification="GENERAL",
        openness="OPEN",
        price_plan={
            "kind": "TIERED",
            "tiers": [
                {"up_to_records": 1000, "unit_price": "2.00"},
                {"up_to_records": None, "unit_price": "1.00"},
            ],
        },
        description="One record per vehicle passing a road checkpoint.",
        asset_registration_number="ZJ-HZ-DA-2026-000117",
        terms="Traffic analysis, planning and logistics only; no identification of vehicles or drivers.",
    ),
    DatasetSample(
        dataset_id="enterprise-registry",
        provider=MARKET,
        schema_file="EnterpriseRegistry.avsc",
        title="Enterprise registration changes",
        owner_department="Market Regulation Administration",
        domain="MARKET_REGULATION",
        classification="IMPORTANT",
        openness="CONDITIONAL",
        price_plan={"kind": "PER_MEGABYTE", "unit_price": "5.00"},
        description="Registrations and changes of enterprises, with their legal representatives.",
        asset_registration_number="ZJ-HZ-DA-2026-000342",
        terms="Credit assessment and market supervision only; personal data not to be passed on.",
    ),
    DatasetSample(
        dataset_id="air-quality",
        provider=ENVIRONMENT,
        schema_file="AirQuality.avsc",
        title="Hourly air quality by monitoring station",
        owner_department="Municipal Ecology and Environment Bureau",
        domain="ENVIRONMENT",
        classification="GENERAL",
        openness="OPEN",
        price_plan={"kind": "PER_THOUSAND_RECORDS", "unit_price": "1.50"},
        description="PM2.5, PM10, NO2, O3 and AQI per station and hour.",
        asset_registration_number="ZJ-HZ-DA-2026-000058",
        terms="Any lawful use; cite the Ecology and Environment Bureau as the source.",
    ),
)

REQUESTS = (
    # A sensitive field (the plate, masked to its first and last characters): the operator approves.
    RequestSample(
        ACME,
        "traffic-flow",
        ("record_id", "checkpoint_id", "district", "plate_number", "vehicle_type", "observed_at"),
        "fleet arrival forecasting",
    ),
    # Open, nothing sensitive: approved by rule; revoked by the operator while records flow.
    RequestSample(
        CITYLAB,
        "traffic-flow",
        ("record_id", "district", "speed_kmh", "lane", "direction", "observed_at"),
        "congestion study",
        revoked_later=True,
    ),
    RequestSample(
        CITYLAB,
        "air-quality",
        ("record_id", "station_id", "district", "pm25", "aqi", "observed_at"),
        "exposure study",
    ),
    # Conditional data with masked personal fields: the operator approves.
    RequestSample(
        CREDIT,
        "enterprise-registry",
        (
            "record_id",
            "credit_code",
            "enterprise_name",
            "legal_representative",
            "contact_phone",
            "registered_capital",
            "status",
        ),
        "credit assessment of registered enterprises",
    ),
    # Identity numbers for a purpose that does not need them: the operator denies.
    RequestSample(
        ACME,
        "enterprise-registry",
        ("record_id", "enterprise_name", "legal_rep_id_number"),
        "customer outreach",
        operator_denies=True,
    ),
    # A government department, one district only: approved by rule, free of charge.
    RequestSample(
        PLANNING,
        "air-quality",
        ("record_id", "station_id", "district", "pm25", "pm10", "no2", "o3", "aqi", "observed_at"),
        "district planning",
        row_filter="district == 'Xihu'",
    ),
    # Aggregates only, never a row: vehicles and mean speed per district per window (approved by rule
    # `auto-approve-aggregates`). Windows are short so that several close while the demo runs; the demo's
    # platform lowers the operator's floor k to fit its few records per second (pdo.cli.demo).
    RequestSample(
        CITYLAB,
        "traffic-flow",
        ("district", "speed_kmh"),
        "district congestion statistics",
        aggregate={
            "window_seconds": AGGREGATE_WINDOW_S,
            "group_by": ["district"],
            "numeric_fields": ["speed_kmh"],
            "functions": ["COUNT", "MEAN"],
        },
    ),
    # A derived data product, granted like a dataset (open, nothing sensitive: approved by rule): its records
    # are its windows' groups, computed from traffic-flow, never a row of it.
    RequestSample(
        ACME,
        PRODUCT,
        ("record_id", "window_start", "window_end", "district", "records", "speed_kmh_mean", "speed_kmh_max"),
        "delivery slot planning by district speed",
    ),
)
