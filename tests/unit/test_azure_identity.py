"""Azure service principals and managed identities ([[azure.containers]] `tenant_id`/`client_id`/
`client_secret` and `use_credentials_chain`), and entries without `container_name` covering a whole
account: what the resolver picks, the errors, and the credential object the adapter hands to
BlobServiceClient (a spy on the real constructor, nothing of storage behaviour mocked)."""

from __future__ import annotations

import base64
import contextlib
import http.server
import ipaddress
import json
import os
import signal
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import ClientSecretCredential, DefaultAzureCredential
from azure.storage.blob import BlobServiceClient

from mountfs.backends import azure as azure_backend
from mountfs.config import Config, ConfigErrors, load_config, parse_url, secret_values
from mountfs.config.azure import AzureSettings, Identity, resolve
from mountfs.errors import AccessDenied, ConfigError
from tests import servers

SECRET = "CLIENT-SECRET-SENTINEL"
PRINCIPAL = f"""
[[azure.containers]]
account_name = "acct1"
tenant_id = "tenant-1"
client_id = "client-1"
client_secret = "{SECRET}"

[[azure.containers]]
account_name = "acct1"
container_name = "keyed"
account_key = "a2V5"

[[azure.containers]]
account_name = "acct2"
container_name = "models"
use_credentials_chain = true

[[mount]]
path = "x"
url = "az://data@acct1/p"
"""


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY",
                 "AZURE_STORAGE_SAS_TOKEN", "AZURE_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return load_config(str(path))


def errors(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        load(tmp_path, text + '[[mount]]\npath = "x"\nurl = "az://cont@acct1/p"\n')
    return [e.format().replace(f"{tmp_path}/", "") for e in info.value.errors]


def settings(config: Config, url: str) -> AzureSettings:
    return resolve(parse_url(url), config)


def test_an_entry_without_container_covers_the_account(tmp_path: Path) -> None:
    config = load(tmp_path, PRINCIPAL)
    assert config.azure.containers[0].container_name is None
    any_container = settings(config, "az://data@acct1/p")
    assert any_container.identity == Identity("tenant-1", "client-1", SECRET)
    assert any_container.credentials_origin.startswith("azure.containers[0]")
    keyed = settings(config, "az://keyed@acct1/p")  # an entry for the container itself wins
    assert keyed.identity is None and keyed.account_key == "a2V5"
    assert settings(config, "az://other@acct3/p").credentials_origin == "anonymous"


def test_credentials_chain(tmp_path: Path) -> None:
    config = load(tmp_path, PRINCIPAL)
    chain = settings(config, "az://models@acct2/")
    assert chain.identity == Identity() and chain.identity.is_chain
    assert chain.credentials_origin == "azure.containers[2].use_credentials_chain"
    assert settings(config, "az://logs@acct2/").identity is None  # a chain entry for one container only


def test_the_client_secret_is_never_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load(tmp_path, PRINCIPAL)
    principal = settings(config, "az://data@acct1/p")
    for text in (repr(config), repr(principal), principal.describe(), principal.credentials_origin):
        assert SECRET not in text
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "ENV-CLIENT-SECRET")
    assert {SECRET, "ENV-CLIENT-SECRET"} <= set(secret_values(config))
    bad = errors(tmp_path, '[[azure.containers]]\naccount_name = "acct1"\ntenant_id = "t"\nclient_id = "c"\n'
                           f'client_secret = "{SECRET} x"\n')
    assert bad and not any(SECRET in line for line in bad)


def test_conflicting_kinds_are_one_error_naming_both(tmp_path: Path) -> None:
    got = errors(tmp_path, '[[azure.containers]]\naccount_name = "acct1"\naccount_key = "a2V5"\n'
                           'tenant_id = "t"\nclient_id = "c"\nclient_secret = "s3cr3t-value"\n'
                           '[[azure.containers]]\naccount_name = "acct1"\nsas_token = "sv=1&sig=x"\n'
                           'use_credentials_chain = true\n')
    assert got == [
        "c.toml:4: azure.containers[0].tenant_id: give one kind of credentials: account_key and "
        "tenant_id/client_id/client_secret are both set (an entry holds an account key, a connection "
        "string, a SAS, a service principal or use_credentials_chain = true)",
        "c.toml:10: azure.containers[1].use_credentials_chain: give one kind of credentials: sas_token and "
        "use_credentials_chain are both set (an entry holds an account key, a connection string, a SAS, "
        "a service principal or use_credentials_chain = true)",
    ]


def test_an_incomplete_service_principal(tmp_path: Path) -> None:
    got = errors(tmp_path, '[[azure.containers]]\naccount_name = "acct1"\nclient_id = "c"\n'
                           'client_secret = "s3cr3t-value"\n')
    assert got == ["c.toml:3: azure.containers[0].tenant_id: a service principal needs tenant_id as well "
                   "(this entry has client_id, client_secret)"]


def test_an_identity_over_http_is_refused(tmp_path: Path) -> None:
    config = load(tmp_path, PRINCIPAL.replace('client_id = "client-1"',
                                              'client_id = "client-1"\nendpoint = "http://127.0.0.1:1/acct1"'))
    with pytest.raises(ConfigError) as info:
        settings(config, "az://data@acct1/p")
    assert "only sent over https" in str(info.value) and SECRET not in str(info.value)


