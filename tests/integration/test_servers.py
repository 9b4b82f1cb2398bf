"""The real-server fixtures themselves, and the server behaviour the S3 adapter's error mapping relies on.

These pin the facts written in tests/servers.py's docstring: if a server upgrade changes an error code,
the test that says so fails here first, not deep in an adapter test. Both servers answer a wrong
If-Match on GetObject with 412 PreconditionFailed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import botocore.exceptions
import pytest

from tests.servers import S3Server, bucket_reader_identity, start_moto, start_seaweedfs

DATA = bytes(range(256)) * 4  # 1 KiB where every offset's byte is known


def error_of(call: Callable[[], Any]) -> tuple[str, int]:
    """(error code, HTTP status) of a call that must fail with a ClientError."""
    with pytest.raises(botocore.exceptions.ClientError) as info:
        call()
    response: Any = info.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


@pytest.fixture(scope="module")
def weed_private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A second SeaweedFS of this module's own: per-bucket identities, and free to be killed and paused
    without disturbing the session server other tests use."""
    server = start_seaweedfs(tmp_path_factory.mktemp("weed-private"), identities=[
        bucket_reader_identity("reader-a", "key-a", "secret-a", "bkt-a"),
        bucket_reader_identity("reader-b", "key-b", "secret-b", "bkt-b"),
    ])
    admin = server.client()
    for bucket in ("bkt-a", "bkt-b"):
        admin.create_bucket(Bucket=bucket)
        admin.put_object(Bucket=bucket, Key="obj", Body=f"in {bucket}".encode())
    yield server
    server.stop()


# --- both servers ---------------------------------------------------------------------------------

def test_put_get_head(s3_server: S3Server, s3_bucket: str) -> None:
    client = s3_server.client()
    etag = client.put_object(Bucket=s3_bucket, Key="dir/file.bin", Body=DATA)["ETag"]
    got = client.get_object(Bucket=s3_bucket, Key="dir/file.bin")
    assert got["Body"].read() == DATA
    assert got["ETag"] == etag
    head = client.head_object(Bucket=s3_bucket, Key="dir/file.bin")
    assert head["ContentLength"] == len(DATA)
    assert head["ETag"] == etag


def test_ranged_get(s3_server: S3Server, s3_bucket: str) -> None:
    client = s3_server.client()
    client.put_object(Bucket=s3_bucket, Key="r", Body=DATA)
    for spec, start, end in [("bytes=10-19", 10, 19), ("bytes=-5", 1019, 1023), ("bytes=1000-", 1000, 1023),
                             ("bytes=1020-5000", 1020, 1023)]:
        got = client.get_object(Bucket=s3_bucket, Key="r", Range=spec)
        assert got["Body"].read() == DATA[start:end + 1], spec
        assert got["ContentRange"] == f"bytes {start}-{end}/{len(DATA)}", spec
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206, spec
    assert error_of(lambda: client.get_object(Bucket=s3_bucket, Key="r", Range="bytes=2000-2001")) == (
        "InvalidRange", 416)


