"""A local folder served as a bucket (`file://` mounts).

Keys are paths relative to the folder, decoded with `os.fsdecode` so that any file name round-trips.
The folder is a boundary: every file is reached from a descriptor of the folder without following
a symlink (`mountfs.backends.beneath`), so no key, `..` or symlink leads the daemon outside it. A
symlink is listed as what it is (`ObjectMeta.link`, its target as stored), never followed.
Listings follow S3 semantics exactly (UTF-8 byte order, common prefixes, opaque page tokens), so the
layers above never special-case this store; the paging helpers here are shared with `MemoryStore`.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import hashlib
import os
import re
import secrets
import shutil
import stat
import time
import uuid
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from typing import Any

from mountfs.backends.base import ListPage, ObjectMeta, ObjectStore, UploadPart
from mountfs.backends.beneath import make_folders, open_beneath, open_folder
from mountfs.errors import (
    AccessDenied,
    IsADirectory,
    MountfsError,
    NameTooLong,
    NoSpace,
    NotADirectory,
    NotFound,
    ReadOnly,
    Stale,
    StoreUnavailable,
    Unsupported,
)

UPLOADS_DIR = ".mountfs-uploads"
"""Folder at the root where multipart parts are staged; never listed, never a key."""
TMP_PREFIX = ".mountfs-tmp-"
"""Names of files being written before their rename into place; never listed, never a key."""

_UPLOADS_B = os.fsencode(UPLOADS_DIR)
_TMP_B = os.fsencode(TMP_PREFIX)
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}\Z")
_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK  # NONBLOCK: a FIFO must not hang us
_LIST_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_ROOT_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_FILE, _FOLDER, _LINK = 0, 1, 2
_COPY_CHUNK = 1 << 20
MAX_PART_NUMBER = 10_000

Entry = tuple[str, ObjectMeta | None]
"""One listing entry in key order: an object with its metadata, or a common prefix (meta None)."""
_Listing = Generator[Entry, None, None]
_Scanned = tuple[bytes, os.DirEntry[str], int]  # (sort name, entry, _FILE/_FOLDER/_LINK)


# --- listing helpers shared by every in-process store ---------------------------------------------


def key_bytes(key: str) -> bytes:
    """The bytes S3 orders keys by: UTF-8, with undecodable file-name bytes restored as they were."""
    return key.encode("utf-8", "surrogateescape")


def key_str(raw: bytes) -> str:
    """Inverse of `key_bytes`."""
    return raw.decode("utf-8", "surrogateescape")


def check_list_args(delimiter: str | None, max_keys: int) -> str | None:
    """Validate `list` arguments; an empty delimiter means none, as in S3."""
    if max_keys < 1:
        raise ValueError(f"max_keys must be at least 1, not {max_keys}")
    return delimiter or None


def make_page(entries: Iterable[Entry], max_keys: int) -> ListPage:
    """Take up to `max_keys` entries from a key-ordered stream that already starts after the token.

    Peeks one entry further so that `next_token` is set only when something really remains;
    the stream is consumed lazily, so a store only stats/decodes what one page needs.
    """
    objects: list[ObjectMeta] = []
    prefixes: list[str] = []
    last: str | None = None
    for count, (name, meta) in enumerate(entries):
        if count == max_keys:
            return ListPage(objects, prefixes, last)
        if meta is None:
            prefixes.append(name)
        else:
            objects.append(meta)
        last = name
    return ListPage(objects, prefixes, None)


def _successor(raw: bytes) -> bytes | None:
    """The smallest byte string above every string that starts with `raw` (None: there is none)."""
    stripped = raw.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


def iter_sorted_keys(keys: Sequence[bytes], prefix: bytes, delimiter: bytes | None,
                     token: bytes | None) -> Iterator[tuple[bytes, bool]]:
    """Walk a byte-sorted key list as S3 lists it: `(key or common prefix, is_prefix)` after `token`.

    Each common prefix is yielded once and its keys are skipped with a bisect, so a page of a
    listing costs O(page * log n) however many keys sit under one prefix.
    """
    i = bisect_left(keys, prefix)
    if token is not None:
        i = max(i, bisect_right(keys, token))
    n = len(keys)
    while i < n:
        key = keys[i]
        if not key.startswith(prefix):
            return
        if delimiter:
            cut = key.find(delimiter, len(prefix))
            if cut >= 0:
                common = key[:cut + len(delimiter)]
                if token is None or common > token:
                    yield common, True
                after = _successor(common)
                if after is None:
                    return
                i = bisect_left(keys, after, i)
                continue
        yield key, False
        i += 1


# --- the folder store -------------------------------------------------------------------------------


def _etag(st: os.stat_result) -> str:
    """A version tag from stat: a rewrite changes the size or the mtime (as nginx does for HTTP),
    and a write through this store makes a new file (a new inode). The ctime tells apart a rewrite
    in place that kept the size and set the mtime back (`cp -p` onto the file): no user can set it.
    It also moves on chmod, chown and rename, which costs a cached copy, never a wrong byte; a read
    pinned to a version checks only the rest (`_same_file`), so those do not make it ESTALE."""
    return f"{_file_tag(st)}-{st.st_ctime_ns:x}"


def _file_tag(st: os.stat_result) -> str:
    return f"{st.st_size:x}-{st.st_mtime_ns:x}-{st.st_ino:x}"


def _same_file(etag: str, st: os.stat_result) -> bool:
    """Whether `etag` names the file `st` describes, as far as an open reader can tell: the same
    inode with the same size and mtime (its ctime may have moved with a chmod or a rename)."""
    return etag.rsplit("-", 1)[0] == _file_tag(st) if etag.count("-") == 3 else etag == _file_tag(st)


def _meta(key: str, st: os.stat_result) -> ObjectMeta:
    return ObjectMeta(key, st.st_size, _etag(st), st.st_mtime_ns)


def _link_meta(key: str, st: os.stat_result, target: bytes) -> ObjectMeta:
    return ObjectMeta(key, len(target), _etag(st), st.st_mtime_ns, link=os.fsdecode(target))


def _split(rel: bytes) -> tuple[bytes, bytes]:
    """(the folder of `rel`, its last name); the folder is b"" at the root."""
    folder, _, name = rel.rpartition(b"/")
    return folder, name


def _error(exc: OSError, path: bytes | str, *, write: bool = False) -> MountfsError:
    """Translate an OSError on `path` into the mountfs hierarchy, keeping the path in the message.

    On reads, any way a key can fail to name a file (missing, a file used as a folder, a folder,
    a name too long) is NotFound; on writes those become the errors a POSIX caller expects.
    """
    where = os.fsdecode(path)
    code = exc.errno
    reason = exc.strerror or str(exc)
    if code == errno.ENOENT:
        return NotFound(f"{where}: no such file or folder")
    if code == errno.ELOOP:
        return AccessDenied(f"{where}: a symlink is on the way, and mountfs follows none inside a "
                            "file:// folder (the mount shows it as a symlink)")
    if code in (errno.EACCES, errno.EPERM):
        return AccessDenied(f"{where}: permission denied")
    if code == errno.ENOTDIR:
        return NotADirectory(f"{where}: a path component is a file") if write else NotFound(
            f"{where}: a path component is a file")
    if code == errno.EISDIR:
        return IsADirectory(f"{where}: is a folder") if write else NotFound(f"{where}: is a folder")
    if code == errno.ENAMETOOLONG:
        return NameTooLong(f"{where}: name too long") if write else NotFound(f"{where}: name too long")
    if code == errno.ENXIO and not write:
        return NotFound(f"{where}: a socket, not a file")
    if code in (errno.ENOSPC, errno.EDQUOT):
        return NoSpace(f"{where}: {reason}")
    if code == errno.EROFS:
        return ReadOnly(f"{where}: read-only file system")
    return StoreUnavailable(f"{where}: {reason}")


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _copy_fd(src: int, dst: int, digest: Any = None) -> None:
    """Copy `src` from its current offset to EOF into `dst`, feeding `digest` when given."""
    while chunk := os.read(src, _COPY_CHUNK):
        if digest is not None:
            digest.update(chunk)
        _write_all(dst, chunk)


def md5_hex(data: bytes) -> str:
    """The ETag S3 gives a part: hex MD5 (a checksum here, not security, so FIPS builds allow it)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


