"""Fuzzing what users (and stores) hand mountfs: config files as text and bytes, store URLs, `-o`
options and store keys turned into file names. Whatever comes in, the answer is a value or one
ConfigError/MountSetupError per problem, each one printable line that never shows a secret.

`make test` tries a few dozen inputs per property, the same ones every run; `make fuzz` sets
MOUNTFS_FUZZ_EXAMPLES to try many more, fresh ones each run, and MOUNTFS_FUZZ_RECORD to write its
figures to RELIABILITY.md.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mountfs.config import (
    Config,
    InvalidValue,
    MountConfig,
    config_from_url,
    load_config,
    parse_url,
    shown_url,
)
from mountfs.errors import ConfigError, ConfigErrors
from mountfs.mount import MountOptions, MountSetupError, parse_options
from mountfs.namespace.listing import NAME_MAX, entry_name

LONG_RUN = "MOUNTFS_FUZZ_EXAMPLES" in os.environ
EXAMPLES = int(os.environ.get("MOUNTFS_FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not LONG_RUN,  # make test: the same inputs every run; make fuzz: new ones
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)

# AWS secrets hold "/" and "+"; the access key ID counts as secret too (config errors never show it)
SECRET = "fUzZsEcReT/wJalrXUtnFEMI+K7MDENG"
KEY_ID = "AKIAFUZZKEYID7EXAMPLE"
SECRET_KEYS = ("key", "secret", "token", "account_key", "connection_string", "sas_token", "credentials_json")

STATS = {"inputs tried": 0, "errors checked": 0, "tracebacks": 0, "secrets shown": 0}


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    """`make fuzz` records what this module tried, once all its properties ran."""
    yield
    if os.environ.get("MOUNTFS_FUZZ_RECORD"):
        from tests.reliability.report import record

        record("fuzz", "make fuzz", {**STATS, "properties": 7, "examples per property": EXAMPLES})


def check_line(line: str) -> None:
    STATS["errors checked"] += 1
    if SECRET in line or KEY_ID in line or SECRET.split("/")[0] in line:
        STATS["secrets shown"] += 1
        raise AssertionError(f"a secret in an error: {line!r}")
    assert line and "\n" not in line and line.isprintable(), line


def tried(call: Callable[[], object]) -> object:
    """Run one input; count it, and count whatever escapes as anything but a MountfsError."""
    STATS["inputs tried"] += 1
    try:
        return call()
    except (ConfigErrors, ConfigError, InvalidValue, MountSetupError):
        raise
    except BaseException:
        STATS["tracebacks"] += 1
        raise


def check_config_errors(exc: ConfigErrors) -> None:
    assert exc.errors
    for error in exc.errors:
        check_line(error.format())


# --- strategies --------------------------------------------------------------------------------

SCHEMES = ["s3", "gs", "az", "file", "S3", "gcs", "http", "https", "s4", "", "minio", "file:"]
HOSTS = ["minio.internal:9000", "127.0.0.1:8333", "[::1]:9000", "host:0", "host:http", ":9000", "bad_host:1"]
NAMES = ["bucket", "my-bucket", "a", "Bucket", "a..b", "192.168.1.1", "acct", "x" * 64, "-x-", "con--t", ""]
PIECES = [
    "",
    "/",
    "//",
    ".",
    "..",
    "@",
    ":",
    "%2F",
    "*",
    "?",
    " ",
    "\t",
    "\x00",
    "\x1b[2J",
    "\n",
    "é",
    "\ud800",
    "\udc80",
    "😀",
    "${HOME}",
    "${",
    "a b",
]

# user@ and user:password@, as URLs write them; a bare "SECRET@" holding a "/" is a bucket and a prefix
credentials = st.sampled_from(
    [
        f"{KEY_ID}:{SECRET}@",
        f"{KEY_ID}@",
        f":{SECRET}@",
        f"{KEY_ID}:{SECRET}@@",
        f"{KEY_ID}:{SECRET}@/",
    ]
)
url_piece = st.one_of(st.sampled_from(NAMES + HOSTS + PIECES), st.text(max_size=8))


@st.composite
def urls(draw: st.DrawFn, with_credentials: bool | None = None) -> str:
    scheme = draw(st.sampled_from(SCHEMES))
    slashes = draw(st.sampled_from(["://", ":/", ":", ":///", "://"]))
    creds = ""
    path_only = scheme.lower() == "file" and slashes == ":///"  # file:///a:b@c is a path, not credentials
    if not path_only and (with_credentials or (with_credentials is None and draw(st.booleans()))):
        creds = draw(credentials)
    parts = draw(st.lists(url_piece, max_size=5))
    return draw(st.sampled_from(["", " "])) + scheme + slashes + creds + "/".join(parts)


def toml_string(text: str) -> str:
    return json.dumps(text)  # a JSON string is a TOML basic string, "\ud800" aside (a TOML error)


SECRET_VALUES = [
    f'"{SECRET}"',
    SECRET,
    f"'{SECRET}'",
    f'"{SECRET}',
    f'"{SECRET}" x',
    f'["{SECRET}"]',
    f'{{a = "{SECRET}"}}',
    f'"""{SECRET}',
    f'"{SECRET}\\u0000"',
    f'"{SECRET}\\n"',
    f"{SECRET} 1h",
    f'= "{SECRET}"',
    f'"{SECRET}/"',
    f'"{KEY_ID}/x"',
    f'"{KEY_ID}"',
    f"{KEY_ID}",
    f'"{SECRET}\\u001b"',
    f'"${{FUZZ_NO_SUCH_VAR}}{SECRET}"',
]
plain_values = st.one_of(
    st.sampled_from(
        [
            '"4MiB"',
            "4MiB",
            "12",
            "-1",
            "0",
            "1.5",
            "inf",
            "nan",
            "true",
            "yes",
            '"yes"',
            '""',
            '"/"',
            '"//"',
            '"relative"',
            "[]",
            "[1, 2]",
            "{}",
            '"${HOME}"',
            '"${X"',
            '"5%"',
            '"100%"',
            '"1h30m"',
            '"-5s"',
            "1979-05-27",
            "[[1]]",
            '"path"',
            '"auto"',
        ]
    ),
    st.integers().map(str),
    urls().map(toml_string),
    st.text(max_size=20).map(toml_string),
    st.text(max_size=12),
)
PLAIN_KEYS = [
    "path",
    "url",
    "read_only",
    "dir",
    "max_size",
    "max_files",
    "expiry",
    "block_size",
    "min_free",
    "metadata_ttl",
    "max_memory",
    "part_size",
    "max_concurrency",
    "attempts",
    "budget",
    "host",
    "bucket",
    "region",
    "endpoint",
    "addressing_style",
    "secure",
    "verify",
    "account_name",
    "container_name",
    "subdir",
    "project",
    "registered_prefix",
    "local_prefix",
    "unknown",
    "maxsize",
    '"quoted key"',
    "a.b",
]
HEADERS = [
    "[[mount]]",
    "[cache]",
    "[read]",
    "[write]",
    "[retry]",
    "[s3]",
    "[[s3.credentials]]",
    "[s3.boto3]",
    "[gcs]",
    "[[gcs.credentials]]",
    "[[azure.containers]]",
    "[[direct_access]]",
    "[[path_substitution]]",
    "[mount]",
    "[[cache]]",
    "[s3.credentials]",
    "[x",
    "[[",
    "[]",
    "[a.b.c]",
]

