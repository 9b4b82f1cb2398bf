from __future__ import annotations

import threading

import pytest

from mountfs.backends.async_store import AsyncStore
from mountfs.backends.base import ObjectMeta
from mountfs.backends.memory import MemoryStore
from mountfs.namespace.inodes import MountRoot
from mountfs.namespace.tree import Namespace


class GatedStore(MemoryStore):
    """PUT waits for the test to open the gate: a window in which the test acts while an upload is
    in flight (writes again, sets an mtime)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.gate = threading.Event()

    def put(self, key: str, data: bytes, mtime_ns: int | None = None) -> ObjectMeta:
        self.entered.set()
        assert self.gate.wait(10)
        return super().put(key, data, mtime_ns)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store() -> MemoryStore:
    s = MemoryStore()
    s.put_object("top.txt", b"hello")
    s.put_object("dir/a.bin", b"a" * 100)
    s.put_object("dir/sub/b.bin", b"b" * 10)
    s.put_object("marker/", b"")  # a zero-byte directory marker
    s.put_object("both", b"the object shadowed by the prefix")
    s.put_object("both/inner", b"inner")
    s.put_object("empty", b"")
    return s


def single_mount(store: MemoryStore, clock: FakeClock, ttl: float = 60.0, negative_ttl: float = 5.0,
                 prefix: str = "") -> Namespace:
    root = MountRoot("", AsyncStore(store, 4), prefix, read_only=False)
    return Namespace([root], ttl, negative_ttl, clock)
