"""Real S3 servers for integration tests (the session's SeaweedFS and moto come from tests/conftest.py),
and a fresh bucket per test, so tests run against what real servers answer (see tests/servers.py)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.servers import S3Server

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef


@pytest.fixture(params=["seaweedfs", "moto"], ids=["seaweedfs", "moto"])
def s3_server(request: pytest.FixtureRequest) -> S3Server:
    """Each test that takes it runs once per server kind; only the kinds used are started."""
    server: S3Server = request.getfixturevalue(request.param)
    return server


def _delete_bucket(server: S3Server, bucket: str) -> None:
    client = server.client(read_timeout=10.0, connect_timeout=2.0)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys: list[ObjectIdentifierTypeDef] = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    client.delete_bucket(Bucket=bucket)


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> Iterator[str]:
    """A fresh bucket `t-<8 hex>` on `s3_server`; emptied and deleted afterwards, best effort (a test
    that left the server paused or dead must not turn into a teardown error here)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    s3_server.create_bucket(name)
    yield name
    with contextlib.suppress(Exception):
        _delete_bucket(s3_server, name)
