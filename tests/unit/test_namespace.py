"""Inodes, lookup counts, implicit directories, TTLs and the negative cache."""

from __future__ import annotations

import pytest

from mountfs.backends.async_store import AsyncStore
from mountfs.backends.memory import MemoryStore
from mountfs.errors import NotADirectory, NotFound
from mountfs.namespace.inodes import ROOT_INODE, MountRoot
from mountfs.namespace.listing import entry_name
from mountfs.namespace.tree import Namespace
from tests.unit.conftest import FakeClock, single_mount


async def names(ns: Namespace, inode: int) -> list[tuple[bytes, bool]]:
    snapshot = ns.open_dir(inode)
    out = []
    position = 0
    while (entry := await snapshot.entry(position)) is not None:
        out.append((entry.name, entry.is_dir))
        position += 1
    return sorted(out)


async def test_implicit_directories_come_from_prefixes(store: MemoryStore, clock: FakeClock) -> None:
    ns = single_mount(store, clock)
    assert await names(ns, ROOT_INODE) == [
        (b"both", True), (b"dir", True), (b"empty", False), (b"marker", True), (b"top.txt", False)]
    d = await ns.lookup(ROOT_INODE, b"dir")
    assert d.is_dir and d.key == "dir/"
    assert await names(ns, d.inode) == [(b"a.bin", False), (b"sub", True)]
    marker = await ns.lookup(ROOT_INODE, b"marker")
    assert await names(ns, marker.inode) == []


async def test_lookup_without_listing_probes_head_and_list(store: MemoryStore, clock: FakeClock) -> None:
    ns = single_mount(store, clock)
    f = await ns.lookup(ROOT_INODE, b"top.txt")
    assert not f.is_dir and f.size == 5 and f.meta is not None
    assert store.calls["head"] == 1 and store.calls["list"] == 1
    both = await ns.lookup(ROOT_INODE, b"both")
    assert both.is_dir, "a name that is a prefix and an object shows as the directory"


async def test_lookups_after_a_listing_cost_no_requests(store: MemoryStore, clock: FakeClock) -> None:
    ns = single_mount(store, clock)
    await names(ns, ROOT_INODE)
    store.reset_counters()
    await ns.lookup(ROOT_INODE, b"top.txt")
    with pytest.raises(NotFound):
        await ns.lookup(ROOT_INODE, b"missing")
    assert sum(store.calls.values()) == 0


async def test_negative_lookups_are_cached_for_the_negative_ttl(store: MemoryStore, clock: FakeClock) -> None:
    ns = single_mount(store, clock, negative_ttl=5)
    with pytest.raises(NotFound):
        await ns.lookup(ROOT_INODE, b"late")
    store.put_object("late", b"x")
    with pytest.raises(NotFound):
        await ns.lookup(ROOT_INODE, b"late")
    clock.now += 6
    assert (await ns.lookup(ROOT_INODE, b"late")).size == 1


async def test_attributes_refresh_after_the_ttl(store: MemoryStore, clock: FakeClock) -> None:
    ns = single_mount(store, clock, ttl=10)
    f = await ns.lookup(ROOT_INODE, b"top.txt")
    store.put_object("top.txt", b"hello, world")
    assert (await ns.attributes(f.inode)).size == 5
    clock.now += 11
    assert (await ns.attributes(f.inode)).size == 12


async def test_lookup_counts_keep_inodes_until_forgotten(store: MemoryStore, clock: FakeClock) -> None:
    ns = single_mount(store, clock)
    first = await ns.lookup(ROOT_INODE, b"top.txt")
    again = await ns.lookup(ROOT_INODE, b"top.txt")
    assert first is again and first.lookups == 2
    ns.forget(first.inode, 1)
    assert ns.node(first.inode) is first
    ns.forget(first.inode, 1)
    with pytest.raises(NotFound):
        ns.node(first.inode)
    fresh = await ns.lookup(ROOT_INODE, b"top.txt")
    assert fresh.inode != first.inode, "inode numbers are never reused"
    ns.forget(ROOT_INODE, 1)
    assert ns.node(ROOT_INODE) is ns.root, "the root is never forgotten"


