"""The aggregation service's arithmetic: tumbling windows and small-group suppression.

Property: whatever the records, no published group of a closed window has fewer than k records, the
suppressed count says how many were held back, the published counts and sums are exact, and a published row
carries nothing but the group key and aggregates."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from pdo.aggregation.windows import Group, close_window, group_key, min_group_size, window_start
from pdo.core.vocabulary import AggregateFunction, AggregateSpec

ALL = tuple(AggregateFunction)
SPEC = AggregateSpec(300, ("district",), ("speed_kmh",), ALL)
START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)

records = st.lists(
    st.fixed_dictionaries(
        {
            "district": st.sampled_from(["Haidian", "Chaoyang", "Dongcheng", "Xicheng", "Fengtai"]),
            "speed_kmh": st.one_of(st.none(), st.floats(0, 200, allow_nan=False)),
            "plate_number": st.text(min_size=1, max_size=8),
        }
    ),
    max_size=120,
)


def grouped(batch: list[dict]) -> dict[str, Group]:
    groups: dict[str, Group] = {}
    for record in batch:
        groups.setdefault(group_key(record, SPEC.group_by), Group()).add(record, SPEC.numeric_fields)
    return groups


@settings(max_examples=300, deadline=None)
@given(batch=records, k=st.integers(1, 30))
def test_no_published_group_has_fewer_than_k_records(batch, k):
    closed = close_window("g-1", START, SPEC, grouped(batch), k)
    sizes = Counter(record["district"] for record in batch)
    assert all(row.count is not None and row.count >= k for row in closed.rows)
    assert {row.group["district"]: row.count for row in closed.rows} == {
        district: size for district, size in sizes.items() if size >= k
    }
    assert closed.suppressed == sum(1 for size in sizes.values() if size < k)
    assert closed.records == len(batch)


@settings(max_examples=200, deadline=None)
@given(batch=records)
def test_a_published_row_carries_only_the_group_key_and_aggregates(batch):
    closed = close_window("g-1", START, SPEC, grouped(batch), 1)
    plates = {record["plate_number"] for record in batch}
    for row in closed.rows:
        assert set(row.group) == {"district"}
        assert {(name, function) for name, function, _ in row.measures} == {
            ("speed_kmh", function) for function in ALL if function is not AggregateFunction.COUNT
        }
        assert not plates & {str(value) for value in row.group.values()}
        speeds = [
            r["speed_kmh"]
            for r in batch
            if r["district"] == row.group["district"] and r["speed_kmh"] is not None
        ]
        measures = {function: value for _, function, value in row.measures}
        if speeds:
            assert measures[AggregateFunction.SUM] == sum(speeds)
            assert (measures[AggregateFunction.MIN], measures[AggregateFunction.MAX]) == (
                min(speeds),
                max(speeds),
            )
        else:
            assert set(measures.values()) == {None}


def test_a_group_round_trips_through_its_sql_form():
    group = grouped([{"district": "Haidian", "speed_kmh": 40.0}, {"district": "Haidian", "speed_kmh": None}])
    (key,) = group
    again = Group.from_json(group[key].records, group[key].to_json())
    assert again == group[key]


@given(
    moment=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    seconds=st.sampled_from([1, 60, 300, 3600, 86400]),
)
def test_a_moment_falls_in_exactly_one_epoch_aligned_window(moment, seconds):
    start = window_start(moment, seconds)
    assert start <= moment < start + timedelta(seconds=seconds)
    assert int(start.timestamp() * 1000) % (seconds * 1000) == 0


def test_k_is_the_larger_of_the_dataset_and_the_operator_floor():
    assert min_group_size('{"type": "record", "pdo.min_group_size": 50}', 10) == 50
    assert min_group_size('{"type": "record", "pdo.min_group_size": 3}', 10) == 10
    assert min_group_size('{"type": "record"}', 10) == 10
    assert min_group_size('{"type": "record", "pdo.min_group_size": true}', 10) == 10


def test_only_the_aggregates_the_grant_fixes_are_computed():
    spec = AggregateSpec(60, (), ("speed_kmh",), (AggregateFunction.MEAN,))
    groups: dict[str, Group] = {}
    for speed in (10.0, 20.0, 60.0):
        groups.setdefault(group_key({}, ()), Group()).add({"speed_kmh": speed}, spec.numeric_fields)
    (row,) = close_window("g-1", START, spec, groups, 3).rows
    assert (row.group, row.count, row.measures) == ({}, None, (("speed_kmh", AggregateFunction.MEAN, 30.0),))


@settings(max_examples=60, deadline=None)
@given(batch=records, k=st.integers(1, 15), epsilon=st.sampled_from([0.1, 0.5, 1.0, 5.0]))
def test_with_noise_no_group_below_k_is_released_and_no_released_count_is_below_k(batch, k, epsilon):
    spec = AggregateSpec(300, ("district",), (), (AggregateFunction.COUNT,), epsilon=epsilon)
    groups: dict[str, Group] = {}
    for record in batch:
        groups.setdefault(group_key(record, spec.group_by), Group()).add(record, ())
    closed = close_window("g-1", START, spec, groups, k)
    sizes = Counter(record["district"] for record in batch)
    for row in closed.rows:
        assert sizes[row.group["district"]] >= k  # the true count: hard suppression comes first
        assert row.count is not None and row.count >= k  # the noisy count passed the threshold
        assert row.measures == ()
    assert closed.suppressed == len(groups) - len(closed.rows)
