"""The ObjectStore contract against Azurite on 127.0.0.1, and what the Azure adapter adds: staged
blocks as multipart, upload markers hidden from listings, credentials of every kind, access checks."""

from __future__ import annotations

import datetime
import socket
import uuid
from pathlib import Path

import pytest
from azure.storage.blob import ContainerSasPermissions, generate_container_sas

from mountfs.backends.azure import UPLOADS, AzureStore
from mountfs.backends.base import ObjectStore
from mountfs.config import RetryConfig, load_config, parse_url
from mountfs.config.azure import AzureSettings, resolve
from mountfs.errors import AccessDenied, NotFound, StoreUnavailable
from tests.servers import AZURITE_ACCOUNT, AZURITE_KEY, Emulator

pytest.register_assert_rewrite("tests.unit.store_contract")

from tests.unit.store_contract import MTIME, Put, StoreContract, StoreWriteContract  # noqa: E402

RETRY = RetryConfig(attempts=3, base_delay=0.05, max_delay=0.2, budget=10, request_timeout=10)


def azure_store(server: Emulator, container: str, *, key: str | None = AZURITE_KEY, sas: str | None = None,
                account_url: str | None = None) -> AzureStore:
    settings = AzureSettings(account=AZURITE_ACCOUNT, container=container,
                             account_url=account_url or server.endpoint, account_key=None if sas else key,
                             sas_token=sas, credentials_origin="test")
    return AzureStore(settings, RETRY)


@pytest.fixture
def container(azurite: Emulator) -> str:
    """A fresh container per test; the session's server is thrown away whole at the end."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    azurite.create_bucket(name)
    return name


@pytest.fixture
def store(azurite: Emulator, container: str) -> ObjectStore:
    return azure_store(azurite, container)


@pytest.fixture
def put(azurite: Emulator, container: str) -> Put:
    target = azurite.azure_client().get_container_client(container)

    def put_object(key: str, data: bytes) -> None:
        target.upload_blob(key, data, overwrite=True)

    return put_object


class TestContract(StoreContract, StoreWriteContract):
    tokens_are_keys = False


def test_set_mtime_merges_into_the_other_metadata(azurite: Emulator, container: str,
                                                  store: AzureStore) -> None:
    from azure.storage.blob import ContentSettings

    blob = azurite.azure_client().get_container_client(container).get_blob_client("typed.txt")
    blob.upload_blob(b"text", metadata={"owner": "team-a"},
                     content_settings=ContentSettings(content_type="text/plain"))
    meta = store.set_mtime("typed.txt", MTIME)
    props = blob.get_blob_properties()
    assert props.metadata == {"owner": "team-a", "mtime": "2020-09-13T12:26:40.123456789Z"}  # rclone's form
    assert props.content_settings.content_type == "text/plain"
    assert blob.download_blob().readall() == b"text"
    assert store.head("typed.txt") == meta and meta.mtime_ns == MTIME


def test_an_mtime_written_by_rclone_is_read(azurite: Emulator, container: str, store: AzureStore) -> None:
    target = azurite.azure_client().get_container_client(container)
    target.upload_blob("rclone", b"1", metadata={"mtime": "2017-07-14T02:40:00.250000000Z"})
    target.upload_blob("broken", b"2", metadata={"mtime": "yesterday"})
    assert store.head("rclone").mtime_ns == 1_500_000_000_250_000_000
    listed = {o.key: o for o in store.list("", "/").objects}
    assert listed["rclone"].mtime_ns == 1_500_000_000_250_000_000, "listings carry the metadata"
    assert store.head("broken").mtime_ns == listed["broken"].mtime_ns != 0


def test_uploads_in_progress_are_hidden_from_every_listing(store: AzureStore, put: Put) -> None:
    put(".hidden-but-mine", b"1")
    upload = store.create_multipart("x")
    part = store.upload_part("x", upload, 1, b"data")
    assert store.list("", "/").prefixes == []
    assert [o.key for o in store.list("", None).objects] == [".hidden-but-mine"]
    page = store.list("", None, None, 1)
    assert [o.key for o in page.objects] == [".hidden-but-mine"]
    assert store.list("", None, page.next_token, 1).objects == []  # only the marker was left
    store.complete_multipart("x", upload, [part])
    assert store.container.get_blob_client(f"{UPLOADS}{upload}").exists() is False


def test_block_ids_are_fixed_width_and_name_the_upload(store: AzureStore) -> None:
    upload = store.create_multipart("blocks")
    for number in (1, 12, 345):
        store.upload_part("blocks", upload, number, b"x" * number)
    staged = store.container.get_blob_client("blocks").get_block_list("uncommitted")[1]
    ids = sorted(block.id for block in staged)  # the SDK base64-encodes them on the wire and back
    assert [i.split("-")[:2] for i in ids] == [[upload, "00001"], [upload, "00012"], [upload, "00345"]]
    assert len({len(block.id) for block in staged}) == 1
    store.abort_multipart("blocks", upload)


def test_a_sas_token_reads_lists_and_copies(azurite: Emulator, container: str, put: Put) -> None:
    put("src", b"with a SAS")
    sas = generate_container_sas(AZURITE_ACCOUNT, container, account_key=AZURITE_KEY,
                                 permission=ContainerSasPermissions(read=True, list=True, write=True,
                                                                    create=True, delete=True),
                                 expiry=datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1))
    store = azure_store(azurite, container, sas="?" + sas)
    store.check_access()
    assert store.get_range("src", 0, 100) == b"with a SAS"
    assert store.copy("src", "dst").size == len(b"with a SAS")
    assert [o.key for o in store.list("", "/").objects] == ["dst", "src"]


def test_no_sas_signature_in_any_message(azurite: Emulator, container: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sas = "sv=2024-01-01&sp=rl&sig=SENTINEL%2Fsignature%3D"
    store = azure_store(azurite, container, sas=sas,
                        account_url=f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}")
    with pytest.raises(StoreUnavailable, match=f"cannot reach az://{container}@{AZURITE_ACCOUNT}") as info:
        store.check_access()
    text = str(info.value)
    assert "SENTINEL" not in text
    assert info.value.__cause__ is None or "SENTINEL" not in str(info.value.__cause__)


def test_wrong_key_is_access_denied(azurite: Emulator, container: str) -> None:
    wrong = "A" * 86 + "=="
    with pytest.raises(AccessDenied, match=r"access denied .*\(credentials: test\)") as info:
        azure_store(azurite, container, key=wrong).check_access()
    assert wrong not in str(info.value)


def test_missing_container_fails_the_access_check(azurite: Emulator) -> None:
    with pytest.raises(NotFound, match=f"container no-such-container does not exist in account "
                                       f"{AZURITE_ACCOUNT} at http://127.0.0.1"):
        azure_store(azurite, "no-such-container").check_access()


def test_a_connection_string_from_the_environment(azurite: Emulator, container: str, put: Put, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    put("seen", b"through the environment")
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING",
                       f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
                       f"BlobEndpoint={azurite.endpoint};")
    config = tmp_path / "c.toml"
    config.write_text(f'[[mount]]\npath = "a"\nurl = "az://{container}@{AZURITE_ACCOUNT}"\n')
    settings = resolve(parse_url(f"az://{container}@{AZURITE_ACCOUNT}"), load_config(str(config)))
    assert (settings.account_url, settings.credentials_origin) == (azurite.endpoint,
                                                                   "AZURE_STORAGE_CONNECTION_STRING")
    store = AzureStore(settings, RETRY)
    store.check_access()
    assert store.get_range("seen", 0, 100) == b"through the environment"
