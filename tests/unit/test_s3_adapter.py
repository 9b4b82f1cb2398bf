"""The S3 adapter's own logic: credential resolution, error mapping, and faults that a real server
cannot be made to produce on demand (through botocore's Stubber). Everything else about S3 is
tested against real servers in tests/integration."""

from __future__ import annotations

import io
from pathlib import Path

import botocore.exceptions
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from mountfs.backends.s3 import S3Store, translate
from mountfs.backends.s3_settings import resolve
from mountfs.config import RetryConfig, load_config, parse_url
from mountfs.errors import AccessDenied, NotFound, Stale, StoreUnavailable, Transient

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
verify = "/etc/ssl/minio.pem"
multipart = false
secure = false

[[mount]]
path = "x"
url = "s3://any/x"
"""


@pytest.fixture
def config(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "c.toml"
    path.write_text(CONFIG)
    return load_config(str(path))


def test_credentials_most_specific_first(config) -> None:  # type: ignore[no-untyped-def]
    plain = resolve(parse_url("s3://other/p"), config)
    assert (plain.key, plain.region, plain.endpoint_url, plain.path_style) == (
        "default-key", "eu-west-1", None, False)
    host = resolve(parse_url("s3://minio.internal:9000/data"), config)
    assert (host.key, host.secret, host.endpoint_url, host.path_style) == (
        "host-key", "host-secret", "http://minio.internal:9000", True)
    bucket = resolve(parse_url("s3://special/p"), config)
    assert (bucket.key, bucket.token, bucket.kms_key_id) == ("bucket-key", "bucket-token", bucket.kms_key_id)
    assert bucket.kms_key_id == "arn:aws:kms:eu-west-1:1:key/k"
    pinned = resolve(parse_url("s3://minio.internal:9000/pinned"), config)
    assert (pinned.key, pinned.verify, pinned.multipart) == ("pinned-key", "/etc/ssl/minio.pem", False)
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
    ("SlowDown", 503, Transient), ("InternalError", 500, Transient), ("ServiceUnavailable", 503, Transient),
    ("RequestTimeout", 400, Transient), ("Throttling", 400, Transient), ("WeirdError", 400, StoreUnavailable),
])
def test_client_errors_map_to_one_hierarchy(code: str, status: int, kind: type) -> None:
    error = translate(client_error(code, status), "GET s3://b/k")
    assert isinstance(error, kind) and str(error).startswith("GET s3://b/k")


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


def test_throttling_then_success_is_retried(config) -> None:  # type: ignore[no-untyped-def]
    store, stub = stubbed_store(config)
    for _ in range(2):
        stub.add_client_error("get_object", "SlowDown", http_status_code=503)
    stub.add_response("get_object", {"Body": StreamingBody(io.BytesIO(b"abc"), 3)},
                      {"Bucket": "data", "Key": "k", "Range": "bytes=0-2", "IfMatch": '"e1"'})
    with stub:
        assert store.get_range("k", 0, 3, "e1") == b"abc"
    stub.assert_no_pending_responses()


def test_persistent_5xx_gives_up_as_store_unavailable(config) -> None:  # type: ignore[no-untyped-def]
    store, stub = stubbed_store(config)
    for _ in range(4):
        stub.add_client_error("get_object", "InternalError", http_status_code=500)
    with stub, pytest.raises(StoreUnavailable, match=r"GET s3://data/k .*gave up after 4"):
        store.get_range("k", 0, 3, "e1")


def test_a_range_past_the_end_reads_empty(config) -> None:  # type: ignore[no-untyped-def]
    store, stub = stubbed_store(config)
    stub.add_client_error("get_object", "InvalidRange", http_status_code=416)
    with stub:
        assert store.get_range("k", 100, 3) == b""


def test_session_tokens_reach_the_signer(config) -> None:  # type: ignore[no-untyped-def]
    store = S3Store(resolve(parse_url("s3://special/p"), config), RetryConfig())
    credentials = store.client._request_signer._credentials
    assert (credentials.access_key, credentials.token) == ("bucket-key", "bucket-token")


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
