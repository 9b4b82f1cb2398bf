"""The model-based test against the operations layer: MemoryStore underneath, no kernel, each step
run in its own `trio.run`. The metadata TTL is 60 s on a fake clock, so the cached listings this
mount keeps up to date itself are what is compared; when "another client" changes the bucket, the
clock jumps past the TTL first, as a user would have to wait for it."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any, TypeVar

import pyfuse3
import trio
from hypothesis import HealthCheck, settings

from mountfs.backends.async_store import AsyncStore
from mountfs.backends.memory import MemoryStore
from mountfs.cache.block_cache import BlockCache
from mountfs.config import WriteConfig
from mountfs.fs.operations import Operations, Ownership
from mountfs.namespace.inodes import ROOT_INODE, MountRoot
from mountfs.namespace.tree import Namespace
from mountfs.upload.journal import UploadJournal
from mountfs.upload.uploader import Uploader
from tests.model.model import Model, MountMachine

T = TypeVar("T")
CTX: Any = None
ROOT = pyfuse3.InodeT(ROOT_INODE)
TTL = 60.0
PART = 32  # tiny parts: most files go up as multipart uploads


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _errno(call: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[int]]:
    async def run() -> int:
        try:
            await call()
        except pyfuse3.FUSEError as exc:
            return exc.errno
        return 0

    return run


class OperationsDriver:
    """POSIX calls as the kernel would make them, straight to the handlers; the bucket through
    MemoryStore's own helpers."""

    def __init__(self, ttl: float) -> None:
        self.tmp = tempfile.mkdtemp(prefix="mountfs-model-")
        self.bucket = MemoryStore()
        self.clock = Clock()
        self.journal = UploadJournal(self.tmp)
        async_store = AsyncStore(self.bucket, 8)
        uploader = Uploader(async_store, self.journal, WriteConfig(part_size=PART, max_concurrency=4))
        namespace = Namespace([MountRoot("", async_store, "", False, uploader)], ttl, ttl / 10, self.clock)
        self.cache = BlockCache(self.tmp, 64, 1 << 20)
        self.ops = Operations(namespace, self.cache, Ownership(0, 0))
        self.writer: pyfuse3.FileHandleT | None = None

    def teardown(self) -> None:
        self.cache.close()
        self.journal.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def run(self, fn: Callable[[], Awaitable[T]]) -> T:
        return trio.run(fn)

    # --- helpers (async) -----------------------------------------------------------------------

    async def _resolve(self, path: str) -> pyfuse3.EntryAttributes:
        attr = await self.ops.getattr(ROOT, CTX)
        for part in filter(None, path.split("/")):
            attr = await self.ops.lookup(attr.st_ino, pyfuse3.FileNameT(os.fsencode(part)), CTX)
        return attr

    async def _parent(self, path: str) -> tuple[pyfuse3.InodeT, pyfuse3.FileNameT]:
        folder, _, leaf = path.rpartition("/")
        return (await self._resolve(folder)).st_ino, pyfuse3.FileNameT(os.fsencode(leaf))

    async def _close(self, fh: pyfuse3.FileHandleT) -> None:
        try:
            await self.ops.flush(fh)
        finally:
            await self.ops.release(fh)

    # --- the driver ----------------------------------------------------------------------------

    def create(self, path: str, data: bytes) -> int:
        async def call() -> None:
            parent, name = await self._parent(path)
            info, _ = await self.ops.create(parent, name, stat.S_IFREG | 0o644, os.O_WRONLY | os.O_CREAT, CTX)
            try:
                await self.ops.write(info.fh, 0, data)
            finally:
                await self._close(info.fh)

        return self.run(_errno(call))

    def write_at(self, path: str, offset: int, data: bytes) -> int:
        async def call() -> None:
            info = await self.ops.open((await self._resolve(path)).st_ino, os.O_RDWR, CTX)
            try:
                if data:
                    await self.ops.write(info.fh, offset, data)
            finally:
                await self._close(info.fh)

        return self.run(_errno(call))

    def truncate(self, path: str, size: int) -> int:
        async def call() -> None:
            attr = pyfuse3.EntryAttributes()
            attr.st_size = size
            fields: Any = SimpleNamespace(update_size=True, update_mtime=False, update_mode=False,
                                          update_uid=False, update_gid=False)
            await self.ops.setattr((await self._resolve(path)).st_ino, attr, fields, None, CTX)

        return self.run(_errno(call))

    def unlink(self, path: str) -> int:
        async def call() -> None:
            await self.ops.unlink(*await self._parent(path), CTX)

        return self.run(_errno(call))

    def mkdir(self, path: str) -> int:
        async def call() -> None:
            await self.ops.mkdir(*await self._parent(path), 0o755, CTX)

        return self.run(_errno(call))

    def rmdir(self, path: str) -> int:
        async def call() -> None:
            await self.ops.rmdir(*await self._parent(path), CTX)

        return self.run(_errno(call))

    def rename(self, src: str, dst: str) -> int:
        async def call() -> None:
            old_parent, old_name = await self._parent(src)
            new_parent, new_name = await self._parent(dst)
            await self.ops.rename(old_parent, old_name, new_parent, new_name, 0, CTX)

        return self.run(_errno(call))

    def open_writer(self, path: str, create: bool) -> int:
        async def call() -> None:
            if create:
                parent, name = await self._parent(path)
                mode = stat.S_IFREG | 0o644
                info, _ = await self.ops.create(parent, name, mode, os.O_RDWR | os.O_CREAT, CTX)
            else:
                info = await self.ops.open((await self._resolve(path)).st_ino, os.O_RDWR, CTX)
            self.writer = info.fh

        return self.run(_errno(call))

    def writer_write(self, offset: int, data: bytes) -> int:
        async def call() -> None:
            assert self.writer is not None
            if data:
                await self.ops.write(self.writer, offset, data)

        return self.run(_errno(call))

    def close_writer(self) -> int:
        async def call() -> None:
            assert self.writer is not None
            fh, self.writer = self.writer, None
            await self._close(fh)

        return self.run(_errno(call))

    def view(self) -> dict[str, bytes | None]:
        found: dict[str, bytes | None] = {}
        originals = pyfuse3.readdir_reply

        async def walk(inode: pyfuse3.InodeT, prefix: str) -> None:
            entries: list[tuple[bytes, pyfuse3.EntryAttributes]] = []

            def reply(token: Any, name: bytes, attr: pyfuse3.EntryAttributes, next_id: int) -> bool:
                entries.append((name, attr))
                return True

            pyfuse3.readdir_reply = reply  # type: ignore[assignment]
            try:
                fh = await self.ops.opendir(inode, CTX)
                await self.ops.readdir(fh, 0, None)  # type: ignore[arg-type]
                await self.ops.releasedir(fh)
            finally:
                pyfuse3.readdir_reply = originals
            for name, attr in entries:
                path = prefix + os.fsdecode(name)
                if stat.S_ISDIR(attr.st_mode):
                    found[path] = None
                    await walk(attr.st_ino, path + "/")
                else:
                    info = await self.ops.open(attr.st_ino, os.O_RDONLY, CTX)
                    try:
                        data = bytes(await self.ops.read(info.fh, 0, 1 << 20))
                    finally:
                        await self.ops.release(info.fh)
                    looked_up = await self.ops.lookup(inode, pyfuse3.FileNameT(name), CTX)
                    assert attr.st_size == len(data) == looked_up.st_size, (path, attr.st_size, len(data))
                    assert (await self.ops.getattr(attr.st_ino, CTX)).st_size == len(data), path
                    found[path] = data

        self.run(lambda: walk(ROOT, ""))
        return found

    def store(self) -> dict[str, bytes]:
        keys = self.bucket.keys()
        return {key: self._stored(key) for key in keys}

    def _stored(self, key: str) -> bytes:
        meta = self.bucket.head(key)
        return self.bucket.get_range(key, 0, meta.size)

    def other_put(self, key: str, data: bytes) -> None:
        self.bucket.put_object(key, data)
        self.clock.now += TTL + 1

    def other_delete(self, key: str) -> None:
        self.bucket.remove_object(key)
        self.clock.now += TTL + 1


class OperationsMachine(MountMachine):
    def __init__(self) -> None:
        super().__init__()
        self.model = Model(folders_persist=False)
        self.driver = OperationsDriver(TTL)


class NoCacheMachine(MountMachine):
    """The same with metadata TTL 0: every step lists the store afresh."""

    def __init__(self) -> None:
        super().__init__()
        self.model = Model(folders_persist=False)
        self.driver = OperationsDriver(0.0)


COMMON = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much]}
TestOperationsModel = OperationsMachine.TestCase
EXAMPLES = int(os.environ.get("MODEL_EXAMPLES", "150"))  # more for a longer search
TestOperationsModel.settings = settings(max_examples=EXAMPLES, stateful_step_count=40, **COMMON)  # type: ignore[arg-type]
TestNoCacheModel = NoCacheMachine.TestCase
TestNoCacheModel.settings = settings(max_examples=50, stateful_step_count=30, **COMMON)  # type: ignore[arg-type]

assert errno.ENOENT  # errno is used by the model's messages
