"""Which server, region and addressing style an s3:// store gets, most specific first, and that
mountfs's own GETs and LISTs go exactly where boto3's requests of the same store go. Every test
runs in a clean AWS environment: no AWS_* variables but the ones it sets, and a shared config file
of its own."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mountfs.backends.s3 import S3Store
from mountfs.backends.s3_get import object_url
from mountfs.config import ConfigErrors, RetryConfig, load_config, parse_url
from mountfs.config.s3 import S3Settings, resolve
from mountfs.errors import StoreUnavailable

PROFILES = """
[default]
region = ap-south-1
endpoint_url = http://profile.example:7000
s3 =
    addressing_style = virtual

[profile svc]
services = local

[services local]
s3 =
    endpoint_url = http://services.example:7001
"""


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """No AWS setting of the machine; the profiles above in the shared config file."""
    import os

    for name in list(os.environ):
        if name.startswith("AWS_") and name != "AWS_CA_BUNDLE":
            monkeypatch.delenv(name)
    config = tmp_path / "aws-config"
    config.write_text(PROFILES)
    empty = tmp_path / "aws-credentials"
    empty.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    yield monkeypatch


def config_of(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "mountfs.toml"
    path.write_text(textwrap.dedent(text) + '\n[[mount]]\npath = "x"\nurl = "s3://any"\n')
    return load_config(str(path))


FULL = """
[s3]
key = "k"
secret = "s"
region = "eu-west-3"
endpoint = "http://s3-section.example:9000"
addressing_style = "virtual"

[[s3.credentials]]
bucket = "bkt"
endpoint = "http://entry.example:9000"
region = "eu-north-1"
addressing_style = "auto"
"""


def where(url: str, config: Any) -> tuple[str | None, str]:
    settings = resolve(parse_url(url), config)
    return settings.endpoint_url, settings.endpoint_source


def test_the_endpoint_most_specific_first(aws: pytest.MonkeyPatch, tmp_path: Path) -> None:
    aws.setenv("AWS_ENDPOINT_URL_S3", "http://env-s3.example:9000")
    aws.setenv("AWS_ENDPOINT_URL", "http://env-global.example:9000")
    full = config_of(tmp_path, FULL)
    assert where("s3://url.example:9000/bkt", full) == ("https://url.example:9000", "URL")
    assert where("s3://bkt/p", full) == ("http://entry.example:9000", "[[s3.credentials]]")
    assert where("s3://other/p", full) == ("http://s3-section.example:9000", "[s3] endpoint")
    bare = config_of(tmp_path, '[s3]\nkey = "k"\nsecret = "s"\n')
    assert where("s3://other", bare) == ("http://env-s3.example:9000", "AWS_ENDPOINT_URL_S3")
    aws.delenv("AWS_ENDPOINT_URL_S3")
    assert where("s3://other", bare) == ("http://env-global.example:9000", "AWS_ENDPOINT_URL")
    aws.delenv("AWS_ENDPOINT_URL")
    assert where("s3://other", bare) == ("http://profile.example:7000", "AWS profile default")
    aws.setenv("AWS_PROFILE", "svc")
    assert where("s3://other", bare) == ("http://services.example:7001", "AWS profile svc")
    aws.setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")  # as botocore itself honours it
    assert where("s3://other", bare) == (None, "AWS default")
    aws.delenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
    aws.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-credentials"))  # empty
    aws.delenv("AWS_PROFILE")
    assert where("s3://other", bare) == (None, "AWS default")


def test_the_region_most_specific_first(aws: pytest.MonkeyPatch, tmp_path: Path) -> None:
    aws.setenv("AWS_REGION", "us-west-1")
    aws.setenv("AWS_DEFAULT_REGION", "us-west-2")
    full = config_of(tmp_path, FULL)
    assert resolve(parse_url("s3://bkt"), full).region == "eu-north-1"
    assert resolve(parse_url("s3://other"), full).region == "eu-west-3"
    bare = config_of(tmp_path, "")
    assert resolve(parse_url("s3://other"), bare).region == "us-west-1"
    aws.delenv("AWS_REGION")
    assert resolve(parse_url("s3://other"), bare).region == "us-west-2"
    aws.delenv("AWS_DEFAULT_REGION")
    assert resolve(parse_url("s3://other"), bare).region == "ap-south-1"  # the profile's
    aws.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-credentials"))
    assert resolve(parse_url("s3://other"), bare).region == "us-east-1"


def test_the_addressing_style_most_specific_first(aws: pytest.MonkeyPatch, tmp_path: Path) -> None:
    full = config_of(tmp_path, FULL)
    assert resolve(parse_url("s3://bkt"), full).addressing_style == "auto"
    assert resolve(parse_url("s3://other"), full).addressing_style == "virtual"
    bare = config_of(tmp_path, "")
    assert resolve(parse_url("s3://other"), bare).addressing_style == "virtual", "the profile's"
    # an endpoint named in mountfs's config is path-style unless its config says otherwise
    assert resolve(parse_url("s3://h.example:9000/bkt"), bare).addressing_style == "path"
    aws.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-credentials"))
    assert resolve(parse_url("s3://other"), bare).addressing_style == "auto"


def boto3_url(store: S3Store, key: str) -> str:
    """The URL of the GET boto3 sends for `key` with the store's own client (caught, never sent)."""
    class Caught(Exception):
        pass

    seen: list[str] = []

    def catch(request: Any, **_: Any) -> None:
        seen.append(request.url)
        raise Caught

    events = store.client.meta.events
    events.register("before-send.s3.GetObject", catch)
    try:
        with pytest.raises(Caught):
            store.client.get_object(Bucket=store.bucket, Key=key)
    finally:
        events.unregister("before-send.s3.GetObject", catch)
    return seen[0]


