"""Which endpoint and credentials one az://container@account/prefix URL gets, most specific first.

1. the `[[azure.containers]]` entry for that account and container;
2. an entry for the same account without `container_name` (it covers every container of the
   account, as in ClearML's own example, which leaves container_name out);
3. another entry for the same account with an account key or connection string (which opens
   every container of its account);
4. the environment, as the az CLI reads it: `AZURE_STORAGE_CONNECTION_STRING`, else
   `AZURE_STORAGE_ACCOUNT` (when it names this account) with `AZURE_STORAGE_KEY` or
   `AZURE_STORAGE_SAS_TOKEN`;
5. nothing: anonymous access, which works on public containers only.

An entry without `endpoint` is on the endpoint that AZURE_STORAGE_CONNECTION_STRING gives its
account, if it does (an emulator, a sovereign cloud), else on the account's public endpoint.

An az://container/path URL names no account: `resolve_account` decides which (see its rule).

An entry holds one kind of credentials: `account_key`, `connection_string`, `sas_token`, a service
principal (`tenant_id`, `client_id`, `client_secret`: azure-identity's ClientSecretCredential), or
`use_credentials_chain = true` (azure-identity's DefaultAzureCredential: AZURE_TENANT_ID,
AZURE_CLIENT_ID and AZURE_CLIENT_SECRET or a federated token in the environment, a managed
identity, the az CLI's login). The identities are Microsoft Entra tokens, which Azure Storage only
takes over https; the credential object is made by the adapter, when the store opens. A connection string is
read here, not by the SDK, so that it and the other two end up the same: an account URL plus a key
or a SAS. It may name its endpoint (`BlobEndpoint`, or `DefaultEndpointsProtocol` and
`EndpointSuffix`) or be `UseDevelopmentStorage=true` (Azurite's defaults).

Endpoint: the entry's `endpoint` (the account URL itself: `http://127.0.0.1:10000/devstoreaccount1`
for Azurite, `https://ACCOUNT.blob.core.chinacloudapi.cn` for a sovereign cloud), then the
connection string's, else `https://ACCOUNT.blob.core.windows.net`.

`resolve` does no I/O. Nothing here ever puts a key, SAS or connection string into a message.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from mountfs.config.model import AzureConfig, AzureContainer, Config, StoreUrl
from mountfs.config.reader import ABSENT, Reader, Table
from mountfs.config.toml_text import Path
from mountfs.config.urls import (
    check_azure_account,
    check_azure_container,
    check_endpoint,
    check_plain_name,
)
from mountfs.config.values import InvalidValue
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
    identity: Identity | None = None  # an Entra ID identity, instead of a key or a SAS

    def describe(self) -> str:
        """Where this is, for messages; never a secret."""
        return f"az://{self.container}@{self.account} at {self.account_url}"


@dataclass(frozen=True)
class Identity:
    """A Microsoft Entra ID identity: a service principal (all three fields), or None of them for
    azure-identity's DefaultAzureCredential chain."""

    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)

    @property
    def is_chain(self) -> bool:
        return self.client_secret is None


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
        if entry.account_name == url.host and entry.container_name is None:
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
    if url.host is None:
        try:
            url = resolve_account(url, config.azure)
        except InvalidValue as exc:
            raise ConfigError(exc.message, file=config.source, hint=exc.hint) from None
    source = config.settings_source
    account = url.host
    assert account is not None, "resolve_account names the account"
    found = _entry_for(url, config.azure.containers)
    endpoint: str | None = None
    key: str | None = None
    sas: str | None = None
    origin = ANONYMOUS
    connection: tuple[str, str] | None = None  # (text, where it came from)
    identity: Identity | None = None
    if found is not None:
        index, entry = found
        origin = config.key_name("azure", "containers", index)
        endpoint = entry.endpoint
        if entry.client_secret:
            identity = Identity(entry.tenant_id, entry.client_id, entry.client_secret)
            origin = f"{origin} (service principal {entry.client_id} of tenant {entry.tenant_id})"
        elif entry.use_credentials_chain:
            identity = Identity()
            origin = config.key_name("azure", "containers", index, "use_credentials_chain")
        elif entry.connection_string:
            connection = (entry.connection_string, config.key_name("azure", "containers", index,
                                                                   "connection_string"))
        elif entry.account_key:
            key, origin = entry.account_key, config.key_name("azure", "containers", index, "account_key")
        elif entry.sas_token:
            sas = _clean_sas(entry.sas_token)
            origin = config.key_name("azure", "containers", index, "sas_token")
        if endpoint is None and connection is None:
            # An entry without an endpoint (ClearML's have no such key) is on the endpoint the
            # environment's connection string gives its account, if it gives one (an emulator,
            # another cloud): the key is the entry's, where the account lives is the environment's.
            with contextlib.suppress(ConfigError):
                from_env = _env_connection(account)
                if from_env is not None and from_env.account == account:
                    endpoint = from_env.endpoint
    elif _env_connection(account) is not None:
        connection = (os.environ[ENV_CONNECTION_STRING], ENV_CONNECTION_STRING)
    elif os.environ.get(ENV_ACCOUNT) == account and os.environ.get(ENV_KEY):
        key, origin = os.environ[ENV_KEY], ENV_KEY
    elif os.environ.get(ENV_ACCOUNT) in (None, "", account) and os.environ.get(ENV_SAS):
        sas, origin = _clean_sas(os.environ[ENV_SAS]), ENV_SAS
    if connection is not None:
        text, origin = connection
        where = "environment" if origin == ENV_CONNECTION_STRING else source
        parsed = parse_connection_string(text, origin, where)
        if parsed.account is not None and parsed.account != account:
            raise ConfigError(
                f'the connection string is for account "{parsed.account}", but the URL '
                f'{url.raw} names account "{account}"',
                file=where,
                key=origin,
            )
        endpoint = endpoint or parsed.endpoint
        key, sas = parsed.key, parsed.sas
    account_url = (endpoint or default_endpoint(account)).rstrip("/")
    if identity is not None and not account_url.lower().startswith("https://"):
        raise ConfigError(
            f"{url.raw}: an Entra ID identity's token is only sent over https, and the endpoint is "
            f"{account_url}", file=source, key=origin.split(" (")[0],
            hint="use the https endpoint, or an account key or SAS")
    return AzureSettings(
        account=account,
        container=url.bucket,
        account_url=account_url,
        account_key=key,
        sas_token=sas,
        credentials_origin=origin,
        identity=identity,
    )