def test_list_with_delimiter_and_paging(s3_server: S3Server, s3_bucket: str) -> None:
    client = s3_server.client()
    keys = ["a/1", "a/2", "b/x/1", "c", "d", "e"]
    for key in keys:
        client.put_object(Bucket=s3_bucket, Key=key, Body=b"")

    top = client.list_objects_v2(Bucket=s3_bucket, Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["a/", "b/"]
    assert [o["Key"] for o in top["Contents"]] == ["c", "d", "e"]
    under_a = client.list_objects_v2(Bucket=s3_bucket, Prefix="a/")
    assert [o["Key"] for o in under_a["Contents"]] == ["a/1", "a/2"]

    def paged(**kwargs: Any) -> tuple[list[str], list[str], int]:
        seen_keys: list[str] = []
        seen_prefixes: list[str] = []
        pages = 0
        token: dict[str, Any] = {}
        while True:
            page = client.list_objects_v2(Bucket=s3_bucket, MaxKeys=2, **kwargs, **token)
            pages += 1
            assert page.get("KeyCount", 0) <= 2
            seen_keys += [o["Key"] for o in page.get("Contents", [])]
            seen_prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
            if not page["IsTruncated"]:
                return seen_keys, seen_prefixes, pages
            token = {"ContinuationToken": page["NextContinuationToken"]}

    assert paged() == (keys, [], 3)
    flat_keys, flat_prefixes, pages = paged(Delimiter="/")
    assert (flat_keys, flat_prefixes) == (["c", "d", "e"], ["a/", "b/"])
    assert pages >= 3  # five entries, at most two a page


def test_if_match_wrong_etag_is_412(s3_server: S3Server, s3_bucket: str) -> None:
    client = s3_server.client()
    etag = client.put_object(Bucket=s3_bucket, Key="k", Body=DATA)["ETag"]
    right = client.get_object(Bucket=s3_bucket, Key="k", IfMatch=etag, Range="bytes=0-0")
    assert right["Body"].read() == b"\0"
    wrong = '"00000000000000000000000000000000"'
    assert error_of(lambda: client.get_object(Bucket=s3_bucket, Key="k", IfMatch=wrong)) == (
        "PreconditionFailed", 412)
    assert error_of(
        lambda: client.get_object(Bucket=s3_bucket, Key="k", IfMatch=wrong, Range="bytes=0-9")
    ) == ("PreconditionFailed", 412)
    assert error_of(lambda: client.head_object(Bucket=s3_bucket, Key="k", IfMatch=wrong)) == ("412", 412)


def test_missing_bucket_and_key_codes(s3_server: S3Server, s3_bucket: str) -> None:
    """HEAD has no body, so its code is the bare status on both servers."""
    client = s3_server.client()
    assert error_of(lambda: client.get_object(Bucket=s3_bucket, Key="nope")) == ("NoSuchKey", 404)
    assert error_of(lambda: client.head_object(Bucket=s3_bucket, Key="nope")) == ("404", 404)
    assert error_of(lambda: client.get_object(Bucket="no-such-bucket-zz", Key="k")) == ("NoSuchBucket", 404)
    assert error_of(lambda: client.list_objects_v2(Bucket="no-such-bucket-zz")) == ("NoSuchBucket", 404)
    assert error_of(lambda: client.head_object(Bucket="no-such-bucket-zz", Key="k")) == ("404", 404)
    assert error_of(lambda: client.head_bucket(Bucket="no-such-bucket-zz")) == ("404", 404)


def test_moto_accepts_any_key(moto: S3Server) -> None:
    """moto checks no credentials at all: auth-failure tests can only run on SeaweedFS."""
    moto.client("whoever", "whatever").list_buckets()


# --- SeaweedFS only ---------------------------------------------------------------------------------

def test_seaweedfs_wrong_secret_and_unknown_key(seaweedfs: S3Server) -> None:
    wrong_secret = seaweedfs.client(secret_key="not-the-secret")
    assert error_of(wrong_secret.list_buckets) == ("SignatureDoesNotMatch", 403)
    assert error_of(lambda: wrong_secret.get_object(Bucket="any-bucket", Key="k")) == (
        "SignatureDoesNotMatch", 403)
    assert error_of(lambda: wrong_secret.head_object(Bucket="any-bucket", Key="k")) == ("403", 403)
    unknown_key = seaweedfs.client("no-such-access-key", "x")
    assert error_of(unknown_key.list_buckets) == ("InvalidAccessKeyId", 403)
    assert error_of(lambda: unknown_key.get_object(Bucket="any-bucket", Key="k")) == (
        "InvalidAccessKeyId", 403)


def test_seaweedfs_per_bucket_identities(weed_private: S3Server) -> None:
    """Each key reads only its own bucket: AccessDenied elsewhere, even for missing keys and buckets."""
    for mine, other, access, secret in [("bkt-a", "bkt-b", "key-a", "secret-a"),
                                        ("bkt-b", "bkt-a", "key-b", "secret-b")]:
        client = weed_private.client(access, secret)
        assert client.get_object(Bucket=mine, Key="obj")["Body"].read() == f"in {mine}".encode()
        assert [o["Key"] for o in client.list_objects_v2(Bucket=mine)["Contents"]] == ["obj"]
        assert [b["Name"] for b in client.list_buckets()["Buckets"]] == [mine]
        assert error_of(lambda: client.get_object(Bucket=other, Key="obj")) == ("AccessDenied", 403)  # noqa: B023
        assert error_of(lambda: client.head_object(Bucket=other, Key="obj")) == ("403", 403)  # noqa: B023
        assert error_of(lambda: client.list_objects_v2(Bucket=other)) == ("AccessDenied", 403)  # noqa: B023
        assert error_of(lambda: client.get_object(Bucket=other, Key="missing")) == ("AccessDenied", 403)  # noqa: B023
        assert error_of(lambda: client.get_object(Bucket="no-such-bucket-zz", Key="k")) == (  # noqa: B023
            "AccessDenied", 403)
        assert error_of(lambda: client.put_object(Bucket=mine, Key="w", Body=b"")) == (  # noqa: B023
            "AccessDenied", 403)
        assert error_of(lambda: client.get_object(Bucket=mine, Key="missing")) == ("NoSuchKey", 404)  # noqa: B023


def test_seaweedfs_pause_times_out_and_resume_recovers(weed_private: S3Server) -> None:
    client = weed_private.client(read_timeout=1.0, connect_timeout=1.0)
    assert client.get_object(Bucket="bkt-a", Key="obj")["Body"].read() == b"in bkt-a"
    sends: list[object] = []
    client.meta.events.register("before-send.s3.GetObject", lambda **kwargs: sends.append(1))
    weed_private.pause()
    try:
        with pytest.raises(botocore.exceptions.ReadTimeoutError):
            client.get_object(Bucket="bkt-a", Key="obj")
        assert len(sends) == 1  # one attempt only: retries really are off
    finally:
        weed_private.resume()
    assert client.get_object(Bucket="bkt-a", Key="obj")["Body"].read() == b"in bkt-a"


def test_seaweedfs_kill_then_restart_keeps_data(weed_private: S3Server) -> None:
    admin = weed_private.client(connect_timeout=1.0)
    admin.put_object(Bucket="bkt-a", Key="written-before-kill", Body=DATA)
    endpoint = weed_private.endpoint
    weed_private.kill()
    assert not weed_private.running
    with pytest.raises(botocore.exceptions.EndpointConnectionError):
        admin.get_object(Bucket="bkt-a", Key="obj")
    weed_private.restart()
    assert weed_private.endpoint == endpoint
    assert admin.get_object(Bucket="bkt-a", Key="written-before-kill")["Body"].read() == DATA
    # the identities file is read again too
    assert weed_private.client("key-b", "secret-b").get_object(Bucket="bkt-b", Key="obj")["Body"].read() == (
        b"in bkt-b")


def test_two_seaweedfs_at_once(seaweedfs: S3Server, weed_private: S3Server) -> None:
    """Two servers side by side share no port and no state."""
    assert seaweedfs.running and weed_private.running
    assert not set(seaweedfs.ports) & set(weed_private.ports)
    bucket = "side-by-side"
    for server in (seaweedfs, weed_private):
        server.create_bucket(bucket)
        server.client().put_object(Bucket=bucket, Key="who", Body=server.endpoint.encode())
    try:
        for server in (seaweedfs, weed_private):
            got = server.client().get_object(Bucket=bucket, Key="who")["Body"].read()
            assert got == server.endpoint.encode()
    finally:
        for server in (seaweedfs, weed_private):
            server.client().delete_object(Bucket=bucket, Key="who")
            server.client().delete_bucket(Bucket=bucket)


def test_moto_stop_then_restart_comes_back_empty(tmp_path_factory: pytest.TempPathFactory) -> None:
    """restart() after stop(): same port, answering again, but moto's data lived only in memory."""
    server = start_moto(tmp_path_factory.mktemp("moto-restart"))
    try:
        server.create_bucket("gone-after-restart")
        port = server.host_port
        server.stop()
        server.stop()  # idempotent
        assert not server.running
        server.restart()
        assert server.host_port == port
        assert server.client().list_buckets()["Buckets"] == []
    finally:
        server.kill()
