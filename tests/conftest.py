"""Settings and servers every test tier shares."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.servers import Emulator, S3Server, start_azurite, start_fake_gcs, start_moto, start_seaweedfs

# boto3's credential chain would ask the EC2 instance-metadata address when no key is found, and
# google-auth's would ask GCE's metadata server; tests talk only to servers on 127.0.0.1, so those
# lookups are switched off for every test (and every daemon the tests start).
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ["NO_GCE_CHECK"] = "true"


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


@pytest.fixture(scope="session")
def fake_gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """One fake-gcs-server for the session (ready in about 0.1 s)."""
    server = start_fake_gcs(tmp_path_factory.mktemp("fake-gcs"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """One Azurite blob service for the session (ready in about a second)."""
    server = start_azurite(tmp_path_factory.mktemp("azurite"))
    yield server
    server.stop()