# ---------------------------------------------------------------------------------------------------------
# Which account an Azure URL without one is for

UNAMBIGUOUS = "az://container@account/path"


def _env_connection_account() -> tuple[str, str] | None:
    """(account, endpoint) of AZURE_STORAGE_CONNECTION_STRING; None when unset, unreadable (the
    settings resolver reports that) or naming no account."""
    text = os.environ.get(ENV_CONNECTION_STRING, "")
    if not text.strip():
        return None
    try:
        parsed = parse_connection_string(text, ENV_CONNECTION_STRING, "environment")
    except ConfigError:
        return None
    if parsed.account is None or parsed.endpoint is None:
        return None
    return parsed.account, parsed.endpoint


def default_account(azure: AzureConfig) -> tuple[str, str] | None:
    """(account, where it comes from) of a container-first URL: [azure] account, else the one account
    every [[azure.containers]] entry names, else AZURE_STORAGE_ACCOUNT, else the account of
    AZURE_STORAGE_CONNECTION_STRING."""
    if azure.account:
        return azure.account, "[azure] account"
    accounts = {entry.account_name for entry in azure.containers}
    if len(accounts) == 1:
        return next(iter(accounts)), "azure.containers"
    if os.environ.get(ENV_ACCOUNT, "").strip():
        return os.environ[ENV_ACCOUNT].strip(), ENV_ACCOUNT
    found = _env_connection_account()
    return (found[0], ENV_CONNECTION_STRING) if found else None


