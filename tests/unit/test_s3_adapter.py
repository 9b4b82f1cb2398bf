"""The S3 adapter's own logic: credential resolution, error mapping, and faults that a real server
cannot be made to produce on demand (through botocore's Stubber). Everything else about S3 is
tested against real servers in tests/integration."""

from __future__ import annotations

import base64
import datetime
import hashlib
import http.server
import ssl
import threading
import unittest.mock
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
from botocore.stub import Stubber

from mountfs.backends.s3 import S3Store, translate
from mountfs.config import RetryConfig, load_config, parse_url
from mountfs.config.s3 import resolve
from mountfs.errors import AccessDenied, NotFound, Rejected, Stale, StoreUnavailable, Throttled, Transient

CONFIG = """
[s3]
key = "default-key"
secret = "default-secret"
region = "eu-west-1"

[[s3.credentials]]
host = "minio.internal:9000"
key = "host-key"
secret = "host-secret"
secure = false

[[s3.credentials]]
bucket = "special"
key = "bucket-key"
secret = "bucket-secret"
token = "bucket-token"
kms_key_id = "arn:aws:kms:eu-west-1:1:key/k"

[[s3.credentials]]
host = "minio.internal:9000"
bucket = "pinned"
key = "pinned-key"
secret = "pinned-secret"
verify = "${MINIO_PEM}"
multipart = false
secure = false

[[mount]]
path = "x"
url = "s3://any/x"
"""


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    (tmp_path / "minio.pem").write_text("")  # a CA bundle path must name a file
    monkeypatch.setenv("MINIO_PEM", str(tmp_path / "minio.pem"))
    path = tmp_path / "c.toml"
    path.write_text(CONFIG)
    return load_config(str(path))


def test_credentials_most_specific_first(config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    plain = resolve(parse_url("s3://other/p"), config)
    assert (plain.key, plain.region, plain.endpoint_url, plain.addressing_style) == (
        "default-key", "eu-west-1", None, "auto")
    host = resolve(parse_url("s3://minio.internal:9000/data"), config)
    assert (host.key, host.secret, host.endpoint_url, host.addressing_style) == (
        "host-key", "host-secret", "http://minio.internal:9000", "path")
    bucket = resolve(parse_url("s3://special/p"), config)
    assert (bucket.key, bucket.token, bucket.kms_key_id) == ("bucket-key", "bucket-token", bucket.kms_key_id)
    assert bucket.kms_key_id == "arn:aws:kms:eu-west-1:1:key/k"
    pinned = resolve(parse_url("s3://minio.internal:9000/pinned"), config)
    assert (pinned.key, pinned.verify, pinned.multipart) == ("pinned-key", str(tmp_path / "minio.pem"), False)
    elsewhere = resolve(parse_url("s3://other.host:9000/pinned"), config)
    assert elsewhere.key == "default-key", "a bucket entry bound to a host applies on that host only"
    assert elsewhere.endpoint_url == "https://other.host:9000"


def test_the_chain_is_used_when_asked_or_when_no_key_is_given(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[s3]\nkey = "k"\nsecret = "s"\nuse_credentials_chain = true\n'
                    '[[mount]]\npath = "x"\nurl = "s3://bkt"\n')
    assert resolve(parse_url("s3://bkt"), load_config(str(path))).uses_chain
    path.write_text('[[mount]]\npath = "x"\nurl = "s3://bkt"\n')
    assert resolve(parse_url("s3://bkt"), load_config(str(path))).uses_chain


def test_no_secret_in_settings_repr_or_description(config) -> None:  # type: ignore[no-untyped-def]
    settings = resolve(parse_url("s3://special/p"), config)
    for text in (repr(settings), settings.describe()):
        assert "bucket-secret" not in text and "bucket-key" not in text and "bucket-token" not in text


def client_error(code: str, status: int) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": "msg"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")


