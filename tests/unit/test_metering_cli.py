"""`pdo metering usage` prints the windows as a table, newest first; bad arguments are refused by argparse."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pdo.cli.main import main
from pdo.core import db
from pdo.metering.ledger import Ledger
from pdo.metering.testing import insert_grant, usage_fact

NOW = datetime.now(UTC).replace(second=0, microsecond=0)


@pytest.fixture
def database(sqlite_url, monkeypatch):
    monkeypatch.setenv("PDO_DATABASE_URL", sqlite_url)
    db.upgrade(sqlite_url)
    engine = db.make_engine(sqlite_url)
    insert_grant(engine, "g-cli", NOW - timedelta(days=1), tenant_id="tenant:acme")
    Ledger(engine).record(
        [
            usage_fact("a", "g-cli", NOW - timedelta(minutes=5), records=1200, size=34567),
            usage_fact("b", "g-cli", NOW - timedelta(minutes=3), records=2, size=10),
        ]
    )
    engine.dispose()


def test_usage_prints_minute_windows_newest_first(database, capsys):
    assert main(["metering", "usage", "--window", "MINUTE", "--tenant", "tenant:acme"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["window", "start", "(UTC)", "tenant", "dataset", "grant", "records", "bytes"]
    assert [line.split()[-2:] for line in lines[1:]] == [["2", "10"], ["1,200", "34,567"]]
    assert (NOW - timedelta(minutes=3)).strftime("%Y-%m-%d %H:%M") in lines[1]


def test_usage_says_when_there_is_none(database, capsys):
    assert main(["metering", "usage", "--tenant", "tenant:nobody"]) == 0
    assert "no DAY usage between" in capsys.readouterr().out


def test_a_bad_moment_is_refused(database, capsys):
    with pytest.raises(SystemExit):
        main(["metering", "usage", "--since", "last tuesday"])
    assert "'last tuesday' is not an ISO 8601 date or time" in capsys.readouterr().err


@pytest.mark.parametrize("within", ["0", "-1", "nan", "inf", "soon"])
def test_the_worker_refuses_a_batch_window_that_is_not_a_positive_number(within, capsys):
    with pytest.raises(SystemExit):
        main(["metering", "worker", "--batch-within", within])
    assert "--batch-within" in capsys.readouterr().err
