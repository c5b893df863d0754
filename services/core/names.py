"""Every platform event's full name, declared once: services name events by `Event`, never by a string.

`tests/unit/test_names.py` checks that each member names a schema in `schemas/` and that every event
schema there has a member, so a renamed or added `.avsc` cannot drift from the code. Topic names are
declared in `topics/` and reached through `pdo.core.topics`. Depends on nothing.
"""

from __future__ import annotations

from enum import StrEnum


class Event(StrEnum):
    """An event type by its Avro full name (`pdo.<area>.v1.<Name>`); a str, so it compares with decoded names."""

    DATASET_REGISTERED = "pdo.catalog.v1.DatasetRegistered"
    DATASET_UPDATED = "pdo.catalog.v1.DatasetUpdated"
    DATASET_RETIRED = "pdo.catalog.v1.DatasetRetired"
    REQUEST_SUBMITTED = "pdo.requests.v1.DataRequestSubmitted"
    REQUEST_REFERRED = "pdo.requests.v1.DataRequestReferred"
    REQUEST_WITHDRAWN = "pdo.requests.v1.DataRequestWithdrawn"
    AUTHORIZATION_GRANTED = "pdo.authorizations.v1.AuthorizationGranted"
    AUTHORIZATION_DENIED = "pdo.authorizations.v1.AuthorizationDenied"
    AUTHORIZATION_SUSPENDED = "pdo.authorizations.v1.AuthorizationSuspended"
    AUTHORIZATION_RESUMED = "pdo.authorizations.v1.AuthorizationResumed"
    AUTHORIZATION_REVOKED = "pdo.authorizations.v1.AuthorizationRevoked"
    AUTHORIZATION_EXPIRED = "pdo.authorizations.v1.AuthorizationExpired"
    RECORDS_DELIVERED = "pdo.sharing.v1.RecordsDelivered"
    USAGE_RECORDED = "pdo.metering.v1.UsageRecorded"
    QUOTA_EXCEEDED = "pdo.metering.v1.QuotaExceeded"
    STATEMENT_ISSUED = "pdo.metering.v1.StatementIssued"
    DEAD_LETTER = "pdo.deadletter.v1.DeadLetter"
    AUDIT_ENTRY_LOGGED = "pdo.audit.v1.AuditEntryLogged"
    AUDIT_CHECKPOINT_SIGNED = "pdo.audit.v1.AuditCheckpointSigned"
    DELIVERIES_DIGESTED = "pdo.metering.v1.DeliveriesDigested"
    PRINCIPAL_CREATED = "pdo.access.v1.PrincipalCreated"
    PRINCIPAL_DISABLED = "pdo.access.v1.PrincipalDisabled"
    PRINCIPAL_ENABLED = "pdo.access.v1.PrincipalEnabled"
    API_KEY_ISSUED = "pdo.access.v1.ApiKeyIssued"
    API_KEY_REVOKED = "pdo.access.v1.ApiKeyRevoked"
    KAFKA_CREDENTIALS_ISSUED = "pdo.access.v1.KafkaCredentialsIssued"
    KAFKA_CREDENTIALS_REVOKED = "pdo.access.v1.KafkaCredentialsRevoked"
    ACLS_APPLIED = "pdo.access.v1.AclsApplied"
    TOPICS_CREATED = "pdo.access.v1.TopicsCreated"
    ACCESS_CHANGE_FAILED = "pdo.access.v1.AccessChangeFailed"
    POLICY_IN_FORCE = "pdo.access.v1.PolicyInForce"
    DEAD_LETTER_REPLAYED = "pdo.access.v1.DeadLetterReplayed"
    PERIOD_CLOSED = "pdo.access.v1.PeriodClosed"
    WINDOW_AGGREGATED = "pdo.aggregation.v1.WindowAggregated"
    PRIVACY_BUDGET_EXHAUSTED = "pdo.aggregation.v1.PrivacyBudgetExhausted"
    RECORDS_DELIVERED_BATCH = "pdo.sharing.v1.RecordsDeliveredBatch"
