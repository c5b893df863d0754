"""Every role against every class of registry route: what each may do, and that a refusal changes nothing.

Roles (by Kafka user name): operator (`admin`, `operator.*`), service (`service.*`), party (anyone else, here a
tenant and a provider whose Kafka ACLs reach one topic each). Route classes: register, read by subject, read by
id, list, compatibility change, mode, soft and hard delete. Passwords and ACLs are stand-ins; the attacker's
side is plain httpx.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from conftest import serving_registry

from pdo.registry.auth import Guard

PASSWORDS = {
    "admin": "admin-pw",
    "operator.alice": "alice-pw",
    "service.sharing": "sharing-pw",
    "tenant.acme": "acme-pw",
    "provider.bureau": "bureau-pw",
}
TOPICS = {"tenant.acme": {"pdo.tenant.acme.trips"}, "provider.bureau": {"pdo.feed.trips"}}
SCHEMA = json.dumps(
    {"type": "record", "name": "Trip", "namespace": "t.v1", "fields": [{"name": "id", "type": "string"}]}
)
ACME = "pdo.tenant.acme.trips-t.v1.Trip"
FEED = "pdo.feed.trips-t.v1.Trip"
GLOBEX = "pdo.tenant.globex.trips-t.v1.Trip"
CONTROL = "pdo.authorizations-pdo.authorization.v1.AuthorizationRevoked"
SUBJECTS = (ACME, FEED, GLOBEX, CONTROL)


def stub_guard(metrics) -> Guard:
    return Guard(
        lambda user, password: PASSWORDS.get(user) == password,
        lambda user, topic: topic in TOPICS.get(user, ()),
        metrics,
    )


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Iterator[str]:
    """The registry's URL, served with the stand-in guard, each subject registered once."""
    database = f"sqlite:///{tmp_path_factory.mktemp('registry') / 'registry.db'}"
    with serving_registry(database, stub_guard) as url:
        with as_(url, "admin") as admin:
            for subject in SUBJECTS:
                assert admin.post(f"/subjects/{subject}/versions", json={"schema": SCHEMA}).status_code == 200
        yield url


def as_(url: str, user: str | None, password: str | None = None) -> httpx.Client:
    auth = (user, password or PASSWORDS[user]) if user else None
    return httpx.Client(base_url=url, auth=auth, timeout=30)


def snapshot(app) -> tuple:
    """What a refused request must leave as it was: subjects (deleted ones too), versions, levels, mode."""
    with as_(app, "admin") as admin:
        return (
            admin.get("/subjects?deleted=true").json(),
            [admin.get(f"/subjects/{s}/versions?deleted=true").json() for s in SUBJECTS],
            admin.get("/config").json(),
            [admin.get(f"/config/{s}?defaultToGlobal=true").json() for s in SUBJECTS],
            admin.get("/mode").json(),
        )


def schema_id(app) -> int:
    with as_(app, "admin") as admin:
        return admin.get(f"/subjects/{ACME}/versions/1").json()["id"]


OTHER = json.dumps({"type": "record", "name": "Trip", "namespace": "t.v1", "fields": []})
CHANGES = {  # route class -> requests that would change the registry
    "register": [("POST", "/subjects/{s}/versions", {"schema": OTHER})],
    "config change": [
        ("PUT", "/config", {"compatibility": "NONE"}),
        ("DELETE", "/config", None),
        ("PUT", "/config/{s}", {"compatibility": "NONE"}),
        ("DELETE", "/config/{s}", None),
    ],
    "soft delete": [("DELETE", "/subjects/{s}", None), ("DELETE", "/subjects/{s}/versions/1", None)],
    "hard delete": [
        ("DELETE", "/subjects/{s}?permanent=true", None),
        ("DELETE", "/subjects/{s}/versions/1?permanent=true", None),
    ],
}
READS_BY_SUBJECT = [
    ("GET", "/subjects/{s}/versions", None),
    ("GET", "/subjects/{s}/versions/latest", None),
    ("GET", "/subjects/{s}/versions/1/schema", None),
    ("GET", "/subjects/{s}/versions/1/referencedby", None),
    ("GET", "/config/{s}?defaultToGlobal=true", None),
    ("POST", "/subjects/{s}", {"schema": SCHEMA}),
    ("POST", "/compatibility/subjects/{s}/versions/latest", {"schema": SCHEMA}),
    ("POST", "/compatibility/subjects/{s}/versions", {"schema": SCHEMA}),
]
READS_BY_ID = [
    "/schemas/ids/{i}",
    "/schemas/ids/{i}/schema",
    "/schemas/ids/{i}/versions",
    "/schemas/ids/{i}/subjects",
]


