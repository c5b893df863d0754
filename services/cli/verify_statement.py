"""`pdo audit verify-statement`: a tenant checks a statement from its own records and the signed audit log.

It fetches, with the tenant's API key, the statement (or reads a saved one), the delivery digests its lines
name and their delivery ids, and the audit entries recording them with their inclusion proofs; it reads the
tenant's own topics with the Kafka client properties /v1/kafka-credentials gave it (read_committed) and
recomputes each record's delivery id from its provenance. pdo.audit.statement_check does the checks; this
prints each verdict and exits 0 when all hold, 1 on the first that fails (with the reason), 2 on a pdo error
(an unreachable gateway, a bad file ...).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from pdo.core.config import Settings
from pdo.core.errors import InvalidInput, PdoError

PAGE = 1000
MAX_WAIT_S = 30.0  # at most this long per 429 before asking again


def register(actions: Any) -> None:
    check = actions.add_parser(
        "verify-statement",
        help="a tenant's check of a statement: digests, its own records, the signed audit log (exit 1: not verified)",
    )
    which = check.add_mutually_exclusive_group(required=True)
    which.add_argument("--statement", help="the statement's id (fetched from the gateway)")
    which.add_argument("--statement-file", type=Path, help="a saved statement JSON (GET /v1/statements/{id})")
    check.add_argument("--gateway", help="the gateway's URL (default: http://127.0.0.1:PDO_GATEWAY_PORT)")
    check.add_argument("--api-key-file", type=Path, required=True, help="a file holding your API key")
    check.add_argument(
        "--kafka-properties",
        type=Path,
        required=True,
        help="your Kafka client properties (client_properties of POST /v1/kafka-credentials)",
    )
    check.add_argument(
        "--registry",
        help="the schema registry's URL your records' schemas are in (default: PDO_REGISTRY_URL)",
    )
    check.add_argument(
        "--public-key", type=Path, required=True, help="the audit log's PEM public key you trust"
    )
    check.add_argument(
        "--received",
        type=Path,
        help="a file of delivery ids you kept, one a line (for records your topics no longer retain)",
    )
    check.set_defaults(func=run_verify_statement)


def run_verify_statement(args: argparse.Namespace) -> int:
    from pdo.audit.checkpoints import load_public_key
    from pdo.audit.statement_check import Evidence, Outcome, StatementNotVerified, check_statement

    settings = tenant_settings(Settings(), read_properties(args.kafka_properties), args.registry)
    public_key = load_public_key(args.public_key.read_bytes())
    with Gateway(args.gateway or f"http://127.0.0.1:{settings.gateway_port}", _key(args.api_key_file)) as api:
        statement = (
            _load_json(args.statement_file)
            if args.statement_file
            else api.get(f"/v1/statements/{args.statement}")
        )
        received = received_delivery_ids(settings, statement) | _kept(args.received)
        evidence = Evidence(
            statement=statement,
            digests=api.digests(statement),
            deliveries=lambda digest_id: api.get(f"/v1/usage/digests/{digest_id}/deliveries")["delivery_ids"],
            received=received,
            logged=api.digest_entries,
            proof=lambda seq: api.get("/v1/audit/proof", entry=seq),
            public_key=public_key,
        )
        outcome = Outcome()
        try:
            check_statement(evidence, outcome)
        except StatementNotVerified as failure:
            print("\n".join(outcome.verdicts))
            print(f"FAIL  {failure}", file=sys.stderr)
            if failure.hint:
                print(f"      hint: {failure.hint}", file=sys.stderr)
            print(f"statement {statement['statement_id']} NOT verified", file=sys.stderr)
            return 1
    print("\n".join(outcome.verdicts))
    print(
        f"statement {statement['statement_id']} verified: {len(statement['lines'])} line(s), "
        f"{sum(len(line['digests']) for line in statement['lines'])} digest(s), all in the signed audit log"
    )
    return 0


# ---------------------------------------------------------------------------------------------- the gateway


class Gateway:
    """The tenant's HTTP client of the gateway; waits out 429 (Retry-After) and turns errors into PdoError."""

    def __init__(self, url: str, api_key: str) -> None:
        import httpx

        self._http = httpx.Client(
            base_url=url.rstrip("/"), headers={"Authorization": f"Bearer {api_key}"}, timeout=60.0
        )

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def get(self, path: str, **params: Any) -> Any:
        import httpx

        while True:
            try:
                answer = self._http.get(path, params=params)
            except httpx.HTTPError as error:
                raise PdoError(
                    f"the gateway did not answer GET {path}: {type(error).__name__}",
                    hint="check --gateway",
                ) from None
            if answer.status_code != 429:
                break
            time.sleep(min(float(answer.headers.get("Retry-After", "1")), MAX_WAIT_S))
        if answer.status_code != 200:
            raise PdoError(
                f"GET {path} answered {answer.status_code}: {_message(answer)}",
                hint="check the API key (a tenant's) and the statement id",
            )
        return answer.json()

    def digests(self, statement: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Every digest of the statement's grants in its period, by id."""
        found = {}
        for grant_id in sorted({line["grant_id"] for line in statement["lines"]}):
            for digest in self._pages("/v1/usage/digests", grant=grant_id, period=statement["period"]):
                found[digest["digest_id"]] = digest
        return found

    def _pages(self, path: str, **params: Any) -> Iterator[dict[str, Any]]:
        offset: int | None = 0
        while offset is not None:
            page = self.get(path, **params, limit=PAGE, offset=offset)
            yield from page["digests"]
            offset = page["next_offset"]

    def digest_entries(self, grant_id: str) -> list[dict[str, Any]]:
        """The grant's "deliveries.digested" audit entries, every page."""
        entries: list[dict[str, Any]] = []
        after: int | None = None
        while True:
            params: dict[str, Any] = {"action": "deliveries.digested", "subject": f"grant:{grant_id}"}
            if after is not None:
                params["after"] = after
            page = self.get("/v1/audit/entries", **params)
            entries += page["entries"]
            after = page.get("next_after")
            if after is None:
                return entries


def _message(answer: Any) -> str:
    try:
        return str(answer.json().get("message", answer.text))
    except ValueError:
        return answer.text[:200]


# ---------------------------------------------------------------------------------------------- the tenant's records


def read_properties(path: Path) -> dict[str, str]:
    """`key=value` lines, as /v1/kafka-credentials writes them (comment lines, # or !, skipped)."""
    properties = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and line[0] not in "#!" and "=" in line:
            key, _, value = line.partition("=")
            properties[key.strip()] = value.strip()
    return properties


def tenant_settings(settings: Settings, properties: dict[str, str], registry: str | None) -> Settings:
    """This process's settings with the tenant's Kafka connection (and registry) in place of its own."""
    try:
        return replace(
            settings,
            kafka_bootstrap=properties["bootstrap.servers"],
            kafka_security_protocol=properties.get("security.protocol", settings.kafka_security_protocol),
            kafka_username=properties["sasl.username"],
            kafka_password=properties["sasl.password"],
            registry_url=registry or settings.registry_url,
        )
    except KeyError as missing:
        raise InvalidInput(
            f"the Kafka properties file has no {missing}",
            hint="use the client_properties POST /v1/kafka-credentials gave you",
        ) from None


def received_delivery_ids(settings: Settings, statement: dict[str, Any]) -> set[str]:
    """The delivery ids of the records on the tenant's topics of the statement's datasets (read_committed)."""
    from pdo.billing.topic_scan import scan_tenant_topics
    from pdo.core.codec import AvroCodec
    from pdo.core.registry_client import RegistryClient
    from pdo.core.topics import tenant_topic

    tenant_id = statement["tenant_id"]
    names = {
        tenant_topic(tenant_id, dataset_id, settings): (tenant_id, dataset_id)
        for dataset_id in {line["dataset_id"] for line in statement["lines"]}
    }
    with RegistryClient.for_settings(settings) as registry:
        scan = scan_tenant_topics(settings, AvroCodec(registry), names, isolation_level="read_committed")
    for problem in scan.unreadable:
        print(f"note  a record on your topic did not decode: {problem}", file=sys.stderr)
    return set(scan.records)


def _kept(path: Path | None) -> set[str]:
    if path is None:
        return set()
    return {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def _key(path: Path) -> str:
    key = path.read_text(encoding="utf-8").strip()
    if not key:
        raise InvalidInput(f"{path} is empty", hint="put your API key (pdo_…) in it")
    return key


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise InvalidInput(
            f"{path} is not JSON ({error})", hint="save GET /v1/statements/{id}'s answer"
        ) from None