class _Spy(BlobServiceClient):
    """The real BlobServiceClient, remembering what it was built with."""

    made: list[dict[str, Any]] = []

    def __init__(self, account_url: str, credential: Any = None, **kwargs: Any) -> None:
        _Spy.made.append({"account_url": account_url, "credential": credential})
        super().__init__(account_url, credential=credential, **kwargs)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    _Spy.made = []
    monkeypatch.setattr(azure_backend, "BlobServiceClient", _Spy)
    monkeypatch.setattr(azure_backend, "_clients", {})
    return _Spy.made


def test_the_adapter_hands_the_identity_to_blob_service_client(tmp_path: Path,
                                                                spy: list[dict[str, Any]]) -> None:
    config = load(tmp_path, PRINCIPAL)
    store = azure_backend.AzureStore(settings(config, "az://data@acct1/p"), config.retry)
    assert store.container.container_name == "data"
    (made,) = spy
    credential = made["credential"]
    assert made["account_url"] == "https://acct1.blob.core.windows.net"
    assert isinstance(credential, ClientSecretCredential)
    assert (credential._tenant_id, credential._client_id) == ("tenant-1", "client-1")
    chain = azure_backend.AzureStore(settings(config, "az://models@acct2/"), config.retry)
    assert chain.container.container_name == "models"
    assert isinstance(spy[1]["credential"], DefaultAzureCredential)


def test_a_credential_that_gives_no_token_is_access_denied() -> None:
    exc = ClientAuthenticationError("DefaultAzureCredential failed to retrieve a token from the included "
                                    "credentials.\nAttempted credentials: ...")
    got = azure_backend.translate(exc, "LIST az://acct/c/")
    assert isinstance(got, AccessDenied)
    assert "no access token from the identity: DefaultAzureCredential failed" in str(got)


# --- a real read with a managed identity: Azurite over https with --oauth basic -----------------------


def _self_signed(tmp: Path) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def _token() -> str:
    """A JWT as Entra ID issues for Azure Storage; Azurite's basic OAuth checks its claims, not its
    signature."""
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    now = int(time.time())
    claims = {"aud": "https://storage.azure.com", "iss": "https://sts.windows.net/tenant-1/", "iat": now - 60,
              "nbf": now - 60, "exp": now + 3600, "oid": "object-1", "tid": "tenant-1"}
    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


@pytest.fixture
def identity_endpoint() -> Iterator[tuple[str, list[str]]]:
    """An App Service managed-identity endpoint (IDENTITY_ENDPOINT) handing out `_token()`; the
    resources asked for are recorded."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            asked.append(query.get("resource", [""])[0])
            if self.headers.get("X-IDENTITY-HEADER") != "identity-header":
                self.send_response(401)
                self.end_headers()
                return
            body = json.dumps({"access_token": _token(), "expires_on": str(int(time.time()) + 3600),
                               "resource": asked[-1], "token_type": "Bearer"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/msi/token", asked
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def azurite_oauth(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Azurite's blob service over https with `--oauth basic`: (account URL, CA bundle)."""
    cert, key = _self_signed(tmp_path)
    port = servers.free_port()
    argv = [servers.azurite_binary(), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location",
            str(tmp_path / "data"), "--skipApiVersionCheck", "--loose", "--disableTelemetry", "--silent",
            "--oauth", "basic", "--cert", cert, "--key", key]
    process = servers._spawn(argv, str(tmp_path / "azurite.log"))
    context = ssl.create_default_context(cafile=cert)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as raw, \
                        context.wrap_socket(raw, server_hostname="127.0.0.1"):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.1)
        yield f"https://127.0.0.1:{port}/{servers.AZURITE_ACCOUNT}", cert
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_a_managed_identity_reads_from_azurite_over_https(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, azurite_oauth: tuple[str, str],
        identity_endpoint: tuple[str, list[str]]) -> None:
    account_url, ca = azurite_oauth
    endpoint, asked = identity_endpoint
    keyed = BlobServiceClient(account_url, credential={"account_name": servers.AZURITE_ACCOUNT,
                                                       "account_key": servers.AZURITE_KEY},
                              connection_verify=ca, retry_total=0)
    keyed.create_container("models").upload_blob("p/model.bin", b"weights")
    for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE", "MSI_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IDENTITY_ENDPOINT", endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", "identity-header")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca)  # azure-core's requests transport trusts Azurite's cert
    monkeypatch.setattr(azure_backend, "_clients", {})
    config = load(tmp_path, f'[[azure.containers]]\naccount_name = "{servers.AZURITE_ACCOUNT}"\n'
                            f'use_credentials_chain = true\nendpoint = "{account_url}"\n'
                            f'[[mount]]\npath = "m"\nurl = "az://models@{servers.AZURITE_ACCOUNT}/p"\n')
    store = azure_backend.AzureStore(settings(config, config.mounts[0].url.raw), config.retry)
    store.check_access()
    assert store.get_range("p/model.bin", 0, 100) == b"weights"
    assert asked and asked[0].startswith("https://storage.azure.com")
    monkeypatch.setenv("IDENTITY_HEADER", "wrong")  # the identity gives no token: access denied, said so
    monkeypatch.setattr(azure_backend, "_clients", {})
    with pytest.raises(AccessDenied, match="no access token from the identity"):
        azure_backend.AzureStore(settings(config, config.mounts[0].url.raw), config.retry).check_access()