def refused_changes(roles: list[str | None], subjects: tuple[str, ...], classes: list[str]) -> list:
    return [
        pytest.param(
            user, method, path.format(s=subject), body, id=f"{user}-{kind}-{method}-{path}-{subject}"
        )
        for user in roles
        for kind in classes
        for method, path, body in CHANGES[kind]
        for subject in subjects
    ]


def request(app, user: str | None, method: str, path: str, body):
    with as_(app, user) as client:
        return client.request(method, path, json=body)


# ---------------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "user, method, path, body",
    refused_changes([None], (CONTROL,), list(CHANGES))
    + [
        pytest.param(None, method, path.format(s=CONTROL), body, id=f"anonymous-{method}-{path}")
        for method, path, body in READS_BY_SUBJECT
    ]
    + [
        pytest.param(None, "GET", path, None, id=f"anonymous-{path}")
        for path in ("/subjects", "/schemas/ids/1", "/config", "/")
    ],
)
def test_anonymous_callers_are_told_to_authenticate_and_change_nothing(app, user, method, path, body):
    before = snapshot(app)
    response = request(app, user, method, path, body)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith('Basic realm="pdo-registry"')
    assert response.json()["error_code"] == 40101 and "basic.auth.user.info" in response.json()["message"]
    assert snapshot(app) == before


@pytest.mark.parametrize(
    "user, method, path, body",
    refused_changes(["service.sharing"], (CONTROL, FEED), ["config change", "soft delete", "hard delete"])
    + refused_changes(["tenant.acme", "provider.bureau"], (ACME, FEED, CONTROL), list(CHANGES)),
)
def test_services_and_parties_cannot_change_compatibility_or_delete(app, user, method, path, body):
    before = snapshot(app)
    response = request(app, user, method, path, body)
    assert response.status_code == 403, response.text
    assert response.json()["error_code"] == 40301 and repr(user) in response.json()["message"]
    assert snapshot(app) == before


@pytest.mark.parametrize("user", list(PASSWORDS) + [None])
def test_nobody_can_set_a_mode(app, user):
    """The registry has no modes but READWRITE: there is no route that sets one, for any role."""
    for path in ("/mode", f"/mode/{CONTROL}"):
        assert request(app, user, "PUT", path, {"mode": "READONLY"}).status_code in (401, 404, 405)
    with as_(app, "admin") as admin:
        assert admin.get("/mode").json() == {"mode": "READWRITE"}


@pytest.mark.parametrize(
    "user, subject",
    [("tenant.acme", s) for s in (FEED, GLOBEX, CONTROL)]
    + [("provider.bureau", s) for s in (ACME, GLOBEX, CONTROL)],
)
def test_a_party_reads_nothing_of_a_subject_outside_its_topics(app, user, subject):
    for method, path, body in READS_BY_SUBJECT:
        response = request(app, user, method, path.format(s=subject), body)
        assert response.status_code == 403, (path, response.text)
        assert response.json()["error_code"] == 40301 and '"fields"' not in response.text


