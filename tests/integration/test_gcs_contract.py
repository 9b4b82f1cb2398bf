"""The ObjectStore contract against fake-gcs-server on 127.0.0.1, and what the GCS adapter adds:
generations as ETags checked by the adapter itself, composite multipart uploads, access checks."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest

from mountfs.backends import gcs as gcs_module
from mountfs.backends.base import ObjectStore, UploadPart
from mountfs.backends.gcs import UPLOADS, GcsStore
from mountfs.config import RetryConfig, load_config, parse_url
from mountfs.config.gcs import GcsSettings, resolve
from mountfs.errors import ConfigError, NotFound, Stale, StoreUnavailable
from tests.servers import Emulator

pytest.register_assert_rewrite("tests.unit.store_contract")

from tests.unit.store_contract import MTIME, Put, StoreContract, StoreWriteContract  # noqa: E402

RETRY = RetryConfig(attempts=3, base_delay=0.05, max_delay=0.2, budget=10, request_timeout=10)


def gcs_store(server: Emulator, bucket: str, endpoint: str | None = None) -> GcsStore:
    settings = GcsSettings(bucket=bucket, endpoint=endpoint or server.endpoint, anonymous=True)
    return GcsStore(settings, RETRY)


@pytest.fixture
def bucket(fake_gcs: Emulator) -> str:
    """A fresh bucket per test; the session's server is thrown away whole at the end."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    fake_gcs.create_bucket(name)
    return name


@pytest.fixture
def store(fake_gcs: Emulator, bucket: str) -> ObjectStore:
    return gcs_store(fake_gcs, bucket)


@pytest.fixture
def put(fake_gcs: Emulator, bucket: str) -> Put:
    target = fake_gcs.gcs_client().bucket(bucket)

    def put_object(key: str, data: bytes) -> None:
        target.blob(key).upload_from_string(data)

    return put_object


class TestContract(StoreContract, StoreWriteContract):
    tokens_are_keys = False


def test_set_mtime_patches_the_metadata_only(fake_gcs: Emulator, bucket: str, store: GcsStore) -> None:
    blob = fake_gcs.gcs_client().bucket(bucket).blob("typed.txt")
    blob.metadata = {"owner": "team-a"}
    blob.upload_from_string(b"text", content_type="text/plain")
    before = store.head("typed.txt")
    meta = store.set_mtime("typed.txt", MTIME)
    assert meta.etag == before.etag, "the same generation: cached blocks stay valid"
    seen = fake_gcs.gcs_client().bucket(bucket).get_blob("typed.txt")
    assert seen.metadata == {"owner": "team-a", "mtime": "2020-09-13T12:26:40.123456789Z"}  # rclone's form
    assert seen.content_type == "text/plain" and seen.download_as_bytes() == b"text"


def test_mtimes_written_by_rclone_and_gsutil_are_read(fake_gcs: Emulator, bucket: str,
                                                      store: GcsStore) -> None:
    target = fake_gcs.gcs_client().bucket(bucket)
    for name, metadata in [("rclone", {"mtime": "2017-07-14T02:40:00.25Z"}),
                           ("gsutil", {"goog-reserved-file-mtime": "1500000000"}),
                           ("broken", {"mtime": "yesterday"})]:
        blob = target.blob(name)
        blob.metadata = metadata
        blob.upload_from_string(b"x")
    assert store.head("rclone").mtime_ns == 1_500_000_000_250_000_000
    assert store.head("gsutil").mtime_ns == 1_500_000_000 * 1_000_000_000
    listed = {o.key: o for o in store.list("", "/").objects}
    assert listed["rclone"].mtime_ns == 1_500_000_000_250_000_000, "listings carry the metadata"
    assert store.head("broken").mtime_ns == listed["broken"].mtime_ns != 0


def test_a_composed_upload_carries_the_mtime(store: GcsStore) -> None:
    upload = store.create_multipart("composed")
    parts = [store.upload_part("composed", upload, n, bytes([n]) * 3) for n in range(1, 36)]
    meta = store.complete_multipart("composed", upload, parts, mtime_ns=MTIME)
    assert meta.mtime_ns == MTIME and store.head("composed").mtime_ns == MTIME


def test_a_changed_object_is_stale_although_the_emulator_ignores_the_precondition(
        store: GcsStore, put: Put) -> None:
    """fake-gcs-server serves the new generation despite ifGenerationMatch: the adapter notices."""
    put("k", b"first")
    old = store.head("k")
    put("k", b"second!")
    with pytest.raises(Stale, match=r"generation \d+, not " + old.etag):
        store.get_range("k", 0, 3, etag=old.etag)
    with pytest.raises(Stale):  # also at EOF, where there are no bytes to compare
        store.get_range("k", 100, 3, etag=old.etag)
    assert store.get_range("k", 0, 3, etag=store.head("k").etag) == b"sec"