secret_line = st.builds(
    lambda k, v: f"{k} = {v}", st.sampled_from(SECRET_KEYS), st.sampled_from(SECRET_VALUES)
)
plain_line = st.builds(lambda k, v: f"{k} = {v}", st.sampled_from(PLAIN_KEYS), plain_values)
credential_url_line = st.builds(
    lambda k, u: f"{k} = {toml_string(u)}",
    st.sampled_from(["url", "endpoint", "host", "bucket", "registered_prefix", "local_prefix"]),
    urls(with_credentials=True),
)
lines = st.one_of(
    st.sampled_from(HEADERS), secret_line, plain_line, credential_url_line, st.text(max_size=30)
)


@st.composite
def configs(draw: st.DrawFn) -> str:
    body = draw(st.lists(lines, max_size=14))
    if draw(st.booleans()):  # most inputs get past "no [[mount]]" to the checks behind it
        body.insert(0, '[[mount]]\npath = "data"\nurl = "file:///srv/data"')
    return draw(st.sampled_from(["\n", "\r\n"])).join(body) + draw(st.sampled_from(["", "\n"]))


# --- properties --------------------------------------------------------------------------------

WORK = Path(tempfile.mkdtemp(prefix="mountfs-fuzz-"))


def load_bytes(data: bytes) -> Config | None:
    path = WORK / "fuzz.toml"
    path.write_bytes(data)
    try:
        config = tried(lambda: load_config(str(path)))
    except ConfigErrors as exc:
        check_config_errors(exc)
        return None
    assert isinstance(config, Config)
    assert SECRET not in repr(config) and KEY_ID not in repr(config)
    return config


