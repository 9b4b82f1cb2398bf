"""The URL grammar as users of other tools write it: one table of scheme aliases, the Azure forms of
ZenML, adlfs and Hadoop (and the one rule that tells az://container/path from az://account/container),
Supervisely's fs://storage-id, a bucketless endpoint URL, and bucket names as wide as the stores'."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from mountfs.backends.registry import open_store
from mountfs.config import (
    Config,
    ConfigErrors,
    DirectAccess,
    InvalidValue,
    PathSubstitution,
    S3Config,
    StoreUrl,
    load_config,
    load_source,
    parse_url,
)
from mountfs.config import azure as azure_settings
from mountfs.config import s3 as s3_settings
from mountfs.config.urls import SCHEME_ALIASES, canonical_scheme, shown_url
from mountfs.errors import Unsupported, without_credentials
from mountfs.passthrough import Passthrough

AZURE_ENV = ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY",
             "AZURE_STORAGE_SAS_TOKEN")
FORMS = ("az://container@account/path, az://container/path with an account configured, "
         "abfss://container@account.dfs.core.windows.net/path or https://account.blob.core.windows.net/container/path")
NO_ACCOUNT_HINT = "or set [azure] account, AZURE_STORAGE_ACCOUNT or AZURE_STORAGE_CONNECTION_STRING"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in AZURE_ENV:
        monkeypatch.delenv(name, raising=False)


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "c.toml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def mount_url(tmp_path: Path, url: str, settings: str = "") -> StoreUrl:
    """The URL of the one [[mount]] of a config with `settings`, as loading resolved it."""
    text = f'{textwrap.dedent(settings)}\n[[mount]]\npath = "x"\nurl = "{url}"\n'
    config = load_config(write(tmp_path, text))
    return config.mounts[0].url


def load_error(tmp_path: Path, url: str, settings: str = "") -> str:
    with pytest.raises(ConfigErrors) as info:
        mount_url(tmp_path, url, settings)
    assert len(info.value.errors) == 1
    return re.sub(r"^c\.toml:\d+: ", "", info.value.errors[0].format().replace(f"{tmp_path}/", ""))


def url_error(text: str) -> str:
    with pytest.raises(InvalidValue) as info:
        parse_url(text)
    return str(info.value)


def parts(url: StoreUrl) -> tuple[str, str | None, str, str]:
    return url.scheme, url.host, url.bucket, url.prefix


# ---------------------------------------------------------------------------------------------------------
# One table of schemes


def test_every_alias_is_accepted_as_its_scheme() -> None:
    expected = {"s3": ("s3a", "s3n", "aws", "minio"), "gs": ("gcs", "gcp", "google"),
                "az": ("azure", "abfs", "abfss", "wasb", "wasbs"), "file": ("local", "path")}
    assert {alias: scheme for scheme, aliases in expected.items() for alias in aliases} == SCHEME_ALIASES
    for scheme, aliases in expected.items():
        for alias in (scheme, *aliases, *(a.upper() for a in aliases)):
            assert canonical_scheme(alias) == scheme
            if scheme == "file":
                assert parts(parse_url(f"{alias}:///mnt/data")) == ("file", None, "/mnt/data", "")
            elif scheme == "az":
                assert parts(parse_url(f"{alias}://cont@acct/p")) == ("az", "acct", "cont", "p")
            else:
                assert parts(parse_url(f"{alias}://bucket-1/p/q")) == (scheme, None, "bucket-1", "p/q")
    assert canonical_scheme("fs") == "fs"
    assert canonical_scheme("nfs") is None


def test_supervisely_links_parse() -> None:
    assert parts(parse_url("s3://cars_2020_20_10/truck.jpg")) == ("s3", None, "cars_2020_20_10", "truck.jpg")
    assert parts(parse_url("google://another_planes_bucket_2020_10_10/boeing.jpg")) == (
        "gs", None, "another_planes_bucket_2020_10_10", "boeing.jpg")
    # container-first until the config says which account
    assert parts(parse_url("azure://boats-2020/supersonicboat.jpg")) == ("az", None, "boats-2020",
                                                                         "supersonicboat.jpg")
    assert parts(parse_url("fs://local-datasets/persons/image1.jpg")) == (
        "fs", None, "local-datasets", "persons/image1.jpg")


def test_an_unknown_scheme_names_the_url_and_every_accepted_form() -> None:
    assert url_error("nope://b/k") == (
        'unknown scheme "nope://" in "nope://b/k" (supported: s3, gs, az, file, fs and https; aliases: s3a, '
        's3n, aws, minio, gcs, gcp, google, azure, abfs, abfss, wasb, wasbs, local, path)')
    assert url_error("goggle://b").endswith('(did you mean "google://"?)')


def test_aliases_match_path_substitution_and_direct_access_rules() -> None:
    rules = Passthrough([DirectAccess("s3://b/local/*")], [PathSubstitution("s3://b/research", "local:///mnt/r")])
    assert rules.substitute("s3a://b/research/x") == "file:///mnt/r/x"
    assert rules.is_direct("S3N://b/local/file")


# ---------------------------------------------------------------------------------------------------------
# Azure: the ZenML forms, and the one rule for az://A/B


def test_azure_forms_that_name_their_account() -> None:
    for text in ("az://data@acct1/run/1", "abfs://data@acct1/run/1", "abfss://data@acct1.dfs.core.windows.net/run/1",
                 "wasb://data@acct1.blob.core.windows.net/run/1", "wasbs://data@acct1.blob.core.windows.net/run/1",
                 "https://acct1.blob.core.windows.net/data/run/1", "https://acct1.dfs.core.windows.net/data/run/1",
                 "HTTPS://acct1.BLOB.core.windows.NET/data/run/1",
                 "azure://acct1.blob.core.windows.net/data/run/1"):  # ClearML's form
        url = parse_url(text)
        assert parts(url) == ("az", "acct1", "data", "run/1"), text
        assert url.raw == text
    assert url_error("HTTPS://ACCT1.BLOB.CORE.WINDOWS.NET/data") == (
        'Azure storage account name "ACCT1" contains "A", "C", "T" (allowed: lowercase letters and digits) '
        "(names are lowercase)")


def test_azure_form_errors() -> None:
    assert url_error("abfss://data@acct1.evil.example/p") == (
        '"acct1.evil.example" in "abfss://data@acct1.evil.example/p" is not an Azure storage account '
        "(expected account or account.blob.core.windows.net; another cloud's endpoint goes in "
        "[[azure.containers]] endpoint or the connection string)")
    assert url_error("https://acct1.blob.core.windows.net/") == (
        '"https://acct1.blob.core.windows.net/" has no container '
        "(expected https://account.blob.core.windows.net/container/path)")
    assert url_error("az:///x") == f'"az:///x" has no container (expected {FORMS})'
    assert url_error("https:///x") == f'"https:///x" has no host (expected {FORMS})'
    assert url_error("abfs://Data@acct1/p").startswith('Azure container name "Data" contains "D"')


def test_a_sas_in_an_https_url_is_refused_and_never_shown(tmp_path: Path) -> None:
    text = "https://acct1.blob.core.windows.net/data/p?sv=2024&sig=SECRET-SENTINEL"
    message = url_error(text)
    assert message == ('"https://acct1.blob.core.windows.net/data/p?***" carries a query (a SAS?) (put a '
                       "SAS in [[azure.containers]] sas_token or AZURE_STORAGE_SAS_TOKEN, not in the URL)")
    assert shown_url(text) == "https://acct1.blob.core.windows.net/data/p?***"
    with pytest.raises(ConfigErrors) as info:
        load_source(text)
    assert "SENTINEL" not in str(info.value)


def test_container_at_account_is_no_credential_but_a_password_is() -> None:
    assert shown_url("abfss://data@acct1.dfs.core.windows.net/p") == "abfss://data@acct1.dfs.core.windows.net/p"
    assert without_credentials("see az://data@acct1/p and wasbs://c@a.blob.core.windows.net") == (
        "see az://data@acct1/p and wasbs://c@a.blob.core.windows.net")
    assert without_credentials("az://user:SECRET@acct/p s3://key@host") == "az://***@acct/p s3://***@host"
    assert url_error("az://user:SECRET@acct/p").startswith('"az://***@acct/p" carries credentials')


ENTRIES = """\
[[azure.containers]]
account_name = "acct1"
container_name = "data"
account_key = "KEY1"

