"""Settings and servers every test tier shares."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.servers import S3Server, start_moto, start_seaweedfs

# boto3's credential chain would ask the EC2 instance-metadata address when no key is found;
# tests talk only to servers on 127.0.0.1, so that lookup is switched off for every test.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One `weed mini` for the session: it starts in about a second but stops in about two."""
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_moto(tmp_path_factory.mktemp("moto"))
    yield server
    server.stop()