async def test_lookup_in_a_file_is_not_a_directory(store: MemoryStore, clock: FakeClock) -> None:
    ns = single_mount(store, clock)
    f = await ns.lookup(ROOT_INODE, b"top.txt")
    with pytest.raises(NotADirectory):
        await ns.lookup(f.inode, b"x")


async def test_a_prefix_mount_shows_only_what_is_under_it(store: MemoryStore, clock: FakeClock) -> None:
    ns = single_mount(store, clock, prefix="dir/")
    assert await names(ns, ROOT_INODE) == [(b"a.bin", False), (b"sub", True)]
    assert (await ns.lookup(ROOT_INODE, b"a.bin")).key == "dir/a.bin"


async def test_several_mounts_hang_under_virtual_directories(clock: FakeClock) -> None:
    one, two = MemoryStore("one"), MemoryStore("two")
    one.put_object("x", b"1")
    two.put_object("y", b"22")
    ns = Namespace([MountRoot("data/one", AsyncStore(one, 2), "", True),
                    MountRoot("two", AsyncStore(two, 2), "", False)], 60, 5, clock)
    assert await names(ns, ROOT_INODE) == [(b"data", True), (b"two", True)]
    data = await ns.lookup(ROOT_INODE, b"data")
    assert data.mount is None
    mount_one = await ns.lookup(data.inode, b"one")
    assert (await ns.lookup(mount_one.inode, b"x")).size == 1
    assert (await ns.lookup((await ns.lookup(ROOT_INODE, b"two")).inode, b"y")).size == 2
    with pytest.raises(NotFound):
        await ns.lookup(ROOT_INODE, b"nope")


async def test_a_listing_of_many_pages_is_complete_and_stable(clock: FakeClock) -> None:
    store = MemoryStore()
    for i in range(2500):
        store.put_object(f"big/f{i:05d}", b"")
    ns = single_mount(store, clock)
    big = await ns.lookup(ROOT_INODE, b"big")
    snapshot = ns.open_dir(big.inode)
    first = await snapshot.entry(0)
    store.put_object("big/a-new-file-sorting-first", b"")
    listed = [e.name for i in range(2500) if (e := await snapshot.entry(i)) is not None]
    assert listed[0] == first.name if first else False
    assert await snapshot.entry(2500) is None
    assert sorted(listed) == [f"f{i:05d}".encode() for i in range(2500)]
    assert store.calls["list"] >= 3


def test_unrepresentable_keys_are_skipped() -> None:
    assert entry_name("p/", "p/ok") == b"ok"
    assert entry_name("p/", "p/sub/") == b"sub"
    for bad in ("p/.", "p/..", "p/" + "x" * 256, "p/a\0b"):
        assert entry_name("p/", bad) is None


async def test_a_complete_listing_is_reused_within_the_ttl(store: MemoryStore, clock: FakeClock) -> None:
    ns = single_mount(store, clock, ttl=10)
    first = await names(ns, ROOT_INODE)
    lists = store.calls["list"]
    assert await names(ns, ROOT_INODE) == first
    assert store.calls["list"] == lists, "a second opendir within the TTL lists nothing"
    store.put_object("new.txt", b"n")
    clock.now += 11
    assert (b"new.txt", False) in await names(ns, ROOT_INODE)
    assert store.calls["list"] > lists


