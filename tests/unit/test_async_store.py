"""AsyncStore: counted calls, and the offline state that makes calls fail fast while a store is
consistently down (several calls in a row out of retries over some seconds, none answered; cached
reads never get here) and ends by itself once a probe call gets an answer. A store that still
answers now and then is flaky, not offline: every call keeps its own retries."""

from __future__ import annotations

import threading

import pytest
import trio

from mountfs.backends.async_store import (
    OFFLINE_AFTER_FAILURES,
    OFFLINE_AFTER_SECONDS,
    PROBE_INTERVAL,
    AsyncStore,
)
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


async def take_offline(memory: MemoryStore, store: AsyncStore, clock: Clock, op: str = "get_range") -> None:
    """Calls out of retries, one after the other, none answered, spread over the offline window."""
    memory.inject(op, unreachable(), times=OFFLINE_AFTER_FAILURES)
    for _ in range(OFFLINE_AFTER_FAILURES):
        clock.now += OFFLINE_AFTER_SECONDS / (OFFLINE_AFTER_FAILURES - 1)
        with pytest.raises(StoreUnavailable, match="gave up"):
            await call(store, op)
    assert store.offline


async def call(store: AsyncStore, op: str) -> object:
    if op == "get_range":
        return await store.get_range("k", 0, 4, None)
    if op == "head":
        return await store.head("k")
    return await store.list("")


async def test_one_call_out_of_retries_leaves_the_store_online() -> None:
    memory, store, _ = make()
    memory.inject("get_range", unreachable())
    with pytest.raises(StoreUnavailable, match="gave up"):
        await store.get_range("k", 0, 4, None)
    assert not store.offline
    assert await store.get_range("k", 0, 4, None) == b"data"  # the next call is asked, not refused
    assert store.stats.failed_fast == 0


async def test_an_answer_between_failures_keeps_a_flaky_store_online() -> None:
    memory, store, clock = make()
    for _ in range(10):  # failures by the dozen, over a minute, but the store answers in between
        memory.inject("get_range", unreachable(), times=OFFLINE_AFTER_FAILURES - 1)
        for _ in range(OFFLINE_AFTER_FAILURES - 1):
            clock.now += OFFLINE_AFTER_SECONDS
            with pytest.raises(StoreUnavailable, match="gave up"):
                await store.get_range("k", 0, 4, None)
        assert await store.head("k")  # an answer: the count starts again
    assert not store.offline and store.stats.failed_fast == 0


async def test_failures_in_row_within_a_moment_are_not_yet_offline() -> None:
    memory, store, clock = make()
    memory.inject("get_range", unreachable(), times=OFFLINE_AFTER_FAILURES * 3)
    for _ in range(OFFLINE_AFTER_FAILURES * 3):  # a burst, all at the same moment
        with pytest.raises(StoreUnavailable, match="gave up"):
            await store.get_range("k", 0, 4, None)
    assert not store.offline
    clock.now += OFFLINE_AFTER_SECONDS  # still failing, some seconds later: down
    memory.inject("get_range", unreachable())
    with pytest.raises(StoreUnavailable, match="gave up"):
        await store.get_range("k", 0, 4, None)
    assert store.offline and store.offline_for == OFFLINE_AFTER_SECONDS


class SlowFailure(MemoryStore):
    """A GET that fails only once `release` is set: a call still retrying while others answer."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def get_range(self, key: str, start: int, length: int, etag: str | None = None) -> bytes:
        if not self.release.wait(10):
            raise AssertionError("never released")
        raise unreachable()


async def test_the_window_counts_from_the_last_answer_not_from_a_call_that_started_before_it() -> None:
    clock = Clock()
    memory = SlowFailure()
    memory.put_object("k", b"data")
    store = AsyncStore(memory, 4, clock)

    async def slow_get() -> None:
        with pytest.raises(StoreUnavailable):
            await store.get_range("k", 0, 4, None)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(slow_get)
        await trio.sleep(0.05)
        clock.now += 60  # the GET has been failing for a minute, but a HEAD gets an answer now
        assert (await store.head("k")).size == 4
        memory.release.set()
    for _ in range(OFFLINE_AFTER_FAILURES - 1):
        with pytest.raises(StoreUnavailable):
            await store.get_range("k", 0, 4, None)
    assert not store.offline, "no answer for 0 s, not for a minute"
    clock.now += OFFLINE_AFTER_SECONDS
    with pytest.raises(StoreUnavailable):
        await store.get_range("k", 0, 4, None)
    assert store.offline and store.offline_for == OFFLINE_AFTER_SECONDS


async def test_a_store_out_of_retries_fails_fast_until_a_probe_gets_an_answer() -> None:
    memory, store, clock = make()
    await take_offline(memory, store, clock)
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
    await take_offline(memory, store, clock, "list")
    memory.inject("list", unreachable())
    clock.now += PROBE_INTERVAL
    with pytest.raises(StoreUnavailable, match="gave up"):  # the probe, still failing
        await store.list("")
    with pytest.raises(StoreUnavailable, match="offline"):
        await store.list("")
    assert memory.calls["list"] == OFFLINE_AFTER_FAILURES + 1 and store.offline


async def test_answers_that_are_errors_still_prove_the_store_is_there() -> None:
    memory, store, clock = make()
    await take_offline(memory, store, clock, "head")
    memory.inject("get_range", AccessDenied("no"))
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


async def test_a_store_that_cannot_prepare_is_left_for_its_first_request() -> None:
    class Unprepared(MemoryStore):
        def prepare(self) -> None:
            raise unreachable()

    store = AsyncStore(Unprepared(), threads=2)
    await store.prepare()  # logged at debug, not raised: the first request reports it
    assert not store.offline and not store.stats.requests and not store.stats.errors


async def test_retries_are_counted_for_the_store_whose_call_made_them() -> None:
    from mountfs.backends.base import ObjectMeta
    from mountfs.backends.retry import RETRIES, call_with_retry
    from mountfs.config import RetryConfig

    class ResetOnce(MemoryStore):
        """A HEAD whose first attempt meets a reset connection, as an adapter retries it."""

        def __init__(self) -> None:
            super().__init__()
            self.failures = 1

        def head(self, key: str) -> ObjectMeta:
            def attempt() -> ObjectMeta:
                if self.failures:
                    self.failures -= 1
                    raise Transient("HEAD s3://b/k: connection reset")
                return MemoryStore.head(self, key)

            return call_with_retry(attempt, RetryConfig(attempts=3, base_delay=0.001, max_delay=0.001),
                                   "HEAD")

    flaky, steady = ResetOnce(), ResetOnce()
    steady.failures = 0
    for inner in (flaky, steady):
        inner.put_object("k", b"x")
    before = RETRIES.value
    flaky_store, steady_store = AsyncStore(flaky, threads=2), AsyncStore(steady, threads=2)
    await flaky_store.head("k")
    await steady_store.head("k")
    assert flaky_store.stats.retries.value == 1 and steady_store.stats.retries.value == 0
    assert RETRIES.value == before + 1
