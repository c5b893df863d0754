"""`pdo billing statements show|verify` and `pdo billing assets` on SQLite, and bad arguments (the broker-bound
`close` and `reconcile` run in tests/integration/test_billing_reconcile)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from billing_support import add_grant, add_usage, per_thousand

from pdo.authorization.testing import RecordingPublisher
from pdo.billing.statements import close_period
from pdo.cli.main import main
from pdo.core import db
from pdo.metering import tables as t

MARCH = datetime(2026, 3, 9, tzinfo=UTC)


@pytest.fixture
def database(tmp_path, monkeypatch) -> str:
    url = f"sqlite:///{tmp_path / 'pdo.db'}"
    monkeypatch.setenv("PDO_DATABASE_URL", url)
    db.upgrade(url)
    engine = db.make_engine(url)
    with engine.begin() as conn:
        add_grant(conn, "g-1", "tenant:acme", "traffic", per_thousand("0.50"))
        add_usage(
            conn, "g-1", "tenant:acme", "traffic", 4_321, 99_000, MARCH
        )  # 4,321 x 0.50 / 1,000 = 2.1605 -> 2.16
        add_usage(conn, "g-1", "tenant:acme", "traffic", 1, 9, MARCH, set_aside_reason="BEFORE_GRANT: early")
    close_period(
        engine, RecordingPublisher(), "2026-03", "operator:alice", now=datetime(2026, 4, 2, tzinfo=UTC)
    )
    engine.dispose()
    return url


def test_show_prints_the_statements_and_the_set_aside_count(database, capsys) -> None:
    assert main(["billing", "statements", "show", "--period", "2026-03"]) == 0
    out = capsys.readouterr().out
    assert "tenant:acme  2026-03  total 2.16 CNY" in out
    assert "4,321 records" in out and "0.50 CNY per 1,000 records" in out
    assert "1 ledger row(s) delivered in 2026-03 are set aside for review, not billed" in out
    assert main(["billing", "statements", "show", "--period", "2026-03", "--json"]) == 0
    (statement,) = json.loads(capsys.readouterr().out)
    assert statement["total"] == "2.16" and statement["lines"][0]["price_plan"]["unit_price"] == "0.50"


def test_verify_exits_0_when_equal_and_1_naming_each_difference(database, capsys) -> None:
    assert main(["billing", "statements", "verify", "--period", "2026-03"]) == 0
    assert "the statements recompute to the cent" in capsys.readouterr().out
    engine = db.make_engine(database)
    with engine.begin() as conn:
        conn.execute(t.ledger.update().where(t.ledger.c.records == 4_321).values(records=4_331))
    engine.dispose()
    assert main(["billing", "statements", "verify", "--period", "2026-03"]) == 1
    out = capsys.readouterr().out
    # 4,331 x 0.50 / 1,000 = 2.1655 -> 2.17
    assert "grant g-1: records issued 4321, recomputed 4331" in out
    assert "grant g-1: amount issued 2.16, recomputed 2.17" in out
    assert "period 2026-03: 3 difference(s)" in out


def test_verify_of_an_open_period_is_a_clear_error(database, capsys) -> None:
    assert main(["billing", "statements", "verify", "--period", "2026-04"]) == 2
    assert "period 2026-04 is not closed" in capsys.readouterr().err


def test_assets_print_csv_and_json(database, capsys) -> None:
    assert main(["billing", "assets", "--period", "2026-03"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("period,dataset_id,title,provider_id,tenants")
    assert lines[1] == "2026-03,traffic,,,1,1,4321,99000,1,2.16,CNY,False,0.00,"
    assert main(["billing", "assets", "--period", "2026-03", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["datasets"][0]["revenue"] == "2.16"
    assert main(["billing", "assets", "--period", "2026-03", "--provider", "provider:nobody"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["statements", "close", "--period", "2026-13"], "month 13; months are 01 to 12"),
        (["statements", "show", "--period", "abc"], "not a month written YYYY-MM"),
        (["reconcile", "--period", "26-03"], "not a month written YYYY-MM"),
        (["assets", "--period", "2026-03", "--format", "xml"], "invalid choice: 'xml'"),
        (["statements", "verify"], "the following arguments are required: --period"),
    ],
)
def test_bad_arguments_are_refused_with_the_reason(args, message, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["billing", *args])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_assets_of_a_provider_come_from_metering_s_projection_of_the_catalog(database, capsys) -> None:
    engine = db.make_engine(database)
    with engine.begin() as conn:
        conn.execute(
            t.datasets.insert().values(
                dataset_id="traffic", title="Traffic flow", provider_id="provider:bureau", version=1
            )
        )
    engine.dispose()
    assert main(["billing", "assets", "--period", "2026-03", "--provider", "provider:bureau"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert rows == ["2026-03,traffic,Traffic flow,provider:bureau,1,1,4321,99000,1,2.16,CNY,False,0.00,"]