class LocalStore(ObjectStore):
    """A folder as a bucket: files are objects, folders are prefixes (an empty "dir/" marker is the
    folder itself), symlinks are listed as links (`ObjectMeta.link`) and never followed.

    The ETag is size, mtime and inode, so it costs one stat; writes go through a temp file and a rename,
    so readers see the old or the new object, never half of one. Dot-names reserved for that
    (`.mountfs-uploads` at the root, `.mountfs-tmp-*` anywhere) are never listed.
    """

    real_folders = True

    def __init__(self, root: str, *, within: str | None = None) -> None:
        """`within`: a folder holding `root` that the part of `root` below it must not lead out of by
        a symlink (a path_substitution's local prefix: the rest comes from a store URL)."""
        self.store_id = "file"
        self.bucket = os.path.abspath(root)
        self._root = os.fsencode(self.bucket).rstrip(b"/")  # b"" when the folder is "/"
        self._base: bytes | None = None
        self._below = b""
        if within is not None:
            base = os.fsencode(os.path.abspath(within)).rstrip(b"/")
            if self._root != base and not self._root.startswith(base + b"/"):
                raise ValueError(f"{self.bucket} is not inside {within}")
            self._base, self._below = base or b"/", self._root[len(base) + 1:]

    # --- paths -----------------------------------------------------------------------------------

    def _abs(self, rel: bytes) -> bytes:
        if rel:
            return self._root + b"/" + rel
        return self._root or b"/"

    def _key_rel(self, key: str, *, write: bool = False) -> bytes:
        """The path of `key` relative to the folder, refusing keys no file can carry or that would
        leave the folder."""
        try:
            raw = os.fsencode(key)
        except UnicodeEncodeError:
            raw = b""
        parts = raw.split(b"/")
        if (not raw or b"\0" in raw or any(p in (b"", b".", b"..") for p in parts)
                or parts[0] == _UPLOADS_B or parts[-1].startswith(_TMP_B)):
            if write:
                raise Unsupported(f"key {key!r} cannot be stored as a file under {self.bucket}")
            raise NotFound(f"key {key!r} cannot name a file under {self.bucket}")
        return raw

    def file_path(self, key: str, *, write: bool = False) -> str:
        """The local path of `key`, for messages (files are opened with `open_file`); NotFound or
        Unsupported as for reads and writes when no file can carry the key."""
        return os.fsdecode(self._abs(self._key_rel(key, write=write)))

    def _open_root(self) -> int:
        if not self._below or self._base is None:
            return os.open(self._root or b"/", _ROOT_FLAGS)
        base = os.open(self._base, _ROOT_FLAGS)
        try:
            return open_folder(base, self._below)
        finally:
            os.close(base)

    @contextlib.contextmanager
    def _folder(self, rel: bytes, *, make: bool = False) -> Iterator[int]:
        """A descriptor of folder `rel` (b"": the root), reached without following a symlink;
        `make`: made first where missing. OSError as the system call gave it."""
        root = self._open_root()
        try:
            fd = (make_folders if make else open_folder)(root, rel)
        finally:
            os.close(root)
        try:
            yield fd
        finally:
            os.close(fd)

    def _open(self, rel: bytes, flags: int, mode: int = 0o666) -> int:
        root = self._open_root()
        try:
            return open_beneath(root, rel, flags, mode)
        finally:
            os.close(root)

    @staticmethod
    def _split_prefix(prefix: bytes) -> tuple[bytes, bytes] | None:
        """(folder relative to the root, start of names in it); None when no key can match."""
        if b"\0" in prefix:
            return None
        folder, sep, name = prefix.rpartition(b"/")
        if sep:
            parts = folder.split(b"/")
            if any(p in (b"", b".", b"..") for p in parts) or parts[0] == _UPLOADS_B:
                return None
        return folder, name

    # --- reads -----------------------------------------------------------------------------------

    def _lstat(self, key: str, rel: bytes) -> ObjectMeta | os.stat_result:
        """The link's meta when `rel` is a symlink, else its lstat."""
        folder, name = _split(rel)
        with self._folder(folder) as fd:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                return _link_meta(key, st, os.readlink(name, dir_fd=fd))
            return st

    def head(self, key: str) -> ObjectMeta:
        if key.endswith("/"):  # a directory marker: the folder
            return self._folder_meta(key)
        rel = self._key_rel(key)
        try:
            st = self._lstat(key, rel)
        except OSError as exc:
            raise _error(exc, self._abs(rel)) from exc
        if isinstance(st, ObjectMeta):
            return st
        if not stat.S_ISREG(st.st_mode):
            raise NotFound(f"{os.fsdecode(self._abs(rel))}: not a regular file")
        return _meta(key, st)

    def open_file(self, key: str, flags: int, *, write: bool = False) -> int:
        """A descriptor of the file `key` opened with `flags` (O_CREAT makes it, mode 0666 through
        the umask), reached without following a symlink: one on the way, or the file itself being
        one, is AccessDenied (EACCES)."""
        rel = self._key_rel(key, write=write)
        try:
            return self._open(rel, flags)
        except OSError as exc:
            raise _error(exc, self._abs(rel), write=write) from exc

    def get_range(self, key: str, start: int, length: int, etag: str | None = None) -> bytes:
        if start < 0 or length < 0:
            raise ValueError(f"bad range start={start} length={length}")
        path = self._abs(self._key_rel(key))
        fd = self.open_file(key, _READ_FLAGS)
        chunks: builtins.list[bytes] = []
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise NotFound(f"{os.fsdecode(path)}: not a regular file")
            self._check_etag(key, etag, st)
            # Read no further than the size of the version checked above, in as many preads as it takes.
            want = min(length, st.st_size - start)
            pos = start
            while want > 0:
                chunk = os.pread(fd, want, pos)
                if not chunk:
                    break
                chunks.append(chunk)
                pos += len(chunk)
                want -= len(chunk)
            if etag is not None:
                # Rewritten in place while we read: the bytes may mix two versions.
                self._check_etag(key, etag, os.fstat(fd))
        except OSError as exc:
            raise _error(exc, path) from exc
        finally:
            os.close(fd)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    @staticmethod
    def _check_etag(key: str, etag: str | None, st: os.stat_result) -> None:
        if etag is not None and not _same_file(etag, st):
            current = _etag(st)
            raise Stale(f"{key}: changed since it was opened (etag {etag} expected, {current} found)")

    def list(self, prefix: str, delimiter: str | None = "/", token: str | None = None,
             max_keys: int = 1000) -> ListPage:
        delimiter = check_list_args(delimiter, max_keys)
        try:
            raw_prefix = os.fsencode(prefix)
        except UnicodeEncodeError:
            return ListPage()
        raw_token = None if token is None else os.fsencode(token)
        entries: _Listing
        if delimiter == "/":
            entries = self._list_folder(raw_prefix, raw_token)
        elif delimiter is None:
            entries = self._list_tree(raw_prefix, raw_token)
        else:
            entries = self._list_other(raw_prefix, os.fsencode(delimiter), raw_token)
        with contextlib.closing(entries):  # a page may stop early: the folders it holds are closed
            return make_page(entries, max_keys)

    def _open_listing(self, folder: bytes, parent: int | None = None) -> int | None:
        """A descriptor to list folder `folder` (from the root, or the name `folder` in the folder
        `parent`); None when there is no such folder, as S3 lists nothing for a prefix that
        matches nothing (a symlink is not a folder here)."""
        try:
            if parent is not None:
                return open_beneath(parent, folder, _LIST_FLAGS)
            if not folder:
                root = self._open_root()
                try:
                    return os.open(".", _LIST_FLAGS, dir_fd=root)
                finally:
                    os.close(root)
            return self._open(folder, _LIST_FLAGS)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return None
            raise _error(exc, self._abs(folder)) from exc

    def _scan(self, fd: int, folder: bytes, name_prefix: bytes) -> builtins.list[_Scanned]:
        """Entries of one folder (open as `fd`) whose names start with `name_prefix`: (sort name,
        entry, kind).

        The sort name of a folder ends in "/", which makes a depth-first walk come out in S3 key
        order ("a.txt" < "a/x" < "a0"). Sockets, FIFOs and devices are left out.
        """
        at_root = not folder
        found: builtins.list[_Scanned] = []
        try:
            with os.scandir(fd) as it:
                for entry in it:
                    name = os.fsencode(entry.name)
                    if (not name.startswith(name_prefix) or name.startswith(_TMP_B)
                            or (at_root and name == _UPLOADS_B)):
                        continue
                    try:
                        if entry.is_symlink():
                            kind = _LINK
                        elif entry.is_dir(follow_symlinks=False):
                            kind = _FOLDER
                        elif entry.is_file(follow_symlinks=False):
                            kind = _FILE
                        else:
                            continue
                    except OSError:  # gone since, or not ours to stat
                        continue
                    found.append((name + b"/" if kind == _FOLDER else name, entry, kind))
        except OSError as exc:
            raise _error(exc, self._abs(folder)) from exc
        found.sort(key=lambda item: item[0])
        return found

    @staticmethod
    def _entry_meta(fd: int, entry: os.DirEntry[str], rel: bytes, kind: int) -> ObjectMeta | None:
        """The object (or link) of a scanned entry of the folder open as `fd`; None when it is gone
        or changed kind since the scan."""
        try:
            st = entry.stat(follow_symlinks=False)
            if kind == _LINK and stat.S_ISLNK(st.st_mode):
                return _link_meta(os.fsdecode(rel), st, os.readlink(os.fsencode(entry.name), dir_fd=fd))
        except OSError:
            return None
        if kind != _FILE or not stat.S_ISREG(st.st_mode):
            return None
        return _meta(os.fsdecode(rel), st)

    def _list_folder(self, prefix: bytes, token: bytes | None) -> _Listing:
        """Delimiter "/": one scandir of the folder the prefix ends in."""
        split = self._split_prefix(prefix)
        if split is None:
            return
        folder, name_prefix = split
        fd = self._open_listing(folder)
        if fd is None:
            return
        try:
            base = folder + b"/" if folder else b""
            for sort_name, entry, kind in self._scan(fd, folder, name_prefix):
                rel = base + sort_name
                if token is not None and rel <= token:
                    continue
                if kind == _FOLDER:
                    yield os.fsdecode(rel), None
                elif (meta := self._entry_meta(fd, entry, rel, kind)) is not None:
                    yield meta.key, meta
        finally:
            os.close(fd)

    def _list_tree(self, prefix: bytes, token: bytes | None) -> _Listing:
        """No delimiter: every file (and link) under the prefix, depth first, which is key order."""
        split = self._split_prefix(prefix)
        if split is None:
            return
        folder, name_prefix = split
        fd = self._open_listing(folder)
        if fd is None:
            return
        try:
            st = os.fstat(fd)
            yield from self._walk(fd, folder, name_prefix, token, frozenset({(st.st_dev, st.st_ino)}))
        finally:
            os.close(fd)

    def _walk(self, fd: int, folder: bytes, name_prefix: bytes, token: bytes | None,
              ancestors: frozenset[tuple[int, int]]) -> _Listing:
        base = folder + b"/" if folder else b""
        for sort_name, entry, kind in self._scan(fd, folder, name_prefix):
            rel = base + sort_name
            if kind == _FOLDER:
                inside = token is not None and token.startswith(rel)
                if token is not None and not inside and rel <= token:
                    continue  # the whole subtree sorts before the token
                sub = self._open_listing(sort_name[:-1], fd)
                if sub is None:
                    continue
                try:
                    st = os.fstat(sub)
                    ident = (st.st_dev, st.st_ino)
                    if ident not in ancestors:  # a bind mount of a folder inside itself
                        yield from self._walk(sub, rel[:-1], b"", token if inside else None,
                                              ancestors | {ident})
                finally:
                    os.close(sub)
            elif token is not None and rel <= token:
                continue
            elif (meta := self._entry_meta(fd, entry, rel, kind)) is not None:
                yield meta.key, meta

    def _list_other(self, prefix: bytes, delimiter: bytes, token: bytes | None) -> _Listing:
        """Any other delimiter (rare): the whole tree under the prefix, regrouped in memory."""
        with contextlib.closing(self._list_tree(prefix, None)) as tree:
            metas = {os.fsencode(key): meta for key, meta in tree}
        keys = list(metas)  # already in key order
        for name, is_prefix in iter_sorted_keys(keys, prefix, delimiter, token):
            yield (os.fsdecode(name), None) if is_prefix else (os.fsdecode(name), metas[name])

    def check_access(self) -> None:
        root = self.bucket
        try:
            st = os.stat(root)
        except FileNotFoundError as exc:
            raise NotFound(f"bucket folder {root} does not exist") from exc
        except OSError as exc:
            raise _error(exc, root) from exc
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectory(f"bucket folder {root} is not a directory")
        if not os.access(root, os.R_OK | os.X_OK):
            raise AccessDenied(f"bucket folder {root} is not readable (permission denied)")
        try:
            with os.scandir(root) as it:
                next(it, None)
        except PermissionError as exc:
            raise AccessDenied(f"bucket folder {root} is not readable (permission denied)") from exc
        except OSError as exc:
            raise _error(exc, root) from exc
        try:
            os.close(self._open_root())
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise AccessDenied(f"bucket folder {root} is reached through a symlink below "
                                   f"{os.fsdecode(self._base or b'/')}, which it must not leave") from exc
            raise _error(exc, root) from exc

    # --- writes ----------------------------------------------------------------------------------

    @staticmethod
    def _write_file(dir_fd: int, name: bytes, path: bytes, fill: Callable[[int], None], *, sync: bool,
                    mtime_ns: int | None = None) -> os.stat_result:
        """Write a temp file in the folder `dir_fd` (with `mtime_ns` as its mtime when given), then
        rename it over `name` (a symlink there is replaced, never followed); stat of what was
        written. `path` is for messages."""
        tmp = _TMP_B + secrets.token_hex(8).encode()
        try:
            # 0o666 through the umask, like any new file (mkstemp would give 0600).
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666, dir_fd=dir_fd)
        except OSError as exc:
            raise _error(exc, os.path.dirname(path), write=True) from exc
        try:
            try:
                fill(fd)
                if mtime_ns is not None:
                    os.utime(fd, ns=(time.time_ns(), mtime_ns))
                if sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)  # after the rename: it moves the ctime
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            if isinstance(exc, OSError):
                raise _error(exc, path, write=True) from exc
            raise
        return st

    def _install(self, key: str, fill: Callable[[int], None], mtime_ns: int | None = None) -> ObjectMeta:
        rel = self._key_rel(key, write=True)
        folder, name = _split(rel)
        try:
            with self._folder(folder, make=True) as fd:
                return _meta(key, self._write_file(fd, name, self._abs(rel), fill, sync=True,
                                                   mtime_ns=mtime_ns))
        except OSError as exc:
            raise _error(exc, self._abs(folder), write=True) from exc

    def put(self, key: str, data: bytes, mtime_ns: int | None = None) -> ObjectMeta:
        if key.endswith("/"):
            return self._make_folder(key, data)
        return self._install(key, lambda fd: _write_all(fd, data), mtime_ns)

    def set_mtime(self, key: str, mtime_ns: int) -> ObjectMeta:
        """The file's own mtime (a symlink's own, not its target's); its ETag changes with it."""
        rel = self._key_rel(key)
        folder, name = _split(rel)
        path = self._abs(rel)
        try:
            with self._folder(folder) as fd:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                    raise NotFound(f"{os.fsdecode(path)}: not a regular file")
                if st.st_mtime_ns != mtime_ns:  # the same mtime again changes nothing, not even the ctime
                    os.utime(name, ns=(st.st_atime_ns, mtime_ns), dir_fd=fd, follow_symlinks=False)
            meta = self._lstat(key, rel)
        except OSError as exc:
            raise _error(exc, path, write=True) from exc
        return meta if isinstance(meta, ObjectMeta) else _meta(key, meta)

    def truncate(self, key: str, size: int) -> ObjectMeta:
        """truncate(2) of the file `key`, reached as `open_file` reaches it."""
        fd = self.open_file(key, os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY, write=True)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise NotFound(f"{self.file_path(key)}: not a regular file")
            os.ftruncate(fd, size)
            return _meta(key, os.fstat(fd))
        except OSError as exc:
            raise _error(exc, self.file_path(key), write=True) from exc
        finally:
            os.close(fd)

    def rename(self, old_key: str, new_key: str) -> ObjectMeta | None:
        """rename(2) of a file, link or folder ("dir/") in the folder: atomic, and descriptors open on
        it stay valid; the new file's (or link's) metadata, None for a folder."""
        old = self._key_rel(old_key.rstrip("/"))
        new = self._key_rel(new_key.rstrip("/"), write=True)
        (old_folder, old_name), (new_folder, new_name) = _split(old), _split(new)
        try:
            with self._folder(old_folder) as src, self._folder(new_folder) as dst:
                os.rename(old_name, new_name, src_dir_fd=src, dst_dir_fd=dst)
            if new_key.endswith("/"):
                return None
            meta = self._lstat(new_key, new)
        except OSError as exc:
            raise _error(exc, self._abs(new), write=True) from exc
        return meta if isinstance(meta, ObjectMeta) else _meta(new_key, meta)

    def _folder_meta(self, key: str) -> ObjectMeta:
        rel = self._key_rel(key[:-1])
        folder, name = _split(rel)
        try:
            with self._folder(folder) as fd:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except OSError as exc:
            raise _error(exc, self._abs(rel)) from exc
        if not stat.S_ISDIR(st.st_mode):
            raise NotFound(f"{os.fsdecode(self._abs(rel))}: not a folder")
        return ObjectMeta(key, 0, _etag(st), st.st_mtime_ns)

    def _make_folder(self, key: str, data: bytes) -> ObjectMeta:
        """A directory marker ("dir/", empty) is the folder itself."""
        if data:
            raise Unsupported(f"key {key!r} ends in '/': only an empty directory marker can be stored "
                              f"under {self.bucket}")
        rel = self._key_rel(key[:-1], write=True)
        try:
            with self._folder(rel, make=True) as fd:
                st = os.fstat(fd)
        except OSError as exc:
            raise _error(exc, self._abs(rel), write=True) from exc
        return ObjectMeta(key, 0, _etag(st), st.st_mtime_ns)

    def _remove_folder(self, key: str) -> None:
        """Deleting a directory marker removes the folder if it is empty (like S3, where the prefix
        stays while other keys are under it)."""
        try:
            rel = self._key_rel(key[:-1])
        except NotFound:
            return
        folder, name = _split(rel)
        try:
            with self._folder(folder) as fd:
                os.rmdir(name, dir_fd=fd)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ENOTEMPTY, errno.EEXIST):
                return
            raise _error(exc, self._abs(rel), write=True) from exc

    def delete(self, key: str) -> None:
        """Remove `key` (a symlink itself, never its target); a missing key is not an error (S3
        semantics). Emptied folders stay; a directory marker ("dir/") removes its folder when it is
        empty."""
        if key.endswith("/"):
            self._remove_folder(key)
            return
        try:
            rel = self._key_rel(key)
        except NotFound:
            return
        folder, name = _split(rel)
        try:
            with self._folder(folder) as fd:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                    os.unlink(name, dir_fd=fd)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                return  # nothing of the folder's is there (a symlink on the way is not a folder)
            raise _error(exc, self._abs(rel), write=True) from exc

    def copy(self, src_key: str, dst_key: str) -> ObjectMeta:
        """A new file with the source's bytes and mtime (object stores copy the mtime metadata); a
        symlink is copied as a symlink to the same target."""
        src = self._key_rel(src_key)
        self._key_rel(dst_key, write=True)
        try:
            found = self._lstat(src_key, src)
        except OSError as exc:
            raise _error(exc, self._abs(src)) from exc
        if isinstance(found, ObjectMeta):
            assert found.link is not None
            return self._install_link(dst_key, os.fsencode(found.link), found.mtime_ns)
        fd = self.open_file(src_key, _READ_FLAGS)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise NotFound(f"{os.fsdecode(self._abs(src))}: not a regular file")
            return self._install(dst_key, lambda out: _copy_fd(fd, out), st.st_mtime_ns)
        finally:
            os.close(fd)

    def _install_link(self, key: str, target: bytes, mtime_ns: int) -> ObjectMeta:
        """A symlink to `target` as `key` (made aside, then renamed into place)."""
        rel = self._key_rel(key, write=True)
        folder, name = _split(rel)
        tmp = _TMP_B + secrets.token_hex(8).encode()
        try:
            with self._folder(folder, make=True) as fd:
                os.symlink(target, tmp, dir_fd=fd)
                try:
                    os.utime(tmp, ns=(time.time_ns(), mtime_ns), dir_fd=fd, follow_symlinks=False)
                    os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp, dir_fd=fd)
                    raise
                return _link_meta(key, os.stat(name, dir_fd=fd, follow_symlinks=False), target)
        except OSError as exc:
            raise _error(exc, self._abs(rel), write=True) from exc

    # --- multipart: parts staged as files under <root>/.mountfs-uploads/<id>/ ---------------------

    def _upload_dir(self, key: str, upload_id: str) -> bytes:
        """The staging folder of `upload_id` (relative), checked to exist and to belong to `key`."""
        missing = NotFound(f"no multipart upload {upload_id!r} for {key!r} in {self.bucket}")
        if not _UPLOAD_ID.match(upload_id):
            raise missing
        folder = _UPLOADS_B + b"/" + upload_id.encode()
        try:
            fd = self._open(folder + b"/key", os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                raise missing from None
            raise _error(exc, self._abs(folder)) from exc
        with open(fd, "rb") as f:
            owner = f.read()
        if owner != os.fsencode(key):
            raise missing
        return folder

    def _remove_upload(self, folder: bytes) -> None:
        """rmtree of an upload's staging folder, from a descriptor of the uploads folder."""
        uploads, name = _split(folder)
        with self._folder(uploads) as fd:
            shutil.rmtree(os.fsdecode(name), dir_fd=fd)

    def create_multipart(self, key: str, mtime_ns: int | None = None) -> str:
        """`mtime_ns` is ignored: the file gets the one `complete_multipart` is given."""
        self._key_rel(key, write=True)
        upload_id = uuid.uuid4().hex
        folder = _UPLOADS_B + b"/" + upload_id.encode()
        try:
            with self._folder(folder, make=True) as fd:
                self._write_file(fd, b"key", self._abs(folder + b"/key"),
                                 lambda out: _write_all(out, os.fsencode(key)), sync=False)
        except OSError as exc:
            raise _error(exc, self._abs(folder), write=True) from exc
        return upload_id

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> UploadPart:
        if not 1 <= number <= MAX_PART_NUMBER:
            raise ValueError(f"part number must be in 1..{MAX_PART_NUMBER}, not {number}")
        folder = self._upload_dir(key, upload_id)
        name = b"part-%05d" % number
        # Not fsynced: the writer keeps its staged data until complete_multipart succeeds.
        try:
            with self._folder(folder) as fd:
                self._write_file(fd, name, self._abs(folder + b"/" + name),
                                 lambda out: _write_all(out, data), sync=False)
        except OSError as exc:
            raise _error(exc, self._abs(folder), write=True) from exc
        return UploadPart(number, md5_hex(data))

    def complete_multipart(self, key: str, upload_id: str, parts: builtins.list[UploadPart],
                           mtime_ns: int | None = None) -> ObjectMeta:
        folder = self._upload_dir(key, upload_id)
        ordered = sorted(parts, key=lambda p: p.number)
        if len({p.number for p in ordered}) != len(ordered):
            raise ValueError("duplicate part numbers in complete_multipart")

        def fill(out: int) -> None:
            for part in ordered:
                try:
                    fd = self._open(folder + b"/part-%05d" % part.number, os.O_RDONLY | os.O_NONBLOCK)
                except FileNotFoundError:
                    raise NotFound(f"part {part.number} of upload {upload_id} was never uploaded") from None
                digest = hashlib.md5(usedforsecurity=False)
                try:
                    _copy_fd(fd, out, digest)
                finally:
                    os.close(fd)
                if digest.hexdigest() != part.etag:
                    raise NotFound(f"part {part.number} of upload {upload_id}: etag {part.etag} "
                                   f"does not match the uploaded {digest.hexdigest()}")

        meta = self._install(key, fill, mtime_ns)
        with contextlib.suppress(OSError):
            self._remove_upload(folder)
        return meta

    def abort_multipart(self, key: str, upload_id: str) -> None:
        folder = self._upload_dir(key, upload_id)
        try:
            self._remove_upload(folder)
        except OSError as exc:
            raise _error(exc, self._abs(folder), write=True) from exc


meta_from_stat = _meta  # for direct access, which stats the files itself
error_from_os = _error
