"""The model-based test (tests/model/model.py) against a real mount of a file:// bucket, with plain
os calls: a smaller run than the one against the operations layer, through the kernel this time.
Metadata TTLs are 0, so what another client does to the folder shows at once."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from mountfs.backends.local import TMP_PREFIX, UPLOADS_DIR
from tests.model.model import Model, MountMachine

if TYPE_CHECKING:
    from conftest import Mount, Mounter


def _errno(call: Callable[[], object]) -> int:
    try:
        call()
    except OSError as exc:
        return exc.errno or errno.EIO
    return 0


class OsDriver:
    def __init__(self, mount: Mount, folder: Path) -> None:
        self.mount = mount
        self.folder = folder
        self.writer: int | None = None
        for entry in folder.iterdir():  # a fresh bucket for every example
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()

    def teardown(self) -> None:
        if self.writer is not None:
            os.close(self.writer)
            self.writer = None

    def _m(self, path: str) -> str:
        return self.mount.join(path)

    def _write(self, path: str, flags: int, offset: int, data: bytes) -> None:
        fd = os.open(self._m(path), flags, 0o644)
        try:
            if data:
                os.pwrite(fd, data, offset)
        finally:
            os.close(fd)

    def create(self, path: str, data: bytes) -> int:
        return _errno(lambda: self._write(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0, data))

    def write_at(self, path: str, offset: int, data: bytes) -> int:
        return _errno(lambda: self._write(path, os.O_RDWR, offset, data))

    def truncate(self, path: str, size: int) -> int:
        return _errno(lambda: os.truncate(self._m(path), size))

    def unlink(self, path: str) -> int:
        return _errno(lambda: os.unlink(self._m(path)))

    def mkdir(self, path: str) -> int:
        return _errno(lambda: os.mkdir(self._m(path)))

    def rmdir(self, path: str) -> int:
        return _errno(lambda: os.rmdir(self._m(path)))

    def rename(self, src: str, dst: str) -> int:
        return _errno(lambda: os.rename(self._m(src), self._m(dst)))

    def open_writer(self, path: str, create: bool) -> int:
        def call() -> None:
            flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
            self.writer = os.open(self._m(path), flags, 0o644)

        return _errno(call)

    def writer_write(self, offset: int, data: bytes) -> int:
        assert self.writer is not None
        writer = self.writer
        return _errno(lambda: os.pwrite(writer, data, offset) if data else None)

    def close_writer(self) -> int:
        assert self.writer is not None
        fd, self.writer = self.writer, None
        return _errno(lambda: os.close(fd))

    def view(self) -> dict[str, bytes | None]:
        found: dict[str, bytes | None] = {}
        for folder, dirs, names in os.walk(self.mount.path):
            rel = os.path.relpath(folder, self.mount.path)
            for d in dirs:
                found[os.path.normpath(os.path.join(rel, d))] = None
            for n in names:
                path = os.path.join(folder, n)
                with open(path, "rb") as f:
                    data = f.read()
                assert os.stat(path).st_size == len(data), path
                found[os.path.normpath(os.path.join(rel, n))] = data
        return found

    def store(self) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        for folder, dirs, names in os.walk(self.folder):
            rel = os.path.relpath(folder, self.folder)
            if rel == ".":
                dirs[:] = [d for d in dirs if d != UPLOADS_DIR]
            for d in dirs:
                found[os.path.normpath(os.path.join(rel, d)) + "/"] = b""
            for n in names:
                if not n.startswith(TMP_PREFIX):
                    found[os.path.normpath(os.path.join(rel, n))] = (Path(folder) / n).read_bytes()
        return found

    def other_put(self, key: str, data: bytes) -> None:
        path = self.folder / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def other_delete(self, key: str) -> None:
        path = self.folder / key.rstrip("/")
        path.rmdir() if key.endswith("/") else path.unlink()


def test_the_model_through_a_real_mount(mounter: Mounter, tmp_path: Path) -> None:
    folder = tmp_path / "bucket"
    folder.mkdir()
    config = tmp_path / "model.toml"
    config.write_text(f'[read]\nmetadata_ttl = "0s"\nnegative_ttl = "0s"\n'
                      f'[[mount]]\npath = ""\nurl = "file://{folder}"\n')
    mount = mounter.mount(str(config))

    class RealMountMachine(MountMachine):
        def __init__(self) -> None:
            super().__init__()
            self.model = Model(folders_persist=True)
            self.driver = OsDriver(mount, folder)

    run_state_machine_as_test(RealMountMachine, settings=settings(
        max_examples=40, stateful_step_count=30, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
