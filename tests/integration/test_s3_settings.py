"""ClearML's S3 settings against real servers: extra_args reach every object written (single PUT,
multipart, rename, mtime), an assumed role's temporary credentials sign every request, a CA bundle
named by URL is fetched once when the store opens, and a bucket with no configured region is asked."""

from __future__ import annotations

import http.server
import os
import ssl
import subprocess
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import trio

from mountfs.backends import mtime
from mountfs.backends.async_store import AsyncStore
from mountfs.backends.s3 import S3Store, _credentials_source, client_for
from mountfs.config import RetryConfig, WriteConfig, load_config, parse_url
from mountfs.config.s3 import S3Settings, resolve
from mountfs.errors import Misconfigured
from mountfs.upload.journal import UploadJournal
from mountfs.upload.uploader import Uploader
from tests.servers import S3Server

MiB = 1024 * 1024
RETRY = RetryConfig(attempts=2, base_delay=0.05, max_delay=0.1, budget=5, request_timeout=10)
SHOWN = ("ServerSideEncryption", "SSEKMSKeyId", "StorageClass", "Metadata")


def entry(server: S3Server, bucket: str, more: str) -> str:
    """A [[s3.credentials]] entry for `bucket` on `server`, with `more` in it."""
    return (f'[[s3.credentials]]\nhost = "{server.host_port}"\nbucket = "{bucket}"\nsecure = false\n'
            f'key = "{server.access_key}"\nsecret = "{server.secret_key}"\n{textwrap.dedent(more)}\n')


def store_of(server: S3Server, bucket: str, tmp_path: Path, section: str) -> S3Store:
    """The store `resolve` makes of a config file for s3://host:port/bucket on `server`."""
    path = tmp_path / f"{uuid.uuid4().hex}.toml"
    path.write_text(textwrap.dedent(f"""\
        [cache]
        dir = "{tmp_path / 'cache'}"
        [[mount]]
        path = "m"
        url = "s3://{server.host_port}/{bucket}"
        [[s3.credentials]]
        host = "{server.host_port}"
        key = "{server.access_key}"
        secret = "{server.secret_key}"
        secure = false
        """) + textwrap.dedent(section))
    config = load_config(str(path))
    return S3Store(resolve(parse_url(f"s3://{server.host_port}/{bucket}"), config), RETRY)


def shown(server: S3Server, bucket: str, key: str) -> dict[str, Any]:
    head = server.client().head_object(Bucket=bucket, Key=key)
    return {name: head.get(name) for name in SHOWN}


async def write_through_uploader(store: S3Store, journal: UploadJournal, key: str, data: bytes) -> None:
    uploader = Uploader(AsyncStore(store, 8), journal, WriteConfig(part_size=5 * MiB, max_concurrency=4))
    staged = await uploader.open_staged(key, None)
    await uploader.write(staged, 0, data)
    assert await uploader.flush(staged) is not None
    await uploader.release(staged)


@pytest.fixture
def bucket(moto: S3Server) -> str:
    name = f"x-{uuid.uuid4().hex[:8]}"
    moto.create_bucket(name)
    return name


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[UploadJournal]:
    j = UploadJournal(str(tmp_path / "journal"))
    yield j
    j.close()


def kms_key(server: S3Server) -> str:
    kms = boto3.client("kms", endpoint_url=server.endpoint, region_name="us-east-1",
                       aws_access_key_id=server.access_key, aws_secret_access_key=server.secret_key)
    return str(kms.create_key()["KeyMetadata"]["Arn"])


