"""Tests for mountfs.config: parsers, URL rules, and the exact text of every kind of config error."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from mountfs import config
from mountfs.config import (
    AzureContainer,
    CacheConfig,
    Config,
    DirectAccess,
    GcsCredentials,
    InvalidValue,
    MinFree,
    MountConfig,
    PathSubstitution,
    ReadConfig,
    S3Boto3,
    S3Config,
    S3Credentials,
    StoreUrl,
    WriteConfig,
    config_from_url,
    default_cache_dir,
    format_size,
    load_config,
    load_source,
    parse_duration,
    parse_min_free,
    parse_size,
    parse_url,
)
from mountfs.errors import ConfigError, ConfigErrors

KiB, MiB, GiB = 1024, 1024**2, 1024**3
SIZE_FORMS = 'expected a number with an optional unit, e.g. "4MiB", "200GiB", "1.5GB" or "512"'
SIZE_UNITS = "(use B, KiB, MiB, GiB, TiB, PiB or KB, MB, GB, TB, PB)"
DURATION_FORMS = 'expected a number with a unit, e.g. "500ms", "90s", "5m", "2h", "7d"'
SCHEMES = ("(supported: s3, gs, az, file, fs and https; aliases: s3a, s3n, aws, minio, gcs, gcp, google, "
           "azure, abfs, abfss, wasb, wasbs, local, path)")
FILE_HINT = "use three slashes and an absolute path, e.g. file:///mnt/data"

MOUNT = '[[mount]]\npath = "a"\nurl = "s3://bucket-a"\n'

# The example from DESIGN.md, verbatim.
DESIGN_EXAMPLE = """\
[cache]
dir = "/var/cache/mountfs"
max_size = "200GiB"        # LRU eviction above this
max_files = 1_000_000      # like StorageManager.set_cache_file_limit
expiry = "7d"              # blocks unused this long are dropped
block_size = "4MiB"

[[mount]]                   # one directory under the mount point per bucket/prefix
path = "imagenet"
url = "s3://minio.internal:9000/datasets/imagenet"
read_only = true

[[mount]]
path = "ckpt"
url = "gs://team-ckpt/runs"

[[direct_access]]           # matched paths bypass the cache: served from the local/NFS path itself
url = "file:///mnt/nfs/*"

[[path_substitution]]       # a registered prefix served from a local prefix instead
registered_prefix = "s3://datasets/research"
local_prefix = "file:///mnt/nfs/research"

[s3]                        # default for every bucket; per-bucket or per-host entries override
key = "${AWS_ACCESS_KEY_ID}"
secret = "${AWS_SECRET_ACCESS_KEY}"
region = "us-east-1"
use_credentials_chain = false
[[s3.credentials]]
host = "minio.internal:9000"   # port always given for non-AWS endpoints
key = "..."
secret = "..."
secure = false                 # http vs https
verify = true                  # or a CA bundle path
multipart = true
[[s3.credentials]]
bucket = "secure-bucket"
kms_key_id = "arn:aws:kms:..."  # SSE-KMS on upload

[gcs]
project = "p"
credentials_json = "${GOOGLE_APPLICATION_CREDENTIALS}"   # a path, or the JSON itself
[[gcs.credentials]]
bucket = "b"
subdir = "path/in/bucket"
credentials_json = "/etc/mountfs/b.json"

