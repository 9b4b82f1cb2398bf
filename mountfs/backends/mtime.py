"""An object's own modification time, kept in its user metadata the way rclone keeps it.

Object stores only know when an object was last written (S3 LastModified, GCS `updated`, Azure
Last-Modified), which a copy or a metadata change moves too. A time set with `utimens` (`touch -d`,
`cp -p`, `rsync -a`, `tar x`) goes under the metadata key "mtime" on every store, in the format
rclone writes there, so that each tool reads the other's:
- S3: seconds since the epoch as a decimal with nine fraction digits ("1700000000.123456789",
  the `X-Amz-Meta-Mtime` header);
- GCS and Azure: RFC 3339 with nanoseconds in UTC ("2023-11-14T22:13:20.123456789Z").
Reading accepts either form on any store, and on GCS also gsutil's "goog-reserved-file-mtime"
(whole seconds). A value that does not parse is ignored: the store's own time shows instead.
"""

from __future__ import annotations

import calendar
import datetime
import re
from collections.abc import Mapping

MTIME_KEY = "mtime"
GSUTIL_MTIME_KEY = "goog-reserved-file-mtime"

NS = 1_000_000_000
_INT64 = (1 << 63) - 1  # st_mtime_ns is a signed 64-bit count
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)

_SECONDS = re.compile(r"\s*([+-]?)(\d+)(?:\.(\d*))?\s*\Z")
_RFC3339 = re.compile(
    r"\s*(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?"
    r"\s*(?:[Zz]|([+-])(\d{2}):?(\d{2}))?\s*\Z")


def format_seconds(mtime_ns: int) -> str:
    """S3's form: decimal seconds with nine fraction digits (rclone's TimeToFloatString)."""
    sign = "-" if mtime_ns < 0 else ""
    seconds, fraction = divmod(abs(mtime_ns), NS)
    return f"{sign}{seconds}.{fraction:09d}"


def format_rfc3339(mtime_ns: int) -> str:
    """GCS's and Azure's form: RFC 3339 in UTC with nine fraction digits."""
    seconds, fraction = divmod(mtime_ns, NS)
    when = _EPOCH + datetime.timedelta(seconds=seconds)
    return f"{when:%Y-%m-%dT%H:%M:%S}.{fraction:09d}Z"


def parse(text: str | None) -> int | None:
    """Nanoseconds since the epoch from either form; None when `text` is neither (or out of range)."""
    if not text:
        return None
    if (seconds := _SECONDS.match(text)) is not None:
        sign, whole, fraction = seconds.groups()
        value = int(whole) * NS + int((fraction or "")[:9].ljust(9, "0"))
        value = -value if sign == "-" else value
    elif (stamp := _RFC3339.match(text)) is not None:
        year, month, day, hour, minute, second, fraction, tz_sign, tz_hours, tz_minutes = stamp.groups()
        try:
            datetime.datetime(int(year), int(month), int(day), int(hour), int(minute),
                              min(int(second), 59))  # checks the fields; a leap second is :59
        except ValueError:
            return None
        whole = calendar.timegm((int(year), int(month), int(day), int(hour), int(minute), int(second)))
        if tz_sign:
            offset = (int(tz_hours) * 60 + int(tz_minutes)) * 60
            whole -= offset if tz_sign == "+" else -offset
        value = whole * NS + int((fraction or "")[:9].ljust(9, "0"))
    else:
        return None
    return value if -_INT64 <= value <= _INT64 else None


def from_metadata(metadata: Mapping[str, str] | None, *fallback_keys: str) -> int | None:
    """The mtime an object's user metadata carries, if a valid one: under "mtime" (any case, as S3
    and Azure do not keep the case of keys everywhere), else under `fallback_keys` in order."""
    if not metadata:
        return None
    by_name = {name.lower(): value for name, value in metadata.items()}
    for name in (MTIME_KEY, *fallback_keys):
        value = parse(by_name.get(name))
        if value is not None:
            return value
    return None


def without_mtime(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """A copy of user metadata without its "mtime" key (in any case), to put a new one in."""
    return {name: value for name, value in (metadata or {}).items() if name.lower() != MTIME_KEY}