def test_extra_args_reach_every_object_written(moto: S3Server, bucket: str, tmp_path: Path,
                                               journal: UploadJournal) -> None:
    store = store_of(moto, bucket, tmp_path, """\
        [s3.extra_args]
        ServerSideEncryption = "AES256"
        StorageClass = "STANDARD_IA"
        ACL = "public-read"
        Metadata = { team = "vision" }
        """)
    expected = {"ServerSideEncryption": "AES256", "SSEKMSKeyId": None, "StorageClass": "STANDARD_IA"}

    async def main() -> None:
        await write_through_uploader(store, journal, "small.bin", b"small")
        await write_through_uploader(store, journal, "big.bin", os.urandom(11 * MiB))

    trio.run(main)
    assert moto.client().head_object(Bucket=bucket, Key="big.bin")["ETag"].endswith('-3"'), "multipart"
    store.copy("small.bin", "renamed.bin")  # what a rename does
    store.set_mtime("big.bin", 1_700_000_000 * 10**9)
    for key in ("small.bin", "big.bin", "renamed.bin"):
        got = shown(moto, bucket, key)
        assert {k: got[k] for k in expected} == expected, key
        assert got["Metadata"]["team"] == "vision", key
    assert mtime.from_metadata(shown(moto, bucket, "big.bin")["Metadata"]) == 1_700_000_000 * 10**9
    grants = moto.client().get_object_acl(Bucket=bucket, Key="renamed.bin")["Grants"]
    assert any(g["Grantee"].get("URI", "").endswith("/AllUsers") and g["Permission"] == "READ"
               for g in grants)


def test_a_rename_keeps_the_sources_metadata_beside_the_configured(moto: S3Server, bucket: str,
                                                                   tmp_path: Path) -> None:
    moto.client().put_object(Bucket=bucket, Key="a", Body=b"x", ContentType="text/csv",
                             Metadata={"mtime": "1600000000", "team": "old", "origin": "elsewhere"})
    store = store_of(moto, bucket, tmp_path, '[s3]\nextra_args = { Metadata = { team = "vision" } }\n')
    meta = store.copy("a", "b")
    head = moto.client().head_object(Bucket=bucket, Key="b")
    assert head["Metadata"] == {"mtime": "1600000000", "team": "vision", "origin": "elsewhere"}
    assert head["ContentType"] == "text/csv" and meta.mtime_ns == 1_600_000_000 * 10**9


def test_kms_key_id_and_ssekmskeyid_encrypt_with_that_key(moto: S3Server, bucket: str, tmp_path: Path,
                                                          journal: UploadJournal) -> None:
    key = kms_key(moto)
    old = store_of(moto, bucket, tmp_path, entry(moto, bucket, f'kms_key_id = "{key}"'))
    new = store_of(moto, bucket, tmp_path,
                   f'[s3]\nextra_args = {{ ServerSideEncryption = "aws:kms", SSEKMSKeyId = "{key}" }}\n')
    assert old.settings.extra_args == new.settings.extra_args

    async def main() -> None:
        await write_through_uploader(old, journal, "old.bin", b"o")
        await write_through_uploader(new, journal, "new.bin", os.urandom(6 * MiB))

    trio.run(main)
    new.copy("new.bin", "moved.bin")
    for name in ("old.bin", "new.bin", "moved.bin"):
        got = shown(moto, bucket, name)
        assert (got["ServerSideEncryption"], got["SSEKMSKeyId"]) == ("aws:kms", key), name


def test_seaweedfs_keeps_aes256_storage_class_and_metadata(seaweedfs: S3Server, tmp_path: Path) -> None:
    """SeaweedFS records these three; it keeps no ACL grant and answers InternalError to aws:kms
    without a KMS of its own."""
    bucket = f"x-{uuid.uuid4().hex[:8]}"
    seaweedfs.create_bucket(bucket)
    store = store_of(seaweedfs, bucket, tmp_path, """\
        [s3.extra_args]
        ServerSideEncryption = "AES256"
        StorageClass = "STANDARD_IA"
        Metadata = { team = "vision" }
        """)
    store.put("a", b"x")
    store.copy("a", "b")
    for key in ("a", "b"):
        got = shown(seaweedfs, bucket, key)
        assert (got["ServerSideEncryption"], got["StorageClass"], got["Metadata"]) == (
            "AES256", "STANDARD_IA", {"team": "vision"}), key


# --- an assumed role -----------------------------------------------------------------------------

