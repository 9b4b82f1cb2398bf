"""Config: a TOML file (or one URL) turned into frozen dataclasses, checked in full before anything mounts.

Every problem in a file is collected and reported together, each with its file, line, dotted key and a
hint, so `mountfs config check` shows a user everything to fix in one pass instead of one error per run.
Secrets never appear in a dataclass `repr()` or in an error message.

Key paths in errors are dotted, with 0-based indices for arrays of tables: `mount[1].url` is the `url`
of the second `[[mount]]`.
"""

from __future__ import annotations

import bisect
import contextlib
import difflib
import json
import math
import os
import re
import stat
import tomllib
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TypeVar

from mountfs.errors import ConfigError, ConfigErrors, printable, without_credentials

__all__ = [
    "SCHEMES",
    "AzureConfig",
    "AzureContainer",
    "CacheConfig",
    "Config",
    "DirectAccess",
    "GcsConfig",
    "GcsCredentials",
    "InvalidValue",
    "MinFree",
    "MountConfig",
    "PathSubstitution",
    "ReadConfig",
    "S3Boto3",
    "S3Config",
    "S3Credentials",
    "StoreUrl",
    "WriteConfig",
    "block_size_problem",
    "config_from_url",
    "default_cache_dir",
    "format_size",
    "load_config",
    "load_source",
    "parse_duration",
    "parse_min_free",
    "parse_size",
    "parse_url",
    "secret_values",
    "shown_url",
]

KiB = 1024
MiB = 1024**2
GiB = 1024**3
TiB = 1024**4
PiB = 1024**5

MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0
WEEK = 7 * DAY

SCHEMES = ("s3", "gs", "az", "file")


class InvalidValue(ValueError):
    """A ValueError whose hint is kept apart, so a ConfigError can show it in its own hint slot."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message} ({hint})" if hint else message)


def default_cache_dir() -> str:
    """Root shares one system cache; users get the XDG per-user cache, so a non-root mount just works."""
    if os.geteuid() == 0:
        return "/var/cache/mountfs"
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # the XDG spec says to ignore relative values
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mountfs")


# ---------------------------------------------------------------------------------------------------------
# Dataclasses


@dataclass(frozen=True)
class StoreUrl:
    """Where one mount's objects live. `host` is "host:port" for S3-compatible endpoints and the account
    for Azure; for `file` the bucket is the absolute folder path."""

    scheme: str
    host: str | None
    bucket: str
    prefix: str
    raw: str


@dataclass(frozen=True)
class MinFree:
    """Free space the cache leaves on its disk, as bytes ("10GiB") or a percentage of the disk ("5%"):
    the cache shares its disk with staged uploads, logs and other programs, which must not fail first."""

    size: int = 0
    percent: float = 0.0

    def required(self, disk_size: int) -> int:
        """Bytes that must stay free on a disk of `disk_size` bytes."""
        return max(self.size, math.ceil(disk_size * self.percent / 100))


@dataclass(frozen=True)
class CacheConfig:
    dir: str = field(default_factory=default_cache_dir)
    max_size: int = 200 * GiB
    max_files: int = 1_000_000
    expiry: float = 7 * DAY
    block_size: int = 4 * MiB
    min_free: MinFree = field(default_factory=lambda: MinFree(percent=5.0))


@dataclass(frozen=True)
class ReadConfig:
    metadata_ttl: float = 60.0
    negative_ttl: float = 5.0
    # Store requests in flight (each up to 16 MiB when reading ahead). More threads only fight
    # over the GIL: a cold 1 GiB read went from about 950 MB/s with 8 to about 700 with 16.
    max_concurrency: int = 8
    readahead_max: int = 256 * MiB
    max_memory: int = 192 * MiB  # block bytes the daemon holds in memory, all handles together
    kernel_readahead: int = 8 * MiB  # the mount's read_ahead_kb, set when running as root
    # While a store is unreachable, cached metadata past its TTL is still served for this long.
    offline_grace: float = 3600.0


@dataclass(frozen=True)
class WriteConfig:
    part_size: int = 16 * MiB
    max_concurrency: int = 8
    drain_timeout: float = 300.0  # how long unmount/SIGTERM waits for pending uploads


@dataclass(frozen=True)
class RetryConfig:
    """How store calls are retried on transient failures (throttling, 5xx, resets, timeouts):
    jittered exponential backoff from base_delay up to max_delay, at most `attempts` tries and no
    longer than `budget` in all; each request gives up after `request_timeout`."""

    attempts: int = 6
    base_delay: float = 0.1
    max_delay: float = 5.0
    budget: float = 60.0
    request_timeout: float = 30.0


@dataclass(frozen=True)
class MountConfig:
    """One directory under the mount point; path "" puts the store at the mount point itself."""

    path: str
    url: StoreUrl
    read_only: bool = False
    substituted_for: str | None = None
    """The URL [[path_substitution]] replaced by `url` (a registered prefix, or one under it):
    direct-access globs match it too, so a glob may name a bucket's mirrored part."""


@dataclass(frozen=True)
class DirectAccess:
    """A URL glob (e.g. "file:///mnt/nfs/*") whose matches bypass the cache."""

    url: str


@dataclass(frozen=True)
class PathSubstitution:
    registered_prefix: str
    local_prefix: str


@dataclass(frozen=True)
class S3Credentials:
    """Overrides [s3] for one endpoint ("host:port"), one bucket, or one bucket on one endpoint."""

    host: str | None = None
    bucket: str | None = None
    key: str | None = field(default=None, repr=False)
    secret: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    region: str | None = None
    secure: bool = True
    verify: bool | str = True
    multipart: bool = True
    kms_key_id: str | None = None
    endpoint: str | None = None  # for a bucket entry: the server the bucket is on
    addressing_style: str | None = None  # "path", "virtual" or "auto"


@dataclass(frozen=True)
class S3Boto3:
    pool_connections: int = 32
    max_multipart_concurrency: int = 16


@dataclass(frozen=True)
class S3Config:
    key: str | None = field(default=None, repr=False)
    secret: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    region: str | None = None
    endpoint: str | None = None
    addressing_style: str | None = None
    use_credentials_chain: bool = False
    credentials: tuple[S3Credentials, ...] = ()
    boto3: S3Boto3 = field(default_factory=S3Boto3)


@dataclass(frozen=True)
class GcsCredentials:
    bucket: str
    subdir: str = ""
    credentials_json: str | None = field(default=None, repr=False)
    project: str | None = None


@dataclass(frozen=True)
class GcsConfig:
    project: str | None = None
    credentials_json: str | None = field(default=None, repr=False)
    endpoint: str | None = None
    credentials: tuple[GcsCredentials, ...] = ()


@dataclass(frozen=True, kw_only=True)
class AzureContainer:
    """Keyword-only: the field order follows the config file, and the required container_name is late."""

    account_name: str
    account_key: str | None = field(default=None, repr=False)
    connection_string: str | None = field(default=None, repr=False)
    sas_token: str | None = field(default=None, repr=False)
    container_name: str
    endpoint: str | None = None


@dataclass(frozen=True)
class AzureConfig:
    containers: tuple[AzureContainer, ...] = ()