@pytest.mark.parametrize(("url", "toml", "env"), [
    ("s3://data-bucket", "", {}),  # AWS us-east-1: virtual-hosted on the global name
    ("s3://data-bucket", 'region = "eu-west-1"', {}),
    ("s3://dotted.bucket.name", 'region = "eu-west-1"', {}),  # not a TLS-safe host label: path-style
    ("s3://data-bucket", 'addressing_style = "path"', {}),
    ("s3://data-bucket", "", {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000"}),
    ("s3://data-bucket", "", {"AWS_PROFILE": "default"}),  # the profile: virtual on its own host
    ("s3://data-bucket", 'endpoint = "https://gateway.example/s3/"', {}),  # an endpoint with a path
    ("s3://minio.example:9000/data-bucket", "", {}),
])
def test_own_gets_go_where_boto3s_go(aws: pytest.MonkeyPatch, tmp_path: Path, url: str, toml: str,
                                     env: dict[str, str]) -> None:
    if "AWS_PROFILE" not in env:
        aws.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-credentials"))  # no profile endpoint
    for name, value in env.items():
        aws.setenv(name, value)
    settings = resolve(parse_url(url), config_of(tmp_path, f'[s3]\nkey = "k"\nsecret = "s"\n{toml}\n'))
    store = S3Store(settings, RetryConfig(attempts=1))
    key = "dir/a b+c~é.bin"
    base, _host, path = object_url(settings, key)
    assert base + path == boto3_url(store, key)
    assert store.endpoint == (settings.endpoint_url or base)


def test_store_names_are_urls_and_old_names_are_kept_for_recovery(aws: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    aws.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-credentials"))
    config = config_of(tmp_path, "")
    by_url = S3Store(resolve(parse_url("s3://minio.example:9000/bkt"), config), RetryConfig())
    assert (by_url.store_id, by_url.former_ids) == ("s3://minio.example:9000", ("s3://https://minio.example:9000",))
    assert S3Store(resolve(parse_url("s3://bkt"), config), RetryConfig()).store_id == "s3://aws"
    aws.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    by_env = S3Store(resolve(parse_url("s3://bkt"), config), RetryConfig())
    assert (by_env.store_id, by_env.former_ids) == ("s3://127.0.0.1:9000", ())
    assert by_env.endpoint == "http://127.0.0.1:9000" and by_env.endpoint_source == "AWS_ENDPOINT_URL"


def test_a_missing_profile_or_a_bad_endpoint_is_a_clear_error(aws: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    aws.setenv("AWS_PROFILE", "nosuch")
    with pytest.raises(StoreUnavailable, match="nosuch"):
        resolve(parse_url("s3://bkt"), config_of(tmp_path, ""))
    aws.delenv("AWS_PROFILE")
    aws.setenv("AWS_ENDPOINT_URL", "minio:9000")
    with pytest.raises(StoreUnavailable, match=r"Invalid endpoint: minio:9000 \(see AWS_ENDPOINT_URL_S3"):
        resolve(parse_url("s3://bkt"), config_of(tmp_path, ""))
    aws.setenv("AWS_ENDPOINT_URL", "ftp://minio:9000")
    with pytest.raises(StoreUnavailable, match=r"ftp://minio:9000 \(from AWS_ENDPOINT_URL\): the endpoint"):
        resolve(parse_url("s3://bkt"), config_of(tmp_path, ""))


@pytest.mark.parametrize(("toml", "message"), [
    ('[s3]\naddressing_style = "dns"', "not one of auto, path, virtual"),
    ('[s3]\nendpoint = "minio:9000"', "not an http:// or https:// URL"),
    ('[[s3.credentials]]\nhost = "minio.example:9000"\nendpoint = "http://other:9000"',
     "name their endpoint"),
])
def test_bad_endpoint_settings_are_config_errors(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigErrors, match=message):
        config_of(tmp_path, toml)


def test_settings_made_by_hand_use_botocores_defaults() -> None:
    plain = S3Settings(bucket="b", endpoint_url="http://127.0.0.1:1", region="us-east-1")
    assert object_url(plain, "k")[0] + object_url(plain, "k")[2] == "http://127.0.0.1:1/b/k"


def test_the_entries_for_a_configured_endpoints_host_apply(aws: pytest.MonkeyPatch, tmp_path: Path) -> None:
    entries = """
    [[s3.credentials]]
    host = "minio.example:9000"
    key = "host-key"
    secret = "host-secret"
    region = "minio-region"

    [[s3.credentials]]
    host = "minio.example:9000"
    bucket = "pinned"
    key = "pinned-key"
    secret = "pinned-secret"
    """
    config = config_of(tmp_path, '[s3]\nendpoint = "http://minio.example:9000"\n' + textwrap.dedent(entries))
    plain = resolve(parse_url("s3://bkt"), config)
    assert (plain.key, plain.region, plain.addressing_style) == ("host-key", "minio-region", "path")
    assert resolve(parse_url("s3://pinned"), config).key == "pinned-key"
    aws.setenv("AWS_ENDPOINT_URL", "http://minio.example:9000")
    by_env = resolve(parse_url("s3://bkt"), config_of(tmp_path, textwrap.dedent(entries)))
    assert (by_env.endpoint_source, by_env.key, by_env.region) == (
        "AWS_ENDPOINT_URL", "host-key", "minio-region")
    aws.setenv("AWS_ENDPOINT_URL", "http://elsewhere.example:9000")
    assert resolve(parse_url("s3://bkt"), config_of(tmp_path, textwrap.dedent(entries))).key is None


async def test_uploads_staged_under_a_former_store_name_are_recovered(tmp_path: Path) -> None:
    from mountfs.backends.async_store import AsyncStore
    from mountfs.backends.memory import MemoryStore
    from mountfs.config import WriteConfig
    from mountfs.upload.journal import UploadJournal
    from mountfs.upload.recovery import UPLOADED, recover
    from mountfs.upload.uploader import Uploader

    journal = UploadJournal(str(tmp_path))
    old_store = MemoryStore("bkt", "s3://http://minio.example:9000")
    before = Uploader(AsyncStore(old_store, 2), journal, WriteConfig())
    staged = await before.open_staged("model.bin", None)
    await before.write(staged, 0, b"staged by the version before")
    journal.close()  # the daemon dies; the next one names the store "s3://minio.example:9000"

    journal = UploadJournal(str(tmp_path))
    store = MemoryStore("bkt", "s3://minio.example:9000")
    store.former_ids = ("s3://http://minio.example:9000",)
    [item] = await recover(journal, [Uploader(AsyncStore(store, 2), journal, WriteConfig())])
    assert item.outcome == UPLOADED
    assert store.get_range("model.bin", 0, 100) == b"staged by the version before"
    journal.close()