@pytest.mark.parametrize(("code", "status", "kind"), [
    ("NoSuchKey", 404, NotFound), ("404", 404, NotFound), ("NoSuchBucket", 404, NotFound),
    ("AccessDenied", 403, AccessDenied), ("InvalidAccessKeyId", 403, AccessDenied),
    ("SignatureDoesNotMatch", 403, AccessDenied), ("PreconditionFailed", 412, Stale),
    ("SlowDown", 503, Throttled), ("InternalError", 500, Transient), ("ServiceUnavailable", 503, Throttled),
    ("RequestTimeout", 400, Transient), ("Throttling", 400, Throttled), ("WeirdError", 400, Rejected),
    ("TooManyRequests", 429, Throttled),
    ("KeyTooLongError", 400, Rejected), ("InvalidArgument", 400, Rejected), ("EntityTooLarge", 400, Rejected),
    ("MethodNotAllowed", 405, Rejected), ("IncompleteBody", 400, Transient), ("BadDigest", 400, Transient),
    ("OperationAborted", 409, Transient), ("BucketNotEmpty", 409, StoreUnavailable),
])
def test_client_errors_map_to_one_hierarchy(code: str, status: int, kind: type) -> None:
    """A 4xx that the same request would get again is Rejected: the uploader gives up on it."""
    error = translate(client_error(code, status), "GET s3://b/k")
    assert isinstance(error, kind) and str(error).startswith("GET s3://b/k")
    assert isinstance(error, Throttled) == (kind is Throttled)
    assert isinstance(error, Rejected) == (kind is Rejected)


def test_connection_failures_are_transient() -> None:
    for exc in (botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"),
                botocore.exceptions.ReadTimeoutError(endpoint_url="http://x"),
                botocore.exceptions.ConnectionClosedError(endpoint_url="http://x")):
        assert isinstance(translate(exc, "GET"), Transient)
    assert isinstance(translate(botocore.exceptions.NoCredentialsError(), "GET"), AccessDenied)


def stubbed_store(config) -> tuple[S3Store, Stubber]:  # type: ignore[no-untyped-def]
    store = S3Store(resolve(parse_url("s3://minio.internal:9000/data"), config),
                    RetryConfig(attempts=4, base_delay=0.001, max_delay=0.002, budget=5))
    return store, Stubber(store.client)