@dataclass(frozen=True)
class Config:
    """`source` is the file path or URL the config came from, for messages and `mountfs status`."""

    source: str
    cache: CacheConfig = field(default_factory=CacheConfig)
    read: ReadConfig = field(default_factory=ReadConfig)
    write: WriteConfig = field(default_factory=WriteConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    mounts: tuple[MountConfig, ...] = ()
    direct_access: tuple[DirectAccess, ...] | None = None
    """None: no `direct_access` key, so the default (`file://*`) applies; () from `direct_access = []`:
    nothing is direct, every mount goes through the block cache."""
    path_substitution: tuple[PathSubstitution, ...] = ()
    s3: S3Config = field(default_factory=S3Config)
    gcs: GcsConfig = field(default_factory=GcsConfig)
    azure: AzureConfig = field(default_factory=AzureConfig)


# ---------------------------------------------------------------------------------------------------------
# Sizes and durations

_SIZE_UNITS: dict[str, int] = {
    "": 1, "b": 1,
    "k": KiB, "kib": KiB, "kb": 1000,
    "m": MiB, "mib": MiB, "mb": 1000**2,
    "g": GiB, "gib": GiB, "gb": 1000**3,
    "t": TiB, "tib": TiB, "tb": 1000**4,
    "p": PiB, "pib": PiB, "pb": 1000**5,
}  # fmt: skip
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*")


def parse_size(text: str | int) -> int:
    """People write sizes as "4MiB" or "1.5GB"; a bare "4M" means MiB as in rclone. Rounded to bytes."""
    if isinstance(text, bool) or not isinstance(text, int | str):
        raise InvalidValue(f'invalid size {text!r}: expected a string such as "4MiB" or a number of bytes')
    if isinstance(text, int):
        if text < 0:
            raise InvalidValue(f"invalid size {text}: must not be negative")
        return text
    if text.strip().startswith("-"):
        raise InvalidValue(f'invalid size "{text}": must not be negative')
    match = _SIZE_RE.fullmatch(text)
    if not match:
        raise InvalidValue(
            f'invalid size "{text}": expected a number with an optional unit, '
            'e.g. "4MiB", "200GiB", "1.5GB" or "512"'
        )
    number, unit = match.groups()
    multiplier = _SIZE_UNITS.get(unit.lower())
    if multiplier is None:
        raise InvalidValue(
            f'invalid size "{text}": unknown unit "{unit}"',
            "use B, KiB, MiB, GiB, TiB, PiB or KB, MB, GB, TB, PB",
        )
    return round(Fraction(number) * multiplier)


def format_size(n: int) -> str:
    """The shortest exact binary form ("4MiB"), so a message shows the value the way the user wrote it."""
    for unit, size in (("PiB", PiB), ("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n} bytes"


_PERCENT_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*%\s*")


def parse_min_free(text: str | int) -> MinFree:
    """A size ("10GiB", or bytes) or a percentage of the disk ("5%", below 100)."""
    if isinstance(text, str) and "%" in text:
        match = _PERCENT_RE.fullmatch(text)
        if not match:
            raise InvalidValue(
                f'invalid free space "{text}": expected a size such as "10GiB" or a percentage such as "5%"'
            )
        percent = float(match.group(1))
        if percent >= 100:
            raise InvalidValue(f'invalid free space "{text}": a percentage must be below 100%')
        return MinFree(percent=percent)
    return MinFree(size=parse_size(text))


_DURATION_UNITS: dict[str, float] = {"ms": 0.001, "s": 1.0, "m": MINUTE, "h": HOUR, "d": DAY, "w": WEEK}
_NUMBER_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*")
_DURATIONS_RE = re.compile(r"(?:\s*(?:\d+(?:\.\d*)?|\.\d+)\s*[A-Za-z]+)+\s*")
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]+)")


def parse_duration(text: str | int | float) -> float:
    """Seconds from "500ms", "90s", "5m", "2h", "7d", "1w" or "1h30m"; a bare number is seconds."""
    if isinstance(text, bool) or not isinstance(text, int | float | str):
        raise InvalidValue(
            f'invalid duration {text!r}: expected a string such as "90s" or a number of seconds'
        )
    if isinstance(text, int | float):
        if not math.isfinite(text) or text < 0:
            raise InvalidValue(f"invalid duration {text}: must be a finite number of seconds, not negative")
        return float(text)
    if text.strip().startswith("-"):
        raise InvalidValue(f'invalid duration "{text}": must not be negative')
    if _NUMBER_RE.fullmatch(text):
        return float(text)
    if not _DURATIONS_RE.fullmatch(text):
        raise InvalidValue(
            f'invalid duration "{text}": expected a number with a unit, e.g. "500ms", "90s", "5m", "2h", "7d"'
        )
    total = 0.0
    for number, unit in _DURATION_PART_RE.findall(text):
        seconds = _DURATION_UNITS.get(unit.lower())
        if seconds is None:
            raise InvalidValue(f'invalid duration "{text}": unknown unit "{unit}"', "use ms, s, m, h, d or w")
        total += float(number) * seconds
    return total


# ---------------------------------------------------------------------------------------------------------
# URLs

_SCHEME_ALIASES = {
    "gcs": "gs", "gcp": "gs", "google": "gs",
    "azure": "az", "abfs": "az", "abfss": "az", "wasb": "az", "wasbs": "az",
    "s3a": "s3", "s3n": "s3", "aws": "s3", "minio": "s3",
    "local": "file", "path": "file",
}  # fmt: skip
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):(//)?")
_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST_RE = re.compile(rf"\[[0-9A-Fa-f:.]+\]|{_HOST_LABEL}(?:\.{_HOST_LABEL})*")
_IP_RE = re.compile(r"\d+\.\d+\.\d+\.\d+")
_LOWER_DIGITS = "abcdefghijklmnopqrstuvwxyz0123456789"


def _closest(word: str, choices: Sequence[str], cutoff: float = 0.6) -> str | None:
    """difflib's ratio, ties broken towards a shared first letter ("s4" is nearer "s3" than "gs")."""
    best, best_score = None, cutoff
    for choice in choices:
        score = difflib.SequenceMatcher(None, word, choice).ratio()
        score += 0.01 if choice[:1] == word[:1] else 0.0
        if score >= best_score:
            best, best_score = choice, score
    return best


def _scheme_of(text: str) -> tuple[str, str]:
    """Split "scheme://rest", with a precise message for each way the front of a URL goes wrong."""
    match = _SCHEME_RE.match(text)
    if not match:
        raise InvalidValue(
            f'"{text}" is not a store URL', "expected scheme://bucket/prefix with scheme s3, gs, az or file"
        )
    scheme = match.group(1).lower()
    if scheme not in SCHEMES:
        hint: str | None
        if scheme in ("http", "https"):
            hint = "for an S3-compatible endpoint write s3://host:port/bucket/prefix"
        else:
            near = _SCHEME_ALIASES.get(scheme) or _closest(scheme, SCHEMES, cutoff=0.5)
            hint = f'did you mean "{near}://"?' if near else None
        raise InvalidValue(f'unknown scheme "{scheme}://" in "{text}" (supported: s3, gs, az, file)', hint)
    if not match.group(2):
        if scheme == "file":
            raise InvalidValue(f'file URL "{text}" is not absolute', _FILE_HINT)
        rest = text[match.end() :].lstrip("/")
        raise InvalidValue(f'"{text}" is missing "//" after "{scheme}:"', f"write {scheme}://{rest}")
    return scheme, text[match.end() :]


_FILE_HINT = "use three slashes and an absolute path, e.g. file:///mnt/data"


def _check_name(what: str, name: str, lo: int, hi: int, allowed: str, allowed_text: str) -> None:
    if not lo <= len(name) <= hi:
        raise InvalidValue(f'{what} "{name}" is {len(name)} characters long (must be {lo} to {hi})')
    bad = sorted({c for c in name if c not in allowed})
    if bad:
        hint = "names are lowercase" if any(c.isupper() for c in bad) else None
        listed = ", ".join(f'"{c}"' for c in bad)
        raise InvalidValue(f'{what} "{name}" contains {listed} (allowed: {allowed_text})', hint)
    if not (name[0] in _LOWER_DIGITS and name[-1] in _LOWER_DIGITS):
        raise InvalidValue(f'{what} "{name}" must start and end with a lowercase letter or digit')


def _check_s3_bucket(name: str) -> None:
    _check_name("S3 bucket name", name, 3, 63, _LOWER_DIGITS + ".-", 'lowercase letters, digits, "." and "-"')
    if ".." in name:
        raise InvalidValue(f'S3 bucket name "{name}" must not contain ".."')
    if _IP_RE.fullmatch(name):
        raise InvalidValue(f'S3 bucket name "{name}" must not look like an IP address')


def _check_gcs_bucket(name: str) -> None:
    _check_name(
        "GCS bucket name", name, 3, 222, _LOWER_DIGITS + ".-_", 'lowercase letters, digits, "-", "_" and "."'
    )


def _check_azure_account(name: str) -> None:
    _check_name("Azure storage account name", name, 3, 24, _LOWER_DIGITS, "lowercase letters and digits")


def _check_azure_container(name: str) -> None:
    _check_name("Azure container name", name, 3, 63, _LOWER_DIGITS + "-", 'lowercase letters, digits and "-"')
    if "--" in name:
        raise InvalidValue(f'Azure container name "{name}" must not contain "--"')


def _check_host_port(text: str) -> str:
    """Non-AWS endpoints always carry a port, which is also how a URL's host is told from a bucket."""
    if "@" in text:
        raise InvalidValue(
            f'"***@{text.rpartition("@")[2]}" carries credentials',
            "put them in [s3] or [[s3.credentials]], not in the URL",
        )
    host, sep, port = text.rpartition(":")
    if not sep:
        raise InvalidValue(f'host "{text}" has no port', f'write it as "host:port", e.g. "{text}:9000"')
    if not host:
        raise InvalidValue(f'"{text}" has a port but no host')
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise InvalidValue(f'port "{port}" in "{text}" must be a number from 1 to 65535')
    if not _HOST_RE.fullmatch(host):
        hint = "write an IPv6 address in brackets: [::1]:9000" if ":" in host else None
        raise InvalidValue(f'"{host}" is not a valid host name', hint)
    return text


def _clean_prefix(prefix: str, what: str) -> str:
    """A prefix is a folder in the store: trailing slashes are dropped, but "//", "." and ".." are errors,
    because they cannot name a directory in the mounted tree."""
    prefix = prefix.rstrip("/")
    if not prefix:
        return ""
    segments = prefix.split("/")
    if "" in segments:
        raise InvalidValue(f'{what} "{prefix}" has an empty segment ("//" or a leading "/")')
    if "." in segments or ".." in segments:
        raise InvalidValue(f'{what} "{prefix}" must not contain "." or ".." segments')
    return prefix


# "user@" or "user:password@" after the scheme and its slashes; a password may hold "/" (AWS secrets
# do), but "host:9000/bucket/a@b" is a port and a key with an "@", and "file:///a:b@c" is a path.
_USERINFO_RE = re.compile(
    r"^(\s*(?![Ff][Ii][Ll][Ee]:///)(?:[A-Za-z][A-Za-z0-9+.-]*)?:/*)(?!/)(?:[^/@:]*:(?!\d+(?:/|$))[^@]*|[^/]*)@"
)


def shown_url(text: str) -> str:
    """A URL as messages may show it: without the credentials before an "@", and with control
    characters escaped, so an error line neither leaks a secret nor breaks the terminal."""
    return printable(_USERINFO_RE.sub(r"\1***@", text, count=1))


def _check_url_text(text: str) -> None:
    """What no store URL may hold, checked before any message quotes the URL back."""
    shown = shown_url(text)
    if _USERINFO_RE.match(text):
        raise InvalidValue(
            f'"{shown}" carries credentials', "put them in [s3] or [[s3.credentials]], not in the URL"
        )
    if any(unicodedata.category(c) == "Cc" for c in text):
        raise InvalidValue(f'URL "{shown}" contains a control character')


def parse_url(text: str) -> StoreUrl:
    """One URL names store, bucket and prefix: how a mount is written, in a file or on the command line."""
    if not isinstance(text, str):
        raise InvalidValue(f"expected a URL string, got {type(text).__name__}")
    _check_url_text(text)
    scheme, rest = _scheme_of(text.strip())
    if scheme == "file":
        if not rest.startswith("/"):
            raise InvalidValue(f'file URL "{text}" is not absolute', _FILE_HINT)
        segments = [s for s in rest.split("/") if s not in ("", ".")]
        if ".." in segments:
            raise InvalidValue(f'file URL "{text}" must not contain ".." segments')
        return StoreUrl("file", None, "/" + "/".join(segments), "", text)
    first, _, tail = rest.partition("/")
    host: str | None = None
    if scheme == "az":
        if not first:
            raise InvalidValue(f'"{text}" has no storage account', "expected az://account/container/prefix")
        _check_azure_account(first)
        host = first
        bucket, _, tail = tail.partition("/")
        if not bucket:
            raise InvalidValue(f'"{text}" has no container', "expected az://account/container/prefix")
        _check_azure_container(bucket)
    else:
        if scheme == "s3" and (":" in first or "@" in first):
            host = _check_host_port(first)
            bucket, _, tail = tail.partition("/")
            if not bucket:
                raise InvalidValue(
                    f'"{text}" has no bucket after the host "{host}"', "expected s3://host:port/bucket/prefix"
                )
        else:
            bucket = first
            if not bucket:
                raise InvalidValue(f'"{text}" has no bucket', f"expected {scheme}://bucket/prefix")
        (_check_s3_bucket if scheme == "s3" else _check_gcs_bucket)(bucket)
    return StoreUrl(scheme, host, bucket, _clean_prefix(tail, "prefix"), text)


def _check_glob_url(text: str) -> None:
    """A glob is not a bucket URL: only its scheme (and a file glob's absoluteness) can be checked."""
    _check_url_text(text)
    scheme, rest = _scheme_of(text.strip())
    if scheme == "file" and not rest.startswith("/"):
        raise InvalidValue(f'file URL "{text}" is not absolute', _FILE_HINT)


# ---------------------------------------------------------------------------------------------------------
# Locating keys in the raw text: tomllib reports no positions for values.

_Path = tuple[str | int, ...]
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _dotted(path: _Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + (part if _BARE_KEY.fullmatch(part) else json.dumps(part))
    return out


def _split_key(text: str) -> tuple[str, ...]:
    """Split a (possibly dotted, possibly quoted) TOML key into its parts."""
    parts: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t.":
            i += 1
        elif c in "\"'":
            end = i + 1
            while end < n and text[end] != c:
                end += 2 if c == '"' and text[end] == "\\" else 1
            raw = text[i : end + 1]
            try:
                parts.append(json.loads(raw) if c == '"' else raw[1:-1])
            except ValueError:
                parts.append(raw[1:-1])
            i = end + 1
        else:
            end = i
            while end < n and text[end] not in " \t.":
                end += 1
            parts.append(text[i:end])
            i = end
    return tuple(parts)


class _Locator:
    """Maps key paths to line numbers by following [table] and [[array]] headers (counting elements) and
    `key =` lines. Keys inside inline tables fall back to the line of the enclosing key or header."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self._lines: dict[_Path, int] = {}
        with contextlib.suppress(IndexError, ValueError):  # best effort; tomllib accepted the text
            self._scan()

    def line(self, path: _Path) -> int | None:
        for n in range(len(path), 0, -1):
            line = self._lines.get(path[:n])
            if line is not None:
                return line
        return None

    def _lineno(self, pos: int) -> int:
        return bisect.bisect_right(self._line_starts, pos)

    def _record(self, path: _Path, pos: int) -> None:
        line = self._lineno(pos)
        for n in range(1, len(path) + 1):
            self._lines.setdefault(path[:n], line)

    def _scan(self) -> None:
        text, n, pos = self._text, len(self._text), 0
        table: _Path = ()
        arrays: dict[_Path, int] = {}
        while pos < n:
            c = text[pos]
            if c in " \t\r\n":
                pos += 1
            elif c == "#":
                pos = self._end_of_line(pos)
            elif c == "[":
                is_array = text.startswith("[[", pos)
                start = pos + (2 if is_array else 1)
                end = self._find_outside_quotes(start, "]")
                parts = _split_key(text[start:end])
                pos = end + (2 if is_array else 1)
                path: _Path = ()
                for i, part in enumerate(parts):
                    path = (*path, part)
                    if i < len(parts) - 1 and path in arrays:
                        path = (*path, arrays[path] - 1)
                if is_array:
                    self._record(path, start)
                    index = arrays.get(path, 0)
                    arrays[path] = index + 1
                    path = (*path, index)
                self._record(path, start)
                table = path
            else:
                eq = self._find_outside_quotes(pos, "=")
                self._record(table + _split_key(text[pos:eq]), pos)
                pos = self._skip_value(eq + 1)

    def _end_of_line(self, pos: int) -> int:
        end = self._text.find("\n", pos)
        return len(self._text) if end < 0 else end

    def _find_outside_quotes(self, pos: int, target: str) -> int:
        text = self._text
        while text[pos] != target:
            pos = self._skip_string(pos) if text[pos] in "\"'" else pos + 1
        return pos

    def _skip_string(self, pos: int) -> int:
        """Skip one string of any of TOML's four kinds, starting at its opening quote."""
        text = self._text
        quote = text[pos]
        if text.startswith(quote * 3, pos):
            pos += 3
            while not text.startswith(quote * 3, pos):
                pos += 2 if quote == '"' and text[pos] == "\\" else 1
            pos += 3
            while pos < len(text) and text[pos] == quote:  # up to two quotes may end the content
                pos += 1
            return pos
        pos += 1
        while text[pos] != quote:
            pos += 2 if quote == '"' and text[pos] == "\\" else 1
        return pos + 1

    def _skip_value(self, pos: int) -> int:
        """Skip a value, which may span lines (multi-line strings and arrays)."""
        text, depth = self._text, 0
        while pos < len(text):
            c = text[pos]
            if c in "\"'":
                pos = self._skip_string(pos)
            elif c == "#":
                pos = self._end_of_line(pos)
            elif c == "\n" and depth == 0:
                return pos
            else:
                depth += 1 if c in "[{" else -1 if c in "]}" else 0
                pos += 1
        return pos


# ---------------------------------------------------------------------------------------------------------
# Loading

_Table = dict[str, object]
_T = TypeVar("_T")
_Check = Callable[[_T], str | None]


class _Absent:
    """Marks a key that is missing, or whose value was already reported (so it is not reported twice)."""


_ABSENT = _Absent()
_REPORTED = _Absent()
_SECRET_KEYS = frozenset(
    {"key", "secret", "token", "account_key", "connection_string", "sas_token", "credentials_json"}
)
_ENV_RE = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_TOP_KEYS = (
    "cache", "read", "write", "retry", "mount", "direct_access", "path_substitution", "s3", "gcs", "azure",
)  # fmt: skip
_CACHE_KEYS = ("dir", "max_size", "max_files", "expiry", "block_size", "min_free")
_READ_KEYS = (
    "metadata_ttl", "negative_ttl", "max_concurrency", "readahead_max", "max_memory", "kernel_readahead",
    "offline_grace",
)  # fmt: skip
_WRITE_KEYS = ("part_size", "max_concurrency", "drain_timeout")
_RETRY_KEYS = ("attempts", "base_delay", "max_delay", "budget", "request_timeout")
_MOUNT_KEYS = ("path", "url", "read_only")
_S3_KEYS = (
    "key", "secret", "token", "region", "endpoint", "addressing_style", "use_credentials_chain",
    "credentials", "boto3",
)
_S3_CRED_KEYS = (
    "host", "bucket", "key", "secret", "token", "region", "endpoint", "addressing_style", "secure", "verify",
    "multipart", "kms_key_id",
)  # fmt: skip
_S3_BOTO3_KEYS = ("pool_connections", "max_multipart_concurrency")
_GCS_KEYS = ("project", "credentials_json", "endpoint", "credentials")
_GCS_CRED_KEYS = ("bucket", "subdir", "credentials_json", "project")
_AZURE_KEYS = ("containers",)
_AZURE_CONTAINER_KEYS = (
    "account_name", "account_key", "connection_string", "sas_token", "container_name", "endpoint",
)  # fmt: skip


def _describe(value: object, secret: bool = False) -> str:
    if isinstance(value, bool):
        return "a boolean" if secret else f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return "an integer" if secret else f"integer {value}"
    if isinstance(value, float):
        return "a float" if secret else f"float {value}"
    if isinstance(value, str):
        if secret:
            return "a string"
        value = without_credentials(value)  # before cutting it short, which could cut off the "@"
        return f"string {json.dumps(value if len(value) <= 40 else value[:37] + '...')}"
    if isinstance(value, list):
        if value and all(isinstance(v, dict) for v in value):
            return "an array of tables"
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


def _positive(v: float) -> str | None:
    return None if v > 0 else "must be greater than 0"


def _at_least_one(v: int) -> str | None:
    return None if v >= 1 else f"must be at least 1, got {v}"


def block_size_problem(v: int) -> str | None:
    """What is wrong with a block size (the config key and `-o block_size=` share this rule)."""
    if 64 * KiB <= v <= 64 * MiB and v & (v - 1) == 0:
        return None
    return f"must be a power of two from 64KiB to 64MiB, got {format_size(v)}"


def _part_size_problem(v: int) -> str | None:
    if 5 * MiB <= v <= 5 * GiB:
        return None
    return f"must be from 5MiB to 5GiB (the S3 multipart limits), got {format_size(v)}"


def _mount_path_problem(path: str) -> tuple[str, str | None] | None:
    if path == "":
        return None  # the mount root; checked against the other mounts later
    if "\0" in path:
        return "must not contain a NUL character", None
    if path.startswith("/"):
        return f'mount path "{path}" must be relative', f'write "{path.strip("/")}"'
    if path.endswith("/"):
        return f'mount path "{path}" must not end with "/"', f'write "{path.rstrip("/")}"'
    segments = path.split("/")
    if "" in segments:
        return f'mount path "{path}" has an empty segment ("//")', None
    if "." in segments or ".." in segments:
        return f'mount path "{path}" must not contain "." or ".." segments', None
    for segment in segments:
        size = len(segment.encode("utf-8", "surrogatepass"))
        if size > NAME_MAX:
            shown = segment if len(segment) <= 40 else segment[:37] + "..."
            return f'mount path segment "{shown}" is {size} bytes long (at most {NAME_MAX})', None
    return None


NAME_MAX = 255
"""The longest file name (in bytes) the kernel takes: a mount path segment is a directory name."""


def _toml_error_hint(line_text: str) -> str | None:
    """Guess the usual slips behind a TOML syntax error: an unquoted size or duration, an unquoted string."""
    match = re.match(r"\s*([A-Za-z0-9_.\"'-]+)\s*=\s*([^#]*?)\s*(#.*)?$", line_text)
    if not match:
        return None
    key, value = match.group(1), match.group(2)
    if value.startswith("="):
        return f"write one = between {key} and its value"
    if not value.isprintable():
        return None  # the value cannot be shown as it is, and no quotes would make it valid
    # Never echo what follows a secret's key: the error must not carry the secret itself.
    shown = "..." if _split_key(key)[-1:] and _split_key(key)[-1] in _SECRET_KEYS else value
    if re.fullmatch(r"[\d._]+\s*[A-Za-z]+", value):
        return f'sizes and durations are strings: write {key} = "{shown}"'
    if value.lower() in ("yes", "no", "on", "off") or value in ("True", "False"):
        return "booleans are written true or false"
    if value and value[0] not in "\"'[{+-0123456789" and value not in ("true", "false", "inf", "nan"):
        return f'strings need quotes: write {key} = "{shown}"'
    return None


@dataclass
class _SeenMounts:
    """The mount paths taken so far (with where each was given), and every parent directory of one
    (with a mount path under it)."""

    paths: dict[str, _Path] = field(default_factory=dict)
    under: dict[str, str] = field(default_factory=dict)


class _Loader:
    """Walks the parsed document once, recording every problem and carrying on with defaults."""

    def __init__(self, file: str, text: str) -> None:
        self.file = file
        self.locator = _Locator(text)
        self.errors: list[ConfigError] = []

    # -- reporting

    def error(self, path: _Path, message: str, hint: str | None = None, at: _Path | None = None) -> None:
        """`at` points the line elsewhere, e.g. at the key that makes a missing one required."""
        line = self.locator.line(path if at is None else at)
        key = _dotted(path) or None
        self.errors.append(ConfigError(message, file=self.file, line=line, key=key, hint=hint))

    def value_error(self, path: _Path, exc: ValueError) -> None:
        if isinstance(exc, InvalidValue):
            self.error(path, exc.message, exc.hint)
        else:
            self.error(path, str(exc))

    def type_error(self, path: _Path, expected: str, value: object, hint: str | None = None) -> None:
        secret = bool(path) and path[-1] in _SECRET_KEYS
        self.error(path, f"expected {expected}, got {_describe(value, secret)}", hint)

    # -- ${VAR} references

    def expand(self, value: object, path: _Path) -> object:
        if isinstance(value, dict):
            return {k: self.expand(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.expand(v, (*path, i)) for i, v in enumerate(value)]
        if isinstance(value, str) and "$" in value:
            return self.expand_string(value, path)
        return value

    def expand_string(self, value: str, path: _Path) -> object:
        failed = False

        def replace(match: re.Match[str]) -> str:
            nonlocal failed
            text = match.group(0)
            if text == "$${":
                return "${"
            if match.group(1) is None:
                failed = True
                self.error(path, 'unclosed "${"', "write $${ for a literal ${")
                return text
            name, sep, default = match.group(1).partition(":-")
            if not _ENV_NAME.fullmatch(name):
                failed = True
                self.error(path, f'malformed reference "{text}"', "write ${NAME} or ${NAME:-default}")
                return text
            current = os.environ.get(name)
            if sep and not current:
                return default
            if current is None:
                failed = True
                self.error(
                    path,
                    f"environment variable {name} is not set",
                    f"set it, or give a default: ${{{name}:-...}}",
                )
                return text
            return current

        result = _ENV_RE.sub(replace, value)
        return _REPORTED if failed else result

    # -- tables

    def table(self, value: object, path: _Path, allowed: Sequence[str], header: str) -> _Table:
        if not isinstance(value, dict):
            hint = f"write [{header}] with single brackets" if isinstance(value, list) else None
            self.type_error(path, f"a table [{header}]", value, hint)
            return {}
        for key, item in value.items():
            if key not in allowed:
                is_table = isinstance(item, dict) or (
                    isinstance(item, list) and bool(item) and all(isinstance(v, dict) for v in item)
                )
                near = _closest(key, allowed)
                self.error(
                    (*path, key),
                    f"unknown {'table' if is_table else 'key'}",
                    f'did you mean "{near}"?' if near else None,
                )
        return value

    def tables(
        self, value: object, path: _Path, allowed: Sequence[str], header: str
    ) -> list[tuple[_Path, _Table]]:
        if value is _ABSENT or value is _REPORTED:
            return []
        if not isinstance(value, list):
            hint = f"write [[{header}]] with double brackets" if isinstance(value, dict) else None
            self.type_error(path, f"an array of tables [[{header}]]", value, hint)
            return []
        out = []
        for i, item in enumerate(value):
            if item is _REPORTED:
                continue
            out.append(((*path, i), self.table(item, (*path, i), allowed, header)))
        return out

    def sub(self, tbl: _Table, path: _Path, key: str, allowed: Sequence[str]) -> tuple[_Path, _Table]:
        sub_path = (*path, key)
        value = tbl.get(key, _ABSENT)
        if value is _ABSENT or value is _REPORTED:
            return sub_path, {}
        return sub_path, self.table(value, sub_path, allowed, _dotted(sub_path))

    # -- scalar values

    def raw(
        self, tbl: _Table, path: _Path, key: str, required: bool = False, hint: str | None = None
    ) -> object:
        value = tbl.get(key, _ABSENT)
        if value is _REPORTED:
            return _ABSENT
        if value is _ABSENT and required:
            self.error((*path, key), "required key is missing", hint)
        return value

    def str_(
        self,
        tbl: _Table,
        path: _Path,
        key: str,
        *,
        required: bool = False,
        hint: str | None = None,
        allow_empty: bool = False,
    ) -> str | None:
        """Optional strings that come out empty (e.g. "${TOKEN:-}") count as not set."""
        value = self.raw(tbl, path, key, required, hint)
        if value is _ABSENT:
            return None
        if not isinstance(value, str):
            self.type_error((*path, key), "a string", value)
            return None
        if value == "" and not allow_empty:
            if required:
                self.error((*path, key), "must not be empty", hint)
            return None
        return value

    def checked_str(
        self,
        tbl: _Table,
        path: _Path,
        key: str,
        check: Callable[[str], object],
        *,
        required: bool = False,
        hint: str | None = None,
    ) -> str | None:
        value = self.str_(tbl, path, key, required=required, hint=hint)
        if value is None:
            return None
        try:
            check(value)
        except ValueError as exc:
            self.value_error((*path, key), exc)
            return None
        return value

    def url(self, tbl: _Table, path: _Path, key: str, hint: str | None = None) -> StoreUrl | None:
        value = self.str_(tbl, path, key, required=True, hint=hint)
        if value is None:
            return None
        try:
            return parse_url(value)
        except ValueError as exc:
            self.value_error((*path, key), exc)
            return None

    def bool_(self, tbl: _Table, path: _Path, key: str, default: bool) -> bool:
        value = self.raw(tbl, path, key)
        if value is _ABSENT:
            return default
        if isinstance(value, bool):
            return value
        hint = "remove the quotes" if isinstance(value, str) and value in ("true", "false") else None
        self.type_error((*path, key), "a boolean (true or false)", value, hint)
        return default

    def int_(
        self, tbl: _Table, path: _Path, key: str, default: int, check: _Check[int] = _at_least_one
    ) -> int:
        value = self.raw(tbl, path, key)
        if value is _ABSENT:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            hint = "remove the quotes" if isinstance(value, str) and value.strip().isdigit() else None
            self.type_error((*path, key), "an integer", value, hint)
            return default
        return self.check((*path, key), value, default, check)

    def size(self, tbl: _Table, path: _Path, key: str, default: int, check: _Check[int] = _positive) -> int:
        value = self.raw(tbl, path, key)
        if value is _ABSENT:
            return default
        if isinstance(value, bool) or not isinstance(value, int | str):
            self.type_error((*path, key), 'a size such as "4MiB" or a number of bytes', value)
            return default
        try:
            parsed = parse_size(value)
        except ValueError as exc:
            self.value_error((*path, key), exc)
            return default
        return self.check((*path, key), parsed, default, check)

    def duration(
        self, tbl: _Table, path: _Path, key: str, default: float, check: _Check[float] | None = None
    ) -> float:
        value = self.raw(tbl, path, key)
        if value is _ABSENT:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            self.type_error((*path, key), 'a duration such as "90s" or a number of seconds', value)
            return default
        try:
            parsed = parse_duration(value)
        except ValueError as exc:
            self.value_error((*path, key), exc)
            return default
        return parsed if check is None else self.check((*path, key), parsed, default, check)

    def check(self, path: _Path, value: _T, default: _T, check: _Check[_T]) -> _T:
        problem = check(value)
        if problem is None:
            return value
        self.error(path, problem)
        return default

    def key_pair(
        self, tbl: _Table, path: _Path, key: str | None, secret: str | None, token: str | None
    ) -> None:
        """A key without its secret (or the reverse) is always a mistake; say so here, not at first upload."""

        def reported(name: str) -> bool:
            value = tbl.get(name)
            return value is _REPORTED or not isinstance(value, str | None)

        if key is not None and ("/" in key or not key.isprintable()):
            # SigV4 splits its Credential field at "/"; a store only answers "400 Bad Request" otherwise
            self.error((*path, "key"), 'must not contain "/" or control characters (it is an access key ID)')
        for name, value in (("secret", secret), ("token", token)):
            if value is not None and any(unicodedata.category(c) == "Cc" for c in value):
                self.error((*path, name), "must not contain control characters")
        if key is not None and secret is None and not reported("secret"):
            self.error((*path, "secret"), "required when key is set", at=(*path, "key"))
        if secret is not None and key is None and not reported("key"):
            self.error((*path, "key"), "required when secret is set", at=(*path, "secret"))
        if token is not None and key is None and secret is None and not reported("key"):
            self.error((*path, "token"), "needs key and secret as well")

    # -- sections

    def build(self, doc: _Table, source: str) -> Config:
        expanded = self.expand(doc, ())
        assert isinstance(expanded, dict)
        root = self.table(expanded, (), _TOP_KEYS, "")
        return Config(
            source=source,
            cache=self.cache(root),
            read=self.read(root),
            write=self.write(root),
            retry=self.retry(root),
            mounts=self.mounts(root),
            direct_access=self.direct_access(root),
            path_substitution=self.path_substitution(root),
            s3=self.s3(root),
            gcs=self.gcs(root),
            azure=self.azure(root),
        )

    def cache(self, root: _Table) -> CacheConfig:
        path, t = self.sub(root, (), "cache", _CACHE_KEYS)
        default = CacheConfig()
        cache_dir = self.str_(t, path, "dir", allow_empty=True)
        if cache_dir == "":
            self.error((*path, "dir"), "must not be empty", "leave dir out to use the default")
            cache_dir = None
        if cache_dir is not None:
            cache_dir = os.path.expanduser(cache_dir)
            if os.path.isabs(cache_dir) and os.path.normpath(cache_dir) in ("/", "//"):
                self.error(
                    (*path, "dir"),
                    "must not be the root directory",
                    'give the cache a folder of its own, e.g. "/var/cache/mountfs"',
                )
                cache_dir = None
            elif not os.path.isabs(cache_dir):
                self.error(
                    (*path, "dir"),
                    f'"{cache_dir}" is not an absolute path',
                    "the daemon runs from /, so a relative cache dir would move",
                )
                cache_dir = None
        block_size = self.size(t, path, "block_size", default.block_size, block_size_problem)
        max_size = self.size(t, path, "max_size", default.max_size)
        if max_size < block_size:
            self.error((*path, "max_size"), f"must hold at least one block ({format_size(block_size)})")
        return CacheConfig(
            dir=os.path.normpath(cache_dir) if cache_dir else default.dir,
            max_size=max_size,
            max_files=self.int_(t, path, "max_files", default.max_files),
            expiry=self.duration(t, path, "expiry", default.expiry, _positive),
            block_size=block_size,
            min_free=self.min_free(t, path, "min_free", default.min_free),
        )

    def min_free(self, tbl: _Table, path: _Path, key: str, default: MinFree) -> MinFree:
        value = self.raw(tbl, path, key)
        if value is _ABSENT:
            return default
        if isinstance(value, bool) or not isinstance(value, int | str):
            self.type_error((*path, key), 'a size such as "10GiB" or a percentage such as "5%"', value)
            return default
        try:
            return parse_min_free(value)
        except ValueError as exc:
            self.value_error((*path, key), exc)
            return default

    def read(self, root: _Table) -> ReadConfig:
        path, t = self.sub(root, (), "read", _READ_KEYS)
        default = ReadConfig()
        return ReadConfig(
            metadata_ttl=self.duration(t, path, "metadata_ttl", default.metadata_ttl),
            negative_ttl=self.duration(t, path, "negative_ttl", default.negative_ttl),
            max_concurrency=self.int_(t, path, "max_concurrency", default.max_concurrency),
            readahead_max=self.size(t, path, "readahead_max", default.readahead_max, lambda v: None),
            max_memory=self.size(t, path, "max_memory", default.max_memory),
            kernel_readahead=self.size(t, path, "kernel_readahead", default.kernel_readahead, lambda v: None),
            offline_grace=self.duration(t, path, "offline_grace", default.offline_grace),
        )

    def write(self, root: _Table) -> WriteConfig:
        path, t = self.sub(root, (), "write", _WRITE_KEYS)
        default = WriteConfig()
        return WriteConfig(
            part_size=self.size(t, path, "part_size", default.part_size, _part_size_problem),
            max_concurrency=self.int_(t, path, "max_concurrency", default.max_concurrency),
            drain_timeout=self.duration(t, path, "drain_timeout", default.drain_timeout),
        )

    def retry(self, root: _Table) -> RetryConfig:
        path, t = self.sub(root, (), "retry", _RETRY_KEYS)
        default = RetryConfig()
        return RetryConfig(
            attempts=self.int_(t, path, "attempts", default.attempts),
            base_delay=self.duration(t, path, "base_delay", default.base_delay),
            max_delay=self.duration(t, path, "max_delay", default.max_delay),
            budget=self.duration(t, path, "budget", default.budget),
            request_timeout=self.duration(t, path, "request_timeout", default.request_timeout, _positive),
        )

    def mounts(self, root: _Table) -> tuple[MountConfig, ...]:
        value = root.get("mount", _ABSENT)
        if value is _ABSENT or value == []:
            self.error(
                ("mount",),
                "no [[mount]] table: a config needs at least one",
                'add [[mount]] with path = "name" and url = "s3://bucket/prefix"',
            )
            return ()
        out: list[MountConfig] = []
        seen = _SeenMounts()
        for ipath, t in self.tables(value, ("mount",), _MOUNT_KEYS, "mount"):
            mount_path = self.str_(
                t,
                ipath,
                "path",
                required=True,
                allow_empty=True,
                hint='every [[mount]] needs path = "name" (a directory under the mount point)',
            )
            url = self.url(t, ipath, "url", hint='every [[mount]] needs url = "s3://bucket/prefix"')
            read_only = self.bool_(t, ipath, "read_only", False)
            if mount_path is not None:
                problem = _mount_path_problem(mount_path)
                if problem:
                    self.error((*ipath, "path"), *problem)
                    mount_path = None
                elif self.mount_conflict(mount_path, (*ipath, "path"), seen):
                    mount_path = None
            if mount_path is not None and url is not None:
                out.append(MountConfig(mount_path, url, read_only))
        return tuple(out)

    def mount_conflict(self, new: str, path: _Path, seen: _SeenMounts) -> bool:
        """Mount paths form a tree of disjoint directories: no duplicates, none inside another.
        Looked up by path and by each parent, so a config of many mounts is checked in linear time."""
        conflict: tuple[str, str, str | None] | None = None
        if new in seen.paths:
            conflict = (f'mount path "{new}" is already used by', new, None)
        elif seen.paths and (new == "" or "" in seen.paths):
            old = "" if "" in seen.paths else next(iter(seen.paths))
            conflict = ('mount path "" (the mount root) cannot be combined with other mounts (', old,
                        'give every mount its own path = "name"')  # fmt: skip
        else:
            parents = [new[:i] for i, c in enumerate(new) if c == "/"]
            inside = next((p for p in parents if p in seen.paths), None)
            if inside is not None:
                conflict = (f'mount path "{new}" is inside mount path "{inside}" (', inside, None)
            elif new in seen.under:
                old = seen.under[new]
                conflict = (f'mount path "{new}" contains mount path "{old}" (', old, None)
        if conflict is None:
            seen.paths[new] = path
            for i, c in enumerate(new):
                if c == "/":
                    seen.under.setdefault(new[:i], new)
            return False
        message, old, hint = conflict
        old_path = seen.paths[old]
        line = self.locator.line(old_path)
        where = _dotted(old_path[:-1]) + (f" at line {line}" if line is not None else "")
        if message.endswith("("):
            message += f"{where})"
        else:
            message += f" {where}"
        self.error(path, message, hint)
        return True

    def direct_access(self, root: _Table) -> tuple[DirectAccess, ...] | None:
        out: list[DirectAccess] = []
        value = root.get("direct_access", _ABSENT)
        if value is _ABSENT:
            return None  # the default applies; `direct_access = []` turns direct access off
        for ipath, t in self.tables(value, ("direct_access",), ("url",), "direct_access"):
            url = self.checked_str(
                t, ipath, "url", _check_glob_url, required=True, hint='e.g. url = "file:///mnt/nfs/*"'
            )
            if url is not None:
                out.append(DirectAccess(url))
        return tuple(out)

    def path_substitution(self, root: _Table) -> tuple[PathSubstitution, ...]:
        out: list[PathSubstitution] = []
        value = root.get("path_substitution", _ABSENT)
        keys = ("registered_prefix", "local_prefix")
        for ipath, t in self.tables(value, ("path_substitution",), keys, "path_substitution"):
            registered = self.checked_str(t, ipath, "registered_prefix", parse_url, required=True)
            local = self.checked_str(t, ipath, "local_prefix", parse_url, required=True)
            if registered is not None and local is not None:
                out.append(PathSubstitution(registered, local))
        return tuple(out)

    def s3(self, root: _Table) -> S3Config:
        path, t = self.sub(root, (), "s3", _S3_KEYS)
        key, secret, token = (self.str_(t, path, k) for k in ("key", "secret", "token"))
        self.key_pair(t, path, key, secret, token)
        creds: list[S3Credentials] = []
        seen: dict[tuple[str | None, str | None], _Path] = {}
        for ipath, c in self.tables(
            t.get("credentials", _ABSENT), (*path, "credentials"), _S3_CRED_KEYS, "s3.credentials"
        ):
            host = self.checked_str(c, ipath, "host", _check_host_port)
            bucket = self.checked_str(c, ipath, "bucket", _check_plain_name)
            if "host" not in c and "bucket" not in c:
                self.error(
                    ipath,
                    "needs host or bucket (or both)",
                    'add host = "minio.internal:9000" or bucket = "name"',
                )
                continue
            for name in ("host", "bucket"):
                if c.get(name) == "":  # an empty name would make the entry match every endpoint or bucket
                    self.error((*ipath, name), "must not be empty", "leave it out, or name what it is for")
            if (host, bucket) in seen and (host or bucket):
                line = self.locator.line(seen[host, bucket])
                self.error(
                    ipath,
                    f"same host and bucket as {_dotted(seen[host, bucket])}"
                    + (f" at line {line}" if line is not None else ""),
                )
            seen.setdefault((host, bucket), ipath)
            ckey, csecret, ctoken = (self.str_(c, ipath, k) for k in ("key", "secret", "token"))
            endpoint = self.checked_str(c, ipath, "endpoint", _check_endpoint)
            if endpoint is not None and host is not None:
                self.error(
                    (*ipath, "endpoint"),
                    "an entry for a host is for s3://host:port/... URLs, which name their endpoint",
                    "drop host, or drop endpoint",
                )
            self.key_pair(c, ipath, ckey, csecret, ctoken)
            creds.append(S3Credentials(
                host=host,
                bucket=bucket,
                key=ckey,
                secret=csecret,
                token=ctoken,
                region=self.str_(c, ipath, "region"),
                secure=self.bool_(c, ipath, "secure", True),
                verify=self.verify(c, ipath),
                multipart=self.bool_(c, ipath, "multipart", True),
                kms_key_id=self.str_(c, ipath, "kms_key_id"),
                endpoint=endpoint,
                addressing_style=self.checked_str(c, ipath, "addressing_style", _check_addressing_style),
            ))  # fmt: skip
        bpath, b = self.sub(t, path, "boto3", _S3_BOTO3_KEYS)
        boto_default = S3Boto3()
        return S3Config(
            key=key,
            secret=secret,
            token=token,
            region=self.str_(t, path, "region"),
            endpoint=self.checked_str(t, path, "endpoint", _check_endpoint),
            addressing_style=self.checked_str(t, path, "addressing_style", _check_addressing_style),
            use_credentials_chain=self.bool_(t, path, "use_credentials_chain", False),
            credentials=tuple(creds),
            boto3=S3Boto3(
                pool_connections=self.int_(b, bpath, "pool_connections", boto_default.pool_connections),
                max_multipart_concurrency=self.int_(
                    b, bpath, "max_multipart_concurrency", boto_default.max_multipart_concurrency
                ),
            ),
        )

    def verify(self, tbl: _Table, path: _Path) -> bool | str:
        value = self.raw(tbl, path, "verify")
        if value is _ABSENT:
            return True
        if isinstance(value, bool) or (isinstance(value, str) and value):
            return value
        self.type_error((*path, "verify"), "true, false or a CA bundle path", value)
        return True

    def gcs(self, root: _Table) -> GcsConfig:
        path, t = self.sub(root, (), "gcs", _GCS_KEYS)
        creds: list[GcsCredentials] = []
        for ipath, c in self.tables(
            t.get("credentials", _ABSENT), (*path, "credentials"), _GCS_CRED_KEYS, "gcs.credentials"
        ):
            bucket = self.checked_str(c, ipath, "bucket", _check_plain_name, required=True)
            subdir = self.checked_str(c, ipath, "subdir", lambda s: _clean_prefix(s, "subdir"))
            if bucket is not None:
                creds.append(GcsCredentials(
                    bucket=bucket,
                    subdir=_clean_prefix(subdir, "subdir") if subdir else "",
                    credentials_json=self.str_(c, ipath, "credentials_json"),
                    project=self.str_(c, ipath, "project"),
                ))  # fmt: skip
        return GcsConfig(
            project=self.str_(t, path, "project"),
            credentials_json=self.str_(t, path, "credentials_json"),
            endpoint=self.checked_str(t, path, "endpoint", _check_endpoint),
            credentials=tuple(creds),
        )

    def azure(self, root: _Table) -> AzureConfig:
        path, t = self.sub(root, (), "azure", _AZURE_KEYS)
        containers: list[AzureContainer] = []
        for ipath, c in self.tables(
            t.get("containers", _ABSENT), (*path, "containers"), _AZURE_CONTAINER_KEYS, "azure.containers"
        ):
            account = self.checked_str(c, ipath, "account_name", _check_plain_name, required=True)
            container = self.checked_str(c, ipath, "container_name", _check_plain_name, required=True)
            secrets = {k: self.str_(c, ipath, k) for k in ("account_key", "connection_string", "sas_token")}
            given = [k for k, v in secrets.items() if v is not None]
            if len(given) > 1:
                self.error(
                    (*ipath, given[1]),
                    f"give only one of account_key, connection_string, sas_token "
                    f"(this entry also has {given[0]})",
                )
            endpoint = self.checked_str(c, ipath, "endpoint", _check_endpoint)
            if account is not None and container is not None:
                containers.append(AzureContainer(
                    account_name=account,
                    account_key=secrets["account_key"],
                    connection_string=secrets["connection_string"],
                    sas_token=secrets["sas_token"],
                    container_name=container,
                    endpoint=endpoint,
                ))  # fmt: skip
        return AzureConfig(tuple(containers))


def _check_plain_name(text: str) -> None:
    """Credential entries only name what they apply to (the URLs are checked in full), but a URL pasted
    where a bare name belongs would silently never match."""
    if "/" in text or ":" in text or any(c.isspace() for c in text):
        hint = None
        shown = shown_url(text)
        if "@" in text:
            shown = "***@" + text.rpartition("@")[2] if shown == text else shown
        elif "://" in text:
            _, _, rest = text.partition("://")
            hint = f'write "{rest.split("/")[0]}"'
        raise InvalidValue(f'"{shown}" is not a plain name (a URL or path?)', hint)


def _check_endpoint(text: str) -> None:
    _check_url_text(text)
    if not re.match(r"https?://[^/\s]+", text):
        raise InvalidValue(f'endpoint "{text}" is not an http:// or https:// URL')


ADDRESSING_STYLES = ("auto", "path", "virtual")


def _check_addressing_style(text: str) -> None:
    if text not in ADDRESSING_STYLES:
        raise InvalidValue(
            f'addressing_style "{text}" is not one of {", ".join(ADDRESSING_STYLES)}',
            '"path" (https://host/bucket/key) suits most S3-compatible servers',
        )


def _load_text(text: str, source: str) -> Config:
    try:
        doc = tomllib.loads(text)
    except RecursionError:
        raise ConfigErrors([ConfigError(
            "arrays or tables are nested too deeply to read", file=source
        )]) from None  # fmt: skip
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
        line: int | None = None
        hint: str | None = None
        if match:
            line = int(match.group(1))
            message = f"TOML syntax error at column {match.group(2)}: {message[: match.start()]}"
            lines = text.splitlines()
            hint = _toml_error_hint(lines[line - 1]) if line <= len(lines) else None
        else:
            message = f"TOML syntax error: {message}"
        raise ConfigErrors([ConfigError(message, file=source, line=line, hint=hint)]) from None
    loader = _Loader(source, text)
    try:
        config = loader.build(doc, source)
    except RecursionError:  # tomllib took it, but walking it (${VAR} expansion) did not
        raise ConfigErrors([ConfigError(
            "arrays or tables are nested too deeply to read", file=source
        )]) from None  # fmt: skip
    if loader.errors:  # in file order, as an editor would show them; those without a line last
        raise ConfigErrors(sorted(loader.errors, key=lambda e: (e.line is None, e.line or 0)))
    return config


MAX_CONFIG_SIZE = 1 * MiB
"""A config is a few KiB; reading more would let /dev/zero or a wrong path exhaust memory."""


def _read_config_file(path: str) -> bytes:
    """The bytes of a regular file of at most MAX_CONFIG_SIZE. Opened without blocking, so a FIFO or a
    device is refused at once instead of waiting for a writer or reading forever."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigErrors([ConfigError(
            "no such file", file=path, hint="expected a TOML config file, or a URL such as s3://bucket/prefix"
        )]) from None  # fmt: skip
    except IsADirectoryError:
        raise ConfigErrors([ConfigError("is a directory, not a config file", file=path)]) from None
    except OSError as exc:
        raise ConfigErrors([ConfigError(f"cannot read: {exc.strerror}", file=path)]) from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise ConfigErrors([ConfigError("is a directory, not a config file", file=path)])
        if not stat.S_ISREG(mode):
            raise ConfigErrors([ConfigError("is not a regular file (a pipe or a device?)", file=path)])
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(MAX_CONFIG_SIZE + 1)
    except OSError as exc:
        raise ConfigErrors([ConfigError(f"cannot read: {exc.strerror}", file=path)]) from None
    finally:
        os.close(fd)
    if len(data) > MAX_CONFIG_SIZE:
        raise ConfigErrors([ConfigError(
            f"is larger than {format_size(MAX_CONFIG_SIZE)}, too large for a config file", file=path
        )])  # fmt: skip
    return data


def load_config(path: str) -> Config:
    """Load a TOML config file; every problem found is raised together as one ConfigErrors."""
    data = _read_config_file(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigErrors([ConfigError("not UTF-8 text", file=path, line=line)]) from None
    return _load_text(text, path)


def config_from_url(url: str) -> Config:
    """`mountfs s3://bucket/prefix /mnt`: the bucket itself is the mount root, everything else default."""
    try:
        store = parse_url(url)
    except InvalidValue as exc:
        raise ConfigErrors([ConfigError(exc.message, file=shown_url(url), hint=exc.hint)]) from None
    return Config(source=url, mounts=(MountConfig("", store, False),))


SECRET_ENVIRONMENT = (
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_STORAGE_KEY", "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_SAS_TOKEN",
)  # fmt: skip


def secret_values(config: Config) -> list[str]:
    """Every secret the daemon holds (from the config and the environment), for its log to hide:
    SDKs log signed headers at debug level, a session token among them. Access key IDs are not
    secret (they name the key) and stay visible for debugging; very short values would hide too much."""
    values: list[str | None] = [config.s3.secret, config.s3.token]
    for cred in config.s3.credentials:
        values += [cred.secret, cred.token]
    for json_text in [config.gcs.credentials_json, *(c.credentials_json for c in config.gcs.credentials)]:
        if json_text and json_text.lstrip().startswith("{"):  # the key itself, not the path of its file
            values.append(json_text)
    for container in config.azure.containers:
        values += [container.account_key, container.connection_string, container.sas_token]
    values += [os.environ.get(name) for name in SECRET_ENVIRONMENT]
    for text in list(values):  # a connection string's key or signature may be logged on its own
        for part in (text or "").split(";"):
            name, _, value = part.partition("=")
            if name.strip() in ("AccountKey", "SharedAccessSignature"):
                values.append(value)
    found = {v for v in values if v and len(v) >= 6}
    return sorted(found, key=len, reverse=True)  # the longest first, so no part of one is left


_URL_START = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_SCHEME_START = re.compile(r"(s3|gs|az|file):", re.IGNORECASE)


def load_source(source: str) -> Config:
    """SOURCE on the command line is a URL or a config file; "s3:bucket" (a URL typo) is read as a URL
    unless a file of that name exists, so the user gets the URL's error rather than "no such file"."""
    if _URL_START.match(source) or (_SCHEME_START.match(source) and not os.path.exists(source)):
        return config_from_url(source)
    return load_config(source)
