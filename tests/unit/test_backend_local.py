"""LocalStore: the store contract on a real folder, plus what only a file system can do to it."""

from __future__ import annotations

import errno
import os
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mountfs.backends import beneath
from mountfs.backends.local import UPLOADS_DIR, LocalStore
from mountfs.errors import (
    AccessDenied,
    IsADirectory,
    NotADirectory,
    NotFound,
    Stale,
    StoreUnavailable,
    Unsupported,
)

pytest.register_assert_rewrite("tests.unit.store_contract")  # detailed assert messages in the contract

from tests.unit.store_contract import Put, StoreContract, StoreWriteContract, list_all  # noqa: E402


def write_file(root: Path, key: str, data: bytes) -> None:
    """Create or rewrite a file in place, as another program on the machine would."""
    path = os.fsencode(root) + b"/" + os.fsencode(key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "bucket"
    folder.mkdir()
    return folder


@pytest.fixture
def store(root: Path) -> LocalStore:
    return LocalStore(str(root))


@pytest.fixture
def put(root: Path) -> Put:
    return lambda key, data: write_file(root, key, data)


class TestContract(StoreContract, StoreWriteContract):
    """The shared contract, with the module's `store` and `put` fixtures."""


# --- construction and check_access ---------------------------------------------------------------


def test_constructor_does_no_io_and_normalises_the_root(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStore(str(tmp_path / "does-not-exist") + "/")
    assert store.bucket == str(tmp_path / "does-not-exist")
    assert store.store_id == "file"
    monkeypatch.chdir(tmp_path)
    assert LocalStore("rel").bucket == str(tmp_path / "rel")


def test_check_access_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(NotFound) as info:
        LocalStore(str(missing)).check_access()
    assert str(info.value) == f"bucket folder {missing} does not exist"


def test_check_access_on_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(NotADirectory) as info:
        LocalStore(str(tmp_path / "f")).check_access()
    assert str(info.value) == f"bucket folder {tmp_path / 'f'} is not a directory"


def test_check_access_not_readable(store: LocalStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(AccessDenied) as info:
        store.check_access()
    assert str(info.value) == f"bucket folder {store.bucket} is not readable (permission denied)"


def test_check_access_scandir_denied(store: LocalStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(path: Any) -> Any:
        raise PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(os, "scandir", denied)
    with pytest.raises(AccessDenied, match="is not readable"):
        store.check_access()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any folder")
def test_check_access_real_permissions(root: Path, store: LocalStore) -> None:
    root.chmod(0)
    try:
        with pytest.raises(AccessDenied, match=str(root)):
            store.check_access()
    finally:
        root.chmod(0o755)


def test_check_access_io_error(store: LocalStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(path: Any) -> Any:
        raise OSError(errno.EIO, "Input/output error", path)

    monkeypatch.setattr(os, "scandir", broken)
    with pytest.raises(StoreUnavailable) as info:
        store.check_access()
    assert str(info.value) == f"{store.bucket}: Input/output error"


# --- reads ---------------------------------------------------------------------------------------


def test_etag_is_size_mtime_inode_and_ctime(root: Path, store: LocalStore, put: Put) -> None:
    put("f", b"12345")
    st = os.stat(root / "f")
    meta = store.head("f")
    assert meta.etag == f"{st.st_size:x}-{st.st_mtime_ns:x}-{st.st_ino:x}-{st.st_ctime_ns:x}"
    assert meta.mtime_ns == st.st_mtime_ns


def test_a_rewrite_with_the_same_size_and_mtime_is_a_new_version(root: Path, store: LocalStore) -> None:
    """`cp -p` of another file of the same size and mtime over one: the ETag still changes."""
    first = store.put("f", b"one", mtime_ns=1_600_000_000_000_000_000)
    second = store.put("f", b"two", mtime_ns=1_600_000_000_000_000_000)
    assert (first.size, first.mtime_ns) == (second.size, second.mtime_ns) and first.etag != second.etag


def test_a_rewrite_in_place_that_sets_the_mtime_back_is_a_new_version(root: Path, store: LocalStore,
                                                                      put: Put) -> None:
    """Another program rewrites the same inode with bytes of the same size and puts the mtime back
    (`cp -p` onto an existing file): the ETag, and so every cache key, changes with the ctime. A
    reader pinned to the file it opened goes on reading that inode, as any open file does."""
    put("f", b"one")
    first = store.head("f")
    before = os.stat(root / "f")
    time.sleep(0.01)  # a ctime tick apart, on file systems with coarse timestamps
    with open(root / "f", "r+b") as f:
        f.write(b"two")
    os.utime(root / "f", ns=(before.st_atime_ns, before.st_mtime_ns))
    second = store.head("f")
    assert (first.size, first.mtime_ns) == (second.size, second.mtime_ns) and first.etag != second.etag
    assert store.get_range("f", 0, 3, etag=second.etag) == b"two"


def test_a_chmod_or_rename_of_an_open_file_is_no_new_version_for_its_reader(root: Path, store: LocalStore,
                                                                            put: Put) -> None:
    put("f", b"12345")
    opened = store.head("f")
    time.sleep(0.01)
    os.chmod(root / "f", 0o600)
    store.rename("f", "g")
    assert store.head("g").etag != opened.etag  # cached blocks of "f" are not taken for "g"'s
    assert store.get_range("g", 1, 3, etag=opened.etag) == b"234"
    put("g", b"54321")  # a new file: that is a new version
    with pytest.raises(Stale):
        store.get_range("g", 1, 3, etag=opened.etag)


def test_set_mtime_is_the_files_mtime(root: Path, store: LocalStore, put: Put) -> None:
    put("f", b"12345")
    meta = store.set_mtime("f", 1_234_567_890_123_456_789)
    assert os.stat(root / "f").st_mtime_ns == 1_234_567_890_123_456_789 == meta.mtime_ns
    os.mkdir(root / "d")
    with pytest.raises(NotFound):
        store.set_mtime("d", 1)


def test_stale_message_names_key_and_both_etags(root: Path, store: LocalStore, put: Put) -> None:
    put("k", b"one")
    old = store.head("k").etag
    put("k", b"longer")
    new = store.head("k").etag
    with pytest.raises(Stale) as info:
        store.get_range("k", 0, 1, etag=old)
    assert "k" in str(info.value) and old in str(info.value) and new in str(info.value)


def test_get_range_loops_over_short_reads(store: LocalStore, put: Put,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    data = os.urandom(1000)
    put("f", data)
    real_pread = os.pread
    calls: list[int] = []

    def short_pread(fd: int, n: int, offset: int) -> bytes:
        calls.append(n)
        return real_pread(fd, min(n, 7), offset)

    monkeypatch.setattr(os, "pread", short_pread)
    assert store.get_range("f", 10, 500) == data[10:510]
    assert len(calls) == 72  # ceil(500 / 7)


def test_rewrite_during_read_is_stale(root: Path, store: LocalStore, put: Put,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    put("f", b"a" * 100)
    etag = store.head("f").etag
    real_pread = os.pread

    def racing_pread(fd: int, n: int, offset: int) -> bytes:
        with open(root / "f", "ab") as f:
            f.write(b"more")
        return real_pread(fd, n, offset)

    monkeypatch.setattr(os, "pread", racing_pread)
    with pytest.raises(Stale):
        store.get_range("f", 0, 10, etag=etag)


def test_read_errors_are_mapped(store: LocalStore, put: Put, monkeypatch: pytest.MonkeyPatch) -> None:
    put("f", b"x")
    errors = iter([PermissionError(errno.EACCES, "Permission denied"),
                   OSError(errno.EIO, "Input/output error")])

    def failing_open(path: Any, flags: int, mode: int = 0o777) -> int:
        raise next(errors)

    monkeypatch.setattr(os, "open", failing_open)
    with pytest.raises(AccessDenied, match=f"{store.bucket}/f"):
        store.get_range("f", 0, 1)
    with pytest.raises(StoreUnavailable, match=f"{store.bucket}/f: Input/output error"):
        store.get_range("f", 0, 1)


def test_folders_and_special_files_are_not_objects(root: Path, store: LocalStore,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (root / "dir").mkdir()
    os.mkfifo(root / "fifo")
    monkeypatch.chdir(root)  # AF_UNIX paths are short
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind("sock")
        (root / "file").write_bytes(b"ok")
        for key in ["dir", "fifo", "sock"]:
            with pytest.raises(NotFound):
                store.head(key)
            with pytest.raises(NotFound):
                store.get_range(key, 0, 10)  # and a FIFO must not block the read
        page = store.list("", "/")
        assert [o.key for o in page.objects] == ["file"]
        assert page.prefixes == ["dir/"]
        assert [o.key for o in store.list("", None).objects] == ["file"]


@pytest.fixture(params=["openat2", "walk"])
def resolution(request: pytest.FixtureRequest) -> Iterator[str]:
    """Both ways of staying inside the folder: openat2, and the walk used where it is missing."""
    if request.param == "openat2" and not beneath.openat2_available():
        pytest.skip("openat2 is not available here")
    beneath.use_openat2(request.param == "openat2")
    yield request.param
    beneath.use_openat2(None)


@pytest.fixture
def linked(root: Path, tmp_path: Path) -> Path:
    """A folder with symlinks of every kind, and a folder outside it with a secret."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret bytes")
    (root / "target").write_bytes(b"12345")
    (root / "d").mkdir()
    (root / "d" / "f").write_bytes(b"in d")
    (root / "to-file").symlink_to("target")
    (root / "abs_link").symlink_to(outside / "secret")
    (root / "d" / "up_link").symlink_to("../../elsewhere/secret")
    (root / "dir_link").symlink_to(outside)
    (root / "broken").symlink_to("nowhere")
    (root / "d" / "loop").symlink_to("..")
    return outside


def test_symlinks_are_listed_as_links_with_their_target(root: Path, linked: Path, store: LocalStore,
                                                        resolution: str) -> None:
    meta = store.head("abs_link")
    assert (meta.link, meta.size) == (str(linked / "secret"), len(str(linked / "secret")))
    assert store.head("to-file").link == "target"
    assert store.head("d/up_link").link == "../../elsewhere/secret"
    assert store.head("broken").link == "nowhere"
    assert store.head("target").link is None
    with pytest.raises(NotFound):
        store.head("dir_link/")  # a link to a folder is not a folder

    page = store.list("", "/")
    assert page.prefixes == ["d/"]
    links = {o.key: o.link for o in page.objects}
    assert links == {"abs_link": str(linked / "secret"), "broken": "nowhere", "dir_link": str(linked),
                     "target": None, "to-file": "target"}
    assert store.list("dir_link/", "/") == store.list("dir_link/", None) == store.list("dir_link/x", "/")
    assert store.list("dir_link/", "/").objects == []
    objects, _ = list_all(store, "", None, max_keys=2)  # links are leaves: d/loop is no loop
    assert objects == ["abs_link", "broken", "d/f", "d/loop", "d/up_link", "dir_link", "target", "to-file"]


def test_no_read_follows_a_symlink(root: Path, linked: Path, store: LocalStore, resolution: str) -> None:
    for key in ["abs_link", "d/up_link", "dir_link/secret", "to-file", "d/loop/target"]:
        with pytest.raises(AccessDenied, match="symlink"):
            store.get_range(key, 0, 100)
        with pytest.raises(AccessDenied):
            store.open_file(key, os.O_RDONLY)
    with pytest.raises(AccessDenied):
        store.head("dir_link/secret")
    with pytest.raises(AccessDenied):
        store.copy("abs_link/x", "copied")
    assert store.get_range("d/f", 0, 100) == b"in d"


def test_no_write_follows_a_symlink(root: Path, linked: Path, store: LocalStore, resolution: str) -> None:
    before = sorted(p.name for p in linked.iterdir())
    for key in ["dir_link/new", "d/loop/new"]:
        with pytest.raises(AccessDenied):
            store.put(key, b"x")
        with pytest.raises(AccessDenied):
            store.open_file(key, os.O_WRONLY | os.O_CREAT, write=True)
        with pytest.raises(AccessDenied):
            store.put(key + "/", b"")  # mkdir
        with pytest.raises(AccessDenied):
            store.rename("target", key)
    for key in ["abs_link", "d/up_link", "dir_link/secret", "broken"]:
        with pytest.raises(AccessDenied):
            store.open_file(key, os.O_WRONLY | os.O_TRUNC, write=True)
        with pytest.raises(AccessDenied):
            store.open_file(key, os.O_WRONLY | os.O_CREAT, write=True)  # a dangling link too
        with pytest.raises(AccessDenied):
            store.truncate(key, 0)
    store.delete("dir_link/secret")  # nothing of the folder's is there: nothing happens
    store.delete("dir_link/")
    old_mtime = (linked / "secret").stat().st_mtime_ns
    meta = store.set_mtime("abs_link", 1_000_000_000)  # the link's own mtime, as lutimes
    assert meta.link == str(linked / "secret") and meta.mtime_ns == 1_000_000_000
    assert (linked / "secret").stat().st_mtime_ns == old_mtime
    with pytest.raises(AccessDenied):
        store.set_mtime("dir_link/secret", 1)
    assert sorted(p.name for p in linked.iterdir()) == before
    assert (linked / "secret").read_bytes() == b"secret bytes"
    assert not os.path.lexists(root / "nowhere")

    # Writing over a link replaces the link; removing one removes the link.
    store.put("abs_link", b"replaced")
    assert not (root / "abs_link").is_symlink() and (root / "abs_link").read_bytes() == b"replaced"
    store.delete("d/up_link")
    assert not os.path.lexists(root / "d" / "up_link")
    assert (linked / "secret").read_bytes() == b"secret bytes"


def test_links_are_copied_and_renamed_as_links(root: Path, linked: Path, store: LocalStore,
                                               resolution: str) -> None:
    meta = store.copy("dir_link", "d/copied")
    assert meta.link == str(linked) and os.readlink(root / "d" / "copied") == str(linked)
    assert store.head("d/copied") == meta
    moved = store.rename("to-file", "d/moved")
    assert moved is not None and moved.link == "target"
    assert os.readlink(root / "d" / "moved") == "target" and not os.path.lexists(root / "to-file")
    assert store.rename("d/", "e/") is None
    assert (root / "e" / "f").read_bytes() == b"in d"


def test_a_folder_swapped_for_a_symlink_is_not_followed(root: Path, linked: Path, store: LocalStore,
                                                        resolution: str) -> None:
    """What was checked a moment ago proves nothing: each open resolves the path again, beneath."""
    (root / "x").mkdir()
    (root / "x" / "secret").write_bytes(b"mine")
    assert store.head("x/secret").size == 4
    (root / "x" / "secret").unlink()
    (root / "x").rmdir()
    (root / "x").symlink_to(linked)
    with pytest.raises(AccessDenied):
        store.get_range("x/secret", 0, 100)
    with pytest.raises(AccessDenied):
        store.put("x/secret", b"overwritten")
    assert (linked / "secret").read_bytes() == b"secret bytes"


def test_the_staging_folder_of_uploads_cannot_lead_outside(root: Path, linked: Path, store: LocalStore,
                                                           resolution: str) -> None:
    (root / UPLOADS_DIR).symlink_to(linked)
    with pytest.raises(AccessDenied):
        store.create_multipart("big")
    assert sorted(p.name for p in linked.iterdir()) == ["secret"]


def test_a_root_within_a_folder_is_reached_without_symlinks(root: Path, linked: Path,
                                                             resolution: str) -> None:
    """`within` (a path_substitution's local prefix): the root's path below it follows no symlink."""
    escaped = LocalStore(str(root / "dir_link"), within=str(root))
    with pytest.raises(AccessDenied, match="through a symlink"):
        escaped.check_access()
    with pytest.raises(AccessDenied):
        escaped.get_range("secret", 0, 100)
    with pytest.raises(AccessDenied):
        escaped.put("new", b"x")
    assert escaped.list("", "/") == escaped.list("", None) == escaped.list("x/", "/")
    assert escaped.list("", "/").objects == []
    assert sorted(p.name for p in linked.iterdir()) == ["secret"]
    inside = LocalStore(str(root / "d"), within=str(root))
    inside.check_access()
    assert inside.get_range("f", 0, 100) == b"in d"
    assert [(o.key, o.link) for o in inside.list("", "/").objects] == [
        ("f", None), ("loop", ".."), ("up_link", "../../elsewhere/secret")]
    with pytest.raises(ValueError, match="is not inside"):
        LocalStore(str(linked), within=str(root))


def test_non_utf8_names_round_trip_and_sort_by_bytes(root: Path, store: LocalStore) -> None:
    base = os.fsencode(root)
    for name, data in [(b"caf\xe9", b"latin-1"), (b"\xff", b"ff"), ("😀".encode(), b"emoji"), (b"z", b"z")]:
        with open(base + b"/" + name, "wb") as f:
            f.write(data)
    latin = os.fsdecode(b"caf\xe9")
    assert latin == "caf\udce9"
    assert store.head(latin).size == 7
    assert store.get_range(latin, 0, 100) == b"latin-1"
    # Byte order puts the emoji (f0 ...) before b"\xff", though code-point order would not.
    keys = [o.key for o in store.list("", "/").objects]
    assert keys == [latin, "z", "😀", "\udcff"]
    objects, _ = list_all(store, "", None, max_keys=1)
    assert objects == keys
    assert [o.key for o in store.list("caf\udce9", "/").objects] == [latin]


def test_keys_cannot_leave_the_folder(tmp_path: Path, root: Path, store: LocalStore) -> None:
    (tmp_path / "secret").write_bytes(b"no")
    (root / "a").mkdir()
    (root / "a" / "b").write_bytes(b"ok")
    for key in ["../secret", "/etc/passwd", "a//b", "a/./b", "a/../a/b", "", "a/b/", "a\0b"]:
        with pytest.raises(NotFound):
            store.head(key)
        with pytest.raises(NotFound):
            store.get_range(key, 0, 1)
        with pytest.raises(Unsupported):
            store.put(key, b"x")
    for prefix in ["../", "..", "/", "/etc/", "a//", "a/./"]:
        assert store.list(prefix, "/").objects == [], prefix
        assert store.list(prefix, None).objects == [], prefix


def test_large_folder_lists_one_scan_per_page(root: Path, store: LocalStore,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    base = os.fsencode(root / "big")
    os.mkdir(base)
    for i in range(10_000):
        os.close(os.open(base + b"/f%05d" % i, os.O_CREAT | os.O_WRONLY, 0o644))
    scans: list[object] = []
    real_scandir = os.scandir

    def counting_scandir(path: Any) -> Any:
        scans.append(path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", counting_scandir)
    objects, _ = list_all(store, "big/", "/", max_keys=1000)
    assert len(objects) == 10_000
    assert len(scans) <= 10, "one folder scan per page of 1,000, not one per entry"
    scans.clear()
    recursive, _ = list_all(store, "big/f09", None, max_keys=1000)
    assert len(recursive) == 1000
    assert len(scans) <= 2


# --- writes --------------------------------------------------------------------------------------


def file_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_put_writes_a_plain_file(root: Path, store: LocalStore) -> None:
    meta = store.put("new/dir/file.txt", b"contents")
    path = root / "new" / "dir" / "file.txt"
    assert path.read_bytes() == b"contents"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert meta == store.head("new/dir/file.txt")
    assert file_names(path.parent) == ["file.txt"]  # no temp file left behind


def test_put_errors(root: Path, store: LocalStore) -> None:
    (root / "file").write_bytes(b"")
    (root / "dir").mkdir()
    with pytest.raises(NotADirectory):
        store.put("file/below", b"x")
    with pytest.raises(IsADirectory):
        store.put("dir", b"x")
    with pytest.raises(Unsupported):
        store.put(f"{UPLOADS_DIR}/x", b"x")
    assert file_names(root / "dir") == []


def test_temp_and_upload_files_are_never_listed(root: Path, store: LocalStore) -> None:
    (root / ".mountfs-tmp-0123").write_bytes(b"half written")
    (root / "sub").mkdir()
    (root / "sub" / ".mountfs-tmp-4567").write_bytes(b"half written")
    upload = store.create_multipart("big")
    store.upload_part("big", upload, 1, b"part")
    assert (root / UPLOADS_DIR).is_dir()
    assert store.list("", "/").prefixes == ["sub/"]
    assert store.list("", "/").objects == []
    assert store.list("", None) == store.list("sub/", None)
    assert store.list(f"{UPLOADS_DIR}/", None).objects == []
    with pytest.raises(NotFound):
        store.head(".mountfs-tmp-0123")


def test_multipart_stages_parts_as_files(root: Path, store: LocalStore) -> None:
    upload = store.create_multipart("out/ckpt")
    staging = root / UPLOADS_DIR / upload
    parts = [store.upload_part("out/ckpt", upload, n, bytes([64 + n]) * 3) for n in (3, 1, 2)]
    assert file_names(staging) == ["key", "part-00001", "part-00002", "part-00003"]
    meta = store.complete_multipart("out/ckpt", upload, parts)
    assert (root / "out" / "ckpt").read_bytes() == b"AAABBBCCC"
    assert meta == store.head("out/ckpt")
    assert not staging.exists()
    with pytest.raises(NotFound):
        store.upload_part("other/key", store.create_multipart("x"), 1, b"")  # an upload is for one key

    upload = store.create_multipart("aborted")
    store.upload_part("aborted", upload, 1, b"x")
    store.abort_multipart("aborted", upload)
    assert not (root / UPLOADS_DIR / upload).exists()
    assert not (root / "aborted").exists()


def test_delete_leaves_folders_and_link_targets(root: Path, store: LocalStore) -> None:
    store.put("a/b/file", b"x")
    (root / "target").write_bytes(b"t")
    (root / "link").symlink_to("target")
    store.delete("a/b/file")
    store.delete("a/b")  # a folder is not an object: nothing happens
    store.delete("link")
    assert (root / "a" / "b").is_dir()
    assert (root / "target").read_bytes() == b"t"
    assert not (root / "link").exists()
    assert store.list("", "/").prefixes == ["a/"]


def test_copy_is_a_new_file(root: Path, store: LocalStore) -> None:
    src = store.put("src", b"payload" * 1000)
    dst = store.copy("src", "dst")
    assert (root / "dst").read_bytes() == b"payload" * 1000
    assert not (root / "dst").is_symlink()
    assert dst.size == src.size
    with pytest.raises(NotFound):
        store.copy("a/../src", "x")


@pytest.fixture(autouse=True)
def _no_leaked_fds() -> Iterator[None]:
    """Every code path closes what it opens (a leak would exhaust fds under a long-lived mount)."""
    before = len(os.listdir("/proc/self/fd"))
    yield
    assert len(os.listdir("/proc/self/fd")) <= before
