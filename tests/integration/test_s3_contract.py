"""The ObjectStore contract against real S3 servers started on 127.0.0.1 (SeaweedFS and moto)."""

from __future__ import annotations

import http.server
import threading
import urllib.error
import urllib.request
from typing import Any

import botocore.exceptions
import pytest

from mountfs.backends.base import ObjectStore
from mountfs.backends.s3 import S3Store
from mountfs.config import RetryConfig
from mountfs.config.s3 import S3Settings
from mountfs.errors import AccessDenied, NotFound, StoreUnavailable

pytest.register_assert_rewrite("tests.unit.store_contract")

from tests.unit.store_contract import MTIME, Put, StoreContract, StoreWriteContract  # noqa: E402

RETRY = RetryConfig(attempts=3, base_delay=0.05, max_delay=0.2, budget=10, request_timeout=10)


def s3_store(server: Any, bucket: str, key: str | None = None, secret: str | None = None,
             host_port: str | None = None) -> S3Store:
    settings = S3Settings(bucket=bucket, endpoint_url=f"http://{host_port or server.host_port}",
                          region="us-east-1", key=key or server.access_key,
                          secret=secret or server.secret_key, addressing_style="path")
    return S3Store(settings, RETRY)


@pytest.fixture
def store(s3_server: Any, s3_bucket: str) -> ObjectStore:
    return s3_store(s3_server, s3_bucket)


@pytest.fixture
def put(s3_server: Any, s3_bucket: str) -> Put:
    client = s3_server.client()

    def put_object(key: str, data: bytes) -> None:
        client.put_object(Bucket=s3_bucket, Key=key, Body=data)

    return put_object


# Where a test server departs from S3 itself. mountfs relies on none of these behaviours (it never
# assumes listing order, and treats any failed upload call as a failure); each is skipped, not hidden.
SERVER_DEVIATIONS = {
    ("seaweedfs", "test_list_without_delimiter_is_recursive"):
        "SeaweedFS lists in its filer's tree order ('a/b/c' before 'a-b'), not in UTF-8 byte order",
    ("seaweedfs", "test_list_interleaves_objects_and_prefixes_in_byte_order"):
        "SeaweedFS lists in its filer's tree order ('a/' before 'a.b'), not in UTF-8 byte order",
    ("seaweedfs", "test_multipart_wrong_part_etag"):
        "SeaweedFS does not check part ETags at CompleteMultipartUpload",
    ("moto", "test_multipart_abort"): "moto answers 500 for a call on an aborted upload",
    ("moto", "test_multipart_unknown_upload"): "moto answers 500 for an unknown upload id",
}


@pytest.fixture(autouse=True)
def _skip_server_deviations(request: pytest.FixtureRequest) -> None:
    if "s3_server" in request.fixturenames:
        kind = request.getfixturevalue("s3_server").kind
        reason = SERVER_DEVIATIONS.get((kind, request.function.__name__))
        if reason:
            pytest.skip(reason)


class TestContract(StoreContract, StoreWriteContract):
    tokens_are_keys = False
    listings_carry_mtime = False  # ListObjectsV2 has no metadata: LastModified shows


def test_set_mtime_keeps_content_type_and_other_metadata(s3_server: Any, s3_bucket: str) -> None:
    client = s3_server.client()
    client.put_object(Bucket=s3_bucket, Key="typed.txt", Body=b"text", ContentType="text/plain",
                      CacheControl="max-age=60", Metadata={"owner": "team-a"})
    store = s3_store(s3_server, s3_bucket)
    meta = store.set_mtime("typed.txt", MTIME)
    head = client.head_object(Bucket=s3_bucket, Key="typed.txt")
    assert head["Metadata"] == {"owner": "team-a", "mtime": "1600000000.123456789"}  # rclone's form
    assert (head["ContentType"], head["CacheControl"]) == ("text/plain", "max-age=60")
    assert store.head("typed.txt") == meta and meta.mtime_ns == MTIME
    assert client.get_object(Bucket=s3_bucket, Key="typed.txt")["Body"].read() == b"text"