def known_accounts(azure: AzureConfig) -> set[str]:
    """Every account the config or the environment names."""
    known = {entry.account_name for entry in azure.containers}
    if azure.account:
        known.add(azure.account)
    if os.environ.get(ENV_ACCOUNT, "").strip():
        known.add(os.environ[ENV_ACCOUNT].strip())
    found = _env_connection_account()
    if found:
        known.add(found[0])
    return known


def _valid(check: Callable[[str], None], name: str) -> bool:
    try:
        check(name)
    except InvalidValue:
        return False
    return True


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def resolve_account(url: StoreUrl, azure: AzureConfig) -> StoreUrl:
    """az://A/B/rest names container A of a configured account (container-first, as ZenML, adlfs and
    fsspec write it), or container B of account A (account-first, mountfs's older form). The rule:

    - account-first when A is an account the config or environment names and either no account is
      known for container A, or the config names container B for account A (and names no account
      for a container A);
    - container-first when an account is known for container A ([[azure.containers]] entries for a
      container A, else the default account) and A cannot be read as a known account with a container;
    - otherwise (both readings possible, or neither) an error naming both readings and the
      unambiguous form az://container@account/path. Never a guess.
    """
    a, b_rest = url.bucket, url.prefix
    b, _, rest = b_rest.partition("/")
    entries = azure.containers
    for_container = sorted({e.account_name for e in entries if e.container_name == a})
    if len(for_container) > 1:
        forms = " or ".join(f"az://{a}@{acct}/{b_rest}".rstrip("/") for acct in for_container)
        raise InvalidValue(
            f'"{url.raw}" is ambiguous: [[azure.containers]] name container "{a}" in accounts '
            f'{", ".join(for_container)}', f"write {forms}")
    container_first = (for_container[0], True) if for_container else None
    if container_first is None:
        default = default_account(azure)
        container_first = (default[0], False) if default else None
    account_first = (a in known_accounts(azure) and b != "" and _valid(check_azure_account, a)
                     and _valid(check_azure_container, b))
    named = account_first and any(e.account_name == a and e.container_name == b for e in entries)
    if account_first and (container_first is None or (named and not container_first[1])):
        return StoreUrl("az", a, b, rest, url.raw)
    if container_first is not None and not account_first:
        return StoreUrl("az", container_first[0], a, b_rest, url.raw)
    first_form = f"az://{a}@{container_first[0] if container_first else 'ACCOUNT'}/{b_rest}".rstrip("/")
    second = f'account "{a}", container "{b}"' + (f' with path "{rest}"' if rest else "")
    if container_first is not None:
        raise InvalidValue(
            f'"{url.raw}" is ambiguous: container "{a}" of account "{container_first[0]}"'
            + (f' with path "{b_rest}"' if b_rest else "") + f", or {second}",
            f"write {first_form} or {_join(f'az://{b}@{a}', rest)}")
    readings = f'container "{a}" of which account?'
    forms = first_form
    if b and _valid(check_azure_account, a) and _valid(check_azure_container, b):
        readings += f" (or {second}, but no account \"{a}\" is configured)"
        forms += f" or {_join(f'az://{b}@{a}', rest)}"
    raise InvalidValue(
        f'"{url.raw}" names no storage account: {readings}',
        f'write {forms}, or set [azure] account, {ENV_ACCOUNT} or {ENV_CONNECTION_STRING}')


def endpoint_account(url: StoreUrl, azure: AzureConfig) -> StoreUrl:
    """An http(s) URL under a known Azure endpoint (an entry's `endpoint`, a connection string's,
    such as Azurite's http://127.0.0.1:10000/devstoreaccount1) as the container and path it names."""
    candidates: list[tuple[str, str]] = []
    for entry in azure.containers:
        if entry.endpoint:
            candidates.append((entry.account_name, entry.endpoint))
        if entry.connection_string:
            try:
                parsed = parse_connection_string(entry.connection_string, "", None)
            except ConfigError:
                continue
            if parsed.endpoint:
                candidates.append((parsed.account or entry.account_name, parsed.endpoint))
    found = _env_connection_account()
    if found:
        candidates.append(found)
    text = f"{url.scheme}://{url.host}/{url.prefix}"
    for account, endpoint in sorted(candidates, key=lambda c: -len(c[1])):
        base = endpoint.rstrip("/") + "/"
        if text.lower().startswith(base.lower()) and _valid(check_azure_account, account):
            container, _, prefix = text[len(base):].partition("/")
            if not container:
                raise InvalidValue(f'"{url.raw}" has no container after the endpoint {endpoint}',
                                   f"expected {base}container/path")
            check_azure_container(container)
            return StoreUrl("az", account, container, prefix, url.raw)
    raise InvalidValue(
        f'"{url.raw}" is on no Azure endpoint the config or environment names',
        "expected https://account.blob.core.windows.net/container/path, or for an S3-compatible "
        "endpoint s3://host:port/bucket/prefix")


