"""A mount grafted inside another (a [[path_substitution]] deeper than a mount's URL): its
directory shows the grafted store, whatever the outer store has under that prefix."""

from __future__ import annotations

import pytest

from mountfs.backends.async_store import AsyncStore
from mountfs.backends.memory import MemoryStore
from mountfs.errors import NotFound
from mountfs.namespace.inodes import ROOT_INODE, MountRoot
from mountfs.namespace.tree import Namespace
from tests.unit.conftest import FakeClock
from tests.unit.test_namespace import names


@pytest.fixture
def outer() -> MemoryStore:
    s = MemoryStore()
    s.put_object("top.txt", b"top")
    s.put_object("research/old.txt", b"what the bucket has")
    s.put_object("deep/a/keep.txt", b"k")
    return s


@pytest.fixture
def inner() -> MemoryStore:
    s = MemoryStore()
    s.put_object("new.txt", b"from nfs")
    s.put_object("sub/x.bin", b"x")
    return s


def grafted(outer: MemoryStore, inner: MemoryStore, clock: FakeClock, outer_path: str,
            graft_path: str) -> Namespace:
    roots = [MountRoot(outer_path, AsyncStore(outer, 4), "", read_only=False),
             MountRoot(graft_path, AsyncStore(inner, 4), "", read_only=False)]
    return Namespace(roots, 60.0, 5.0, clock)


async def test_a_graft_in_a_root_mount_replaces_the_prefix(outer: MemoryStore, inner: MemoryStore,
                                                           clock: FakeClock) -> None:
    ns = grafted(outer, inner, clock, "", "research")
    assert await names(ns, ROOT_INODE) == [(b"deep", True), (b"research", True), (b"top.txt", False)]
    research = await ns.lookup(ROOT_INODE, b"research")
    assert research.mount is not None and research.mount.store.store is inner
    assert await names(ns, research.inode) == [(b"new.txt", False), (b"sub", True)]
    with pytest.raises(NotFound):
        await ns.lookup(research.inode, b"old.txt")
    assert (await ns.lookup(research.inode, b"new.txt")).size == len(b"from nfs")
    assert (await ns.lookup(research.inode, b"..")).inode == ROOT_INODE


async def test_a_deep_graft_in_a_named_mount_keeps_its_siblings(outer: MemoryStore, inner: MemoryStore,
                                                                clock: FakeClock) -> None:
    ns = grafted(outer, inner, clock, "ds", "ds/deep/a/b")
    ds = await ns.lookup(ROOT_INODE, b"ds")
    deep = await ns.lookup(ds.inode, b"deep")
    a = await ns.lookup(deep.inode, b"a")
    assert await names(ns, a.inode) == [(b"b", True), (b"keep.txt", False)]
    b = await ns.lookup(a.inode, b"b")
    assert b.mount is not None and b.mount.store.store is inner
    assert await names(ns, b.inode) == [(b"new.txt", False), (b"sub", True)]
    assert deep.pinned and a.pinned and b.pinned, "the way to a graft cannot be removed or renamed"


async def test_the_way_to_a_graft_shows_even_if_the_store_has_nothing_there(
        outer: MemoryStore, inner: MemoryStore, clock: FakeClock) -> None:
    ns = grafted(outer, inner, clock, "", "nowhere/else")
    nowhere = await ns.lookup(ROOT_INODE, b"nowhere")  # a lookup before any listing
    assert nowhere.is_dir and nowhere.mount is not None and nowhere.mount.store.store is outer
    assert await names(ns, nowhere.inode) == [(b"else", True)]
    inside = await ns.lookup(nowhere.inode, b"else")
    assert await names(ns, inside.inode) == [(b"new.txt", False), (b"sub", True)]


async def test_graft_directories_keep_their_inodes(outer: MemoryStore, inner: MemoryStore,
                                                  clock: FakeClock) -> None:
    ns = grafted(outer, inner, clock, "", "deep/a/b")
    deep = await ns.lookup(ROOT_INODE, b"deep")
    a = await ns.lookup(deep.inode, b"a")
    b = await ns.lookup(a.inode, b"b")
    for node in (b, a, deep):
        ns.forget(node.inode, 1)
    assert (await ns.lookup(ROOT_INODE, b"deep")).inode == deep.inode
    assert (await ns.lookup(a.inode, b"b")).inode == b.inode
