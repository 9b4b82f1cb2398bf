"""The Azure adapter's own logic: where endpoint and credentials come from (config entries, connection
strings, the environment), and how SDK errors map onto mountfs's. Everything else about Azure is
tested against Azurite in tests/integration/test_azure_contract.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)

from mountfs.backends.azure import scrub, translate
from mountfs.config import Config, load_config, parse_url
from mountfs.config.azure import DEV_KEY, parse_connection_string, resolve
from mountfs.errors import AccessDenied, ConfigError, NotFound, Rejected, Stale, Throttled, Transient

CONFIG = """
[[azure.containers]]
account_name = "acct1"
container_name = "data"
account_key = "KEY-FOR-DATA"

[[azure.containers]]
account_name = "acct1"
container_name = "shared"
sas_token = "?sv=2024&sig=SAS-SENTINEL"

[[azure.containers]]
account_name = "acct2"
container_name = "logs"
connection_string = "DefaultEndpointsProtocol=https;AccountName=acct2;AccountKey=CONN-KEY;\
EndpointSuffix=core.chinacloudapi.cn"

[[azure.containers]]
account_name = "devstoreaccount1"
container_name = "local"
account_key = "DEV"
endpoint = "http://127.0.0.1:10000/devstoreaccount1/"

[[mount]]
path = "x"
url = "az://acct1/data"
"""
ENV = ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY",
       "AZURE_STORAGE_SAS_TOKEN")


def load(tmp_path: Path, text: str = CONFIG) -> Config:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return load_config(str(path))


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def test_entries_most_specific_first(tmp_path: Path) -> None:
    config = load(tmp_path)
    cases = {
        "az://acct1/data/p": ("https://acct1.blob.core.windows.net", "KEY-FOR-DATA", None,
                              "azure.containers[0].account_key"),
        "az://acct1/shared": ("https://acct1.blob.core.windows.net", None, "sv=2024&sig=SAS-SENTINEL",
                              "azure.containers[1].sas_token"),
        # no entry of its own: the account's key opens every container of the account
        "az://acct1/other": ("https://acct1.blob.core.windows.net", "KEY-FOR-DATA", None,
                             "azure.containers[0].account_key"),
        "az://acct2/logs": ("https://acct2.blob.core.chinacloudapi.cn", "CONN-KEY", None,
                            "azure.containers[2].connection_string"),
        "az://devstoreaccount1/local": ("http://127.0.0.1:10000/devstoreaccount1", "DEV", None,
                                        "azure.containers[3].account_key"),
        # an account no entry names: only the unambiguous form reaches it
        "az://public@acct3": ("https://acct3.blob.core.windows.net", None, None, "anonymous"),
    }
    for url, expected in cases.items():
        settings = resolve(parse_url(url), config)
        assert (settings.account_url, settings.account_key, settings.sas_token,
                settings.credentials_origin) == expected, url
        account, container = (url[5:].split("/")[:2] if "@" not in url
                              else url[5:].split("@")[::-1])
        assert (settings.account, settings.container) == (account, container), url


def test_no_secret_in_settings_repr_or_description(tmp_path: Path) -> None:
    config = load(tmp_path)
    for url in ("az://acct1/data", "az://acct1/shared", "az://acct2/logs"):
        settings = resolve(parse_url(url), config)
        for text in (repr(settings), settings.describe()):
            assert "KEY" not in text and "SENTINEL" not in text, text


def test_environment_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bare = load(tmp_path, '[[mount]]\npath = "x"\nurl = "az://cont@envacct"\n')
    url = parse_url("az://cont@envacct")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT", "envacct")
    monkeypatch.setenv("AZURE_STORAGE_SAS_TOKEN", "?sv=1&sig=S")
    settings = resolve(url, bare)
    assert (settings.sas_token, settings.credentials_origin) == ("sv=1&sig=S", "AZURE_STORAGE_SAS_TOKEN")
    monkeypatch.setenv("AZURE_STORAGE_KEY", "ENVKEY")
    settings = resolve(url, bare)
    assert (settings.account_key, settings.credentials_origin) == ("ENVKEY", "AZURE_STORAGE_KEY")
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING",
                       "AccountName=envacct;AccountKey=CONNKEY;BlobEndpoint=http://127.0.0.1:10000/envacct")
    settings = resolve(url, bare)
    assert (settings.account_key, settings.account_url, settings.credentials_origin) == (
        "CONNKEY", "http://127.0.0.1:10000/envacct", "AZURE_STORAGE_CONNECTION_STRING")
    # variables about another account do not apply
    other = resolve(parse_url("az://cont@elsewhere"), bare)
    assert (other.account_key, other.sas_token, other.credentials_origin) == (None, None, "anonymous")
    # and the config wins over all of them
    assert resolve(parse_url("az://acct1/data"), load(tmp_path)).account_key == "KEY-FOR-DATA"


def test_connection_strings() -> None:
    dev = parse_connection_string("UseDevelopmentStorage=true", "k")
    assert (dev.account, dev.endpoint, dev.key) == (
        "devstoreaccount1", "http://127.0.0.1:10000/devstoreaccount1", DEV_KEY)
    sas = parse_connection_string("BlobEndpoint=https://a.blob.core.windows.net/;"
                                  "SharedAccessSignature=sv=2020&sig=abc%3D", "k")
    assert (sas.account, sas.endpoint, sas.key, sas.sas) == (None, "https://a.blob.core.windows.net/", None,
                                                              "sv=2020&sig=abc%3D")
    key = parse_connection_string("DefaultEndpointsProtocol=http;AccountName=a;AccountKey=abc==;", "k")
    assert (key.endpoint, key.key) == ("http://a.blob.core.windows.net", "abc==")
    for broken, message in [("AccountKey=SECRET-SENTINEL", "names neither AccountName nor BlobEndpoint"),
                            ("garbage SECRET-SENTINEL", 'a part without "="'),
                            ("BlobEndpoint=http://h/a;AccountKey=SECRET-SENTINEL",
                             "AccountKey but no AccountName")]:
        with pytest.raises(ConfigError, match=message) as info:
            parse_connection_string(broken, "azure.containers[0].connection_string", "c.toml")
        assert "SENTINEL" not in str(info.value)
        assert str(info.value).startswith("c.toml: azure.containers[0].connection_string: ")


def test_a_connection_string_for_another_account_is_an_error(tmp_path: Path) -> None:
    config = load(tmp_path, '[[azure.containers]]\naccount_name = "acct1"\ncontainer_name = "cont"\n'
                            'connection_string = "AccountName=acct9;AccountKey=SECRET-SENTINEL"\n'
                            '[[mount]]\npath = "x"\nurl = "az://acct1/cont"\n')
    with pytest.raises(ConfigError, match='is for account "acct9", but the URL az://acct1/cont names account '
                                          '"acct1"') as info:
        resolve(parse_url("az://acct1/cont"), config)
    assert "SENTINEL" not in str(info.value)


def error(status: int, code: str, cls: type[HttpResponseError] = HttpResponseError) -> HttpResponseError:
    exc = cls(message=f"Something went wrong.\nRequestId:1\nErrorCode:{code}")
    exc.status_code = status
    exc.error_code = code  # type: ignore[attr-defined]
    return exc


@pytest.mark.parametrize(("exc", "kind"), [
    (error(404, "BlobNotFound", ResourceNotFoundError), NotFound),
    (error(404, "ContainerNotFound", ResourceNotFoundError), NotFound),
    (error(400, "InvalidBlockList"), NotFound),
    (error(412, "ConditionNotMet", ResourceModifiedError), Stale),
    (error(403, "AuthenticationFailed", ClientAuthenticationError), AccessDenied),
    (error(403, "AuthorizationPermissionMismatch"), AccessDenied),
    (error(503, "ServerBusy"), Throttled),
    (error(500, "ServerBusy"), Throttled),
    (error(500, "InternalError"), Transient),
    (error(500, "OperationTimedOut"), Transient),
    (error(400, "InvalidHeaderValue"), Rejected),
    (ServiceRequestError("connection refused"), Transient),
    (ServiceResponseError("reset mid-body"), Transient),
    (requests.exceptions.ConnectionError("refused"), Transient),
])
def test_sdk_errors_map_to_one_hierarchy(exc: Exception, kind: type) -> None:
    assert type(translate(exc, "GET az://a/c/k")) is kind


def test_messages_are_one_line_and_carry_no_signature() -> None:
    assert str(translate(error(404, "ContainerNotFound"), "LIST az://a/c/")) == (
        "LIST az://a/c/: the container does not exist")
    assert str(translate(error(400, "InvalidHeaderValue"), "GET x")) == (
        "GET x: refused by the store (InvalidHeaderValue Something went wrong.)")
    refused = ServiceRequestError("Max retries exceeded with url: /a/c?restype=container&sv=1&"
                                  "sig=abc%2Fdef%3D (Caused by refused)")
    assert "abc" not in str(translate(refused, "LIST"))
    assert scrub("x?sv=1&sig=SECRET&se=2&SIG=OTHER'") == "x?sv=1&sig=REDACTED&se=2&SIG=REDACTED'"