async def test_subdirectories_are_listed_ahead_and_never_twice(clock: FakeClock) -> None:
    import trio

    store = MemoryStore()
    for d in range(5):
        for f in range(3):
            store.put_object(f"d{d}/f{f}", b"x")
    store.latency = 0.01
    ns = single_mount(store, clock)
    async with trio.open_nursery() as nursery:
        ns.nursery = nursery
        assert len(await names(ns, ROOT_INODE)) == 5
        first = await ns.lookup(ROOT_INODE, b"d0")
        assert await names(ns, first.inode) == [(b"f0", False), (b"f1", False), (b"f2", False)]
        for d in range(1, 5):
            node = await ns.lookup(ROOT_INODE, f"d{d}".encode())
            assert len(await names(ns, node.inode)) == 3
    assert store.calls["list"] == 6, "the root once, each subdirectory once"
    assert store.calls["head"] == 0


async def test_remembered_listings_are_bounded(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    from mountfs.namespace import tree

    monkeypatch.setattr(tree, "MAX_LISTINGS", 3)
    store = MemoryStore()
    for d in range(6):
        store.put_object(f"d{d}/f", b"x")
    ns = single_mount(store, clock)
    for d in range(6):
        node = await ns.lookup(ROOT_INODE, f"d{d}".encode())
        await names(ns, node.inode)
    assert len(ns._listings) == 3
    assert (id(ns.mounts[0]), "d5/") in ns._listings, "the newest listings stay"


def test_a_listing_gives_the_entries_after_a_name_in_order_and_follows_changes() -> None:
    from mountfs.namespace.listing import DirEntry
    from mountfs.namespace.tree import _DirListing

    listing = _DirListing()
    for name in (b"a", b"b", b"c", b"d"):
        listing.put(DirEntry(name, False, None))
    assert [(at, e.name) for at, e in listing.after(b"a", 2)] == [(1, b"b"), (2, b"c")]
    assert [(at, e.name) for at, e in listing.after(b"a", 3, skip=2)] == [(3, b"d")]
    assert listing.after(b"a", 2, skip=2) == []
    assert listing.after(b"d", 5) == [] and listing.after(b"zz", 1) == []
    listing.remove(b"b")
    listing.put(DirEntry(b"e", False, None))
    assert [e.name for _, e in listing.after(b"a", 10)] == [b"c", b"d", b"e"]


async def test_a_probed_name_forgotten_by_the_kernel_costs_no_request_within_the_ttl(
        store: MemoryStore, clock: FakeClock) -> None:
    """drop_caches, or memory pressure, makes the kernel forget inodes; the next epoch's lookups of
    names that were never listed are answered from what the probe found, until the TTL."""
    ns = single_mount(store, clock, ttl=10)
    f = await ns.lookup(ROOT_INODE, b"top.txt")
    d = await ns.lookup(ROOT_INODE, b"dir")
    ns.forget(f.inode, 1)
    ns.forget(d.inode, 1)
    store.reset_counters()
    again = await ns.lookup(ROOT_INODE, b"top.txt")
    assert again.size == 5 and not again.is_dir
    assert (await ns.lookup(ROOT_INODE, b"dir")).is_dir
    assert sum(store.calls.values()) == 0
    ns.forget(again.inode, 1)
    store.put_object("top.txt", b"hello, world")
    clock.now += 11
    assert (await ns.lookup(ROOT_INODE, b"top.txt")).size == 12
    assert store.calls["head"] == 1


async def test_a_probed_name_removed_or_renamed_here_is_not_served_from_the_probe(
        store: MemoryStore, clock: FakeClock) -> None:
    ns = single_mount(store, clock, ttl=60)
    root = ns.node(ROOT_INODE)
    f = await ns.lookup(ROOT_INODE, b"top.txt")
    g = await ns.lookup(ROOT_INODE, b"empty")
    ns.remove_entry(root, b"top.txt", f)
    with pytest.raises(NotFound):
        await ns.lookup(ROOT_INODE, b"top.txt")
    ns.move_entry(g, root, root, b"moved", None)
    store.remove_object("empty")
    with pytest.raises(NotFound):
        await ns.lookup(ROOT_INODE, b"empty")