def test_a_party_learns_nothing_from_ids_it_may_not_read(app):
    with as_(app, "admin") as admin:
        hidden = json.dumps({"type": "record", "name": "Hidden", "fields": [{"name": "x", "type": "int"}]})
        registered = admin.post("/subjects/pdo.tenant.globex.secret-Hidden/versions", json={"schema": hidden})
        hidden_id = registered.json()["id"]
    with as_(app, "tenant.acme") as acme:
        for path in READS_BY_ID:
            refused = acme.get(path.format(i=hidden_id))  # held by another tenant's subject only
            assert refused.status_code == 403 and "Hidden" not in refused.text
            unknown = acme.get(path.format(i=99999))  # held by none: Confluent's "not found", as for anyone
            assert (unknown.status_code, unknown.json()["error_code"]) == (404, 40403)


def test_a_wrong_password_is_refused_even_for_the_operator(app):
    with as_(app, "admin", PASSWORDS["tenant.acme"]) as client:
        assert client.delete(f"/subjects/{CONTROL}").status_code == 401
    assert CONTROL in snapshot(app)[0]


# ---------------------------------------------------------------------------------------------- what each role may do


@pytest.mark.parametrize(
    "user, readable",
    [
        ("admin", set(SUBJECTS)),
        ("operator.alice", set(SUBJECTS)),
        ("service.sharing", set(SUBJECTS)),
        ("tenant.acme", {ACME}),
        ("provider.bureau", {FEED}),
    ],
)
def test_each_role_reads_and_lists_what_it_may(app, user, readable):
    with as_(app, user) as client:
        assert set(client.get("/subjects").json()) & set(SUBJECTS) == readable
        assert set(client.get("/subjects?deleted=true").json()) & set(SUBJECTS) == readable
        for subject in readable:
            for method, path, body in READS_BY_SUBJECT:
                assert client.request(method, path.format(s=subject), json=body).status_code == 200, path
        for path in READS_BY_ID:
            assert client.get(path.format(i=schema_id(app))).status_code == 200, path
        subjects_of_id = client.get(f"/schemas/ids/{schema_id(app)}/subjects").json()
        assert set(subjects_of_id) & set(SUBJECTS) == readable


def test_a_service_registers_schemas(app):
    new = json.dumps(
        {
            "type": "record",
            "name": "Trip",
            "namespace": "t.v1",
            "fields": [{"name": "id", "type": "string"}, {"name": "km", "type": "double", "default": 0.0}],
        }
    )
    with as_(app, "service.sharing") as sharing:
        registered = sharing.post(f"/subjects/{ACME}/versions", json={"schema": new})
    assert registered.status_code == 200 and registered.json()["version"] == 2
    with as_(app, "tenant.acme") as acme:  # and the tenant reads the new version of its own subject
        assert acme.get(f"/subjects/{ACME}/versions/latest").json()["version"] == 2


def test_an_operator_changes_compatibility_and_deletes(app):
    subject = "pdo.scratch-t.v1.Trip"
    with as_(app, "operator.alice") as alice:
        assert alice.post(f"/subjects/{subject}/versions", json={"schema": SCHEMA}).status_code == 200
        assert alice.put(f"/config/{subject}", json={"compatibility": "NONE"}).status_code == 200
        assert alice.delete(f"/config/{subject}").status_code == 200
        assert alice.put("/config", json={"compatibility": "BACKWARD"}).status_code == 200
        assert alice.delete(f"/subjects/{subject}").json() == [1]
        assert alice.delete(f"/subjects/{subject}?permanent=true").json() == [1]
        assert subject not in alice.get("/subjects?deleted=true").json()


def test_refusals_are_counted_by_reason(app):
    request(app, None, "GET", "/subjects", None)
    request(app, "tenant.acme", "DELETE", f"/subjects/{ACME}", None)
    with as_(app, None) as anonymous:
        text = anonymous.get("/metrics").text
    counts = {
        reason: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        for reason in ("unauthenticated", "forbidden")
        if line.startswith(f'pdo_registry_refusals_total{{reason="{reason}"}}')
    }
    assert counts["unauthenticated"] >= 1 and counts["forbidden"] >= 1
    assert "tenant.acme" not in text and "pdo.tenant" not in text  # open /metrics names no party or subject