class ScriptedServer:
    """An HTTP server on 127.0.0.1 that gives scripted answers and records each request: for the
    answers a real S3 server cannot be made to give on demand (throttling, 500s)."""

    def __init__(self, answers: list[tuple[int, bytes]] | list[tuple[int, bytes, dict[str, str]]]) -> None:
        self.answers = answers
        self.requests: list[dict[str, str]] = []
        script = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                script.requests.append({k.lower(): v for k, v in self.headers.items()})
                status, body, *extra = script.answers.pop(0)
                headers = dict(extra[0]) if extra else {}
                if status == 206 and "content-range" not in headers:  # the range asked, as long as the body
                    first = int(self.headers["range"].removeprefix("bytes=").split("-")[0])
                    headers["content-range"] = f"bytes {first}-{first + len(body) - 1}/{first + len(body)}"
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def host_port(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def s3_error(code: str) -> bytes:
    return f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>m</Message></Error>".encode()


@pytest.fixture
def scripted(tmp_path: Path) -> Iterator[Callable[[list[Any]], S3Store]]:
    servers: list[ScriptedServer] = []

    def make(answers: list[Any]) -> S3Store:
        server = ScriptedServer(answers)
        servers.append(server)
        path = tmp_path / "s.toml"
        path.write_text(f'[[s3.credentials]]\nhost = "{server.host_port}"\nkey = "k"\nsecret = "s"\n'
                        f'secure = false\n[[mount]]\npath = ""\nurl = "s3://{server.host_port}/data"\n')
        config = load_config(str(path))
        store = S3Store(resolve(config.mounts[0].url, config),
                        RetryConfig(attempts=4, base_delay=0.001, max_delay=0.002, budget=5))
        store.scripted = server  # type: ignore[attr-defined]
        return store

    yield make
    for server in servers:
        server.close()


def test_throttling_then_success_is_retried(scripted) -> None:  # type: ignore[no-untyped-def]
    store = scripted([(503, s3_error("SlowDown")), (503, s3_error("SlowDown")), (206, b"abc")])
    assert store.get_range("k", 0, 3, "e1") == b"abc"
    requests = store.scripted.requests
    assert len(requests) == 3
    assert (requests[-1]["range"], requests[-1]["if-match"]) == ("bytes=0-2", '"e1"')
    assert requests[-1]["authorization"].startswith("AWS4-HMAC-SHA256 Credential=k/")


def test_persistent_5xx_gives_up_as_store_unavailable(scripted) -> None:  # type: ignore[no-untyped-def]
    store = scripted([(500, s3_error("InternalError"))] * 4)
    with pytest.raises(StoreUnavailable, match=r"GET s3://data/k .*gave up after 4"):
        store.get_range("k", 0, 3, "e1")


def test_a_range_past_the_end_reads_empty(scripted) -> None:  # type: ignore[no-untyped-def]
    store = scripted([(416, s3_error("InvalidRange"))])
    assert store.get_range("k", 100, 3) == b""


def test_get_answers_map_like_sdk_errors(scripted) -> None:  # type: ignore[no-untyped-def]
    store = scripted([(412, s3_error("PreconditionFailed")), (404, s3_error("NoSuchKey")),
                      (403, s3_error("SignatureDoesNotMatch")), (404, s3_error("NoSuchBucket"))])
    with pytest.raises(Stale):
        store.get_range("k", 0, 3, "old")
    with pytest.raises(NotFound, match="not found"):
        store.get_range("k", 0, 3)
    with pytest.raises(AccessDenied, match="SignatureDoesNotMatch"):
        store.get_range("k", 0, 3)
    with pytest.raises(NotFound, match="bucket does not exist"):
        store.get_range("k", 0, 3)


def crc32_of(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def test_a_body_for_another_range_is_retried_never_served(scripted) -> None:  # type: ignore[no-untyped-def]
    store = scripted([(206, b"xyz", {"content-range": "bytes 5-7/100"}),  # a mixed-up answer
                      (206, b"ab", {"content-range": "bytes 0-2/100"}),  # says 3 bytes, sends 2
                      (206, b"abc", {"content-range": "bytes 0-2"}),  # not a Content-Range
                      (206, b"abc")])
    assert store.get_range("k", 0, 3) == b"abc"
    assert len(store.scripted.requests) == 4


def test_a_whole_object_for_a_range_is_served_only_from_its_start(scripted) -> None:  # type: ignore[no-untyped-def]
    store = scripted([(200, b"abc")] + [(200, b"abcdef")] * 4)
    assert store.get_range("k", 0, 10) == b"abc"  # the Range ignored, but it is all that was asked
    with pytest.raises(StoreUnavailable, match=r"asked for bytes 2-4, got the whole object \(6 bytes\)"):
        store.get_range("k", 2, 3)


def test_a_whole_object_failing_its_checksum_is_retried_never_served(scripted) -> None:  # type: ignore[no-untyped-def]
    good = {"x-amz-checksum-crc32": crc32_of(b"abc")}
    sha = {"x-amz-checksum-sha256": base64.b64encode(hashlib.sha256(b"abc").digest()).decode()}
    store = scripted([(206, b"abX", good), (206, b"abc", good),
                      (206, b"abX", sha), (206, b"abc", sha),
                      (206, b"abX", {"x-amz-checksum-crc32": crc32_of(b"abc") + "-2"}),  # of the parts
                      (206, b"ab", {"x-amz-checksum-crc32": crc32_of(b"abc"),  # not the whole object
                                    "content-range": "bytes 0-1/3"})])
    assert store.get_range("k", 0, 3) == b"abc"
    assert store.get_range("k", 0, 3) == b"abc"
    assert len(store.scripted.requests) == 4
    assert store.get_range("k", 0, 3) == b"abX", "a composite checksum cannot be checked"
    assert store.get_range("k", 0, 2) == b"ab"
    assert all(r["x-amz-checksum-mode"] == "ENABLED" for r in store.scripted.requests)


@pytest.mark.parametrize("url,key,token", [
    ("http://127.0.0.1:9000", "dir/a b+c~é.bin", None),
    (None, "dir/x.bin", "session-token"),
])
def test_get_signatures_match_botocores(url: str | None, key: str, token: str | None) -> None:
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials as BotoCredentials

    from mountfs.backends.s3_get import Credentials, Signer, object_url
    from mountfs.config.s3 import S3Settings

    settings = S3Settings(bucket="data-bucket", endpoint_url=url, region="eu-west-1")
    base, host, path = object_url(settings, key)
    when = datetime.datetime(2026, 11, 22, 1, 2, 3, tzinfo=datetime.UTC)
    ours = Signer("eu-west-1").sign("GET", host, path, {"Range": "bytes=0-9"},
                                    Credentials("AKID", "SECRET", token), when)
    request = AWSRequest(method="GET", url=base + path, headers={"Range": "bytes=0-9"})
    request.context["payload_signing_enabled"] = True
    signer = S3SigV4Auth(BotoCredentials("AKID", "SECRET", token), "s3", "eu-west-1")
    with unittest.mock.patch("botocore.auth.get_current_datetime", return_value=when.replace(tzinfo=None)):
        signer.add_auth(request)
    assert ours["authorization"] == request.headers["Authorization"]
    expected_host = "127.0.0.1:9000" if url else "data-bucket.s3.eu-west-1.amazonaws.com"
    assert host == expected_host


@pytest.mark.parametrize("url", ["http://127.0.0.1:9000", None])
def test_list_signatures_match_botocores(url: str | None) -> None:
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials as BotoCredentials

    from mountfs.backends.s3_get import Credentials, Signer, canonical_query, object_url
    from mountfs.config.s3 import S3Settings

    settings = S3Settings(bucket="data-bucket", endpoint_url=url, region="eu-west-1")
    base, host, path = object_url(settings, None)
    assert path == ("/data-bucket" if url else "/")
    params = {"list-type": "2", "prefix": "dir/a b+c~é%/", "delimiter": "/", "max-keys": "1000",
              "continuation-token": "tok/+=x", "encoding-type": "url"}
    query = canonical_query(params)
    when = datetime.datetime(2026, 11, 22, 1, 2, 3, tzinfo=datetime.UTC)
    ours = Signer("eu-west-1").sign("GET", host, path, {}, Credentials("AKID", "SECRET"), when, query)
    request = AWSRequest(method="GET", url=f"{base}{path}?{query}")
    request.context["payload_signing_enabled"] = True
    signer = S3SigV4Auth(BotoCredentials("AKID", "SECRET"), "s3", "eu-west-1")
    with unittest.mock.patch("botocore.auth.get_current_datetime", return_value=when.replace(tzinfo=None)):
        signer.add_auth(request)
    assert ours["authorization"] == request.headers["Authorization"]


def test_list_answers_are_parsed_and_url_decoded() -> None:
    from mountfs.backends.s3_get import _parse_listing

    body = (b'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult '
            b'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><EncodingType>url</EncodingType>'
            b'<IsTruncated>true</IsTruncated><NextContinuationToken>t+1</NextContinuationToken>'
            b'<Contents><Key>a+b%2Bc%C3%A9</Key><Size>5</Size><ETag>&quot;e1&quot;</ETag>'
            b'<LastModified>2026-11-22T00:54:55.000Z</LastModified></Contents>'
            b'<CommonPrefixes><Prefix>sub%20dir/</Prefix></CommonPrefixes></ListBucketResult>')
    page = _parse_listing(body)
    assert [(o.key, o.size, o.etag) for o in page.objects] == [("a b+cé", 5, '"e1"')]
    assert page.prefixes == ["sub dir/"] and page.next_token == "t+1"
    plain = _parse_listing(b"<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>a+b</Key>"
                           b"<Size>1</Size></Contents></ListBucketResult>")
    assert [o.key for o in plain.objects] == ["a+b"] and plain.next_token is None


def test_session_tokens_reach_the_signer(config) -> None:  # type: ignore[no-untyped-def]
    store = S3Store(resolve(parse_url("s3://special/p"), config), RetryConfig())
    credentials = store.client._request_signer._credentials
    assert (credentials.access_key, credentials.token) == ("bucket-key", "bucket-token")
    from mountfs.backends.s3 import reads_for

    signing = reads_for(store.settings, 30.0).credentials()
    assert (signing.key, signing.token) == ("bucket-key", "bucket-token"), "ranged GETs sign with them too"


def test_kms_key_turns_on_sse_kms_for_uploads(config) -> None:  # type: ignore[no-untyped-def]
    store = S3Store(resolve(parse_url("s3://special/p"), config), RetryConfig(attempts=1))
    stub = Stubber(store.client)
    sse = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "arn:aws:kms:eu-west-1:1:key/k"}
    stub.add_response("put_object", {"ETag": '"e"'}, {"Bucket": "special", "Key": "k", "Body": b"x", **sse})
    stub.add_response("create_multipart_upload", {"UploadId": "u"}, {"Bucket": "special", "Key": "k", **sse})
    with stub:
        store.client.put_object(Bucket="special", Key="k", Body=b"x", **store._sse())
        assert store.create_multipart("k") == "u"
    stub.assert_no_pending_responses()


def test_set_mtime_copies_in_place_keeping_what_replace_would_drop(config) -> None:  # type: ignore[no-untyped-def]
    """Content type, user metadata and the object's own KMS key go into the copy; a 412 (the object
    changed between HEAD and copy) makes it try once more on the new version."""
    store = S3Store(resolve(parse_url("s3://plain/p"), config), RetryConfig(attempts=1))
    stub = Stubber(store.client)
    when = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)

    def head(etag: str) -> dict[str, object]:
        return {"ContentLength": 3, "ETag": f'"{etag}"', "LastModified": when, "ContentType": "text/plain",
                "Metadata": {"owner": "a", "Mtime": "1"}, "ServerSideEncryption": "aws:kms",
                "SSEKMSKeyId": "arn:k"}

    def copy(etag: str) -> dict[str, object]:
        return {"Bucket": "plain", "Key": "k", "CopySource": {"Bucket": "plain", "Key": "k"},
                "CopySourceIfMatch": f'"{etag}"', "MetadataDirective": "REPLACE",
                "Metadata": {"owner": "a", "mtime": "1600000000.000000000"}, "ContentType": "text/plain",
                "ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "arn:k"}

    stub.add_response("head_object", head("e1"), {"Bucket": "plain", "Key": "k"})
    stub.add_client_error("copy_object", "PreconditionFailed", http_status_code=412,
                          expected_params=copy("e1"))
    stub.add_response("head_object", head("e2"), {"Bucket": "plain", "Key": "k"})
    stub.add_response("copy_object", {"CopyObjectResult": {"ETag": '"e3"'}}, copy("e2"))
    with stub:
        meta = store.set_mtime("k", 1_600_000_000 * 10**9)
    assert (meta.etag, meta.size, meta.mtime_ns) == ("e3", 3, 1_600_000_000 * 10**9)
    stub.assert_no_pending_responses()


def test_multipart_off_for_a_host_means_single_puts(config) -> None:  # type: ignore[no-untyped-def]
    from mountfs.errors import Unsupported

    store = S3Store(resolve(parse_url("s3://minio.internal:9000/pinned"), config), RetryConfig())
    with pytest.raises(Unsupported, match="multipart uploads are off"):
        store.create_multipart("k")


def test_fast_timestamps_agree_with_botocore() -> None:
    from botocore.utils import parse_timestamp

    from mountfs.backends.s3 import fast_timestamp

    for text in ("2026-11-22T00:54:55.000Z", "2026-11-22T00:54:55Z", "Sat, 22 Nov 2026 00:54:55 GMT",
                 "2026-11-22T00:54:55.123456+02:00", "1795307695"):
        assert fast_timestamp(text) == parse_timestamp(text), text


def test_ranged_gets_verify_tls_with_the_bundle_boto3_would_use(monkeypatch: pytest.MonkeyPatch) -> None:
    from mountfs.backends.s3_get import Credentials, S3Reads
    from mountfs.config.s3 import S3Settings

    def bundle(verify: bool | str) -> str | None:
        settings = S3Settings(bucket="b", endpoint_url="https://minio:9000", region="r", verify=verify)
        return S3Reads(settings, lambda: Credentials("k", "s"), 5.0).ca_certs

    monkeypatch.setenv("AWS_CA_BUNDLE", "/etc/ssl/corp.pem")
    assert bundle(True) == "/etc/ssl/corp.pem"
    assert bundle("/etc/ssl/minio.pem") == "/etc/ssl/minio.pem"
    assert bundle(False) is None
    monkeypatch.delenv("AWS_CA_BUNDLE")
    assert str(bundle(True)).endswith("cacert.pem")
    settings = S3Settings(bucket="b", endpoint_url="https://minio:9000", region="r", verify=False)
    tls = S3Reads(settings, lambda: Credentials("k", "s"), 5.0).endpoint("https://minio:9000").tls
    assert tls is not None and tls.verify_mode == ssl.CERT_NONE and not tls.check_hostname


def test_a_wrong_region_names_the_right_one(tmp_path: Path) -> None:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = s3_error("PermanentRedirect")
            self.send_response(301)
            self.send_header("x-amz-bucket-region", "eu-central-1")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        from mountfs.config.s3 import S3Settings

        settings = S3Settings(bucket="b", endpoint_url=f"http://127.0.0.1:{server.server_address[1]}",
                              region="us-east-1", key="k", secret="s")
        store = S3Store(settings, RetryConfig(attempts=1))
        with pytest.raises(StoreUnavailable, match='set region = "eu-central-1"'):
            store.get_range("k", 0, 1)
    finally:
        server.shutdown()
        server.server_close()


def test_an_untrusted_tls_certificate_is_a_clear_error_not_a_retry() -> None:
    from mountfs.backends.s3 import translate

    refused = ssl.SSLCertVerificationError(1, "certificate verify failed")
    refused.verify_message = "self-signed certificate"
    error = translate(refused, "GET s3://b/k")
    assert isinstance(error, StoreUnavailable) and not isinstance(error, Transient)
    assert "not trusted (self-signed certificate)" in str(error) and 'verify = "/path/ca.pem"' in str(error)
    assert isinstance(translate(ssl.SSLError(1, "handshake reset"), "GET s3://b/k"), Transient)


def test_prepare_makes_the_client_the_first_request_then_uses(config) -> None:  # type: ignore[no-untyped-def]
    """The daemon prepares each store before the first request: boto3's client (its service model
    takes a noticeable part of a second to load) is made then, not on the first HEAD."""
    from mountfs.backends import s3 as s3_backend

    store = S3Store(resolve(parse_url("s3://minio.internal:9000/prepared"), config), RetryConfig())
    before = dict(s3_backend._clients)
    store.prepare()  # offline: making a client sends nothing
    made = [client for ident, client in s3_backend._clients.items() if ident not in before]
    assert len(made) == 1
    assert store.client is made[0]
