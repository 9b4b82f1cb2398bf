"""MemoryStore: the store contract, plus the fault, latency and counting controls tests rely on."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from mountfs.backends.base import ListPage
from mountfs.backends.memory import OPS, MemoryStore
from mountfs.errors import NotFound, Stale, StoreUnavailable, Transient

pytest.register_assert_rewrite("tests.unit.store_contract")  # detailed assert messages in the contract

from tests.unit.store_contract import Put, StoreContract, StoreWriteContract  # noqa: E402


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def put(store: MemoryStore) -> Put:
    def put_object(key: str, data: bytes) -> None:
        store.put_object(key, data)

    return put_object


class TestContract(StoreContract, StoreWriteContract):
    """The shared contract, with the module's `store` and `put` fixtures."""

    listings_carry_mtime = False  # it lists as S3 does


def test_identity() -> None:
    assert (MemoryStore().store_id, MemoryStore().bucket) == ("memory", "mem")
    store = MemoryStore("b", "memory://2")
    assert (store.store_id, store.bucket) == ("memory://2", "b")


def test_put_object_helper(store: MemoryStore) -> None:
    meta = store.put_object("k", b"data", mtime_ns=123)
    assert (meta.key, meta.size, meta.mtime_ns) == ("k", 4, 123)
    assert store.head("k") == meta
    again = store.put_object("k", b"data", mtime_ns=123)
    assert again.etag != meta.etag, "every write is a new version, even of the same bytes"
    with pytest.raises(Stale):
        store.get_range("k", 0, 4, etag=meta.etag)
    store.remove_object("k")
    with pytest.raises(NotFound):
        store.head("k")
    with pytest.raises(NotFound):
        store.remove_object("k")
    with pytest.raises(ValueError):
        store.put_object("", b"")


def test_helpers_bypass_counters_and_faults(store: MemoryStore) -> None:
    store.inject("put", Transient("boom"))
    store.put_object("k", b"v")
    store.remove_object("k")
    assert store.calls == {}
    with pytest.raises(Transient):
        store.put("k", b"v")


def test_keys_in_s3_order(store: MemoryStore) -> None:
    for key in ["b", "a/x", "a-y", "😀", "\uffff"]:
        store.put_object(key, b"")
    assert store.keys() == ["a-y", "a/x", "b", "\uffff", "😀"]


def test_inject_fails_the_next_calls_only(store: MemoryStore) -> None:
    store.put_object("k", b"hello")
    store.inject("get_range", Transient("throttled"), times=2)
    for _ in range(2):
        with pytest.raises(Transient, match="throttled"):
            store.get_range("k", 0, 5)
    assert store.get_range("k", 0, 5) == b"hello"
    assert store.calls["get_range"] == 3
    assert store.bytes_read == 5


def test_inject_is_per_operation_and_queues(store: MemoryStore) -> None:
    store.put_object("k", b"v")
    store.inject("head", NotFound("first"))
    store.inject("head", StoreUnavailable("second"))
    store.list("", "/")  # another op is unaffected
    with pytest.raises(NotFound, match="first"):
        store.head("k")
    with pytest.raises(StoreUnavailable, match="second"):
        store.head("k")
    store.head("k")


def test_inject_every_operation(store: MemoryStore) -> None:
    store.put_object("k", b"v")
    upload = store.create_multipart("m")
    part = store.upload_part("m", upload, 1, b"x")
    calls: dict[str, Callable[[], object]] = {
        "head": lambda: store.head("k"),
        "get_range": lambda: store.get_range("k", 0, 1),
        "list": lambda: store.list(""),
        "check_access": store.check_access,
        "put": lambda: store.put("p", b""),
        "create_multipart": lambda: store.create_multipart("m2"),
        "upload_part": lambda: store.upload_part("m", upload, 2, b""),
        "complete_multipart": lambda: store.complete_multipart("m", upload, [part]),
        "abort_multipart": lambda: store.abort_multipart("m", upload),
        "multipart_uploads": lambda: store.multipart_uploads("m"),
        "multipart_parts": lambda: store.multipart_parts("m", upload),
        "delete": lambda: store.delete("k"),
        "copy": lambda: store.copy("k", "k2"),
        "set_mtime": lambda: store.set_mtime("k", 1),
    }
    assert set(calls) == OPS
    store.reset_counters()
    for op, call in calls.items():
        store.inject(op, Transient(op))
        with pytest.raises(Transient, match=op):
            call()
        assert store.calls[op] == 1
    assert store.head("k").size == 1  # nothing ran behind the faults
    assert store.keys() == ["k"]