[[azure.containers]]
account_name = "acct2"
container_name = "logs"
account_key = "KEY2"
"""


def test_container_first_with_a_default_account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ZenML's az://container/path and abfs://container/path: the account is the configured default."""
    settings = '[azure]\naccount = "zenacct"\n'
    for text in ("az://artifacts/zenml/run1", "abfs://artifacts/zenml/run1", "azure://artifacts/zenml/run1"):
        assert parts(mount_url(tmp_path, text, settings)) == ("az", "zenacct", "artifacts", "zenml/run1")
    assert parts(mount_url(tmp_path, "az://artifacts", settings)) == ("az", "zenacct", "artifacts", "")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT", "envacct")
    assert parts(mount_url(tmp_path, "az://artifacts/zenml/run1"))[:2] == ("az", "envacct")
    # the config's default wins over the environment's
    assert parts(mount_url(tmp_path, "az://artifacts/p", settings))[1] == "zenacct"
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT")
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "AccountName=connacct;AccountKey=SECRET-SENTINEL")
    assert parts(mount_url(tmp_path, "az://artifacts/zenml/run1"))[:2] == ("az", "connacct")


def test_container_first_from_the_entries(tmp_path: Path) -> None:
    # a container an entry names is in that entry's account
    assert parts(mount_url(tmp_path, "az://logs/2024", ENTRIES)) == ("az", "acct2", "logs", "2024")
    # entries of a single account make it the default one
    one = ENTRIES.split("\n\n")[0] + "\n"
    assert parts(mount_url(tmp_path, "az://other/2024", one)) == ("az", "acct1", "other", "2024")