@FUZZ
@given(configs())
def test_any_config_text_gives_a_config_or_one_line_per_error(text: str) -> None:
    load_bytes(text.encode("utf-8", "surrogatepass"))


@FUZZ
@given(st.one_of(st.text(), st.binary()))
def test_any_bytes_as_a_config_give_a_config_or_one_line_per_error(data: str | bytes) -> None:
    load_bytes(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)


# Found by `make fuzz`: an access key id before an Azure URL's "@" was taken for a container name
AZURE_KEY_AT = (f"az://{KEY_ID}@", f"az://{KEY_ID}@bucket", f"az://{KEY_ID}@\x1f")


@FUZZ
@given(st.one_of(urls(), st.text()))
@example(AZURE_KEY_AT[0]).via("make fuzz")
@example(AZURE_KEY_AT[1]).via("make fuzz")
@example(AZURE_KEY_AT[2]).via("make fuzz")
def test_any_url_is_a_store_or_one_line_without_its_credentials(url: str) -> None:
    try:
        config = tried(lambda: config_from_url(url))
    except ConfigErrors as exc:
        check_config_errors(exc)
        return
    assert isinstance(config, Config)
    (mount,) = config.mounts
    assert isinstance(mount, MountConfig) and "@" not in (mount.url.host or "")
    assert not any(c in url for c in "\x00\n\x1b")


@FUZZ
@given(urls())
@example(AZURE_KEY_AT[1]).via("make fuzz")
def test_any_url_in_a_config_is_checked_as_on_the_command_line(url: str) -> None:
    text = f'[[mount]]\npath = "m"\nurl = {toml_string(url)}\n'
    config = load_bytes(text.encode("utf-8", "surrogatepass"))
    if config is not None and "$" not in url:  # a config expands ${VAR}; the command line does not
        assert config.mounts[0].url == parse_url(url, bucketless=True)


@FUZZ
@given(urls())
@example(AZURE_KEY_AT[0]).via("make fuzz")
def test_a_shown_url_has_no_credentials_and_is_one_line(url: str) -> None:
    shown = tried(lambda: shown_url(url))
    assert isinstance(shown, str)
    assert SECRET not in shown and KEY_ID not in shown and shown.isprintable()


OPTION_NAMES = [
    "uid",
    "gid",
    "umask",
    "cache_dir",
    "block_size",
    "log",
    "fsname",
    "allow_other",
    "allow_root",
    "default_permissions",
    "ro",
    "rw",
    "nonempty",
    "debug",
    "cache_local",
    "x-systemd.after",
    "comment",
    "colour",
    "",
]
option_values = st.one_of(
    st.sampled_from(
        [
            "",
            "0",
            "022",
            "-1",
            "7777777",
            "777",
            "1000",
            "8",
            "4MiB",
            "1TiB",
            "64KiB",
            "٢",
            "0x1f",
            "4294967295",
            "4294967294",
            "/tmp/x",
            " ",
            "=",
            ",",
        ]
    ),
    st.text(max_size=10),
)
option_items = st.one_of(
    st.sampled_from(OPTION_NAMES),
    st.builds(lambda n, v: f"{n}={v}", st.sampled_from(OPTION_NAMES), option_values),
    st.text(max_size=12),
)


@FUZZ
@given(st.lists(st.lists(option_items, max_size=5).map(",".join), max_size=3))
def test_any_mount_options_are_options_or_one_line(values: list[str]) -> None:
    try:
        options = tried(lambda: parse_options(values))
    except MountSetupError as exc:
        check_line(str(exc))
        return
    assert isinstance(options, MountOptions)
    assert 0 <= options.umask <= 0o777 and options.uid >= 0 and options.gid >= 0
    assert not (options.allow_other and options.allow_root)


key_text = st.one_of(
    st.text(st.characters(codec=None), max_size=12),  # surrogates too: a JSON listing may carry them
    st.sampled_from(
        ["", "/", "//", ".", "..", "./", "../", "a/", "a//", "a/b", "\x00", "x" * 300, "é" * 128]
    ),
)


@FUZZ
@given(st.sampled_from(["", "dir/", "a/b/", "é/"]), key_text)
def test_any_key_maps_to_a_valid_file_name_or_none(prefix: str, rest: str) -> None:
    key = prefix + rest
    name = tried(lambda: entry_name(prefix, key))
    if name is None:
        return
    assert isinstance(name, bytes)
    assert name not in (b"", b".", b"..") and b"/" not in name and b"\0" not in name
    assert len(name) <= NAME_MAX
    assert os.fsdecode(name) == (rest.rstrip("/") if rest.endswith("/") else rest)