# ---------------------------------------------------------------------------------------------------------
# The [azure] section of a config file

_AZURE_KEYS = ("account", "containers")
_AZURE_CONTAINER_KEYS = (
    "account_name", "account_key", "connection_string", "sas_token", "container_name", "endpoint",
    "tenant_id", "client_id", "client_secret", "use_credentials_chain",
)  # fmt: skip
_PRINCIPAL = ("tenant_id", "client_id", "client_secret")


def azure_section(r: Reader, root: Table) -> AzureConfig:
    path, t = r.sub(root, (), "azure", _AZURE_KEYS)
    default = r.checked_str(t, path, "account", check_azure_account)
    containers: list[AzureContainer] = []
    for ipath, c in r.tables(
        t.get("containers", ABSENT), (*path, "containers"), _AZURE_CONTAINER_KEYS, "azure.containers"
    ):
        account = r.checked_str(c, ipath, "account_name", check_plain_name, required=True)
        container = r.checked_str(c, ipath, "container_name", check_plain_name)
        if c.get("container_name") == "":  # ${VAR:-} that came out empty: the whole account, said once
            container = None
        secrets = {k: r.str_(c, ipath, k) for k in ("account_key", "connection_string", "sas_token")}
        principal = {k: r.checked_str(c, ipath, k, _check_principal_part) for k in _PRINCIPAL}
        chain = r.bool_(c, ipath, "use_credentials_chain", False)
        _one_kind(r, c, ipath, secrets, principal, chain)
        endpoint = r.checked_str(c, ipath, "endpoint", check_endpoint)
        if account is not None:
            containers.append(AzureContainer(
                account_name=account,
                account_key=secrets["account_key"],
                connection_string=secrets["connection_string"],
                sas_token=secrets["sas_token"],
                container_name=container,
                endpoint=endpoint,
                tenant_id=principal["tenant_id"],
                client_id=principal["client_id"],
                client_secret=principal["client_secret"],
                use_credentials_chain=chain,
            ))  # fmt: skip
    return AzureConfig(tuple(containers), account=default)


def _check_principal_part(text: str) -> None:
    if not text.isprintable() or any(c.isspace() for c in text):
        raise ValueError("must not contain spaces or control characters")


def _one_kind(r: Reader, c: Table, ipath: Path, secrets: dict[str, str | None],
              principal: dict[str, str | None], chain: bool) -> None:
    """One kind of credentials per entry; a service principal complete. Each conflict is one error
    that names both keys."""
    kinds = [k for k, v in secrets.items() if v is not None]
    named = [k for k in _PRINCIPAL if k in c]
    if named:
        kinds.append(named[0] if len(named) == 1 else "tenant_id/client_id/client_secret")
        missing = [k for k in _PRINCIPAL if principal[k] is None and k not in named]
        if missing:
            r.error((*ipath, missing[0]), f"a service principal needs {', '.join(missing)} as well "
                    f"(this entry has {', '.join(named)})", at=(*ipath, named[0]))
    if chain:
        kinds.append("use_credentials_chain")
    if len(kinds) > 1:
        r.error((*ipath, _first_key(kinds[1])),
                f"give one kind of credentials: {kinds[0]} and {kinds[1]} are both set",
                "an entry holds an account key, a connection string, a SAS, a service principal "
                "or use_credentials_chain = true")


def _first_key(kind: str) -> str:
    return kind.split("/")[0]