def test_an_mtime_written_by_rclone_is_read_and_a_broken_one_ignored(s3_server: Any, s3_bucket: str) -> None:
    client = s3_server.client()
    client.put_object(Bucket=s3_bucket, Key="rclone", Body=b"1", Metadata={"Mtime": "1500000000.25"})
    client.put_object(Bucket=s3_bucket, Key="broken", Body=b"2", Metadata={"mtime": "yesterday"})
    store = s3_store(s3_server, s3_bucket)
    assert store.head("rclone").mtime_ns == 1_500_000_000_250_000_000
    broken = store.head("broken")
    listed = {o.key: o for o in store.list("", "/").objects}
    assert broken.mtime_ns == listed["broken"].mtime_ns, "no valid mtime: LastModified, as listed"


def test_set_mtime_above_the_copy_limit_is_a_multipart_copy(s3_server: Any, s3_bucket: str) -> None:
    """Above 5 GiB one CopyObject cannot copy an object: parts are copied with UploadPartCopy (the
    limit is lowered here so that 5 MiB + 3 bytes take two parts)."""
    data = bytes(range(256)) * (5 << 12) + b"end"
    store = s3_store(s3_server, s3_bucket)
    store.put("big", data)
    store.copy_limit, store.copy_part_size = 1, 5 << 20
    meta = store.set_mtime("big", MTIME)
    assert meta.size == len(data) and meta.mtime_ns == MTIME
    assert store.head("big") == meta and store.head("big").mtime_ns == MTIME
    assert store.get_range("big", 0, len(data), etag=meta.etag) == data
    uploads = s3_server.client().list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
    assert uploads == [], "the copy's upload is completed, none is left behind"


