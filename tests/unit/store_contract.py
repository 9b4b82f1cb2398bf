"""The behaviour every `ObjectStore` owes the layers above, written once for all adapters.

A test module subclasses `StoreContract` (and `StoreWriteContract` once its adapter writes) and
provides two fixtures: `store` (the adapter, on an empty bucket) and `put` (a function
`put(key, data)` that creates or replaces an object *behind the adapter's back*, as another
client would: files for LocalStore, `put_object` for MemoryStore, the SDK for S3/GCS/Azure).

Only S3 semantics are asserted: keys are valid UTF-8, folders exist only as implied prefixes.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mountfs.backends.base import ListPage, ObjectMeta, ObjectStore
from mountfs.errors import NotFound, Stale, Unsupported

Put = Callable[[str, bytes], None]


def s3_order(keys: list[str]) -> list[str]:
    """Keys in the order S3 lists them: by UTF-8 bytes."""
    return sorted(keys, key=lambda k: k.encode("utf-8", "surrogateescape"))


def entries(page: ListPage) -> list[str]:
    """Objects and prefixes of one page, merged in S3 order (as the store must have produced them)."""
    return s3_order([o.key for o in page.objects] + page.prefixes)


def list_all(store: ObjectStore, prefix: str, delimiter: str | None = "/",
             max_keys: int = 1000) -> tuple[list[str], list[str]]:
    """Every (object key, prefix) of a listing, following tokens; checks order and page size."""
    objects: list[str] = []
    prefixes: list[str] = []
    seen: list[str] = []
    token: str | None = None
    for _ in range(100_000):
        page = store.list(prefix, delimiter, token, max_keys)
        names = entries(page)
        assert len(names) <= max_keys
        objects += [o.key for o in page.objects]
        prefixes += page.prefixes
        seen += names
        if page.next_token is None:
            break
        assert names, "a page with a next_token must not be empty"
        token = page.next_token
    assert seen == s3_order(seen), "entries out of S3 order across pages"
    assert len(seen) == len(set(seen)), "an entry was listed twice"
    return objects, prefixes


class StoreContract:
    """Reads: head, get_range, list."""

    # LocalStore and MemoryStore page with "start after this key"; S3, GCS and Azure hand out
    # opaque continuation tokens, so tests of the token's form apply only where it is a key.
    tokens_are_keys = True

    # --- head ------------------------------------------------------------------------------------

    def test_head(self, store: ObjectStore, put: Put) -> None:
        put("dir/file.bin", b"0123456789")
        meta = store.head("dir/file.bin")
        assert meta.key == "dir/file.bin"
        assert meta.size == 10
        assert meta.etag
        assert meta.mtime_ns > 0
        assert store.head("dir/file.bin") == meta, "ETag and mtime must be stable while unchanged"

    def test_head_missing_is_not_found(self, store: ObjectStore, put: Put) -> None:
        put("present", b"x")
        with pytest.raises(NotFound):
            store.head("absent")
        with pytest.raises(NotFound):
            store.head("present/below")

    def test_head_of_implied_directory_is_not_found(self, store: ObjectStore, put: Put) -> None:
        put("a/b/c.txt", b"x")
        with pytest.raises(NotFound):
            store.head("a")
        with pytest.raises(NotFound):
            store.head("a/b")

    def test_empty_object(self, store: ObjectStore, put: Put) -> None:
        put("empty", b"")
        meta = store.head("empty")
        assert meta.size == 0
        assert store.get_range("empty", 0, 100) == b""
        assert store.get_range("empty", 0, 100, etag=meta.etag) == b""
        page = store.list("", "/")
        assert [(o.key, o.size) for o in page.objects] == [("empty", 0)]

    def test_object_id(self, store: ObjectStore, put: Put) -> None:
        put("k", b"v")
        meta = store.head("k")
        oid = store.object_id(meta)
        assert (oid.store, oid.bucket, oid.key, oid.etag) == (store.store_id, store.bucket, "k", meta.etag)

    # --- get_range -------------------------------------------------------------------------------

    def test_get_range(self, store: ObjectStore, put: Put) -> None:
        data = bytes(range(256)) * 40  # 10,240 bytes
        put("blob", data)
        assert store.get_range("blob", 0, len(data)) == data
        assert store.get_range("blob", 1000, 333) == data[1000:1333]  # middle
        assert store.get_range("blob", len(data) - 10, 10) == data[-10:]  # exactly the end
        assert store.get_range("blob", len(data) - 10, 1000) == data[-10:]  # runs past the end
        assert store.get_range("blob", 0, 0) == b""  # zero length
        assert store.get_range("blob", len(data), 10) == b""  # at EOF
        assert store.get_range("blob", len(data) + 5000, 10) == b""  # beyond EOF

    def test_get_pieces_splits_one_range_into_fixed_parts(self, store: ObjectStore, put: Put) -> None:
        data = bytes(range(256)) * 40  # 10,240 bytes
        put("blob", data)
        pieces = store.get_pieces("blob", 1000, 7000, 3000)
        assert [len(p) for p in pieces] == [3000, 3000, 1000] and b"".join(pieces) == data[1000:8000]
        assert b"".join(store.get_pieces("blob", 9000, 5000, 1024)) == data[9000:]  # runs past the end
        assert store.get_pieces("blob", 0, len(data), len(data)) == [data]
        assert store.get_pieces("blob", len(data), 10, 4) == []
        with pytest.raises(Stale):
            store.get_pieces("blob", 0, 10, 4, etag="not-the-etag")

    def test_get_range_missing_is_not_found(self, store: ObjectStore, put: Put) -> None:
        put("a/b", b"x")
        with pytest.raises(NotFound):
            store.get_range("nope", 0, 10)
        with pytest.raises(NotFound):
            store.get_range("a", 0, 10)  # an implied directory is not an object

    def test_etag_pins_the_version(self, store: ObjectStore, put: Put) -> None:
        put("model.ckpt", b"version one")
        old = store.head("model.ckpt")
        assert store.get_range("model.ckpt", 0, 7, etag=old.etag) == b"version"
        put("model.ckpt", b"the second version")  # another writer; a different size on purpose
        new = store.head("model.ckpt")
        assert new.etag != old.etag
        with pytest.raises(Stale) as info:
            store.get_range("model.ckpt", 0, 7, etag=old.etag)
        assert "model.ckpt" in str(info.value)
        assert store.get_range("model.ckpt", 4, 6, etag=new.etag) == b"second"
        assert store.get_range("model.ckpt", 4, 6) == b"second"

    # --- list ------------------------------------------------------------------------------------

    def test_list_with_delimiter(self, store: ObjectStore, put: Put) -> None:
        for key in ["top.txt", "a/one", "a/two", "a/sub/three", "b/four", "zz"]:
            put(key, b"data")
        page = store.list("", "/")
        assert [o.key for o in page.objects] == ["top.txt", "zz"]
        assert page.prefixes == ["a/", "b/"]
        assert page.next_token is None
        page = store.list("a/", "/")
        assert [o.key for o in page.objects] == ["a/one", "a/two"]
        assert page.prefixes == ["a/sub/"]
        page = store.list("a/sub/", "/")
        assert [o.key for o in page.objects] == ["a/sub/three"]
        assert page.prefixes == []

    def test_list_metadata_matches_head(self, store: ObjectStore, put: Put) -> None:
        put("d/x", b"12345")
        put("y", b"123")
        for delimiter in ("/", None):
            page = store.list("", delimiter)
            for meta in page.objects:
                assert meta == store.head(meta.key)

    def test_list_without_delimiter_is_recursive(self, store: ObjectStore, put: Put) -> None:
        keys = ["a/b/c/d/deep", "a/b/file", "a/x", "a-b", "a.b", "a0", "top"]
        for key in keys:
            put(key, b"z")
        page = store.list("", None)
        assert [o.key for o in page.objects] == s3_order(keys)
        assert page.prefixes == []
        page = store.list("a/", None)
        assert [o.key for o in page.objects] == ["a/b/c/d/deep", "a/b/file", "a/x"]
        page = store.list("a/b", None)
        assert [o.key for o in page.objects] == ["a/b/c/d/deep", "a/b/file"]

    def test_list_interleaves_objects_and_prefixes_in_byte_order(self, store: ObjectStore, put: Put) -> None:
        # "-" (0x2d) < "." (0x2e) < "/" (0x2f) < "0" (0x30): the prefix "a/" falls between objects.
        for key in ["a-b", "a.b", "a/inner", "a0", "b"]:
            put(key, b"1")
        page = store.list("", "/")
        assert [o.key for o in page.objects] == ["a-b", "a.b", "a0", "b"]
        assert page.prefixes == ["a/"]
        pages = [store.list("", "/", None, 2)]
        assert entries(pages[0]) == ["a-b", "a.b"]
        pages.append(store.list("", "/", pages[0].next_token, 2))
        assert entries(pages[1]) == ["a/", "a0"]
        assert pages[1].prefixes == ["a/"]
        pages.append(store.list("", "/", pages[1].next_token, 2))
        assert entries(pages[2]) == ["b"]
        assert pages[2].next_token is None

    def test_list_prefix_ending_mid_name(self, store: ObjectStore, put: Put) -> None:
        for key in ["a/b/cat", "a/b/cdir/x", "a/b/cdir/y/z", "a/b/c", "a/b/dog", "a/b/bc", "a/bc"]:
            put(key, b"1")
        page = store.list("a/b/c", "/")
        assert [o.key for o in page.objects] == ["a/b/c", "a/b/cat"]
        assert page.prefixes == ["a/b/cdir/"]
        page = store.list("a/b/c", None)
        assert [o.key for o in page.objects] == ["a/b/c", "a/b/cat", "a/b/cdir/x", "a/b/cdir/y/z"]
        page = store.list("a/b", "/")  # the folder itself, without its slash
        assert [o.key for o in page.objects] == ["a/bc"]
        assert page.prefixes == ["a/b/"]
        assert entries(page) == ["a/b/", "a/bc"]
        page = store.list("a/b/cat", "/")  # a whole key as the prefix lists that object
        assert [o.key for o in page.objects] == ["a/b/cat"]

    def test_list_nested_implicit_directories(self, store: ObjectStore, put: Put) -> None:
        put("x/y/z/leaf", b"1")
        assert store.list("", "/").prefixes == ["x/"]
        assert store.list("x/", "/").prefixes == ["x/y/"]
        assert store.list("x/y/", "/").prefixes == ["x/y/z/"]
        page = store.list("x/y/z/", "/")
        assert [o.key for o in page.objects] == ["x/y/z/leaf"]
        assert page.prefixes == []

    def test_list_missing_prefix_is_empty(self, store: ObjectStore, put: Put) -> None:
        put("real/file", b"1")
        for prefix in ["missing/", "missing/deeper/", "real/file/", "nothing-starts-so"]:
            for delimiter in ("/", None):
                assert store.list(prefix, delimiter) == ListPage(), (prefix, delimiter)

    def test_list_empty_bucket(self, store: ObjectStore) -> None:
        assert store.list("", "/") == ListPage()
        assert store.list("", None) == ListPage()

    def test_names_with_spaces_and_non_ascii(self, store: ObjectStore, put: Put) -> None:
        keys = ["my files/report 2024.pdf", "данные/файл.txt", "日本/画像 1.png", "café", "cafe", "emoji 😀",
                "z"]
        for i, key in enumerate(keys):
            put(key, f"payload {i}".encode())
        objects, prefixes = list_all(store, "", "/")
        assert objects == s3_order(["café", "cafe", "emoji 😀", "z"])
        assert prefixes == s3_order(["my files/", "данные/", "日本/"])
        objects, _ = list_all(store, "", None)
        assert objects == s3_order(keys)
        for i, key in enumerate(keys):
            assert store.head(key).size == len(f"payload {i}")
            assert store.get_range(key, 0, 100) == f"payload {i}".encode()
        page = store.list("my files/", "/")
        assert [o.key for o in page.objects] == ["my files/report 2024.pdf"]
        page = store.list("日本/", "/")
        assert [o.key for o in page.objects] == ["日本/画像 1.png"]

    def test_paging_reassembles_2500_keys(self, store: ObjectStore, put: Put) -> None:
        keys = [f"set/{i % 7}/{'é' if i % 11 == 0 else ''}item-{i:05d}{'.json' if i % 3 else ''}"
                for i in range(2500)]
        for key in keys:
            put(key, b"")
        objects, prefixes = list_all(store, "", None, max_keys=97)
        assert objects == s3_order(keys)
        assert prefixes == []
        objects, prefixes = list_all(store, "set/3/", "/", max_keys=50)
        assert objects == s3_order([k for k in keys if k.startswith("set/3/")])
        objects, prefixes = list_all(store, "set/", "/", max_keys=3)
        assert objects == []
        assert prefixes == [f"set/{i}/" for i in range(7)]

    def test_paging_with_delimiter_counts_prefixes(self, store: ObjectStore, put: Put) -> None:
        keys = [f"d{i:02d}/f{j}" for i in range(10) for j in range(5)] + [f"f{i:02d}" for i in range(10)]
        for key in keys:
            put(key, b"1")
        objects, prefixes = list_all(store, "", "/", max_keys=4)
        assert prefixes == [f"d{i:02d}/" for i in range(10)]  # each listed once, its keys skipped
        assert objects == [f"f{i:02d}" for i in range(10)]
        page = store.list("", "/", None, 1)
        assert page.prefixes == ["d00/"]
        if self.tokens_are_keys:
            assert page.next_token == "d00/"
        assert page.next_token is not None
        page = store.list("", "/", page.next_token, 1)
        assert page.prefixes == ["d01/"]

    def test_token_starts_strictly_after(self, store: ObjectStore, put: Put) -> None:
        if not self.tokens_are_keys:
            pytest.skip("this store's continuation tokens are opaque")
        for key in ["k1", "k2", "k3"]:
            put(key, b"1")
        assert [o.key for o in store.list("", "/", "k1").objects] == ["k2", "k3"]
        assert [o.key for o in store.list("", None, "k2").objects] == ["k3"]
        assert store.list("", None, "k3") == ListPage()

    def test_list_other_delimiter(self, store: ObjectStore, put: Put) -> None:
        for key in ["run-1/a", "run-1/b", "run-2", "solo", "x/run-3"]:
            put(key, b"1")
        page = store.list("", "-")
        assert page.prefixes == ["run-", "x/run-"]
        assert [o.key for o in page.objects] == ["solo"]
        page = store.list("run-1/", "-")
        assert [o.key for o in page.objects] == ["run-1/a", "run-1/b"]
        objects, prefixes = list_all(store, "x/", "-", max_keys=1)
        assert (objects, prefixes) == ([], ["x/run-"])

    def test_check_access_on_a_usable_bucket(self, store: ObjectStore) -> None:
        store.check_access()


MTIME = 1_600_000_000_123_456_789  # 2020-09-13, with every nanosecond digit in use


class StoreWriteContract:
    """Writes through the adapter: put, delete, copy, multipart, set_mtime. Needs the `store` fixture
    only."""

    # GCS, Azure and folders list an mtime kept in metadata; S3's ListObjectsV2 (and MemoryStore,
    # which lists as S3 does) show the time of the last write instead, and say so.
    listings_carry_mtime = True

    def assert_listed_mtime(self, store: ObjectStore, key: str, mtime_ns: int) -> None:
        prefix = key[:key.rfind("/") + 1]
        (listed,) = [o for o in store.list(prefix, "/").objects if o.key == key]
        if self.listings_carry_mtime:
            assert listed.mtime_ns == mtime_ns and not listed.last_modified_only
        else:
            assert listed.last_modified_only and listed.mtime_ns != mtime_ns
        head = store.head(key)
        assert (listed.size, listed.etag) == (head.size, head.etag), "a listing shows the HEAD's version"

    def test_put_then_read(self, store: ObjectStore) -> None:
        meta = store.put("w/new.bin", b"hello world")
        assert isinstance(meta, ObjectMeta)
        assert (meta.key, meta.size) == ("w/new.bin", 11)
        assert store.head("w/new.bin") == meta
        assert store.get_range("w/new.bin", 6, 5, etag=meta.etag) == b"world"
        assert [o.key for o in store.list("w/", "/").objects] == ["w/new.bin"]

    def test_put_replaces_and_changes_etag(self, store: ObjectStore) -> None:
        first = store.put("k", b"one")
        second = store.put("k", b"three")
        assert second.etag != first.etag
        assert store.get_range("k", 0, 100) == b"three"
        with pytest.raises(Stale):
            store.get_range("k", 0, 1, etag=first.etag)

    def test_put_etag_writes_with_the_etag_a_head_shows(self, store: ObjectStore) -> None:
        etag = store.put_etag("w/lean.bin", b"lean block")
        meta = store.head("w/lean.bin")
        assert (meta.size, meta.etag) == (10, etag)
        assert store.get_range("w/lean.bin", 0, 100, etag=etag) == b"lean block"
        again = store.put_etag("w/lean.bin", b"another block")
        assert again != etag and store.head("w/lean.bin").etag == again

    def test_put_empty(self, store: ObjectStore) -> None:
        assert store.put("e", b"").size == 0
        assert store.get_range("e", 0, 10) == b""

    def test_delete(self, store: ObjectStore) -> None:
        store.put("gone/soon", b"x")
        store.put("keep", b"y")
        store.delete("gone/soon")
        with pytest.raises(NotFound):
            store.head("gone/soon")
        assert [o.key for o in store.list("", None).objects] == ["keep"]
        store.delete("gone/soon")  # deleting what is not there is not an error
        store.delete("never-was")

    def test_put_with_an_mtime(self, store: ObjectStore) -> None:
        meta = store.put("m/kept.bin", b"payload", mtime_ns=MTIME)
        assert (meta.size, meta.mtime_ns) == (7, MTIME)
        assert store.head("m/kept.bin") == meta and store.head("m/kept.bin").mtime_ns == MTIME
        self.assert_listed_mtime(store, "m/kept.bin", MTIME)
        assert store.put("m/kept.bin", b"rewritten").mtime_ns != MTIME, "a new upload has its own"
        assert store.put("m/empty", b"", mtime_ns=-1_500_000_000).mtime_ns == -1_500_000_000  # before 1970

    def test_set_mtime_keeps_the_bytes(self, store: ObjectStore) -> None:
        before = store.put("s/file.bin", b"0123456789")
        after = store.set_mtime("s/file.bin", MTIME)
        assert (after.key, after.size, after.mtime_ns) == ("s/file.bin", 10, MTIME)
        assert store.head("s/file.bin") == after and store.head("s/file.bin").mtime_ns == MTIME
        assert store.get_range("s/file.bin", 2, 5, etag=after.etag) == b"23456"
        self.assert_listed_mtime(store, "s/file.bin", MTIME)
        if after.etag != before.etag:  # a copy in place (S3) or a metadata write (Azure): a new version
            with pytest.raises(Stale):
                store.get_range("s/file.bin", 0, 1, etag=before.etag)
        again = store.set_mtime("s/file.bin", MTIME + 1_000)
        assert again.mtime_ns == MTIME + 1_000 and store.head("s/file.bin") == again
        assert store.set_mtime("s/file.bin", MTIME + 1_000) == again, "the same mtime again: no change"
        assert store.get_range("s/file.bin", 0, 100) == b"0123456789"

    def test_set_mtime_of_a_missing_object_is_not_found(self, store: ObjectStore) -> None:
        store.put("present", b"x")
        with pytest.raises(NotFound):
            store.set_mtime("absent", MTIME)

    def test_copy_keeps_the_mtime(self, store: ObjectStore) -> None:
        store.put("src", b"payload", mtime_ns=MTIME)
        dst = store.copy("src", "dst")
        assert dst.mtime_ns == MTIME and store.head("dst").mtime_ns == MTIME

    def test_multipart_with_an_mtime(self, store: ObjectStore) -> None:
        upload = store.create_multipart("mp", mtime_ns=MTIME)
        part = store.upload_part("mp", upload, 1, b"only part")
        meta = store.complete_multipart("mp", upload, [part], mtime_ns=MTIME)
        assert meta.mtime_ns == MTIME and store.head("mp") == meta and store.head("mp").mtime_ns == MTIME
        assert store.get_range("mp", 0, 100) == b"only part"

    def test_copy(self, store: ObjectStore) -> None:
        src = store.put("src", b"payload")
        dst = store.copy("src", "deep/dst")
        assert (dst.key, dst.size) == ("deep/dst", 7)
        assert store.get_range("deep/dst", 0, 100) == b"payload"
        assert store.head("src") == src
        with pytest.raises(NotFound):
            store.copy("missing", "x")

    def test_directory_marker(self, store: ObjectStore) -> None:
        """An empty "dir/" object makes a directory that lists with no entries; deleting it removes
        the directory, and only it: keys under the prefix stay."""
        assert store.put("d/", b"").size == 0
        assert store.list("", "/").prefixes == ["d/"]
        assert store.head("d/").size == 0
        assert [o.key for o in store.list("d/", "/").objects if o.key != "d/"] == []
        store.delete("d/")
        assert store.list("", "/") == ListPage()
        store.put("e/", b"")
        store.put("e/f", b"x")
        store.delete("e/")
        assert [o.key for o in store.list("e/", "/").objects] == ["e/f"]
        store.delete("e/")  # no marker any more: not an error

    def test_multipart_assembles_in_part_order(self, store: ObjectStore) -> None:
        part = 5 << 20  # S3's smallest part but the last
        first, second, last = b"1" * part, b"2" * part, b"-last"
        upload = store.create_multipart("big/object")
        p2 = store.upload_part("big/object", upload, 2, second)
        p1 = store.upload_part("big/object", upload, 1, first)
        p3 = store.upload_part("big/object", upload, 3, last)
        with pytest.raises(NotFound):
            store.head("big/object")  # invisible until complete
        assert store.list("", None) == ListPage()
        meta = store.complete_multipart("big/object", upload, [p3, p1, p2])
        assert meta.size == 2 * part + len(last)
        assert store.get_range("big/object", part - 2, 4) == b"1122"
        assert store.get_range("big/object", 2 * part - 1, 100) == b"2-last"
        assert store.head("big/object") == meta

    def test_multipart_part_can_be_replaced(self, store: ObjectStore) -> None:
        upload = store.create_multipart("o")
        store.upload_part("o", upload, 1, b"old")
        p1 = store.upload_part("o", upload, 1, b"new")
        store.complete_multipart("o", upload, [p1])
        assert store.get_range("o", 0, 10) == b"new"

    def test_multipart_abort(self, store: ObjectStore) -> None:
        upload = store.create_multipart("o")
        part = store.upload_part("o", upload, 1, b"data")
        store.abort_multipart("o", upload)
        with pytest.raises(NotFound):
            store.complete_multipart("o", upload, [part])
        with pytest.raises(NotFound):
            store.head("o")
        with pytest.raises(NotFound):
            store.upload_part("o", upload, 2, b"more")

    def test_multipart_wrong_part_etag(self, store: ObjectStore) -> None:
        upload = store.create_multipart("o")
        part = store.upload_part("o", upload, 1, b"data")
        with pytest.raises(NotFound):
            store.complete_multipart("o", upload, [type(part)(1, "0" * 32)])
        with pytest.raises(NotFound):
            store.complete_multipart("o", upload, [part, type(part)(2, part.etag)])  # part 2 never sent
        with pytest.raises(NotFound):
            store.head("o")

    def test_multipart_uploads_in_progress_are_listed_by_exact_key(self, store: ObjectStore) -> None:
        """What recovery lists to find an upload a dead process made but never journalled."""
        if not store.lists_multipart_uploads:
            pytest.skip(f"{type(store).__name__} does not list multipart uploads")
        first, second = store.create_multipart("mpu/o"), store.create_multipart("mpu/o")
        other = store.create_multipart("mpu/o2")
        try:
            assert sorted(u for u, _ in store.multipart_uploads("mpu/o")) == sorted([first, second])
            store.abort_multipart("mpu/o", first)
            assert [u for u, _ in store.multipart_uploads("mpu/o")] == [second]
            assert store.multipart_uploads("mpu/none") == []
        finally:
            store.abort_multipart("mpu/o", second)
            store.abort_multipart("mpu/o2", other)
        assert store.multipart_uploads("mpu/o") == []

    def test_the_parts_of_a_multipart_upload_are_listed(self, store: ObjectStore) -> None:
        """What recovery reuses of an upload whose part answers a dead process never journalled."""
        upload = store.create_multipart("mpu/parts")
        try:
            try:
                assert store.multipart_parts("mpu/parts", upload) == []
            except Unsupported:
                pytest.skip(f"{type(store).__name__} does not list the parts of an upload")
            three = store.upload_part("mpu/parts", upload, 3, b"third")
            one = store.upload_part("mpu/parts", upload, 1, b"the first part")
            assert store.multipart_parts("mpu/parts", upload) == [(one, 14), (three, 5)]
        finally:
            store.abort_multipart("mpu/parts", upload)
        with pytest.raises(NotFound):
            store.multipart_parts("mpu/parts", upload)

    def test_multipart_unknown_upload(self, store: ObjectStore) -> None:
        with pytest.raises(NotFound):
            store.upload_part("o", "0123456789abcdef0123456789abcdef", 1, b"x")
        with pytest.raises(NotFound):
            store.abort_multipart("o", "not-an-upload")