[[azure.containers]]
account_name = "${AZURE_STORAGE_ACCOUNT}"
account_key = "${AZURE_STORAGE_KEY}"      # or connection_string / sas_token
container_name = "c"
"""


def write(tmp_path: Path, text: str, name: str = "c.toml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def load(tmp_path: Path, text: str) -> Config:
    return load_config(write(tmp_path, text))


def errors(tmp_path: Path, text: str) -> list[ConfigError]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigErrors) as info:
        load_config(path)
    assert str(info.value) == "\n".join(e.format() for e in info.value.errors)
    return info.value.errors


def messages(tmp_path: Path, text: str) -> list[str]:
    """Every error as the user sees it, with the temp directory cut off the file name."""
    return [e.format().replace(f"{tmp_path}/", "") for e in errors(tmp_path, text)]


def url_error(text: str) -> InvalidValue:
    with pytest.raises(InvalidValue) as info:
        parse_url(text)
    return info.value


@pytest.fixture
def design_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "topsecret")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/etc/gcp.json")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT", "acct")
    monkeypatch.setenv("AZURE_STORAGE_KEY", "azkey==")


# ---------------------------------------------------------------------------------------------------------
# The DESIGN.md example


def test_design_example_loads(tmp_path: Path, design_env: None) -> None:
    path = write(tmp_path, DESIGN_EXAMPLE)
    cfg = load_config(path)
    assert cfg.source == path
    assert cfg.cache == CacheConfig("/var/cache/mountfs", 200 * GiB, 1_000_000, 7 * 86400.0, 4 * MiB)
    assert cfg.read == ReadConfig(60.0, 5.0, 16, 256 * MiB, 192 * MiB)
    assert cfg.write == WriteConfig(16 * MiB, 8)
    assert cfg.mounts == (
        MountConfig(
            "imagenet",
            StoreUrl("s3", "minio.internal:9000", "datasets", "imagenet", "s3://minio.internal:9000/datasets/imagenet"),
            True,
        ),
        MountConfig("ckpt", StoreUrl("gs", None, "team-ckpt", "runs", "gs://team-ckpt/runs"), False),
    )
    assert cfg.direct_access == (DirectAccess("file:///mnt/nfs/*"),)
    assert cfg.path_substitution == (PathSubstitution("s3://datasets/research", "file:///mnt/nfs/research"),)
    assert cfg.s3 == S3Config(
        key="AKIAEXAMPLE",
        secret="topsecret",
        token=None,
        region="us-east-1",
        use_credentials_chain=False,
        credentials=(
            S3Credentials(host="minio.internal:9000", key="...", secret="...", secure=False, verify=True),
            S3Credentials(bucket="secure-bucket", kms_key_id="arn:aws:kms:..."),
        ),
        boto3=S3Boto3(32, None),
    )
    assert cfg.s3.credentials[1].secure is True and cfg.s3.credentials[1].multipart is True
    assert cfg.gcs.project == "p"
    assert cfg.gcs.credentials_json == "/etc/gcp.json"
    assert cfg.gcs.endpoint is None
    assert cfg.gcs.credentials == (GcsCredentials("b", "path/in/bucket", "/etc/mountfs/b.json", None),)
    assert cfg.azure.containers == (
        AzureContainer(account_name="acct", account_key="azkey==", container_name="c"),
    )


def test_design_example_without_env_names_every_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "GOOGLE_APPLICATION_CREDENTIALS",
                 "AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    got = messages(tmp_path, DESIGN_EXAMPLE)
    hint = "(set it, or give a default: ${{{}:-...}})"
    assert got == [
        "c.toml:25: s3.key: environment variable AWS_ACCESS_KEY_ID is not set "
        + hint.format("AWS_ACCESS_KEY_ID"),
        "c.toml:26: s3.secret: environment variable AWS_SECRET_ACCESS_KEY is not set "
        + hint.format("AWS_SECRET_ACCESS_KEY"),
        "c.toml:42: gcs.credentials_json: environment variable GOOGLE_APPLICATION_CREDENTIALS is not set "
        + hint.format("GOOGLE_APPLICATION_CREDENTIALS"),
        "c.toml:49: azure.containers[0].account_name: environment variable AZURE_STORAGE_ACCOUNT is not set "
        + hint.format("AZURE_STORAGE_ACCOUNT"),
        "c.toml:50: azure.containers[0].account_key: environment variable AZURE_STORAGE_KEY is not set "
        + hint.format("AZURE_STORAGE_KEY"),
    ]


def test_minimal_config_gets_all_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)
    cfg = load(tmp_path, MOUNT)
    assert cfg.cache == CacheConfig("/var/cache/mountfs", 200 * GiB, 1_000_000, 604800.0, 4 * MiB)
    assert cfg.read == ReadConfig()
    assert cfg.write == WriteConfig()
    assert cfg.mounts == (MountConfig("a", StoreUrl("s3", None, "bucket-a", "", "s3://bucket-a"), False),)
    assert cfg.direct_access is None and cfg.path_substitution == ()
    assert cfg.s3 == S3Config() and cfg.gcs == config.GcsConfig() and cfg.azure == config.AzureConfig()


def test_every_section_with_non_default_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/u")
    (tmp_path / "ca.pem").write_text("")
    monkeypatch.setenv("CA_PEM", str(tmp_path / "ca.pem"))
    cfg = load(tmp_path, MOUNT + """\
        [cache]
        dir = "~/cache/"
        max_size = 1073741824
        expiry = 3600
        block_size = "64KiB"
        [read]
        metadata_ttl = "2m"
        negative_ttl = 0
        max_concurrency = 4
        readahead_max = "0"
        max_memory = "1GB"
        offline_grace = "2h"
        [write]
        part_size = "5MiB"
        max_concurrency = 2
        drain_timeout = "90s"
        [s3]
        token = "${NO_SUCH_TOKEN_VAR:-}"
        use_credentials_chain = true
        [s3.boto3]
        pool_connections = 8
        max_multipart_concurrency = 4
        [[s3.credentials]]
        host = "[::1]:9000"
        bucket = "b-1"
        verify = "${CA_PEM}"
        region = "eu-west-1"
        [gcs]
        endpoint = "http://127.0.0.1:4443"
        [[gcs.credentials]]
        bucket = "bkt"
        project = "proj"
        subdir = "x/y/"
        [[azure.containers]]
        account_name = "devstoreaccount1"
        sas_token = "sv=2020"
        container_name = "cont"
        endpoint = "http://127.0.0.1:10000/devstoreaccount1"
        """)
    assert cfg.cache == CacheConfig("/home/u/cache", GiB, 1_000_000, 3600.0, 64 * KiB)
    assert cfg.read == ReadConfig(120.0, 0.0, 4, 0, 10**9, offline_grace=7200.0)
    assert cfg.write == WriteConfig(5 * MiB, 2, 90.0)
    assert cfg.s3.token is None  # an empty value counts as not set
    assert cfg.s3.use_credentials_chain is True
    assert cfg.s3.boto3 == S3Boto3(8, 4)
    assert cfg.s3.credentials == (
        S3Credentials(host="[::1]:9000", bucket="b-1", verify=str(tmp_path / "ca.pem"), region="eu-west-1"),
    )
    assert cfg.gcs.endpoint == "http://127.0.0.1:4443"
    assert cfg.gcs.credentials == (GcsCredentials("bkt", "x/y", None, "proj"),)
    assert cfg.azure.containers == (
        AzureContainer(
            account_name="devstoreaccount1",
            sas_token="sv=2020",
            container_name="cont",
            endpoint="http://127.0.0.1:10000/devstoreaccount1",
        ),
    )


# ---------------------------------------------------------------------------------------------------------
# Sizes and durations


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4MiB", 4 * MiB),
        ("200GiB", 200 * GiB),
        ("1.5GB", 1_500_000_000),
        ("100KB", 100_000),
        ("4M", 4 * MiB),
        ("4m", 4 * MiB),
        ("1k", KiB),
        ("2T", 2 * 1024**4),
        ("1PiB", 1024**5),
        ("512", 512),
        ("512B", 512),
        (" 1 KiB ", KiB),
        ("1.5KiB", 1536),
        (".5MiB", MiB // 2),
        ("0", 0),
        (512, 512),
        (0, 0),
    ],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("4XB", f'invalid size "4XB": unknown unit "XB" {SIZE_UNITS}'),
        ("lots", f'invalid size "lots": {SIZE_FORMS}'),
        ("", f'invalid size "": {SIZE_FORMS}'),
        ("1.2.3MiB", f'invalid size "1.2.3MiB": {SIZE_FORMS}'),
        ("-4MiB", 'invalid size "-4MiB": must not be negative'),
        (-1, "invalid size -1: must not be negative"),
        (True, 'invalid size True: expected a string such as "4MiB" or a number of bytes'),
    ],
)
def test_parse_size_rejects(text: str | int, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_size(text)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500ms", 0.5),
        ("90s", 90.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("7d", 604800.0),
        ("1w", 604800.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        (" 10 s ", 10.0),
        ("90", 90.0),
        ("0.25", 0.25),
        (90, 90.0),
        (1.5, 1.5),
        (0, 0.0),
    ],
)
def test_parse_duration(text: str | int | float, expected: float) -> None:
    assert parse_duration(text) == expected
    assert isinstance(parse_duration(text), float)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("5x", 'invalid duration "5x": unknown unit "x" (use ms, s, m, h, d or w)'),
        ("soon", f'invalid duration "soon": {DURATION_FORMS}'),
        ("", f'invalid duration "": {DURATION_FORMS}'),
        ("1h30", f'invalid duration "1h30": {DURATION_FORMS}'),
        ("-5s", 'invalid duration "-5s": must not be negative'),
        (-1, "invalid duration -1: must be a finite number of seconds, not negative"),
        (float("nan"), "invalid duration nan: must be a finite number of seconds, not negative"),
        (False, 'invalid duration False: expected a string such as "90s" or a number of seconds'),
    ],
)
def test_parse_duration_rejects(text: str | int | float, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(text)
    assert str(info.value) == message


def test_format_size() -> None:
    assert [format_size(n) for n in (4 * MiB, 3 * GiB, KiB, 1536, 100_000, 0)] == [
        "4MiB", "3GiB", "1KiB", "1536 bytes", "100000 bytes", "0 bytes",
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# URLs


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("s3://bucket", ("s3", None, "bucket", "")),
        ("s3://bucket/", ("s3", None, "bucket", "")),
        ("s3://my.bucket-1/a/b/", ("s3", None, "my.bucket-1", "a/b")),
        ("s3://minio.internal:9000/datasets/imagenet", ("s3", "minio.internal:9000", "datasets", "imagenet")),
        ("s3://127.0.0.1:9000/data", ("s3", "127.0.0.1:9000", "data", "")),
        ("s3://[::1]:9000/data/x", ("s3", "[::1]:9000", "data", "x")),
        ("S3://bucket/Key/With Spaces", ("s3", None, "bucket", "Key/With Spaces")),
        ("gs://team-ckpt/runs", ("gs", None, "team-ckpt", "runs")),
        ("gs://under_score", ("gs", None, "under_score", "")),
        # the account of an az:// URL without "@" is decided with the config (resolve_account)
        ("az://account1/container-1/some/prefix", ("az", None, "account1", "container-1/some/prefix")),
        ("az://acct/cont", ("az", None, "acct", "cont")),
        ("s3://cars_2020_20_10/truck.jpg", ("s3", None, "cars_2020_20_10", "truck.jpg")),
        ("s3a://bucket/p", ("s3", None, "bucket", "p")),
        ("google://bucket/p", ("gs", None, "bucket", "p")),
        ("azure://cont@acct/p", ("az", "acct", "cont", "p")),
        ("s3://host:9000", ("s3", "host:9000", "", "")),
        ("file:///mnt/nfs/research", ("file", None, "/mnt/nfs/research", "")),
        ("file:///mnt//data/./x/", ("file", None, "/mnt/data/x", "")),
        ("file:///", ("file", None, "/", "")),
    ],
)
def test_parse_url(text: str, expected: tuple[str, str | None, str, str]) -> None:
    url = parse_url(text)
    assert (url.scheme, url.host, url.bucket, url.prefix) == expected
    assert url.raw == text


@pytest.mark.parametrize(
    ("text", "message", "hint"),
    [
        # S3 names follow the widest store rule (AWS's legacy names): uppercase and "_" pass, see test_urls
        ("s3://ab", 'S3 bucket name "ab" is 2 characters long (must be 3 to 255)', None),
        ("s3://" + "a" * 256, f'S3 bucket name "{"a" * 256}" is 256 characters long (must be 3 to 255)',
         None),
        ("s3://My Bucket/x",
         'S3 bucket name "My Bucket" contains " " (allowed: letters, digits, ".", "-" and "_")', None),
        ("s3://a..b", 'S3 bucket name "a..b" must not contain ".."', None),
        ("s3://192.168.1.1", 'S3 bucket name "192.168.1.1" must not look like an IP address',
         "an endpoint needs its port: s3://192.168.1.1:9000/bucket"),
        ("s3://", '"s3://" has no bucket', "expected s3://bucket/prefix"),
        ("gs:///x", '"gs:///x" has no bucket', "expected gs://bucket/prefix"),
        ("gs://Bad", 'GCS bucket name "Bad" contains "B" '
         '(allowed: lowercase letters, digits, "-", "_" and ".")', "names are lowercase"),
        ("s3://host:9000//x", '"s3://host:9000//x" has no bucket after the host "host:9000"',
         "expected s3://host:port/bucket/prefix, or s3://host:port/ for every bucket"),
        ("s3://host:0/b", 'port "0" in "host:0" must be a number from 1 to 65535', None),
        ("s3://host:65536/bkt", 'port "65536" in "host:65536" must be a number from 1 to 65535', None),
        ("s3://host:http/bkt", 'port "http" in "host:http" must be a number from 1 to 65535', None),
        ("s3://:9000/bkt", '":9000" has a port but no host', None),
        ("s3://bad_host:9000/bkt", '"bad_host" is not a valid host name', None),
        ("s3://key:secret@host:9000/bkt", '"s3://***@host:9000/bkt" carries credentials',
         "put them in [s3] or [[s3.credentials]], not in the URL"),
        ("s3://bucket/a//b", 'prefix "a//b" has an empty segment ("//" or a leading "/")', None),
        ("s3://bucket//a", 'prefix "/a" has an empty segment ("//" or a leading "/")', None),
        ("s3://bucket/a/../b", 'prefix "a/../b" must not contain "." or ".." segments', None),
        ("az://Acct/cont", 'Azure container name "Acct" contains "A" '
         '(allowed: lowercase letters, digits, "-" and "_")', "names are lowercase"),
        ("az:///cont", '"az:///cont" has no container', "expected az://container@account/path, "
         "az://container/path with an account configured, "
         "abfss://container@account.dfs.core.windows.net/path or https://account.blob.core.windows.net/container/path"),
        ("az://a--b/x", 'Azure container name "a--b" must not contain "--"', None),
        ("file://relative/path", 'file URL "file://relative/path" is not absolute',
         FILE_HINT),
        ("file:relative", 'file URL "file:relative" is not absolute',
         FILE_HINT),
        ("file:/abs", 'file URL "file:/abs" is not absolute',
         FILE_HINT),
        ("file:///mnt/../etc", 'file URL "file:///mnt/../etc" must not contain ".." segments', None),
        ("s4://bucket", f'unknown scheme "s4://" in "s4://bucket" {SCHEMES}', 'did you mean "s3://"?'),
        ("gcx://bucket", f'unknown scheme "gcx://" in "gcx://bucket" {SCHEMES}', 'did you mean "gcp://"?'),
        ("fiel:///x", f'unknown scheme "fiel://" in "fiel:///x" {SCHEMES}', 'did you mean "file://"?'),
        ("ftp://host/x", f'unknown scheme "ftp://" in "ftp://host/x" {SCHEMES}', None),
        ("bucket/prefix", '"bucket/prefix" is not a store URL',
         "expected scheme://bucket/prefix with scheme s3, gs, az or file"),
        ("", '"" is not a store URL', "expected scheme://bucket/prefix with scheme s3, gs, az or file"),
        ("s3:bucket/x", '"s3:bucket/x" is missing "//" after "s3:"', "write s3://bucket/x"),
    ],
)
def test_parse_url_rejects(text: str, message: str, hint: str | None) -> None:
    err = url_error(text)
    assert (err.message, err.hint) == (message, hint)
    assert str(err) == (f"{message} ({hint})" if hint else message)
    assert isinstance(err, ValueError)


# ---------------------------------------------------------------------------------------------------------
# ${VAR} references


def test_env_references(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MFS_BUCKET", "from-env")
    monkeypatch.setenv("MFS_EMPTY", "")
    monkeypatch.delenv("MFS_UNSET", raising=False)
    cfg = load(tmp_path, """\
        [cache]
        dir = "/cache/${MFS_UNSET:-default}/x"
        max_size = "${MFS_UNSET:-1GiB}"
        [[mount]]
        path = "lit$${NOT_A_VAR}$HOME$"
        url = "s3://${MFS_BUCKET}/p-${MFS_EMPTY:-fallback}"
        """)
    assert cfg.cache.dir == "/cache/default/x"
    assert cfg.cache.max_size == GiB
    assert cfg.mounts[0].path == "lit${NOT_A_VAR}$HOME$"
    assert cfg.mounts[0].url.bucket == "from-env"
    assert cfg.mounts[0].url.prefix == "p-fallback"  # like the shell: ":-" also covers an empty value


def test_env_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_KEY", raising=False)
    got = messages(tmp_path, MOUNT + """\
        [s3]
        region = "us-east-1"
        key = "${AWS_KEY}"
        secret = "${1BAD}"
        token = "${UNCLOSED"
        """)
    assert got == [
        "c.toml:6: s3.key: environment variable AWS_KEY is not set "
        "(set it, or give a default: ${AWS_KEY:-...})",
        'c.toml:7: s3.secret: malformed reference "${1BAD}" (write ${NAME} or ${NAME:-default})',
        'c.toml:8: s3.token: unclosed "${" (write $${ for a literal ${)',
    ]


def test_env_error_is_not_reported_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MFS_URL", raising=False)
    got = messages(tmp_path, '[[mount]]\npath = "a"\nurl = "${MFS_URL}"\n')
    assert got == ["c.toml:3: mount[0].url: environment variable MFS_URL is not set "
                   "(set it, or give a default: ${MFS_URL:-...})"]  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# Unknown keys, wrong types, line numbers


def test_unknown_key_in_second_mount_points_at_its_line(tmp_path: Path) -> None:
    got = messages(tmp_path, """\
        [[mount]]
        path = "a"
        url = "s3://bucket-a"

        [[mount]]
        path = "b"
        urll = "s3://bucket-b"
        """)
    assert got == [
        'c.toml:5: mount[1].url: required key is missing (every [[mount]] needs url = "s3://bucket/prefix")',
        'c.toml:7: mount[1].urll: unknown key (did you mean "url"?)',
    ]


def test_unknown_keys_and_tables(tmp_path: Path) -> None:
    got = messages(tmp_path, """\
        colour = "blue"
        [[mount]]
        path = "a"
        url = "s3://bucket-a"
        [cache]
        max_sise = "1GiB"
        zzz = 1
        [cahce]
        dir = "/x"
        [s3.boto]
        pool_connections = 1
        [read]
        inline = { a = 1 }
        """)
    assert got == [
        "c.toml:1: colour: unknown key",
        'c.toml:6: cache.max_sise: unknown key (did you mean "max_size"?)',
        "c.toml:7: cache.zzz: unknown key",
        'c.toml:8: cahce: unknown table (did you mean "cache"?)',
        'c.toml:10: s3.boto: unknown table (did you mean "boto3"?)',
        "c.toml:13: read.inline: unknown table",
    ]


def test_wrong_types(tmp_path: Path) -> None:
    got = messages(tmp_path, """\
        [cache]
        max_files = "many"
        max_size = 1.5
        expiry = true
        dir = 5
        [read]
        max_concurrency = "4"
        [[mount]]
        path = "a"
        url = "s3://bucket-a"
        read_only = "yes"
        [[mount]]
        path = ["b"]
        url = 42
        read_only = "true"
        [s3]
        secret = 12345
        key = "k"
        [[s3.credentials]]
        host = "h:1"
        verify = ""
        """)
    assert got == [
        'c.toml:2: cache.max_files: expected an integer, got string "many"',
        'c.toml:3: cache.max_size: expected a size such as "4MiB" or a number of bytes, got float 1.5',
        'c.toml:4: cache.expiry: expected a duration such as "90s" or a number of seconds, got boolean true',
        "c.toml:5: cache.dir: expected a string, got integer 5",
        'c.toml:7: read.max_concurrency: expected an integer, got string "4" (remove the quotes)',
        'c.toml:11: mount[0].read_only: expected a boolean (true or false), got string "yes"',
        "c.toml:13: mount[1].path: expected a string, got an array",
        "c.toml:14: mount[1].url: expected a string, got integer 42",
        'c.toml:15: mount[1].read_only: expected a boolean (true or false), got string "true" '
        "(remove the quotes)",
        "c.toml:17: s3.secret: expected a string, got an integer",  # a secret's value is never shown
        'c.toml:21: s3.credentials[0].verify: expected true, false, a CA bundle path or its https:// URL, '
        'got string ""',
    ]


def test_table_written_with_the_wrong_brackets(tmp_path: Path) -> None:
    got = messages(tmp_path, """\
        [[cache]]
        dir = "/x"
        [mount]
        path = "a"
        url = "s3://bucket-a"
        [s3]
        credentials = "none"
        boto3 = 1
        """)
    assert got == [
        "c.toml:1: cache: expected a table [cache], got an array of tables "
        "(write [cache] with single brackets)",
        "c.toml:3: mount: expected an array of tables [[mount]], got a table "
        "(write [[mount]] with double brackets)",
        'c.toml:7: s3.credentials: expected an array of tables [[s3.credentials]], got string "none"',
        "c.toml:8: s3.boto3: expected a table [s3.boto3], got integer 1",
    ]


def test_line_numbers_survive_multiline_values_and_nested_arrays(tmp_path: Path) -> None:
    got = messages(tmp_path, '''\
        # comment with [brackets] and key = "value"
        [[mount]]
        path = """a"""
        url = "s3://bucket-a"

        [[direct_access]]
        url = 'file:///[not a header]'
        [[direct_access]]
        url = "file:///ok/*"

        [s3]
        region = """
        [not-a-table]
        fake = 1
        """
        [[s3.credentials]]
        host = "h:1"
        [[s3.credentials]]
        bucket = "b"
        [[s3.credentials]]
        host = "h:2"
        regoin = "x"
        [gcs]
        project = [
          "x", # ] tricky = 2
          "y",
        ]
        "endpoint" = "ftp://x"
        ''')
    assert got == [
        'c.toml:22: s3.credentials[2].regoin: unknown key (did you mean "region"?)',
        "c.toml:24: gcs.project: expected a string, got an array",
        'c.toml:28: gcs.endpoint: endpoint "ftp://x" is not an http:// or https:// URL',
    ]


def test_error_inside_inline_table_falls_back_to_its_key_line(tmp_path: Path) -> None:
    got = messages(
        tmp_path, 'mount = [\n  {path = "a", url = "s3://bucket-a"},\n  {path = "b", url = "s3://x"},\n]\n'
    )
    assert got == ['c.toml:1: mount[1].url: S3 bucket name "x" is 1 characters long (must be 3 to 255)']


def test_dotted_keys(tmp_path: Path) -> None:
    got = messages(tmp_path, 'cache.max_size = "1GiB"\ncache.blok_size = "1MiB"\n' + MOUNT)
    assert got == ['c.toml:2: cache.blok_size: unknown key (did you mean "block_size"?)']


# ---------------------------------------------------------------------------------------------------------
# Values out of range


def test_value_errors(tmp_path: Path) -> None:
    got = messages(tmp_path, MOUNT + """\
        [cache]
        dir = "relative/dir"
        max_size = "1MiB"
        max_files = 0
        expiry = "0s"
        block_size = "3MiB"
        [read]
        metadata_ttl = "soon"
        max_memory = "0"
        [write]
        part_size = "1MiB"
        max_concurrency = -1
        """)
    assert got == [
        'c.toml:5: cache.dir: "relative/dir" is not an absolute path '
        "(the daemon runs from /, so a relative cache dir would move)",
        "c.toml:6: cache.max_size: must hold at least one block (4MiB)",
        "c.toml:7: cache.max_files: must be at least 1, got 0",
        "c.toml:8: cache.expiry: must be greater than 0",
        "c.toml:9: cache.block_size: must be a power of two from 64KiB to 64MiB, got 3MiB",
        'c.toml:11: read.metadata_ttl: invalid duration "soon": expected a number with a unit, '
        'e.g. "500ms", "90s", "5m", "2h", "7d"',
        "c.toml:12: read.max_memory: must be greater than 0",
        "c.toml:14: write.part_size: must be from 5MiB to 5GiB (the S3 multipart limits), got 1MiB",
        "c.toml:15: write.max_concurrency: must be at least 1, got -1",
    ]


@pytest.mark.parametrize("size", ["32KiB", "128MiB", "100000", "5MiB"])
def test_bad_block_sizes(tmp_path: Path, size: str) -> None:
    got = messages(tmp_path, f'{MOUNT}[cache]\nblock_size = "{size}"\n')
    assert got == [
        "c.toml:5: cache.block_size: must be a power of two from 64KiB to 64MiB, "
        f"got {format_size(parse_size(size))}"
    ]


def test_bad_size_string_reports_the_parser_message(tmp_path: Path) -> None:
    got = messages(tmp_path, f'{MOUNT}[cache]\nmax_size = "200GB!"\nblock_size = "4QB"\n')
    assert got == [
        'c.toml:5: cache.max_size: invalid size "200GB!": expected a number with an optional unit, '
        'e.g. "4MiB", "200GiB", "1.5GB" or "512"',
        'c.toml:6: cache.block_size: invalid size "4QB": unknown unit "QB" '
        "(use B, KiB, MiB, GiB, TiB, PiB or KB, MB, GB, TB, PB)",
    ]


# ---------------------------------------------------------------------------------------------------------
# Mounts


def test_missing_mount(tmp_path: Path) -> None:
    expected = [
        'c.toml: mount: no [[mount]] table: a config needs at least one '
        '(add [[mount]] with path = "name" and url = "s3://bucket/prefix")'
    ]
    assert messages(tmp_path, '[cache]\nmax_files = 10\n') == expected
    assert messages(tmp_path, "") == expected
    assert messages(tmp_path, "mount = []\n") == [expected[0].replace("c.toml:", "c.toml:1:")]


def test_mount_needs_path_and_url(tmp_path: Path) -> None:
    got = messages(tmp_path, '[[mount]]\nread_only = true\n[[mount]]\npath = "b"\nurl = ""\n')
    assert got == [
        "c.toml:1: mount[0].path: required key is missing "
        '(every [[mount]] needs path = "name" (a directory under the mount point))',
        'c.toml:1: mount[0].url: required key is missing (every [[mount]] needs url = "s3://bucket/prefix")',
        'c.toml:5: mount[1].url: must not be empty (every [[mount]] needs url = "s3://bucket/prefix")',
    ]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/data", 'mount path "/data" must be relative (write "data")'),
        ("data/", 'mount path "data/" must not end with "/" (write "data")'),
        ("a//b", 'mount path "a//b" has an empty segment ("//")'),
        ("a/../b", 'mount path "a/../b" must not contain "." or ".." segments'),
        ("./a", 'mount path "./a" must not contain "." or ".." segments'),
        ("..", 'mount path ".." must not contain "." or ".." segments'),
    ],
)
def test_bad_mount_paths(tmp_path: Path, path: str, message: str) -> None:
    got = messages(tmp_path, f'[[mount]]\npath = "{path}"\nurl = "s3://bucket-a"\n')
    assert got == [f"c.toml:2: mount[0].path: {message}"]


def test_mount_paths_may_nest_deeply_and_share_name_prefixes(tmp_path: Path) -> None:
    cfg = load(tmp_path, """\
        [[mount]]
        path = "a/b/c"
        url = "s3://bucket-a"
        [[mount]]
        path = "a/bc"
        url = "file:///data"
        [[mount]]
        path = "ab"
        url = "az://cont@acct/p"
        read_only = true
        """)
    assert [m.path for m in cfg.mounts] == ["a/b/c", "a/bc", "ab"]
    assert [m.url.scheme for m in cfg.mounts] == ["s3", "file", "az"]
    assert cfg.mounts[2].read_only is True


def test_duplicate_and_nested_mount_paths(tmp_path: Path) -> None:
    got = messages(tmp_path, """\
        [[mount]]
        path = "a"
        url = "s3://bucket-a"
        [[mount]]
        path = "a"
        url = "s3://bucket-b"
        [[mount]]
        path = "a/b"
        url = "s3://bucket-c"
        [[mount]]
        path = "x/y"
        url = "s3://bucket-d"
        [[mount]]
        path = "x"
        url = "s3://bucket-e"
        """)
    assert got == [
        'c.toml:5: mount[1].path: mount path "a" is already used by mount[0] at line 2',
        'c.toml:8: mount[2].path: mount path "a/b" is inside mount path "a" (mount[0] at line 2)',
        'c.toml:14: mount[4].path: mount path "x" contains mount path "x/y" (mount[3] at line 11)',
    ]


def test_mount_root_only_alone(tmp_path: Path) -> None:
    cfg = load(tmp_path, '[[mount]]\npath = ""\nurl = "gs://bucket-a/p"\n')
    assert cfg.mounts == (MountConfig("", StoreUrl("gs", None, "bucket-a", "p", "gs://bucket-a/p"), False),)
    got = messages(tmp_path, MOUNT + '[[mount]]\npath = ""\nurl = "gs://bucket-b"\n')
    assert got == [
        'c.toml:5: mount[1].path: mount path "" (the mount root) cannot be combined with other mounts '
        '(mount[0] at line 2) (give every mount its own path = "name")'
    ]


def test_bad_mount_urls(tmp_path: Path) -> None:
    got = messages(tmp_path, """\
        [[mount]]
        path = "a"
        url = "s4://bucket"
        [[mount]]
        path = "b"
        url = "file://relative"
        [[mount]]
        path = "c"
        url = "gs://Bad_Bucket"
        """)
    assert got == [
        f'c.toml:3: mount[0].url: unknown scheme "s4://" in "s4://bucket" {SCHEMES} '
        '(did you mean "s3://"?)',
        'c.toml:6: mount[1].url: file URL "file://relative" is not absolute '
        "(use three slashes and an absolute path, e.g. file:///mnt/data)",
        'c.toml:9: mount[2].url: GCS bucket name "Bad_Bucket" contains "B" '
        '(allowed: lowercase letters, digits, "-", "_" and ".") (names are lowercase)',
    ]


# ---------------------------------------------------------------------------------------------------------
# direct_access, path_substitution, credentials


def test_direct_access_and_path_substitution_errors(tmp_path: Path) -> None:
    got = messages(tmp_path, MOUNT + """\
        [[direct_access]]
        url = "nfs:///mnt/*"
        [[direct_access]]
        url = "file://mnt/*"
        [[direct_access]]
        glob = "file:///x/*"
        [[path_substitution]]
        registered_prefix = "s3://datasets/research"
        local_prefix = "/mnt/nfs/research"
        """)
    assert got == [
        f'c.toml:5: direct_access[0].url: unknown scheme "nfs://" in "nfs:///mnt/*" {SCHEMES} '
        "(a mounted network share is a local folder: write file:///path/to/it)",
        'c.toml:7: direct_access[1].url: file URL "file://mnt/*" is not absolute '
        "(use three slashes and an absolute path, e.g. file:///mnt/data)",
        'c.toml:8: direct_access[2]: needs url or content_type (or both) '
        '(e.g. url = "file:///mnt/nfs/*" or content_type = "video/*")',
        "c.toml:9: direct_access[2].glob: unknown key",
        'c.toml:12: path_substitution[0].local_prefix: "/mnt/nfs/research" is not a store URL '
        "(expected scheme://bucket/prefix with scheme s3, gs, az or file)",
    ]


def test_credential_errors(tmp_path: Path) -> None:
    got = messages(tmp_path, MOUNT + """\
        [s3]
        key = "k"
        [[s3.credentials]]
        region = "x"
        [[s3.credentials]]
        host = "minio.internal"
        [[s3.credentials]]
        bucket = "s3://my-bucket/x"
        secret = "s"
        [[s3.credentials]]
        host = "h:1"
        [[s3.credentials]]
        host = "h:1"
        token = "t"
        [gcs]
        endpoint = "localhost:4443"
        [[gcs.credentials]]
        subdir = "../x"
        [[azure.containers]]
        account_name = "acct"
        account_key = "k"
        connection_string = "c"
        container_name = "cont"
        [[azure.containers]]
        container_name = "cont"
        """)
    assert got == [
        "c.toml:5: s3.secret: required when key is set",  # the line of the key that needs it
        'c.toml:6: s3.credentials[0]: needs host or bucket (or both) '
        '(add host = "minio.internal:9000" or bucket = "name")',
        'c.toml:9: s3.credentials[1].host: host "minio.internal" has no port '
        '(write it as "host:port", e.g. "minio.internal:9000")',
        'c.toml:11: s3.credentials[2].bucket: "s3://my-bucket/x" is not a plain name (a URL or path?) '
        '(write "my-bucket")',
        "c.toml:12: s3.credentials[2].key: required when secret is set",
        "c.toml:15: s3.credentials[4]: same host and bucket as s3.credentials[3] at line 13",
        "c.toml:17: s3.credentials[4].token: needs key and secret as well",
        'c.toml:19: gcs.endpoint: endpoint "localhost:4443" is not an http:// or https:// URL',
        "c.toml:20: gcs.credentials[0].bucket: required key is missing",
        'c.toml:21: gcs.credentials[0].subdir: subdir "../x" must not contain "." or ".." segments',
        "c.toml:25: azure.containers[0].connection_string: give one kind of credentials: account_key and "
        "connection_string are both set (an entry holds an account key, a connection string, a SAS, a "
        "service principal or use_credentials_chain = true)",
        "c.toml:27: azure.containers[1].account_name: required key is missing",
    ]


def test_secrets_absent_from_repr(tmp_path: Path) -> None:
    cfg = load(tmp_path, MOUNT + """\
        [s3]
        key = "S3KEY-SENTINEL"
        secret = "S3SECRET-SENTINEL"
        token = "S3TOKEN-SENTINEL"
        [[s3.credentials]]
        host = "h:1"
        key = "CREDKEY-SENTINEL"
        secret = "CREDSECRET-SENTINEL"
        token = "CREDTOKEN-SENTINEL"
        [gcs]
        credentials_json = "GCSJSON-SENTINEL"
        [[gcs.credentials]]
        bucket = "bkt"
        credentials_json = "GCSCREDJSON-SENTINEL"
        [[azure.containers]]
        account_name = "acct"
        account_key = "AZKEY-SENTINEL"
        container_name = "cont"
        [[azure.containers]]
        account_name = "acct"
        connection_string = "AZCONN-SENTINEL"
        container_name = "cont2"
        [[azure.containers]]
        account_name = "acct"
        sas_token = "AZSAS-SENTINEL"
        container_name = "cont3"
        """)
    text = repr(cfg) + str(cfg)
    assert "SENTINEL" not in text
    assert cfg.s3.key == "S3KEY-SENTINEL" and cfg.s3.credentials[0].token == "CREDTOKEN-SENTINEL"
    assert cfg.azure.containers[2].sas_token == "AZSAS-SENTINEL"
    assert "account_name='acct'" in text and "host='h:1'" in text


def test_secret_values_never_appear_in_errors(tmp_path: Path) -> None:
    got = messages(tmp_path, MOUNT + '[s3]\nkey = ["SENTINEL"]\nsecret = true\n[[azure.containers]]\n'
                   'account_name = "a"\naccount_key = 1.5\ncontainer_name = "c"\n')
    assert got == [
        "c.toml:5: s3.key: expected a string, got an array",
        "c.toml:6: s3.secret: expected a string, got a boolean",
        "c.toml:9: azure.containers[0].account_key: expected a string, got a float",
    ]


# ---------------------------------------------------------------------------------------------------------
# Many errors at once; TOML syntax; files and sources


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    errs = errors(tmp_path, """\
        [cache]
        max_sise = "1GiB"
        block_size = "1GiB"
        [[mount]]
        path = "/abs"
        url = "s4://x"
        read_only = 1
        [[mount]]
        path = "b"
        url = "s3://bucket-b"
        extra = true
        """)
    assert [(e.line, e.key, e.message) for e in errs] == [
        (2, "cache.max_sise", "unknown key"),
        (3, "cache.block_size", "must be a power of two from 64KiB to 64MiB, got 1GiB"),
        (5, "mount[0].path", 'mount path "/abs" must be relative'),
        (6, "mount[0].url", f'unknown scheme "s4://" in "s4://x" {SCHEMES}'),
        (7, "mount[0].read_only", "expected a boolean (true or false), got integer 1"),
        (11, "mount[1].extra", "unknown key"),
    ]
    assert all(e.file is not None and e.file.endswith("c.toml") for e in errs)
    assert errs[0].hint == 'did you mean "max_size"?'
    assert errs[2].hint == 'write "abs"'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (MOUNT + "[cache]\nmax_size = 200GiB\n",
         "c.toml:5: TOML syntax error at column 15: Expected newline or end of document after a statement "
         '(sizes and durations are strings: write max_size = "200GiB")'),
        (MOUNT + "[[mount]]\npath = b\n",
         'c.toml:5: TOML syntax error at column 8: Invalid value (strings need quotes: write path = "b")'),
        (MOUNT + "read_only = yes\n",
         "c.toml:4: TOML syntax error at column 13: Invalid value (booleans are written true or false)"),
        (MOUNT + "[cache\n",
         "c.toml:4: TOML syntax error at column 7: Expected ']' at the end of a table declaration"),
        (MOUNT + 'path = "again"\n', "c.toml:4: TOML syntax error at column 15: Cannot overwrite a value"),
        (MOUNT + "x =", "c.toml: TOML syntax error: Invalid value (at end of document)"),
    ],
)
def test_toml_syntax_errors(tmp_path: Path, text: str, expected: str) -> None:
    assert messages(tmp_path, text) == [expected]


def test_missing_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.toml")
    for loader in (load_config, load_source):
        with pytest.raises(ConfigErrors) as info:
            loader(missing)
        assert [e.format() for e in info.value.errors] == [
            f"{missing}: no such file (expected a TOML config file, or a URL such as s3://bucket/prefix)"
        ]
    with pytest.raises(ConfigErrors) as info:
        load_config(str(tmp_path))
    assert str(info.value) == f"{tmp_path}: is a directory, not a config file"
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b'[[mount]]\npath = "\xff"\n')
    with pytest.raises(ConfigErrors) as info:
        load_config(str(bad))
    assert str(info.value) == f"{bad}:2: not UTF-8 text"


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + MOUNT.encode())
    assert load_config(str(path)).mounts[0].path == "a"


def test_config_from_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)
    cfg = config_from_url("s3://minio.local:9000/data/sets/")
    assert cfg == Config(
        source="s3://minio.local:9000/data/sets/",
        mounts=(MountConfig("", StoreUrl("s3", "minio.local:9000", "data", "sets", "s3://minio.local:9000/data/sets/")),),
    )
    assert cfg.cache == CacheConfig("/var/cache/mountfs", 200 * GiB, 1_000_000, 604800.0, 4 * MiB)


def test_config_from_bad_url() -> None:
    with pytest.raises(ConfigErrors) as info:
        config_from_url("gcx://bucket")
    assert str(info.value) == (
        f'gcx://bucket: unknown scheme "gcx://" in "gcx://bucket" {SCHEMES} (did you mean "gcp://"?)')


def test_load_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_source("gs://bucket-x/p").mounts[0].url == StoreUrl("gs", None, "bucket-x", "p", "gs://bucket-x/p")
    assert load_source("file:///srv/data").mounts[0].url.bucket == "/srv/data"
    path = write(tmp_path, MOUNT)
    cfg = load_source(path)
    assert cfg.source == path and cfg.mounts[0].path == "a"
    with pytest.raises(ConfigErrors) as info:
        load_source("file:relative")
    assert str(info.value) == (
        'file:relative: file URL "file:relative" is not absolute '
        "(use three slashes and an absolute path, e.g. file:///mnt/data)"
    )
    with pytest.raises(ConfigErrors) as info:
        load_source("s3:bucket")
    assert str(info.value) == 's3:bucket: "s3:bucket" is missing "//" after "s3:" (write s3://bucket)'
    monkeypatch.chdir(tmp_path)
    write(tmp_path, MOUNT, name="s3:odd.toml")  # an existing file wins over a URL-looking name
    assert load_source("s3:odd.toml").source == "s3:odd.toml"


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert default_cache_dir() == "/var/cache/mountfs"
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_CACHE_HOME", "/xdg")
    assert default_cache_dir() == "/xdg/mountfs"
    monkeypatch.setenv("HOME", "/home/u")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")  # ignored, as the XDG spec says
    assert default_cache_dir() == "/home/u/.cache/mountfs"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == "/home/u/.cache/mountfs"


def test_dataclasses_are_frozen_and_hashable(tmp_path: Path, design_env: None) -> None:
    cfg = load(tmp_path, DESIGN_EXAMPLE)
    with pytest.raises(AttributeError):
        cfg.cache.max_size = 1  # type: ignore[misc]
    assert isinstance(cfg.mounts, tuple) and isinstance(cfg.s3.credentials, tuple)
    assert hash(cfg) == hash(load(tmp_path, DESIGN_EXAMPLE))


# ---------------------------------------------------------------------------------------------------------
# cache.min_free


@pytest.mark.parametrize(("text", "expected"), [
    ("5%", MinFree(percent=5.0)),
    (" 2.5 % ", MinFree(percent=2.5)),
    ("0%", MinFree()),
    ("10GiB", MinFree(size=10 * GiB)),
    ("0", MinFree()),
    (1024, MinFree(size=1024)),
])
def test_parse_min_free(text: str | int, expected: MinFree) -> None:
    assert parse_min_free(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("100%", 'invalid free space "100%": a percentage must be below 100%'),
    ("-5%", 'invalid free space "-5%": expected a size such as "10GiB" or a percentage such as "5%"'),
    ("5%%", 'invalid free space "5%%": expected a size such as "10GiB" or a percentage such as "5%"'),
    ("lots", f'invalid size "lots": {SIZE_FORMS}'),
])
def test_parse_min_free_rejects(text: str, message: str) -> None:
    with pytest.raises(InvalidValue) as info:
        parse_min_free(text)
    assert info.value.message == message


def test_min_free_required_bytes() -> None:
    assert MinFree(size=10).required(1000) == 10
    assert MinFree(percent=5.0).required(1000) == 50
    assert MinFree(percent=0.1).required(1001) == 2  # rounded up: never less than asked
    assert MinFree(size=100, percent=5.0).required(1000) == 100


def test_min_free_in_a_config_file(tmp_path: Path) -> None:
    assert load(tmp_path, MOUNT).cache.min_free == MinFree(percent=5.0)
    cfg = load(tmp_path, MOUNT + '[cache]\nmin_free = "10GiB"\n')
    assert cfg.cache.min_free == MinFree(size=10 * GiB)
    cfg = load(tmp_path, MOUNT + '[cache]\nmin_free = "12%"\n')
    assert cfg.cache.min_free == MinFree(percent=12.0)
    got = messages(tmp_path, MOUNT + '[cache]\nmin_free = "150%"\n[read]\n[write]\n')
    assert got == ['c.toml:5: cache.min_free: invalid free space "150%": a percentage must be below 100%']
    got = messages(tmp_path, MOUNT + "[cache]\nmin_free = 0.5\n")
    assert got == ['c.toml:5: cache.min_free: expected a size such as "10GiB" or a percentage such as "5%", '
                   "got float 0.5"]