def test_inject_validates(store: MemoryStore) -> None:
    with pytest.raises(ValueError, match="unknown operation"):
        store.inject("get", Transient("x"))
    with pytest.raises(ValueError):
        store.inject("head", Transient("x"), times=0)


def test_clear_faults(store: MemoryStore) -> None:
    store.put_object("k", b"v")
    store.inject("head", Transient("x"), times=5)
    store.clear_faults()
    store.head("k")


def test_latency(store: MemoryStore, monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    store.put_object("k", b"v")
    store.latency = 0.05
    store.head("k")
    assert slept == [0.05]


def test_latency_does_not_serialise_calls(store: MemoryStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Slow calls overlap, as requests to a real store do: the sleep is outside the lock. Eight
    calls all reach their sleep at once, or the barrier breaks."""
    barrier = threading.Barrier(8)
    monkeypatch.setattr(time, "sleep", lambda seconds: barrier.wait(timeout=10))
    store.put_object("k", b"v")
    store.latency = 0.1
    errors: list[BaseException] = []

    def head() -> None:
        try:
            store.head("k")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=head) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_counters(store: MemoryStore) -> None:
    store.put_object("k", b"0123456789")
    store.get_range("k", 2, 3)
    store.get_range("k", 8, 100)
    store.get_range("k", 50, 10)
    store.head("k")
    store.list("")
    assert store.bytes_read == 5
    assert store.calls == {"get_range": 3, "head": 1, "list": 1}
    store.reset_counters()
    assert (store.calls, store.bytes_read) == ({}, 0)


def test_check_access_does_not_list(store: MemoryStore) -> None:
    store.check_access()
    assert store.calls == {"check_access": 1}


def test_list_validates_max_keys(store: MemoryStore) -> None:
    with pytest.raises(ValueError):
        store.list("", "/", None, 0)
    assert store.list("", "", None, 5) == store.list("", None, None, 5)


def test_list_of_many_keys_under_one_prefix(store: MemoryStore) -> None:
    for i in range(20_000):
        store.put_object(f"huge/{i:05d}", b"")
    store.put_object("small", b"")
    page = store.list("", "/")
    assert (page.prefixes, [o.key for o in page.objects]) == (["huge/"], ["small"])


def test_thread_safety_smoke(store: MemoryStore) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def worker(n: int) -> None:
        try:
            barrier.wait()
            for i in range(200):
                key = f"t{n}/k{i % 20}"
                meta = store.put(key, f"{n}-{i}".encode())
                data = store.get_range(key, 0, 100)
                assert data.startswith(f"{n}-".encode())
                assert store.head(key).key == key and meta.key == key
                page = store.list("", None, None, 50)
                assert len(page.objects) <= 50
                if i % 7 == 0:
                    store.delete(key)
                else:
                    store.copy(key, f"t{n}/copy")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.calls["put"] == 1600
    keys = store.keys()
    assert len(keys) == len(set(keys))
    assert store.list("", None, None, 1000).objects == [store.head(k) for k in keys]
    assert store.list("t9/", None) == ListPage()


def test_multipart_uploads_lists_those_of_exactly_the_key(store: MemoryStore) -> None:
    first, second = store.create_multipart("k"), store.create_multipart("k")
    store.create_multipart("k2")
    assert sorted(u for u, _ in store.multipart_uploads("k")) == sorted([first, second])
    store.abort_multipart("k", first)
    [(left, created)] = store.multipart_uploads("k")
    assert left == second and created > 0
