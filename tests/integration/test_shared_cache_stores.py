"""The shared cache on each real store server: opened from a config as a mount's URL would be (its
credentials found the same way), a miss is a miss, blocks written by one node are read whole by
another, and a bad block there is never served."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import trio

from mountfs.backends.memory import MemoryStore
from mountfs.buffers import Piece
from mountfs.cache.block_cache import BlockCache
from mountfs.cache.shared import SharedCache, open_shared_cache
from mountfs.config import load_config
from tests.servers import AZURITE_ACCOUNT, AZURITE_KEY, Emulator, S3Server

BLOCK = 64 * 1024
DATA = os.urandom(3 * BLOCK + 17)


def _config_text(kind: str, name: str, request: pytest.FixtureRequest) -> str:
    if kind == "s3":
        s3: S3Server = request.getfixturevalue("seaweedfs")
        s3.create_bucket(name)
        return (f'[shared_cache]\nurl = "s3://{s3.host_port}/{name}/fleet"\n'
                f'[[s3.credentials]]\nhost = "{s3.host_port}"\nkey = "{s3.access_key}"\n'
                f'secret = "{s3.secret_key}"\nsecure = false\n')
    emulator: Emulator = request.getfixturevalue("fake_gcs" if kind == "gcs" else "azurite")
    emulator.create_bucket(name)
    if kind == "gcs":
        return f'[gcs]\nendpoint = "{emulator.endpoint}"\n[shared_cache]\nurl = "gs://{name}/fleet"\n'
    return (f'[[azure.containers]]\naccount_name = "{AZURITE_ACCOUNT}"\ncontainer_name = "{name}"\n'
            f'account_key = "{AZURITE_KEY}"\nendpoint = "{emulator.endpoint}"\n'
            f'[shared_cache]\nurl = "az://{AZURITE_ACCOUNT}/{name}/fleet"\n')


async def _read(path: Path, shared: SharedCache, origin: MemoryStore) -> bytes:
    cache = BlockCache(str(path), BLOCK, 4 * BLOCK)
    cache.shared = shared
    obj = origin.object_id(origin.head("data.bin"))

    async def fetch(start: int, length: int) -> list[Piece]:
        return await trio.to_thread.run_sync(origin.get_pieces, "data.bin", start, length, BLOCK, obj.etag)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(shared.run)
        data = bytes(await cache.read(obj, len(DATA), 0, len(DATA), fetch))
        await shared.drain()
        nursery.cancel_scope.cancel()
    cache.close()
    return data


@pytest.mark.parametrize("kind", ["s3", "gcs", "azure"])
async def test_two_nodes_share_blocks_through_each_store(kind: str, request: pytest.FixtureRequest,
                                                         tmp_path: Path) -> None:
    name = f"shared-{uuid.uuid4().hex[:8]}"
    config_file = tmp_path / "c.toml"
    config_file.write_text(f'[cache]\nblock_size = "64KiB"\ndir = "{tmp_path}/c"\n'
                           + _config_text(kind, name, request))
    config = load_config(str(config_file), need_mounts=False)
    origin = MemoryStore("origin", "s3://origin:9000")
    origin.put_object("data.bin", DATA)
    first, second, third = (open_shared_cache(config) for _ in range(3))
    assert first is not None and second is not None and third is not None
    assert await _read(tmp_path / "1", first, origin) == DATA
    assert first.stats.misses == 4 and first.stats.writes == 4 and first.stats.errors == 0, first.stats
    assert await _read(tmp_path / "2", second, origin) == DATA
    assert second.stats.hits == 4 and origin.bytes_read == len(DATA), second.stats
    # a block overwritten with another's bytes is counted and fetched again, never served
    obj = origin.object_id(origin.head("data.bin"))
    other = await trio.to_thread.run_sync(second.store.get_range, second.key(obj, 2), 0, 1 << 20)
    await trio.to_thread.run_sync(second.store.put, second.key(obj, 1), other)
    assert await _read(tmp_path / "3", third, origin) == DATA
    assert third.stats.corrupt == 1 and third.stats.hits == 3 and origin.bytes_read == len(DATA) + BLOCK
