"""S3, GCS, Azure Blob and a local folder in one mounted tree: the same files put into SeaweedFS,
fake-gcs-server, Azurite and a folder read back, listed and compared through one mount."""

from __future__ import annotations

import errno
import filecmp
import os
import random
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.servers import AZURITE_ACCOUNT, AZURITE_KEY, Emulator, S3Server

if TYPE_CHECKING:
    from conftest import Mounter

MiB = 1 << 20
PREFIX = "data"  # every store is mounted at this prefix; what lies outside it must not show
STORES = ("s3", "gcs", "azure", "local")
CHANGING = "stale/model.bin"  # in every store, but read only by the ESTALE check at the end


def sample_files() -> dict[str, bytes]:
    rng = random.Random(4)
    files = {
        "top.txt": b"one tree, four stores\n",
        "empty": b"",
        "nested/deeper/leaf.bin": rng.randbytes(70_000),
        "nested/sibling.json": b'{"ok": true}\n',
        "with space/file with spaces.txt": b"spaces\n",
        "données/été.txt": "l'été\n".encode(),
        "big/three-blocks.bin": rng.randbytes(3 * MiB + 12345),  # 1 MiB blocks in these mounts
    }
    files.update({f"many/item-{i:03d}.txt": b"%d\n" % i for i in range(120)})
    return files


def walk(root: str) -> dict[str, int | None]:
    """Relative path -> size (None for folders) of everything below `root`."""
    found: dict[str, int | None] = {}
    for folder, dirs, names in os.walk(root):
        for name in dirs:
            found[os.path.relpath(os.path.join(folder, name), root)] = None
        for name in names:
            path = os.path.join(folder, name)
            found[os.path.relpath(path, root)] = os.stat(path).st_size
    return found


def expected_tree(files: dict[str, bytes]) -> dict[str, int | None]:
    tree: dict[str, int | None] = {}
    for key, data in files.items():
        parts = key.split("/")
        for depth in range(1, len(parts)):
            tree["/".join(parts[:depth])] = None
        tree[key] = len(data)
    return tree


def test_s3_gcs_azure_and_local_in_one_tree(mounter: Mounter, seaweedfs: S3Server, fake_gcs: Emulator,
                                            azurite: Emulator, tmp_path: Path) -> None:
    files = sample_files()
    name = f"four-{uuid.uuid4().hex[:8]}"
    seaweedfs.create_bucket(name)
    fake_gcs.create_bucket(name)
    azurite.create_bucket(name)
    s3 = seaweedfs.client()
    gcs = fake_gcs.gcs_client().bucket(name)
    azure = azurite.azure_client().get_container_client(name)
    local = tmp_path / "local"
    uploads = []
    every = {**files, CHANGING: b"1" * (3 * MiB), "outside.txt": b"not under the prefix"}
    for key, data in every.items():
        full = key if key == "outside.txt" else f"{PREFIX}/{key}"
        uploads += [lambda k=full, d=data: s3.put_object(Bucket=name, Key=k, Body=d),
                    lambda k=full, d=data: gcs.blob(k).upload_from_string(d),
                    lambda k=full, d=data: azure.upload_blob(k, d, overwrite=True)]
        path = local / full
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda upload: upload(), uploads))

    config = tmp_path / "four.toml"
    config.write_text(f"""
[read]  # no readahead: the ESTALE check below needs a block that nothing fetched before
readahead_max = 0
kernel_readahead = 0

[gcs]
endpoint = "{fake_gcs.endpoint}"

[[azure.containers]]
account_name = "{AZURITE_ACCOUNT}"
container_name = "{name}"
account_key = "{AZURITE_KEY}"
endpoint = "{azurite.endpoint}"

[[s3.credentials]]
host = "{seaweedfs.host_port}"
key = "{seaweedfs.access_key}"
secret = "{seaweedfs.secret_key}"
secure = false

[[mount]]
path = "s3"
url = "s3://{seaweedfs.host_port}/{name}/{PREFIX}"

[[mount]]
path = "gcs"
url = "gs://{name}/{PREFIX}"

[[mount]]
path = "azure"
url = "az://{AZURITE_ACCOUNT}/{name}/{PREFIX}"

[[mount]]
path = "local"
url = "file://{local / PREFIX}"
""")
    mnt = mounter.mount(str(config))
    assert sorted(os.listdir(mnt.path)) == sorted(STORES)
    tree = expected_tree({**files, CHANGING: every[CHANGING]})
    for store in STORES:
        assert walk(mnt.join(store)) == tree, store
        for key, data in files.items():
            with open(mnt.join(store, key), "rb") as f:
                assert f.read() == data, f"{store}/{key}"
        with open(mnt.join(store, "big", "three-blocks.bin"), "rb") as f:  # a read across a block edge
            f.seek(2 * MiB - 7)
            assert f.read(20) == files["big/three-blocks.bin"][2 * MiB - 7:2 * MiB + 13], store
        assert sorted(os.listdir(mnt.join(store, "many"))) == [f"item-{i:03d}.txt" for i in range(120)]
    for store in ("s3", "gcs", "azure"):  # byte for byte the same as the local folder's copy
        for key in files:
            assert filecmp.cmp(mnt.join("local", key), mnt.join(store, key), shallow=False), f"{store}/{key}"

    status = mounter.run.status(mnt)
    fetched = {entry["path"]: entry["bytes_fetched"] for entry in status["stores"]}
    total = sum(map(len, files.values()))
    assert fetched == dict.fromkeys(STORES, total), "each store served every byte once, the cache the rest"

    # an object changed while open reads as ESTALE on the two new stores too (pinned to generation/ETag)
    replace = {"gcs": lambda data: gcs.blob(f"{PREFIX}/{CHANGING}").upload_from_string(data),
               "azure": lambda data: azure.upload_blob(f"{PREFIX}/{CHANGING}", data, overwrite=True)}
    for store, put in replace.items():
        fd = os.open(mnt.join(store, CHANGING), os.O_RDONLY)
        try:
            assert os.pread(fd, 10, 0) == b"1" * 10
            put(b"2" * (3 * MiB))
            with pytest.raises(OSError) as info:
                os.pread(fd, 10, 2 * MiB)  # a block not read yet: pinned to the old version, which is gone
            assert info.value.errno == errno.ESTALE, store
        finally:
            os.close(fd)
