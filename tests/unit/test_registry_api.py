"""The schema registry's REST API over HTTP on SQLite: Confluent's rules, and every error path."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import httpx
import pytest
from conftest import ServerThread, admin_credentials, static_guard, unique_name
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MEDIA = "application/vnd.schemaregistry.v1+json"


def record(name: str, *fields: tuple[str, object] | dict, doc: str | None = None) -> str:
    """An Avro record schema as JSON text; a field is (name, type) or a full field dict."""
    schema: dict = {"type": "record", "name": name, "fields": []}
    if doc is not None:
        schema["doc"] = doc
    for field in fields:
        schema["fields"].append(field if isinstance(field, dict) else {"name": field[0], "type": field[1]})
    return json.dumps(schema)


V1 = record("Trip", ("id", "string"))
V2_COMPATIBLE = record("Trip", ("id", "string"), {"name": "km", "type": "double", "default": 0.0})
V2_INCOMPATIBLE = record("Trip", ("id", "string"), ("km", "double"))  # new field without default


@pytest.fixture
def client(registry_url) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=registry_url, timeout=30, auth=admin_credentials()) as http:
        yield http


@pytest.fixture(scope="module")
def shared_client(tmp_path_factory) -> Iterator[httpx.Client]:
    """One registry for tests that only add uniquely named subjects (and for hypothesis, which
    does not allow function-scoped fixtures)."""
    from pdo.core import db
    from pdo.registry.app import create_app

    url = f"sqlite:///{tmp_path_factory.mktemp('registry') / 'pdo.db'}"
    db.upgrade(url)
    with (
        ServerThread(create_app(url, guard=static_guard)) as server,
        httpx.Client(base_url=server.url, timeout=30, auth=admin_credentials()) as http,
    ):
        yield http


def register(client: httpx.Client, subject: str, schema: str, **extra) -> httpx.Response:
    return client.post(f"/subjects/{subject}/versions", json={"schema": schema, **extra})


def assert_error(response: httpx.Response, status: int, code: int, *fragments: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error_code"] == code, body
    for fragment in fragments:
        assert fragment.lower() in body["message"].lower(), body


# -- basics ---------------------------------------------------------------------------------------------


def test_root_and_types_answer_in_the_registry_media_type(client):
    root = client.get("/")
    assert root.status_code == 200 and root.json() == {}
    assert root.headers["content-type"].startswith(MEDIA)
    assert client.get("/schemas/types").json() == ["AVRO"]


def test_register_then_read_back_by_version_latest_and_id(client):
    registered = register(client, "trips-value", V1)
    assert registered.status_code == 200, registered.text
    schema_id = registered.json()["id"]
    normalized = json.dumps(json.loads(V1), separators=(",", ":"))

    for version in ("1", "latest", "-1"):
        body = client.get(f"/subjects/trips-value/versions/{version}").json()
        assert body == {"subject": "trips-value", "version": 1, "id": schema_id, "schema": normalized}
    raw = client.get("/subjects/trips-value/versions/1/schema")
    assert raw.status_code == 200 and raw.json() == json.loads(V1)
    assert client.get(f"/schemas/ids/{schema_id}").json() == {"schema": normalized}
    assert client.get(f"/schemas/ids/{schema_id}/schema").json() == json.loads(V1)
    assert client.get("/subjects").json() == ["trips-value"]
    assert client.get("/subjects/trips-value/versions").json() == [1]


def test_registration_is_idempotent_whitespace_aside(client):
    first = register(client, "trips-value", V1).json()
    again = register(client, "trips-value", json.dumps(json.loads(V1), indent=4)).json()
    assert again["id"] == first["id"] and again["version"] == first["version"] == 1
    assert client.get("/subjects/trips-value/versions").json() == [1]
    metrics = client.get("/metrics").text
    assert "pdo_registry_schemas_registered_total 1.0" in metrics


def test_same_schema_under_another_subject_reuses_the_global_id(client):
    first = register(client, "a-value", V1).json()["id"]
    second = register(client, "b-value", V1).json()
    assert second["id"] == first and second["version"] == 1
    assert client.get(f"/schemas/ids/{first}/subjects").json() == ["a-value", "b-value"]
    assert client.get(f"/schemas/ids/{first}/versions").json() == [
        {"subject": "a-value", "version": 1},
        {"subject": "b-value", "version": 1},
    ]


def test_a_doc_difference_is_a_different_schema(client):
    plain = register(client, "a-value", V1).json()
    documented = register(client, "a-value", record("Trip", ("id", "string"), doc="a taxi trip")).json()
    assert documented["id"] != plain["id"] and documented["version"] == 2


def test_compatible_evolution_adds_a_version(client):
    register(client, "trips-value", V1)
    evolved = register(client, "trips-value", V2_COMPATIBLE)
    assert evolved.status_code == 200 and evolved.json()["version"] == 2
    assert client.get("/subjects/trips-value/versions/latest").json()["id"] == evolved.json()["id"]


def test_incompatible_schema_is_refused_with_409_and_nothing_is_stored(client):
    first = register(client, "trips-value", V1).json()["id"]
    refused = register(client, "trips-value", V2_INCOMPATIBLE)
    assert_error(refused, 409, 409, "incompatible", "km")
    assert client.get("/subjects/trips-value/versions").json() == [1]
    assert_error(client.get(f"/schemas/ids/{first + 1}"), 404, 40403)
    assert "pdo_registry_schemas_registered_total 1.0" in client.get("/metrics").text


# -- lookup ---------------------------------------------------------------------------------------------


def test_lookup_finds_the_registered_version(client):
    schema_id = register(client, "trips-value", V1).json()["id"]
    register(client, "trips-value", V2_COMPATIBLE)
    found = client.post("/subjects/trips-value", json={"schema": json.dumps(json.loads(V1), indent=1)})
    assert found.status_code == 200
    assert found.json()["id"] == schema_id and found.json()["version"] == 1
    assert found.json()["subject"] == "trips-value"
    assert json.loads(found.json()["schema"]) == json.loads(V1)


def test_lookup_errors(client):
    assert_error(client.post("/subjects/nobody", json={"schema": V1}), 404, 40401, "nobody")
    register(client, "trips-value", V1)
    assert_error(client.post("/subjects/trips-value", json={"schema": V2_COMPATIBLE}), 404, 40403)
    assert_error(client.post("/subjects/trips-value", json={"schema": "{"}), 422, 42201)


def test_lookup_of_a_soft_deleted_version_needs_deleted_true(client):
    register(client, "trips-value", V1)
    client.delete("/subjects/trips-value")
    assert_error(client.post("/subjects/trips-value", json={"schema": V1}), 404, 40401)
    # confluent-kafka spells its booleans the Python way in this one query string
    for spelling in ("true", "True"):
        found = client.post(f"/subjects/trips-value?normalize=False&deleted={spelling}", json={"schema": V1})
        assert found.status_code == 200 and found.json()["version"] == 1


# -- versions and ids: not found / invalid --------------------------------------------------------------


def test_unknown_subject_version_and_id(client):
    assert_error(client.get("/subjects/ghost/versions"), 404, 40401, "ghost")
    assert_error(client.get("/subjects/ghost/versions/1"), 404, 40401)
    assert_error(client.get("/subjects/ghost/versions/latest"), 404, 40401)
    register(client, "trips-value", V1)
    assert_error(client.get("/subjects/trips-value/versions/7"), 404, 40402, "7")
    assert_error(client.get("/subjects/trips-value/versions/7/schema"), 404, 40402)
    for schema_id in ("999", "0", "-5", "abc", "99999999999999999999"):
        assert_error(client.get(f"/schemas/ids/{schema_id}"), 404, 40403)
    assert_error(client.get("/schemas/ids/999/versions"), 404, 40403)
    assert_error(client.get("/schemas/ids/999/subjects"), 404, 40403)
    assert_error(client.get("/schemas/ids/999/schema"), 404, 40403)


@pytest.mark.parametrize("version", ["0", "-2", "abc", "1.5", "2147483648", "99999999999999999999999"])
def test_invalid_versions_are_42202(client, version):
    register(client, "trips-value", V1)
    assert_error(client.get(f"/subjects/trips-value/versions/{version}"), 422, 42202)
    assert_error(client.delete(f"/subjects/trips-value/versions/{version}"), 422, 42202)
    checked = client.post(f"/compatibility/subjects/trips-value/versions/{version}", json={"schema": V1})
    assert_error(checked, 422, 42202)


def test_unknown_route_is_a_registry_style_404(client):
    assert_error(client.get("/no/such/thing"), 404, 404)
    assert_error(client.put("/subjects"), 405, 405)


# -- invalid schemas ------------------------------------------------------------------------------------


def test_invalid_avro_is_42201_with_the_parser_reason_and_nothing_stored(client):
    bad = json.dumps({"type": "record", "name": "T", "fields": [{"name": "x", "type": "no.such.Type"}]})
    refused = register(client, "trips-value", bad)
    assert_error(refused, 422, 42201, "no.such.Type")
    assert client.get("/subjects").json() == []
    assert_error(client.get("/schemas/ids/1"), 404, 40403)


def test_only_avro_is_supported(client):
    for schema_type in ("PROTOBUF", "JSON"):
        refused = register(client, "trips-value", 'syntax = "proto3";', schemaType=schema_type)
        assert_error(refused, 422, 42201, "only AVRO")
    assert register(client, "trips-value", V1, schemaType="AVRO").status_code == 200


def test_references_are_not_supported(client):
    refs = [{"name": "com.x.Other", "subject": "other", "version": 1}]
    assert_error(register(client, "trips-value", V1, references=refs), 422, 42201, "references")
    assert register(client, "trips-value", V1, references=[]).status_code == 200


def test_a_primitive_schema_registers(client):
    registered = register(client, "key", '"string"')
    assert registered.status_code == 200
    assert client.get("/subjects/key/versions/1").json()["schema"] == '"string"'


# -- config ---------------------------------------------------------------------------------------------


def test_global_config_defaults_to_backward_and_can_change(client):
    assert client.get("/config").json() == {"compatibilityLevel": "BACKWARD"}
    assert client.put("/config", json={"compatibility": "full_transitive"}).json() == {
        "compatibility": "FULL_TRANSITIVE"
    }
    assert client.get("/config").json() == {"compatibilityLevel": "FULL_TRANSITIVE"}
    assert client.delete("/config").json() == {"compatibilityLevel": "FULL_TRANSITIVE"}
    assert client.get("/config").json() == {"compatibilityLevel": "BACKWARD"}


@pytest.mark.parametrize(
    "body", [{"compatibility": "SIDEWAYS"}, {"compatibility": 3}, {}, [], None, "BACKWARD"]
)
def test_invalid_compatibility_level_is_42203(client, body):
    assert_error(client.put("/config", json=body), 422, 42203)
    assert_error(client.put("/config/trips-value", json=body), 422, 42203)
    assert client.get("/config").json() == {"compatibilityLevel": "BACKWARD"}


def test_subject_config_overrides_global_and_falls_back_when_asked(client):
    assert_error(client.get("/config/trips-value"), 404, 40408)
    assert client.get("/config/trips-value?defaultToGlobal=true").json() == {"compatibilityLevel": "BACKWARD"}
    assert client.put("/config/trips-value", json={"compatibility": "NONE"}).json() == {
        "compatibility": "NONE"
    }
    assert client.get("/config/trips-value").json() == {"compatibilityLevel": "NONE"}
    assert client.get("/config").json() == {"compatibilityLevel": "BACKWARD"}

    register(client, "trips-value", V1)
    assert register(client, "trips-value", V2_INCOMPATIBLE).status_code == 200  # NONE lets it through
    assert register(client, "other-value", V1).status_code == 200
    assert register(client, "other-value", V2_INCOMPATIBLE).status_code == 409  # global BACKWARD

    assert client.delete("/config/trips-value").json() == {"compatibilityLevel": "NONE"}
    assert_error(client.delete("/config/trips-value"), 404, 40408)
    assert client.get("/config/trips-value?defaultToGlobal=true").json() == {"compatibilityLevel": "BACKWARD"}


def test_forward_allows_what_backward_refuses(client):
    client.put("/config/fwd-value", json={"compatibility": "FORWARD"})
    register(client, "fwd-value", V1)
    assert register(client, "fwd-value", V2_INCOMPATIBLE).status_code == 200
    # under FORWARD the old schema must read new data: dropping "id" (no default in the old one) fails
    assert_error(register(client, "fwd-value", record("Trip", ("km", "double"))), 409, 409)


def test_transitive_levels_compare_with_every_version(client):
    # v3 reads v2's data (default for a) but not v1's (a was an int, now a string)
    v1 = record("T", ("a", "int"))
    v2 = record("T")
    v3 = record("T", {"name": "a", "type": "string", "default": ""})
    for subject, level, accepted in (("plain", "BACKWARD", True), ("trans", "BACKWARD_TRANSITIVE", False)):
        client.put(f"/config/{subject}", json={"compatibility": level})
        assert register(client, subject, v1).status_code == 200
        assert register(client, subject, v2).status_code == 200
        assert (register(client, subject, v3).status_code == 200) is accepted, level


# -- compatibility checks -------------------------------------------------------------------------------


def test_compatibility_endpoint_reports_without_storing(client):
    register(client, "trips-value", V1)
    good = client.post("/compatibility/subjects/trips-value/versions/latest", json={"schema": V2_COMPATIBLE})
    assert good.json() == {"is_compatible": True, "messages": []}
    bad = client.post("/compatibility/subjects/trips-value/versions/1", json={"schema": V2_INCOMPATIBLE})
    assert bad.json()["is_compatible"] is False and bad.json()["messages"] == []
    verbose = client.post(
        "/compatibility/subjects/trips-value/versions/1?verbose=true", json={"schema": V2_INCOMPATIBLE}
    ).json()
    assert verbose["is_compatible"] is False and any("km" in message for message in verbose["messages"])
    against_all = client.post(
        "/compatibility/subjects/trips-value/versions", json={"schema": V2_INCOMPATIBLE}
    )
    assert against_all.json()["is_compatible"] is False
    assert client.get("/subjects/trips-value/versions").json() == [1]


def test_compatibility_endpoint_errors(client):
    new_subject = client.post("/compatibility/subjects/fresh/versions/latest", json={"schema": V1})
    assert new_subject.json()["is_compatible"] is True  # nothing to be incompatible with
    assert_error(client.post("/compatibility/subjects/fresh/versions/1", json={"schema": V1}), 404, 40401)
    register(client, "trips-value", V1)
    assert_error(
        client.post("/compatibility/subjects/trips-value/versions/9", json={"schema": V1}), 404, 40402
    )
    assert_error(
        client.post("/compatibility/subjects/trips-value/versions/1", json={"schema": "x"}), 422, 42201
    )


# -- deletes --------------------------------------------------------------------------------------------


def test_soft_then_hard_delete_of_a_subject(client):
    first = register(client, "trips-value", V1).json()["id"]
    register(client, "trips-value", V2_COMPATIBLE)
    client.put("/config/trips-value", json={"compatibility": "NONE"})

    assert_error(client.delete("/subjects/trips-value?permanent=true"), 404, 40405)
    assert client.delete("/subjects/trips-value").json() == [1, 2]
    assert client.get("/subjects").json() == []
    assert client.get("/subjects?deleted=true").json() == ["trips-value"]
    assert client.get("/subjects?deleted_only=true").json() == ["trips-value"]
    assert_error(client.get("/subjects/trips-value/versions"), 404, 40401)
    assert client.get("/subjects/trips-value/versions?deleted=true").json() == [1, 2]
    assert client.get("/subjects/trips-value/versions/1?deleted=true").json()["id"] == first
    assert client.get(f"/schemas/ids/{first}").status_code == 200  # old data stays readable
    assert client.get(f"/schemas/ids/{first}/subjects").json() == []
    assert client.get(f"/schemas/ids/{first}/subjects?deleted=true").json() == ["trips-value"]
    assert_error(client.get("/config/trips-value"), 404, 40408)  # its own level went with it
    assert_error(client.delete("/subjects/trips-value"), 404, 40404)

    assert client.delete("/subjects/trips-value?permanent=true").json() == [1, 2]
    assert client.get("/subjects?deleted=true").json() == []
    assert_error(client.get(f"/schemas/ids/{first}"), 404, 40403)
    assert_error(client.delete("/subjects/trips-value"), 404, 40401)


def test_registering_after_a_soft_delete_continues_the_numbering(client):
    register(client, "trips-value", V1)
    client.delete("/subjects/trips-value")
    again = register(client, "trips-value", V1).json()
    assert again["version"] == 2
    assert client.get("/subjects/trips-value/versions").json() == [2]


def test_hard_delete_never_hands_an_id_out_again(client):
    first = register(client, "gone-value", V1).json()["id"]
    client.delete("/subjects/gone-value")
    client.delete("/subjects/gone-value?permanent=true")
    fresh = register(client, "new-value", V2_COMPATIBLE).json()["id"]
    assert fresh > first


def test_version_delete(client):
    register(client, "trips-value", V1)
    second = register(client, "trips-value", V2_COMPATIBLE).json()["id"]
    assert_error(client.delete("/subjects/trips-value/versions/2?permanent=true"), 404, 40407)
    assert client.delete("/subjects/trips-value/versions/latest").json() == 2
    assert client.get("/subjects/trips-value/versions/latest").json()["version"] == 1
    assert_error(client.get("/subjects/trips-value/versions/2"), 404, 40402)
    assert client.get("/subjects/trips-value/versions/2?deleted=true").json()["id"] == second
    assert_error(client.delete("/subjects/trips-value/versions/2"), 404, 40406)
    assert client.delete("/subjects/trips-value/versions/2?permanent=true").json() == 2
    assert_error(client.get("/subjects/trips-value/versions/2?deleted=true"), 404, 40402)
    assert_error(client.delete("/subjects/trips-value/versions/5"), 404, 40402)
    assert_error(client.delete("/subjects/ghost/versions/1"), 404, 40401)


# -- hostile input --------------------------------------------------------------------------------------

HOSTILE_BODIES: list[bytes] = [
    b"",
    b"{",
    b"null",
    b"[]",
    b"42",
    b'"just a string"',
    b"\xff\xfe\x00garbage",
    b"{}",
    b'{"schema": null}',
    b'{"schema": 5}',
    b'{"schema": ["a"]}',
    b'{"schema": {"type": "string"}}',
    b'{"schema": ""}',
    b'{"schema": "not json"}',
    b'{"schema": "{\\"type\\": \\"record\\"}"}',
    b'{"schema": "\\"string\\"", "schemaType": 7}',
    b'{"schema": "\\"string\\"", "schemaType": "XML"}',
    b'{"schema": "\\"string\\"", "references": "x"}',
    b'{"schema": "\\"string\\"", "references": [1]}',
    b'{"schema": "\\"string\\"", "ruleSet": {"domainRules": [1]}}',
    b'{"schema": "\\"\\\\ud800\\""}',
    b'{"schema": "{\\"type\\":\\"enum\\",\\"name\\":\\"E\\",\\"symbols\\":[\\"A\\",\\"A\\"]}"}',
    b'{"schema": "{\\"type\\":\\"fixed\\",\\"name\\":\\"F\\",\\"size\\":-1}"}',
    b'{"schema": "{\\"type\\":\\"record\\",\\"name\\":\\"1bad\\",\\"fields\\":[]}"}',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"schema": "' + b"[" * 50_000 + b"]" * 50_000 + b'"}',
    json.dumps({"schema": json.dumps({"type": "array", "items": "int"}) + " " * (5 * 1024 * 1024)}).encode(),
]


def _nested_array_schema(depth: int) -> str:
    return '{"type":"array","items":' * depth + '"int"' + "}" * depth


HOSTILE_BODIES.append(json.dumps({"schema": _nested_array_schema(5000)}).encode())


@pytest.mark.parametrize("index", range(len(HOSTILE_BODIES)))
def test_hostile_bodies_are_refused_with_4xx_and_store_nothing(client, index):
    body = HOSTILE_BODIES[index]
    headers = {"content-type": MEDIA}
    for path in (
        "/subjects/hostile/versions",
        "/subjects/hostile",
        "/compatibility/subjects/hostile/versions/latest",
        "/config/hostile",
    ):
        response = client.post(path, content=body, headers=headers)
        if path.startswith("/config"):
            response = client.put(path, content=body, headers=headers)
        assert 400 <= response.status_code < 500, (path, response.status_code, response.text[:300])
        assert isinstance(response.json()["error_code"], int)
    assert client.get("/subjects?deleted=true").json() == []
    assert_error(client.get("/schemas/ids/1"), 404, 40403)
    assert "pdo_registry_schemas_registered_total 0.0" in client.get("/metrics").text


@pytest.mark.parametrize("depth", [50, 300, 900])
def test_deeply_nested_schemas_are_stored_or_refused_never_a_server_error(client, depth):
    response = register(client, f"deep-{depth}", _nested_array_schema(depth))
    assert response.status_code in (200, 422), response.text[:300]
    if response.status_code == 422:
        assert_error(response, 422, 42201, "nested")
    else:
        assert client.get(f"/subjects/deep-{depth}/versions/1").status_code == 200


def test_a_large_but_legal_schema_registers(client):
    fields = [
        {"name": f"f{i}", "type": ["null", "string"], "default": None, "doc": "x" * 100} for i in range(3000)
    ]
    schema = json.dumps({"type": "record", "name": "Wide", "fields": fields})
    assert len(schema) > 400_000
    registered = register(client, "wide-value", schema)
    assert registered.status_code == 200, registered.text[:300]
    assert json.loads(client.get("/subjects/wide-value/versions/1").json()["schema"]) == json.loads(schema)


def test_content_types(client):
    as_json = client.post(
        "/subjects/ct/versions",
        content=json.dumps({"schema": V1}),
        headers={"content-type": "application/json"},
    )
    assert as_json.status_code == 200
    as_text = client.post(
        "/subjects/ct2/versions", content=json.dumps({"schema": V1}), headers={"content-type": "text/plain"}
    )
    assert_error(as_text, 415, 415)


@pytest.mark.parametrize("subject", ["x" * 256, "bad%01subject", "tab%09"])
def test_invalid_subject_names_are_42208(client, subject):
    assert_error(register(client, subject, V1), 422, 42208)
    assert_error(client.get(f"/subjects/{subject}/versions"), 422, 42208)
    assert client.get("/subjects?deleted=true").json() == []


def test_wrongly_typed_query_parameters_are_4xx(client):
    register(client, "trips-value", V1)
    assert_error(client.get("/subjects?deleted=maybe"), 422, 422)
    assert_error(client.get("/subjects?limit=lots"), 422, 422)
    assert_error(client.delete("/subjects/trips-value?permanent=yes please"), 422, 422)
    assert client.get("/subjects/trips-value/versions").json() == [1]
    # unknown parameters are ignored, as confluent-kafka sends several
    assert (
        client.get("/schemas/ids/1?subject=trips-value&format=serialized&reference_format=x").status_code
        == 200
    )


def test_subject_listing_paging_and_prefix(client):
    for name in ("b-value", "a-value", "c-key"):
        register(client, name, V1)
    assert client.get("/subjects").json() == ["a-value", "b-value", "c-key"]
    assert client.get("/subjects?offset=1&limit=1").json() == ["b-value"]
    assert client.get("/subjects?subjectPrefix=c-").json() == ["c-key"]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=30),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.sampled_from(["schema", "schemaType", "references", "type", "x"]), children)
        ),
        max_leaves=12,
    )
)
def test_arbitrary_json_bodies_never_cause_a_server_error(shared_client, body):
    subject = unique_name("fuzz")
    response = shared_client.post(f"/subjects/{subject}/versions", json=body)
    assert response.status_code < 500, response.text[:300]
    if response.status_code == 200:
        schema_id = response.json()["id"]
        assert shared_client.get(f"/schemas/ids/{schema_id}").status_code == 200
    else:
        assert_error(response, response.status_code, response.json()["error_code"])
        assert_error(shared_client.get(f"/subjects/{subject}/versions"), 404, 40401)


AVRO_WORDS = st.sampled_from(
    ["record", "enum", "array", "map", "fixed", "int", "string", "null", "T", "a", "b", "x.y", "1", ""]
)
SCHEMA_SHAPES = st.recursive(
    AVRO_WORDS | st.integers(-2, 3) | st.none() | st.booleans(),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                ["type", "name", "fields", "items", "values", "symbols", "size", "default", "namespace"]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=15,
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(shape=SCHEMA_SHAPES)
def test_arbitrary_schema_shapes_are_registered_or_refused_as_invalid(shared_client, shape):
    subject = unique_name("shape")
    response = shared_client.post(f"/subjects/{subject}/versions", json={"schema": json.dumps(shape)})
    assert response.status_code in (200, 422), response.text[:300]
    if response.status_code == 422:
        assert_error(response, 422, 42201)
    else:
        stored = shared_client.get(f"/subjects/{subject}/versions/1").json()
        assert json.loads(stored["schema"]) == shape and stored["id"] == response.json()["id"]


# -- concurrency and metrics ----------------------------------------------------------------------------


def _race(count: int, action) -> list:
    results: list = [None] * count
    barrier = threading.Barrier(count)

    def run(index: int) -> None:
        barrier.wait()
        results[index] = action(index)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_racing_registrations_never_duplicate_versions(registry_url):
    with httpx.Client(base_url=registry_url, timeout=60, auth=admin_credentials()) as http:
        http.put("/config/race-value", json={"compatibility": "NONE"})

    def distinct(index: int) -> httpx.Response:
        with httpx.Client(base_url=registry_url, timeout=60, auth=admin_credentials()) as http:
            return register(http, "race-value", record(f"R{index}", ("id", "string")))

    responses = _race(8, distinct)
    assert all(response.status_code == 200 for response in responses), [r.text for r in responses]
    assert sorted(response.json()["version"] for response in responses) == list(range(1, 9))
    assert len({response.json()["id"] for response in responses}) == 8

    def same(_index: int) -> httpx.Response:
        with httpx.Client(base_url=registry_url, timeout=60, auth=admin_credentials()) as http:
            return register(http, "same-value", V1)

    responses = _race(8, same)
    assert all(response.status_code == 200 for response in responses), [r.text for r in responses]
    assert {(r.json()["id"], r.json()["version"]) for r in responses} == {(responses[0].json()["id"], 1)}
    with httpx.Client(base_url=registry_url, auth=admin_credentials()) as http:
        assert http.get("/subjects/same-value/versions").json() == [1]


def test_metrics_count_requests_by_route_template(client):
    register(client, "m-value", V1)
    client.get("/subjects/m-value/versions/1")
    client.get("/subjects/m-value/versions/2")
    client.get("/nowhere/at/all")
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert (
        'pdo_registry_http_requests_total{method="POST",route="/subjects/{subject}/versions",status="200"} 1.0'
        in text
    )
    assert 'route="/subjects/{subject}/versions/{version}",status="200"} 1.0' in text
    assert 'route="/subjects/{subject}/versions/{version}",status="404"} 1.0' in text
    assert 'route="unmatched",status="404"} 1.0' in text
    assert "m-value" not in text  # labels carry templates, never raw paths
    assert "pdo_registry_schemas_registered_total 1.0" in text
