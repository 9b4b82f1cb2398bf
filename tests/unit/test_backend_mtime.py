"""The mtime kept in object metadata: rclone's two forms written exactly, and read back leniently."""

from __future__ import annotations

import pytest

from mountfs.backends import mtime

WHEN = 1_700_000_000_123_456_789


def test_s3_form_is_decimal_seconds_with_nine_digits() -> None:
    assert mtime.format_seconds(WHEN) == "1700000000.123456789"
    assert mtime.format_seconds(1_600_000_000 * mtime.NS) == "1600000000.000000000"
    assert mtime.format_seconds(-1_500_000_000) == "-1.500000000"


def test_gcs_and_azure_form_is_rfc3339_in_utc() -> None:
    assert mtime.format_rfc3339(WHEN) == "2023-11-14T22:13:20.123456789Z"
    assert mtime.format_rfc3339(-1_500_000_000) == "1969-12-31T23:59:58.500000000Z"


@pytest.mark.parametrize("value", [WHEN, 0, 1, -1, -1_500_000_000, (1 << 63) - 1, -(1 << 63) + 1])
def test_both_forms_round_trip_to_the_nanosecond(value: int) -> None:
    assert mtime.parse(mtime.format_seconds(value)) == value
    assert mtime.parse(mtime.format_rfc3339(value)) == value


@pytest.mark.parametrize(("text", "expected"), [
    ("1700000000", 1_700_000_000 * mtime.NS),
    ("1700000000.5", 1_700_000_000_500_000_000),
    ("1700000000.", 1_700_000_000 * mtime.NS),
    ("1700000000.1234567891234", 1_700_000_000_123_456_789),  # past nanoseconds: cut
    (" 1700000000.25 ", 1_700_000_000_250_000_000),
    ("2023-11-14T22:13:20Z", 1_700_000_000 * mtime.NS),  # rclone's RFC3339Nano drops trailing zeros
    ("2023-11-14T22:13:20.5Z", 1_700_000_000_500_000_000),
    ("2023-11-14T23:13:20.123456789+01:00", WHEN),
    ("2023-11-14T17:13:20-0500", 1_700_000_000 * mtime.NS),
    ("2023-11-14t22:13:20z", 1_700_000_000 * mtime.NS),
    ("2023-11-14T22:13:20", 1_700_000_000 * mtime.NS),  # no zone: UTC
])
def test_parse_accepts_what_tools_write(text: str, expected: int) -> None:
    assert mtime.parse(text) == expected


@pytest.mark.parametrize("text", [None, "", "soon", "1.2.3", "1e9", "2023-13-01T00:00:00Z",
                                  "2023-02-30T00:00:00Z", "99999999999999999999", "0x10"])
def test_parse_refuses_anything_else(text: str | None) -> None:
    assert mtime.parse(text) is None


def test_from_metadata_finds_the_key_in_any_case_then_the_fallbacks() -> None:
    assert mtime.from_metadata({"Mtime": "1700000000"}) == 1_700_000_000 * mtime.NS
    assert mtime.from_metadata({"other": "x"}) is None
    assert mtime.from_metadata(None) is None
    gsutil = {mtime.GSUTIL_MTIME_KEY: "1500000000"}
    assert mtime.from_metadata(gsutil) is None
    assert mtime.from_metadata(gsutil, mtime.GSUTIL_MTIME_KEY) == 1_500_000_000 * mtime.NS
    both = {"mtime": "garbage", mtime.GSUTIL_MTIME_KEY: "1500000000"}
    assert mtime.from_metadata(both, mtime.GSUTIL_MTIME_KEY) == 1_500_000_000 * mtime.NS


def test_without_mtime_keeps_the_other_keys() -> None:
    assert mtime.without_mtime({"MTime": "1", "other": "x"}) == {"other": "x"}
    assert mtime.without_mtime(None) == {}
