"""AsyncStore: counted calls, and the offline state that makes calls fail fast while a store is
down (cached reads never get here) and ends by itself once a probe call gets an answer."""

from __future__ import annotations

import pytest

from mountfs.backends.async_store import PROBE_INTERVAL, AsyncStore
from mountfs.backends.memory import MemoryStore
from mountfs.errors import AccessDenied, NotFound, StoreUnavailable, Transient


def unreachable() -> StoreUnavailable:
    """What an adapter raises once its retries are used up."""
    try:
        raise Transient("GET s3://b/k: connection refused")
    except Transient as cause:
        try:
            raise StoreUnavailable("GET s3://b/k: connection refused (gave up after 6 attempt(s))") from cause
        except StoreUnavailable as exc:
            return exc


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make() -> tuple[MemoryStore, AsyncStore, Clock]:
    memory, clock = MemoryStore(), Clock()
    memory.put_object("k", b"data")
    return memory, AsyncStore(memory, 4, clock), clock


async def test_a_store_out_of_retries_fails_fast_until_a_probe_gets_an_answer() -> None:
    memory, store, clock = make()
    memory.inject("get_range", unreachable())
    with pytest.raises(StoreUnavailable):
        await store.get_range("k", 0, 4, None)
    assert store.offline
    for _ in range(3):  # refused at once: the store is not even asked
        with pytest.raises(StoreUnavailable, match="offline"):
            await store.head("k")
    assert memory.calls["head"] == 0 and store.stats.failed_fast == 3
    clock.now += PROBE_INTERVAL
    assert await store.get_range("k", 0, 4, None) == b"data"  # the probe goes through and answers
    assert not store.offline
    assert (await store.head("k")).size == 4


async def test_a_failed_probe_keeps_it_offline_for_another_interval() -> None:
    memory, store, clock = make()
    memory.inject("list", unreachable(), times=2)
    with pytest.raises(StoreUnavailable):
        await store.list("")
    clock.now += PROBE_INTERVAL
    with pytest.raises(StoreUnavailable, match="gave up"):  # the probe, still failing
        await store.list("")
    with pytest.raises(StoreUnavailable, match="offline"):
        await store.list("")
    assert memory.calls["list"] == 2


async def test_answers_that_are_errors_still_prove_the_store_is_there() -> None:
    memory, store, clock = make()
    memory.inject("head", unreachable())
    memory.inject("get_range", AccessDenied("no"))
    with pytest.raises(StoreUnavailable):
        await store.head("k")
    clock.now += PROBE_INTERVAL
    with pytest.raises(AccessDenied):
        await store.get_range("k", 0, 1, None)
    assert not store.offline
    with pytest.raises(NotFound):
        await store.head("missing")
    assert not store.offline


async def test_a_refusal_without_retries_does_not_count_as_offline() -> None:
    memory, store, _ = make()
    memory.inject("put", StoreUnavailable("PUT s3://b/k: WeirdError"))  # no Transient cause
    with pytest.raises(StoreUnavailable):
        await store.put("k2", b"x")
    assert not store.offline
    assert store.stats.requests["put"] == 1 and store.stats.errors["put"] == 1