def test_a_copy_above_the_copy_limit_goes_in_parts(s3_server: Any, s3_bucket: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A rename of an object above 5 GiB: CopyObject refuses it (AWS's answer, stood in for here:
    no test server holds 5 GiB), so the copy goes as UploadPartCopy parts, for real, with the
    source's metadata (its mtime) and content type."""
    data = bytes(range(256)) * (5 << 12) + b"end"
    store = s3_store(s3_server, s3_bucket)
    store.put("big-src", data, mtime_ns=MTIME)
    store.copy_part_size = 5 << 20
    real_copy = store.client.copy_object

    def refuse(**kwargs: Any) -> Any:
        raise botocore.exceptions.ClientError({"Error": {
            "Code": "InvalidRequest", "Message": "The specified copy source is larger than the maximum "
            "allowable size for a copy source: 5368709120"}}, "CopyObject")

    monkeypatch.setattr(store.client, "copy_object", refuse)
    meta = store.copy("big-src", "big-dst")
    monkeypatch.setattr(store.client, "copy_object", real_copy)
    assert meta.size == len(data) and meta.mtime_ns == MTIME
    assert meta.etag.endswith("-2"), "a multipart object of two parts, not a CopyObject copy"
    assert store.get_range("big-dst", 0, len(data), etag=meta.etag) == data
    assert s3_server.client().list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def test_missing_bucket_fails_the_access_check(s3_server: Any) -> None:
    with pytest.raises(NotFound, match=r"bucket no-such-bucket-here does not exist at http://127\.0\.0\.1"):
        s3_store(s3_server, "no-such-bucket-here").check_access()


def test_unreachable_endpoint_fails_the_access_check(s3_server: Any) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(StoreUnavailable, match=f"cannot reach s3://b at http://127.0.0.1:{port}"):
        s3_store(s3_server, "b", host_port=f"127.0.0.1:{port}").check_access()


def test_wrong_secret_is_access_denied(seaweedfs: Any, request: pytest.FixtureRequest) -> None:
    bucket = "denied-check"
    seaweedfs.create_bucket(bucket)
    with pytest.raises(AccessDenied, match="access denied") as info:
        s3_store(seaweedfs, bucket, secret="not-the-secret").check_access()
    assert "not-the-secret" not in str(info.value)


def test_credentials_from_the_environment_and_from_a_profile(
        seaweedfs: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """No key in the config: boto3's own chain finds one (env vars first, then AWS_PROFILE)."""
    from mountfs.backends.s3 import _clients

    seaweedfs.create_bucket("chain-check")
    settings = S3Settings(bucket="chain-check", endpoint_url=seaweedfs.endpoint, region="us-east-1",
                          addressing_style="path")
    assert settings.uses_chain
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs.secret_key)
    _clients.clear()
    S3Store(settings, RETRY).check_access()

    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    shared = tmp_path / "credentials"
    shared.write_text(f"[training]\naws_access_key_id = {seaweedfs.access_key}\n"
                      f"aws_secret_access_key = {seaweedfs.secret_key}\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(shared))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_PROFILE", "training")
    _clients.clear()
    S3Store(settings, RETRY).check_access()

    monkeypatch.setenv("AWS_PROFILE", "nobody")
    _clients.clear()
    with pytest.raises(AccessDenied, match="The config profile \\(nobody\\) could not be found"):
        S3Store(settings, RETRY).check_access()
    _clients.clear()


class ForwardProxy:
    """A plain HTTP forward proxy on 127.0.0.1 that counts what passes through it."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:
                self.do_GET()

            def do_GET(self) -> None:
                proxy.seen.append(self.path)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "proxy-connection"}
                request = urllib.request.Request(self.path, headers=headers, method=self.command)
                opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
                try:
                    reply = opener.open(request, timeout=30)
                    status, body, reply_headers = reply.status, reply.read(), reply.headers
                except urllib.error.HTTPError as exc:
                    status, body, reply_headers = exc.code, exc.read(), exc.headers
                self.send_response(status)
                for name, value in reply_headers.items():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", reply_headers.get("Content-Length", str(len(body))))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_reads_and_listings_go_through_an_http_proxy(s3_server: Any, s3_bucket: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """With HTTP_PROXY set (and NO_PROXY not exempting the endpoint) GETs and LISTs go the way
    botocore goes, through the proxy; without it they take mountfs's own connections."""
    import mountfs.backends.s3 as s3_module

    # Clients made here see the proxy for good: keep them out of the process-wide caches.
    monkeypatch.setattr(s3_module, "_clients", {})
    monkeypatch.setattr(s3_module, "_readers", {})
    proxy = ForwardProxy()
    try:
        s3_server.client().put_object(Bucket=s3_bucket, Key="dir/k", Body=b"through the proxy")
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        store = s3_store(s3_server, s3_bucket)
        assert store.proxied
        assert [o.key for o in store.list("dir/", "/").objects] == ["dir/k"]
        meta = store.head("dir/k")
        assert store.get_pieces("dir/k", 0, meta.size, 8, meta.etag) == [b"through ", b"the prox", b"y"]
        assert store.get_pieces("dir/k", 100, 5, 8, meta.etag) == []
        assert sum("list-type=2" in path for path in proxy.seen) == 1
        assert sum(path.endswith("/dir/k") for path in proxy.seen) >= 2
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        assert not s3_store(s3_server, s3_bucket).proxied
    finally:
        proxy.close()


def test_a_list_of_uploads_that_trickles_in_gives_up_after_the_request_timeout(
        s3_server: Any, s3_bucket: str) -> None:
    """A close lists the key's multipart uploads before creating one: an answer trickling a byte
    every 0.2 s (never tripping a per-recv timeout) must still fail within request_timeout, not
    hold the close for minutes."""
    from tests.faultproxy import FaultProxy

    proxy = FaultProxy(int(s3_server.host_port.rsplit(":", 1)[1]), endless_bodies=1.0, trickle_interval=0.2)
    try:
        store = s3_store(s3_server, s3_bucket, host_port=proxy.host_port)
        store.retry = RetryConfig(attempts=1, base_delay=0.05, max_delay=0.1, budget=2, request_timeout=1)
        outcome: list[object] = []

        def list_uploads() -> None:
            try:
                outcome.append(store.multipart_uploads("k"))
            except Exception as exc:
                outcome.append(exc)

        thread = threading.Thread(target=list_uploads, daemon=True)
        thread.start()
        thread.join(8)
        assert not thread.is_alive(), "still listing 8 s later, with a request timeout of 1 s"
        assert isinstance(outcome[0], StoreUnavailable), outcome
        assert proxy.endless_served >= 1
    finally:
        proxy.close()


def test_put_etag_is_one_request(s3_server: Any, s3_bucket: str) -> None:
    """A cache's write costs one PUT, no HEAD after it."""
    store = s3_store(s3_server, s3_bucket)
    calls: list[str] = []

    def seen(model: Any, **_: Any) -> None:
        calls.append(model.name)

    store.client.meta.events.register("before-call.s3", seen)
    try:
        etag = store.put_etag("lean", b"block")
    finally:
        store.client.meta.events.unregister("before-call.s3", seen)
    assert calls == ["PutObject"]
    assert store.head("lean").etag == etag