def test_account_first_where_it_cannot_be_confused(tmp_path: Path) -> None:
    # acct1 is a known account and no default account exists: only the account-first reading is possible
    assert parts(mount_url(tmp_path, "az://acct1/data/p", ENTRIES)) == ("az", "acct1", "data", "p")
    assert parts(mount_url(tmp_path, "az://acct1/other/p", ENTRIES)) == ("az", "acct1", "other", "p")
    # a default account exists, but the config names container "data" for account acct1
    one = ENTRIES.split("\n\n")[0] + "\n"
    assert parts(mount_url(tmp_path, "az://acct1/data/p", one)) == ("az", "acct1", "data", "p")
    # and the settings resolver gets the same answer from an unresolved URL
    config = load_config(write(tmp_path, ENTRIES + '[[mount]]\npath = "x"\nurl = "az://acct1/data"\n'))
    resolved = azure_settings.resolve(parse_url("az://acct1/data/p"), config)
    assert (resolved.account, resolved.container, resolved.account_key) == ("acct1", "data", "KEY1")


def test_both_readings_possible_is_an_error_naming_both(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    one = ENTRIES.split("\n\n")[0] + "\n"
    assert load_error(tmp_path, "az://acct1/zenml/run1", one) == (
        'mount[0].url: "az://acct1/zenml/run1" is ambiguous: container "acct1" of account "acct1" '
        'with path "zenml/run1", or account "acct1", container "zenml" with path "run1" '
        "(write az://acct1@acct1/zenml/run1 or az://zenml@acct1/run1)")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT", "acct1")
    assert load_error(tmp_path, "az://acct2/other", ENTRIES).endswith(
        '"az://acct2/other" is ambiguous: container "acct2" of account "acct1" with path "other", or account '
        '"acct2", container "other" (write az://acct2@acct1/other or az://other@acct2)')
    # but a container the config names for that account is read account-first
    assert parts(mount_url(tmp_path, "az://acct2/logs", ENTRIES)) == ("az", "acct2", "logs", "")
    # both readings named by the config
    both = ENTRIES + '\n[[azure.containers]]\naccount_name = "acct2"\ncontainer_name = "acct1"\n'
    assert '"az://acct1/data" is ambiguous: container "acct1" of account "acct2"' in load_error(
        tmp_path, "az://acct1/data", both)
    # one container in two accounts
    twice = ENTRIES + '\n[[azure.containers]]\naccount_name = "acct1"\ncontainer_name = "logs"\n'
    assert load_error(tmp_path, "az://logs/p", twice).endswith(
        '"az://logs/p" is ambiguous: [[azure.containers]] name container "logs" in accounts acct1, acct2 '
        "(write az://logs@acct1/p or az://logs@acct2/p)")


def test_no_account_at_all_is_an_error_naming_both_readings(tmp_path: Path) -> None:
    assert load_error(tmp_path, "az://artifacts/zenml/run1") == (
        'mount[0].url: "az://artifacts/zenml/run1" names no storage account: container "artifacts" '
        'of which account? (or account "artifacts", container "zenml" with path "run1", but no account '
        '"artifacts" is configured) (write az://artifacts@ACCOUNT/zenml/run1 or az://zenml@artifacts/run1, '
        f"{NO_ACCOUNT_HINT})")
    # a name that cannot be an account has one reading only
    assert load_error(tmp_path, "az://my-artifacts") == (
        'mount[0].url: "az://my-artifacts" names no storage account: container "my-artifacts" of '
        f"which account? (write az://my-artifacts@ACCOUNT, {NO_ACCOUNT_HINT})")
    # an account other entries do not name is no account-first reading either
    assert "names no storage account" in load_error(tmp_path, "az://acct3/public", ENTRIES)
    with pytest.raises(ConfigErrors) as info:
        load_source("az://artifacts/zenml")
    assert str(info.value).startswith('az://artifacts/zenml: "az://artifacts/zenml" names no storage account')


def test_the_one_url_source_takes_the_account_from_the_environment(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING",
                       "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=SECRET-SENTINEL;"
                       "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;")
    for text in ("az://artifacts/zenml", "abfs://artifacts/zenml",
                 "http://127.0.0.1:10000/devstoreaccount1/artifacts/zenml"):
        config = load_source(text)
        assert parts(config.mounts[0].url) == ("az", "devstoreaccount1", "artifacts", "zenml"), text
        assert config.mounts[0].url.raw == text
        resolved = azure_settings.resolve(config.mounts[0].url, config)
        assert resolved.account_url == "http://127.0.0.1:10000/devstoreaccount1"
    # and from -o config=
    settings = tmp_path / "settings.toml"
    settings.write_text('[azure]\naccount = "zenacct"\n')
    assert parts(load_source("az://artifacts/zenml", str(settings)).mounts[0].url)[1] == "zenacct"


def test_an_http_url_on_a_configured_endpoint(tmp_path: Path) -> None:
    entry = ('[[azure.containers]]\naccount_name = "devstoreaccount1"\ncontainer_name = "c1"\n'
             'account_key = "K"\nendpoint = "http://127.0.0.1:10000/devstoreaccount1"\n')
    assert parts(mount_url(tmp_path, "http://127.0.0.1:10000/devstoreaccount1/other/p/q", entry)) == (
        "az", "devstoreaccount1", "other", "p/q")
    assert load_error(tmp_path, "http://minio:9000/bucket/p", entry) == (
        'mount[0].url: "http://minio:9000/bucket/p" is on no Azure endpoint the config or '
        "environment names (expected https://account.blob.core.windows.net/container/path, or for an "
        "S3-compatible endpoint s3://host:port/bucket/prefix)")
    assert load_error(tmp_path, "http://127.0.0.1:10000/devstoreaccount1", entry).endswith(
        "is on no Azure endpoint the config or environment names (expected https://account.blob.core.windows.net"
        "/container/path, or for an S3-compatible endpoint s3://host:port/bucket/prefix)")


def test_the_azure_account_key(tmp_path: Path) -> None:
    assert load_error(tmp_path, "az://cont@a12", '[azure]\naccount = "Bad_Account"\n') == (
        'azure.account: Azure storage account name "Bad_Account" contains "A", "B", "_" '
        "(allowed: lowercase letters and digits) (names are lowercase)")


# ---------------------------------------------------------------------------------------------------------
# Supervisely's fs://storage-id


def test_fs_storage_id_resolves_through_path_substitution(tmp_path: Path) -> None:
    settings = ('[[path_substitution]]\nregistered_prefix = "fs://local-datasets"\n'
                f'local_prefix = "file://{tmp_path}"\n')
    url = mount_url(tmp_path, "fs://local-datasets/persons", settings)
    assert parts(url) == ("fs", None, "local-datasets", "persons")
    config = load_config(write(tmp_path, settings + '[[mount]]\npath = "x"\nurl = "fs://local-datasets/persons"\n'))
    assert Passthrough.from_config(config).substitute(url.raw) == f"file://{tmp_path}/persons"


def test_fs_storage_id_without_a_mapping(tmp_path: Path) -> None:
    hint = ('(add [[path_substitution]] with registered_prefix = "fs://local-datasets" and '
            'local_prefix = "file:///path/to/its/folder")')
    assert load_error(tmp_path, "fs://local-datasets/persons") == (
        'mount[0].url: storage id "local-datasets" of "fs://local-datasets/persons" is mapped to '
        f"no folder {hint}")
    other = '[[path_substitution]]\nregistered_prefix = "fs://local-datasets/cars"\nlocal_prefix = "file:///d"\n'
    assert "is mapped to no folder" in load_error(tmp_path, "fs://local-datasets/persons", other)
    with pytest.raises(ConfigErrors, match="is mapped to no folder"):
        load_source("fs://local-datasets/persons")
    assert url_error("fs:///x") == '"fs:///x" has no storage id (expected fs://storage-id/path)'
    assert url_error("fs://../x") == 'storage id ".." in "fs://../x" is not a name (expected fs://storage-id/path)'
    with pytest.raises(Unsupported, match='storage id "local-datasets" is mapped to no folder'):
        open_store(parse_url("fs://local-datasets/p"), Config(source="x"))


# ---------------------------------------------------------------------------------------------------------
# S3: a bucketless endpoint URL, and bucket names as wide as the widest store's


def test_a_bucketless_endpoint_url(tmp_path: Path) -> None:
    for text in ("s3://127.0.0.1:9000", "s3://127.0.0.1:9000/", "minio://127.0.0.1:9000/"):
        assert parts(parse_url(text)) == ("s3", "127.0.0.1:9000", "", "")
        assert parts(load_source(text).mounts[0].url) == ("s3", "127.0.0.1:9000", "", "")
    assert parts(mount_url(tmp_path, "s3://127.0.0.1:9000/")) == ("s3", "127.0.0.1:9000", "", "")
    with pytest.raises(Unsupported, match=r"^s3://127\.0\.0\.1:9000/: a URL of every bucket of an endpoint "
                                          "is expanded into one mount per bucket before a store is opened"):
        open_store(parse_url("s3://127.0.0.1:9000/"), Config(source="x"))


@pytest.mark.parametrize("name", ["cars_2020_20_10", "MixedCase_Bucket", "a" * 255, "abc", "-dash-", "x.y"])
def test_legacy_s3_bucket_names_pass(name: str) -> None:
    assert parse_url(f"s3://{name}/k").bucket == name
    assert parse_url(f"s3://127.0.0.1:9000/{name}/k").bucket == name


@pytest.mark.parametrize(("text", "message"), [
    ("s3://ab", 'S3 bucket name "ab" is 2 characters long (must be 3 to 255)'),
    ("s3://" + "b" * 256, f'S3 bucket name "{"b" * 256}" is 256 characters long (must be 3 to 255)'),
    ("s3://a..b/k", 'S3 bucket name "a..b" must not contain ".."'),
    ("s3://...", 'S3 bucket name "..." must not contain ".."'),
    ("s3://bu cket", 'S3 bucket name "bu cket" contains " " (allowed: letters, digits, ".", "-" and "_")'),
    ("s3://bu%cket", 'S3 bucket name "bu%cket" contains "%" (allowed: letters, digits, ".", "-" and "_")'),
    ("s3://bu\ncket", 'URL "s3://bu\\ncket" contains a control character'),
    ("s3://", '"s3://" has no bucket (expected s3://bucket/prefix)'),
    ("s3://127.0.0.1:9000//k",
     '"s3://127.0.0.1:9000//k" has no bucket after the host "127.0.0.1:9000" '
     "(expected s3://host:port/bucket/prefix, or s3://host:port/ for every bucket)"),
])
def test_what_no_store_takes_is_refused(text: str, message: str) -> None:
    assert url_error(text) == message


def test_a_legacy_bucket_name_is_reached_path_style(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name that is no DNS label cannot be virtual-hosted: botocore falls back to path-style requests,
    whatever the addressing style (auto at AWS, virtual asked for), and so does mountfs's own GET path."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    for style in (None, "virtual"):
        config = Config(source="x", s3=S3Config(key="k", secret="s", addressing_style=style))
        settings = s3_settings.resolve(parse_url("s3://cars_2020_20_10/k"), config)
        assert settings.endpoint_url is None
        _, host, path = s3_settings.bucket_url(settings)
        assert (host, path) == ("s3.amazonaws.com", "/cars_2020_20_10"), style
        dns = s3_settings.resolve(parse_url("s3://cars-2020/k"), config)
        assert s3_settings.bucket_url(dns)[1] == "cars-2020.s3.amazonaws.com"