def test_role_arn_signs_with_the_roles_temporary_credentials(moto: S3Server, bucket: str,
                                                             tmp_path: Path) -> None:
    store = store_of(moto, bucket, tmp_path, entry(moto, bucket, """\
        role_arn = "arn:aws:iam::123456789012:role/writer"
        role_session_name = "mountfs-test"
        external_id = "ext"
        """))
    store.check_access()
    store.put("k", b"hello")
    assert store.get_range("k", 0, 5) == b"hello"
    signer = store.client._request_signer._credentials.get_frozen_credentials()
    own = _credentials_source(store.settings, RETRY.request_timeout)()
    assert signer.access_key.startswith("ASIA") and signer.token, "STS's temporary key, not the config's"
    assert (own.key, own.token) == (signer.access_key, signer.token), "mountfs's GETs sign with the same"


# --- a CA bundle named by URL --------------------------------------------------------------------

@pytest.fixture
def https_pem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, bytes]]:
    """An https server on 127.0.0.1 serving its own certificate as /ca.pem (trusted here through
    SSL_CERT_FILE): (URL, the PEM)."""
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    pem = Path(cert).read_bytes()
    monkeypatch.setenv("SSL_CERT_FILE", cert)
    fetched: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fetched.append(self.path)
            body = pem if self.path == "/ca.pem" else b"not a certificate"
            self.send_response(200 if self.path != "/missing.pem" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", pem
    finally:
        server.shutdown()
        server.server_close()
    assert fetched.count("/ca.pem") <= 1, "fetched once"


def test_a_ca_bundle_url_is_fetched_once_when_the_store_opens(moto: S3Server, bucket: str, tmp_path: Path,
                                                              https_pem: tuple[str, bytes]) -> None:
    base, pem = https_pem
    store = store_of(moto, bucket, tmp_path, entry(moto, bucket, f'verify = "{base}/ca.pem"'))
    assert store.settings.verify == f"{base}/ca.pem", "not fetched before the store opens"
    store.check_access()
    saved = store.settings.verify
    assert isinstance(saved, str) and saved.startswith(str(tmp_path / "cache" / "ca-bundles"))
    assert Path(saved).read_bytes() == pem
    assert store.client._endpoint.http_session._verify == saved, "botocore is handed the fetched copy"
    store.put("k", b"x")  # the fixture checks that nothing fetched it again


@pytest.mark.parametrize(("path", "message"), [
    ("/missing.pem", "cannot fetch the CA bundle: HTTP 404 Not Found"),
    ("/other", "what the URL serves is not a PEM CA bundle"),
])
def test_a_ca_bundle_that_cannot_be_fetched_is_one_clear_error(https_pem: tuple[str, bytes], tmp_path: Path,
                                                               path: str, message: str) -> None:
    url = https_pem[0] + path
    settings = S3Settings(bucket="bkt", endpoint_url="http://127.0.0.1:1", region="us-east-1", key="k",
                          secret="s", verify=url, ca_dir=str(tmp_path / "ca"))
    with pytest.raises(Misconfigured) as info:
        S3Store(settings, RETRY).check_access()
    assert str(info.value) == f"verify = {url!r}: {message}"
    assert not (tmp_path / "ca").exists() or os.listdir(tmp_path / "ca") == [], "nothing half-saved"


def test_a_ca_bundle_url_nobody_answers_names_the_url(tmp_path: Path) -> None:
    settings = S3Settings(bucket="bkt", endpoint_url="http://127.0.0.1:1", region="us-east-1", key="k",
                          secret="s", verify="https://127.0.0.1:1/ca.pem", ca_dir=str(tmp_path))
    with pytest.raises(Misconfigured, match=r"^verify = 'https://127.0.0.1:1/ca.pem': cannot fetch the CA"):
        S3Store(settings, RETRY).check_access()


# --- a bucket asked for its region ---------------------------------------------------------------

def test_a_bucket_with_no_configured_region_is_asked(moto: S3Server) -> None:
    name = f"x-{uuid.uuid4().hex[:8]}"
    moto.client().create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    settings = S3Settings(bucket=name, endpoint_url=moto.endpoint, region="us-east-1", key=moto.access_key,
                          secret=moto.secret_key, addressing_style="path", ask_region=True)
    store = S3Store(settings, RETRY)
    store.check_access()
    assert store.settings.region == "eu-west-1" and not store.settings.ask_region
    assert client_for(store.settings, RETRY.request_timeout).meta.region_name == "eu-west-1"
    store.put("k", b"x")
    assert store.get_range("k", 0, 1) == b"x"
