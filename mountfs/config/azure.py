"""Which endpoint and credentials one az://account/container/prefix URL gets, most specific first.

1. the `[[azure.containers]]` entry for that account and container;
2. another entry for the same account (an account key or connection string opens every container
   of its account);
3. the environment, as the az CLI reads it: `AZURE_STORAGE_CONNECTION_STRING`, else
   `AZURE_STORAGE_ACCOUNT` (when it names this account) with `AZURE_STORAGE_KEY` or
   `AZURE_STORAGE_SAS_TOKEN`;
4. nothing: anonymous access, which works on public containers only.

An entry holds one of `account_key`, `connection_string` or `sas_token`. A connection string is
read here, not by the SDK, so that it and the other two end up the same: an account URL plus a key
or a SAS. It may name its endpoint (`BlobEndpoint`, or `DefaultEndpointsProtocol` and
`EndpointSuffix`) or be `UseDevelopmentStorage=true` (Azurite's defaults).

Endpoint: the entry's `endpoint` (the account URL itself: `http://127.0.0.1:10000/devstoreaccount1`
for Azurite, `https://ACCOUNT.blob.core.chinacloudapi.cn` for a sovereign cloud), then the
connection string's, else `https://ACCOUNT.blob.core.windows.net`.

`resolve` does no I/O. Nothing here ever puts a key, SAS or connection string into a message.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from mountfs.config.model import AzureConfig, AzureContainer, Config, StoreUrl
from mountfs.config.reader import ABSENT, Reader, Table
from mountfs.config.urls import (
    check_endpoint,
    check_plain_name,
)
from mountfs.errors import ConfigError

DEV_ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public, in Microsoft's documentation): not a secret.
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
DEV_ENDPOINT = f"http://127.0.0.1:10000/{DEV_ACCOUNT}"
ENV_CONNECTION_STRING = "AZURE_STORAGE_CONNECTION_STRING"
ENV_ACCOUNT = "AZURE_STORAGE_ACCOUNT"
ENV_KEY = "AZURE_STORAGE_KEY"
ENV_SAS = "AZURE_STORAGE_SAS_TOKEN"
ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class AzureSettings:
    account: str
    container: str
    account_url: str
    account_key: str | None = field(default=None, repr=False)
    sas_token: str | None = field(default=None, repr=False)
    credentials_origin: str = ANONYMOUS  # where the credentials came from, for messages
    pool_connections: int = 32

    def describe(self) -> str:
        """Where this is, for messages; never a secret."""
        return f"az://{self.account}/{self.container} at {self.account_url}"


@dataclass(frozen=True)
class _Parsed:
    account: str | None
    endpoint: str | None
    key: str | None
    sas: str | None


def parse_connection_string(text: str, origin: str, source: str | None = None) -> _Parsed:
    """The parts of an Azure Storage connection string; errors never quote it."""
    parts: dict[str, str] = {}
    for item in text.strip().split(";"):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(
                'the connection string has a part without "="',
                file=source,
                key=origin,
                hint="expected AccountName=...;AccountKey=...;... as the Azure portal shows it",
            )
        parts[name.strip().lower()] = value.strip()
    if parts.get("usedevelopmentstorage", "").lower() == "true":
        return _Parsed(DEV_ACCOUNT, parts.get("blobendpoint") or DEV_ENDPOINT, DEV_KEY, None)
    account = parts.get("accountname") or None
    endpoint = parts.get("blobendpoint") or None
    if endpoint is None and account is not None:
        protocol = parts.get("defaultendpointsprotocol", "https")
        suffix = parts.get("endpointsuffix", "core.windows.net")
        endpoint = f"{protocol}://{account}.blob.{suffix}"
    key = parts.get("accountkey") or None
    sas = parts.get("sharedaccesssignature") or None
    if endpoint is None:
        raise ConfigError(
            "the connection string names neither AccountName nor BlobEndpoint", file=source, key=origin
        )
    if key is not None and account is None:
        raise ConfigError(
            "the connection string has an AccountKey but no AccountName", file=source, key=origin
        )
    return _Parsed(account, endpoint, key, _clean_sas(sas) if sas else None)


def _clean_sas(sas: str) -> str:
    return sas.strip().lstrip("?")


def default_endpoint(account: str) -> str:
    return f"https://{account}.blob.core.windows.net"


def _entry_for(url: StoreUrl, entries: tuple[AzureContainer, ...]) -> tuple[int, AzureContainer] | None:
    for index, entry in enumerate(entries):
        if entry.account_name == url.host and entry.container_name == url.bucket:
            return index, entry
    for index, entry in enumerate(entries):
        if entry.account_name == url.host and (entry.account_key or entry.connection_string):
            return index, entry
    return None


def _env_connection(account: str) -> _Parsed | None:
    """AZURE_STORAGE_CONNECTION_STRING, when it is for `account` (or names no account)."""
    text = os.environ.get(ENV_CONNECTION_STRING, "")
    if not text.strip():
        return None
    parsed = parse_connection_string(text, ENV_CONNECTION_STRING, "environment")
    return parsed if parsed.account in (None, account) else None


def resolve(url: StoreUrl, config: Config) -> AzureSettings:
    account = url.host
    assert account is not None, "az:// URLs always name their account"
    found = _entry_for(url, config.azure.containers)
    endpoint: str | None = None
    key: str | None = None
    sas: str | None = None
    origin = ANONYMOUS
    connection: tuple[str, str] | None = None  # (text, where it came from)
    if found is not None:
        index, entry = found
        origin = f"azure.containers[{index}]"
        endpoint = entry.endpoint
        if entry.connection_string:
            connection = (entry.connection_string, f"{origin}.connection_string")
        elif entry.account_key:
            key, origin = entry.account_key, f"{origin}.account_key"
        elif entry.sas_token:
            sas, origin = _clean_sas(entry.sas_token), f"{origin}.sas_token"
    elif _env_connection(account) is not None:
        connection = (os.environ[ENV_CONNECTION_STRING], ENV_CONNECTION_STRING)
    elif os.environ.get(ENV_ACCOUNT) == account and os.environ.get(ENV_KEY):
        key, origin = os.environ[ENV_KEY], ENV_KEY
    elif os.environ.get(ENV_ACCOUNT) in (None, "", account) and os.environ.get(ENV_SAS):
        sas, origin = _clean_sas(os.environ[ENV_SAS]), ENV_SAS
    if connection is not None:
        text, origin = connection
        parsed = parse_connection_string(text, origin, config.source)
        if parsed.account is not None and parsed.account != account:
            raise ConfigError(
                f'the connection string is for account "{parsed.account}", but the URL '
                f'{url.raw} names account "{account}"',
                file=config.source,
                key=origin,
            )
        endpoint = endpoint or parsed.endpoint
        key, sas = parsed.key, parsed.sas
    return AzureSettings(
        account=account,
        container=url.bucket,
        account_url=(endpoint or default_endpoint(account)).rstrip("/"),
        account_key=key,
        sas_token=sas,
        credentials_origin=origin,
    )


# ---------------------------------------------------------------------------------------------------------
# The [azure] section of a config file

_AZURE_KEYS = ("containers",)
_AZURE_CONTAINER_KEYS = (
    "account_name", "account_key", "connection_string", "sas_token", "container_name", "endpoint",
)  # fmt: skip


def azure_section(r: Reader, root: Table) -> AzureConfig:
    path, t = r.sub(root, (), "azure", _AZURE_KEYS)
    containers: list[AzureContainer] = []
    for ipath, c in r.tables(
        t.get("containers", ABSENT), (*path, "containers"), _AZURE_CONTAINER_KEYS, "azure.containers"
    ):
        account = r.checked_str(c, ipath, "account_name", check_plain_name, required=True)
        container = r.checked_str(c, ipath, "container_name", check_plain_name)  # none: every container
        secrets = {k: r.str_(c, ipath, k) for k in ("account_key", "connection_string", "sas_token")}
        given = [k for k, v in secrets.items() if v is not None]
        if len(given) > 1:
            r.error(
                (*ipath, given[1]),
                f"give only one of account_key, connection_string, sas_token "
                f"(this entry also has {given[0]})",
            )
        endpoint = r.checked_str(c, ipath, "endpoint", check_endpoint)
        if account is not None:
            containers.append(AzureContainer(
                account_name=account,
                account_key=secrets["account_key"],
                connection_string=secrets["connection_string"],
                sas_token=secrets["sas_token"],
                container_name=container,
                endpoint=endpoint,
            ))  # fmt: skip
    return AzureConfig(tuple(containers))