def test_a_large_put_goes_through_a_resumable_session(store: GcsStore) -> None:
    data = bytes(range(256)) * (36 << 10)  # 9 MiB: over the SDK's 8 MiB limit for one-shot uploads
    meta = store.put("large", data)
    assert meta == store.head("large") and meta.size == len(data)
    assert store.get_range("large", len(data) - 300, 1000, etag=meta.etag) == data[-300:]


def test_multipart_of_more_than_32_parts_composes_in_two_levels(store: GcsStore) -> None:
    upload = store.create_multipart("many/parts")
    parts = [store.upload_part("many/parts", upload, n, bytes([n]) * 3) for n in range(1, 71)]
    meta = store.complete_multipart("many/parts", upload, parts)
    assert meta.size == 70 * 3
    assert store.get_range("many/parts", 0, 1000) == b"".join(bytes([n]) * 3 for n in range(1, 71))
    leftovers = store.client.list_blobs(store.bucket, prefix=UPLOADS)
    assert [b.name for b in leftovers] == [], "the parts, intermediates and marker are deleted"


def test_uploads_in_progress_are_hidden_from_every_listing(store: GcsStore, put: Put) -> None:
    put(".hidden-but-mine", b"1")
    upload = store.create_multipart("x")
    store.upload_part("x", upload, 1, b"data")
    assert store.list("", "/").prefixes == []
    assert [o.key for o in store.list("", None).objects] == [".hidden-but-mine"]
    assert [o.key for o in store.list("", None, None, 1).objects] == [".hidden-but-mine"]
    page = store.list(".", "/", None, 1)
    assert [o.key for o in page.objects] == [".hidden-but-mine"]
    store.abort_multipart("x", upload)


def test_an_upload_is_for_one_key(store: GcsStore) -> None:
    upload = store.create_multipart("mine")
    part = store.upload_part("mine", upload, 1, b"x")
    with pytest.raises(NotFound):
        store.upload_part("other", upload, 1, b"y")
    with pytest.raises(NotFound):
        store.complete_multipart("other", upload, [part])
    assert store.complete_multipart("mine", upload, [UploadPart(1, part.etag)]).size == 1


def test_missing_bucket_fails_the_access_check(fake_gcs: Emulator) -> None:
    with pytest.raises(NotFound, match=r"bucket no-such-bucket-here does not exist at http://127\.0\.0\.1"):
        gcs_store(fake_gcs, "no-such-bucket-here").check_access()


def test_unreachable_endpoint_fails_the_access_check(fake_gcs: Emulator) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(StoreUnavailable, match=f"cannot reach gs://b at http://127.0.0.1:{port}"):
        gcs_store(fake_gcs, "b", endpoint=f"http://127.0.0.1:{port}").check_access()


def test_the_emulator_from_the_environment(fake_gcs: Emulator, bucket: str, put: Put, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """STORAGE_EMULATOR_HOST (without a scheme, as many tools write it) and no credentials at all."""
    put("seen", b"through the environment")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs.host_port)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    config = tmp_path / "c.toml"
    config.write_text(f'[[mount]]\npath = "g"\nurl = "gs://{bucket}/"\n')
    settings = resolve(parse_url(f"gs://{bucket}"), load_config(str(config)))
    assert settings.anonymous and settings.endpoint == fake_gcs.endpoint
    store = GcsStore(settings, RETRY)
    store.check_access()
    assert store.get_range("seen", 0, 100) == b"through the environment"


def test_a_broken_key_fails_the_access_check_without_quoting_it(fake_gcs: Emulator, bucket: str,
                                                                tmp_path: Path) -> None:
    secret = '{"type": "service_account", "private_key": "SENTINEL-PRIVATE'  # cut short: not JSON
    settings = GcsSettings(bucket=bucket, endpoint=fake_gcs.endpoint, credentials_json=secret,
                           credentials_origin="gcs.credentials_json", config_source="c.toml")
    with pytest.raises(ConfigError, match=r"c\.toml: gcs\.credentials_json: the credentials JSON text "
                                          r"does not decode") as info:
        GcsStore(settings, RETRY).check_access()
    assert "SENTINEL" not in str(info.value)


def test_one_client_per_endpoint_and_credentials(fake_gcs: Emulator, bucket: str) -> None:
    first, second = gcs_store(fake_gcs, bucket), gcs_store(fake_gcs, bucket)
    assert first.client is second.client
    assert first.client is not gcs_module.client_for(
        GcsSettings(bucket=bucket, endpoint=fake_gcs.endpoint, anonymous=True, project="p"), 10)
