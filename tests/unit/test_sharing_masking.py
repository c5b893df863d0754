"""Masking rules on realistic Chinese data: what a tenant sees of names, plates, ID cards, phones, dates and numbers."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pdo.core.vocabulary import MaskingRule
from pdo.sharing.masking import mask, pseudonym_key

KEY = b"test-masking-key"
STRING_RULES = [MaskingRule.KEEP_FIRST_LAST, MaskingRule.MASK_MIDDLE_DIGITS, MaskingRule.KEYED_HASH]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("张三丰", "张*丰"),
        ("欧阳娜娜", "欧**娜"),
        ("京A12345", "京*****5"),
        ("粤B·D12345", "粤*******5"),
        ("张三", "张*"),
        ("张", "*"),
        ("", ""),
        (12345, "1***5"),
    ],
)
def test_keep_first_last_keeps_only_the_ends(value, expected):
    assert mask(value, MaskingRule.KEEP_FIRST_LAST, KEY) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("13812345678", "138****5678"),
        ("110105194912310021", "110***********0021"),
        ("11010519491231002X", "110***********002X"),
        ("+86 138 1234 5678", "+86**********5678"),
        ("62751234", "62****34"),
        ("1234", "1**4"),
        ("123", "***"),
        ("", ""),
        (13812345678, "138****5678"),
    ],
)
def test_mask_middle_digits_keeps_three_and_four(value, expected):
    assert mask(value, MaskingRule.MASK_MIDDLE_DIGITS, KEY) == expected


@given(st.text(max_size=60))
def test_mask_middle_digits_shows_at_most_seven_characters_and_at_most_half_of_short_values(text):
    masked = mask(text, MaskingRule.MASK_MIDDLE_DIGITS, KEY)

    shown = [char for char in masked if char != "*"]
    assert len(masked) == len(text)
    assert len(shown) <= (7 if len(text) >= 11 else len(text) // 2)


@given(st.text(min_size=1, max_size=40))
def test_star_rules_keep_only_their_ends(text):
    for rule, (first, last) in {
        MaskingRule.KEEP_FIRST_LAST: (1, 1) if len(text) >= 3 else (len(text) - 1, 0),
        MaskingRule.MASK_MIDDLE_DIGITS: (3, 4) if len(text) >= 11 else (len(text) // 4, len(text) // 4),
    }.items():
        masked = mask(text, rule, KEY)
        assert masked[:first] == text[:first]
        assert masked[len(text) - last :] == text[len(text) - last :]
        assert set(masked[first : len(text) - last]) <= {"*"}


def test_keyed_hash_is_stable_short_hex_and_depends_on_the_key():
    first = mask("110105194912310021", MaskingRule.KEYED_HASH, KEY)

    assert first == mask("110105194912310021", MaskingRule.KEYED_HASH, KEY)  # same on every worker
    assert len(first) == 16 and set(first) <= set("0123456789abcdef")
    assert first != mask("110105194912310021", MaskingRule.KEYED_HASH, b"another-key")
    assert first != mask("110105194912310022", MaskingRule.KEYED_HASH, KEY)
    assert mask(13812345678, MaskingRule.KEYED_HASH, KEY) == mask("13812345678", MaskingRule.KEYED_HASH, KEY)


def test_keyed_hash_is_the_documented_hmac():
    # Pinned, so a change to the algorithm cannot slip by without bumping MASKING_ALGORITHM_VERSION.
    import hashlib
    import hmac

    expected = hmac.new(KEY, "张三丰".encode(), hashlib.sha256).hexdigest()[:16]
    assert mask("张三丰", MaskingRule.KEYED_HASH, KEY) == expected


@given(st.text(max_size=30), st.binary(min_size=1, max_size=32), st.binary(min_size=1, max_size=32))
def test_keyed_hash_differs_between_keys(text, key, other):
    if key != other:
        assert mask(text, MaskingRule.KEYED_HASH, key) != mask(text, MaskingRule.KEYED_HASH, other)


@pytest.mark.parametrize("rule", list(MaskingRule))
def test_none_stays_none_under_every_rule(rule):
    assert mask(None, rule, KEY) is None


@pytest.mark.parametrize("value", ["张三丰", "13812345678", 42, 3.5, datetime(2026, 1, 1, tzinfo=UTC)])
def test_redact_always_gives_null(value):
    assert mask(value, MaskingRule.REDACT, KEY) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (datetime(2026, 3, 1, 8, 30, 15, 123000, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)),
        # 07:30 in Beijing is 23:30 UTC the day before: the UTC day counts.
        (datetime(2026, 3, 1, 7, 30, tzinfo=timezone(timedelta(hours=8))), datetime(2026, 2, 28, tzinfo=UTC)),
        (datetime(2026, 3, 1, 8, 30), datetime(2026, 3, 1)),
        (date(2026, 3, 1), date(2026, 3, 1)),
        (1772353815123, 1772323200000),
        (-1, -86_400_000),
        ("2026-03-01T08:30:00+08:00", "2026-03-01"),
        ("2026-03-01T01:30:00+08:00", "2026-02-28"),
        ("2026-03-01", "2026-03-01"),
        ("not a date", None),
        (time(8, 30), None),
        (True, None),
    ],
)
def test_truncate_date_keeps_the_kind_and_drops_the_time(value, expected):
    masked = mask(value, MaskingRule.TRUNCATE_DATE, KEY)

    assert masked == expected
    assert type(masked) is type(expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (17, 20),
        (15, 20),
        (14, 10),
        (-15, -20),
        (0, 0),
        (2**63 - 1, 2**63 - 8),  # the nearest 10 would not fit a long: the one below does
        (-(2**63), -(2**63) + 8),
        (72.46, 72.5),
        (float("inf"), float("inf")),
        (Decimal("1234567.89"), Decimal("1234567.9")),
        (Decimal("0.05"), Decimal("0.1")),
        (Decimal("100"), Decimal("100")),
        (Decimal("12.3"), Decimal("12.3")),
        (True, None),
        ("13812345678", None),
    ],
)
def test_round_number_keeps_the_kind_and_drops_precision(value, expected):
    masked = mask(value, MaskingRule.ROUND_NUMBER, KEY)

    assert masked == expected
    assert type(masked) is type(expected)


def test_round_number_leaves_nan_alone():
    masked = mask(float("nan"), MaskingRule.ROUND_NUMBER, KEY)

    assert masked != masked


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_rounded_integers_stay_within_ten_and_inside_the_long_range(number):
    rounded = mask(number, MaskingRule.ROUND_NUMBER, KEY)

    assert abs(rounded - number) <= 9
    assert -(2**63) <= rounded <= 2**63 - 1
    assert rounded % 10 == 0 or abs(number) > 2**63 - 10


@pytest.mark.parametrize("rule", STRING_RULES)
@pytest.mark.parametrize("value", [12345678901, Decimal("1.5"), date(2026, 3, 1)])
def test_string_rules_turn_other_values_into_text(rule, value):
    assert mask(value, rule, KEY) == mask(str(value), rule, KEY)


def test_an_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="unknown masking rule"):
        mask("张三丰", "SHUFFLE", KEY)


def test_rules_given_as_plain_text_work_like_the_enum():
    assert mask("张三丰", "KEEP_FIRST_LAST", KEY) == "张*丰"


# ---------------------------------------------------------------------------------------------- pseudonym keys

MASTER = b"m" * 48


def test_two_tenants_get_different_pseudonyms_for_one_value():
    acme = mask("13812345678", MaskingRule.KEYED_HASH, pseudonym_key(MASTER, "tenant:acme", "traffic"))
    globex = mask("13812345678", MaskingRule.KEYED_HASH, pseudonym_key(MASTER, "tenant:globex", "traffic"))
    assert acme != globex


def test_one_tenant_gets_different_pseudonyms_in_two_datasets():
    traffic = pseudonym_key(MASTER, "tenant:acme", "traffic")
    permits = pseudonym_key(MASTER, "tenant:acme", "permits")
    assert mask("13812345678", MaskingRule.KEYED_HASH, traffic) != mask(
        "13812345678", MaskingRule.KEYED_HASH, permits
    )


def test_one_tenant_gets_a_stable_pseudonym_and_never_the_master_keys():
    pseudonym_key.cache_clear()  # derived again, not remembered: still the same
    first = mask("13812345678", MaskingRule.KEYED_HASH, pseudonym_key(MASTER, "tenant:acme", "traffic"))
    pseudonym_key.cache_clear()
    again = mask("13812345678", MaskingRule.KEYED_HASH, pseudonym_key(MASTER, "tenant:acme", "traffic"))
    assert first == again
    assert first != mask("13812345678", MaskingRule.KEYED_HASH, MASTER)


def test_the_pseudonym_key_is_the_documented_hkdf():
    # Pinned, so a change to the derivation cannot slip by without bumping MASKING_ALGORITHM_VERSION.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    info = b"pdo keyed-hash pseudonym key v1" + b"\0\0\0\x0btenant:acme" + b"\0\0\0\x07traffic"
    expected = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(MASTER)
    assert pseudonym_key(MASTER, "tenant:acme", "traffic") == expected


@given(st.text(max_size=12), st.text(max_size=12), st.text(max_size=12), st.text(max_size=12))
def test_no_two_tenant_dataset_pairs_share_a_pseudonym_key(tenant, dataset, other_tenant, other_dataset):
    if (tenant, dataset) != (other_tenant, other_dataset):
        assert pseudonym_key(MASTER, tenant, dataset) != pseudonym_key(MASTER, other_tenant, other_dataset)
