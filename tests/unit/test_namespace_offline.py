"""Stale metadata while a store is offline: served up to read.offline_grace past its TTL."""

from __future__ import annotations

import pytest

from mountfs.backends.async_store import AsyncStore
from mountfs.backends.memory import MemoryStore
from mountfs.errors import NotFound, Offline, StoreUnavailable, Transient
from mountfs.namespace.inodes import ROOT_INODE, MountRoot
from mountfs.namespace.tree import Namespace
from tests.unit.conftest import FakeClock


def offline_mount(store: MemoryStore, clock: FakeClock, grace: float = 100.0) -> Namespace:
    root = MountRoot("", AsyncStore(store, 4, clock=clock), "", read_only=True)
    return Namespace([root], 10.0, 5.0, clock, offline_grace=grace)


def down(store: MemoryStore) -> None:
    """Every HEAD and LIST fails as a store out of retries does."""
    for op in ("head", "list"):
        for _ in range(1000):  # each its own: an error raised on through `gather` loses its cause
            error = StoreUnavailable("down")
            error.__cause__ = Transient("connection refused")
            store.inject(op, error)


async def listed(ns: Namespace, inode: int) -> list[bytes]:
    snapshot = ns.open_dir(inode)
    names, position = [], 0
    while (entry := await snapshot.entry(position)) is not None:
        names.append(entry.name)
        position += 1
    return sorted(names)


async def test_expired_metadata_is_served_within_the_grace(store: MemoryStore, clock: FakeClock) -> None:
    ns = offline_mount(store, clock)
    assert await listed(ns, ROOT_INODE) == [b"both", b"dir", b"empty", b"marker", b"top.txt"]
    top = await ns.lookup(ROOT_INODE, b"top.txt")
    directory = await ns.lookup(ROOT_INODE, b"dir")
    assert await listed(ns, directory.inode) == [b"a.bin", b"sub"]
    down(store)
    clock.now += 50  # past the 10 s TTL, within the 100 s grace
    assert (await ns.attributes(top.inode)).size == 5
    assert (await ns.lookup(ROOT_INODE, b"top.txt")) is top
    assert await listed(ns, ROOT_INODE) == [b"both", b"dir", b"empty", b"marker", b"top.txt"]
    assert await listed(ns, directory.inode) == [b"a.bin", b"sub"]
    assert (await ns.lookup(directory.inode, b"a.bin")).size == 100
    with pytest.raises(NotFound):  # a complete listing without it: ENOENT, not EIO
        await ns.lookup(ROOT_INODE, b"never-there")
    assert ns.stale_served > 0
    assert not ns.mounts[0].store.offline  # calls that failed at one moment: maybe only flaky
    clock.now += 10  # still no answer some seconds later: down
    assert (await ns.attributes(top.inode)).size == 5
    assert ns.mounts[0].store.offline


async def test_past_the_grace_the_store_error_is_raised(store: MemoryStore, clock: FakeClock) -> None:
    ns = offline_mount(store, clock, grace=100)
    await listed(ns, ROOT_INODE)
    top = await ns.lookup(ROOT_INODE, b"top.txt")
    down(store)
    clock.now += 200
    with pytest.raises(StoreUnavailable):
        await ns.attributes(top.inode)
    with pytest.raises(StoreUnavailable):
        await ns.lookup(ROOT_INODE, b"top.txt")
    with pytest.raises(StoreUnavailable):
        await listed(ns, ROOT_INODE)


async def test_without_a_grace_nothing_stale_is_served(store: MemoryStore, clock: FakeClock) -> None:
    ns = offline_mount(store, clock, grace=0)
    top = await ns.lookup(ROOT_INODE, b"top.txt")
    down(store)
    clock.now += 11
    with pytest.raises((StoreUnavailable, Offline)):
        await ns.attributes(top.inode)


async def test_names_never_seen_are_errors_not_guesses(store: MemoryStore, clock: FakeClock) -> None:
    ns = offline_mount(store, clock)
    down(store)
    with pytest.raises(StoreUnavailable):
        await ns.lookup(ROOT_INODE, b"top.txt")


async def test_the_store_back_refreshes_metadata(store: MemoryStore, clock: FakeClock) -> None:
    ns = offline_mount(store, clock)
    top = await ns.lookup(ROOT_INODE, b"top.txt")
    down(store)
    clock.now += 11
    assert (await ns.attributes(top.inode)).size == 5
    store.clear_faults()
    store.put_object("top.txt", b"hello again")
    clock.now += 10  # the next probe is allowed through
    assert (await ns.attributes(top.inode)).size == 11
    assert not ns.mounts[0].store.offline


async def test_a_name_found_missing_stays_missing_within_the_grace(store: MemoryStore,
                                                                   clock: FakeClock) -> None:
    ns = offline_mount(store, clock, grace=100)
    with pytest.raises(NotFound):  # no listing: a HEAD + LIST probe, cached as negative for 5 s
        await ns.lookup(ROOT_INODE, b"absent")
    down(store)
    clock.now += 50  # the negative entry expired 45 s ago: within the grace, ENOENT and not EIO
    with pytest.raises(NotFound):
        await ns.lookup(ROOT_INODE, b"absent")
    assert ns.stale_served == 1
    clock.now += 100  # past the grace: the store's error
    with pytest.raises(StoreUnavailable):
        await ns.lookup(ROOT_INODE, b"absent")
