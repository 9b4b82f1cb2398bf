"""The upload journal: every staged file is recorded here before its first byte is accepted.

It is its own LMDB environment (`<cache_dir>/journal`), apart from the block index, and every commit
is synced: a record is the only thing that tells the next mount (or `mountfs recover`) that a staged
file still has to go up, so it must outlive kill -9 and power loss.

Several daemons may share one cache dir. Each open journal is a session that holds an flock on
`journal/sessions/<session>.lock` for as long as it lives; the kernel drops that lock when the
process dies, however it dies. A record belongs to its session: `adopt_orphans` takes over only the
records of sessions whose lock can be taken, so no daemon ever uploads another live daemon's files.

Every method blocks (LMDB transactions, fsync): call them from worker threads.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import lmdb

from mountfs.errors import NoSpace

MAP_SIZE = 1 << 30  # address space, not disk: records are a few hundred bytes each

CLEAN = "clean"
"""Staged and equal to the object in the store (or still being filled from it): nothing to upload."""
STAGING = "staging"
"""Changed since the last upload: must go up."""
UPLOADING = "uploading"
"""An upload is running."""
FAILED = "failed"
"""The last upload failed after the store's retries; retried in the background."""
REJECTED = "rejected"
"""The store refused the upload for good (a 4xx that retrying cannot fix, e.g. a key too long): not
retried; the staged file stays, shown by `mountfs status`, until the file is renamed, written again
or removed (in the mount, or the staged file itself)."""
STATES = (CLEAN, STAGING, UPLOADING, FAILED, REJECTED)


@dataclass(frozen=True)
class PartRecord:
    """A part already in the store under `JournalRecord.upload_id`. After a crash it is reused only if
    the staged bytes at `offset` still hash to `etag` (S3 part ETags are the part's MD5)."""

    number: int
    etag: str
    offset: int
    length: int


@dataclass(frozen=True)
class JournalRecord:
    id: str  # the staging id: also the staged file's name
    store_id: str
    bucket: str
    key: str
    path: str  # the staged file
    state: str
    base_etag: str | None = None  # the version the write started from; None for a new object
    upload_id: str | None = None  # a multipart upload in progress
    part_size: int = 0  # of that multipart upload
    parts: tuple[PartRecord, ...] = ()
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    error: str | None = None
    attempts: int = 0  # failed upload attempts in a row
    session: str = ""
    mtime_ns: int | None = None  # set by utimens while staged: the object must carry it
    creating: float | None = None
    """Set (time.time()) before a multipart upload of `key` is created, kept while it lives: a crash
    after the store made the upload but before its id was journalled leaves an upload only a
    listing can find. Recovery aborts those of `key` that are not in `known_uploads`, and that no
    record names."""
    known_uploads: tuple[str, ...] = ()
    """The uploads of `key` in progress just before that create: another writer's, never aborted."""

    @property
    def needs_upload(self) -> bool:
        return self.state != CLEAN

    def pack(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def unpack(cls, raw: bytes) -> JournalRecord:
        fields: dict[str, Any] = json.loads(raw)
        fields["parts"] = tuple(PartRecord(**p) for p in fields.get("parts", ()))
        fields["known_uploads"] = tuple(fields.get("known_uploads", ()))
        return cls(**fields)


def _no_space(exc: BaseException) -> NoSpace:
    return NoSpace(f"upload journal: the cache disk is full ({exc})")


class UploadJournal:
    def __init__(self, cache_dir: str) -> None:
        self.path = os.path.join(cache_dir, "journal")
        self.staging_dir = os.path.join(cache_dir, "staging")
        self._sessions = os.path.join(self.path, "sessions")
        os.makedirs(self._sessions, exist_ok=True)
        self.session = uuid.uuid4().hex
        self._lock_fd = self._hold(self.session)
        if self._lock_fd is None:
            raise RuntimeError(f"journal session {self.session} is locked by another process")
        # sync and metasync on: an upload record must never be undone by a crash.
        self.env = lmdb.open(self.path, map_size=MAP_SIZE, max_readers=512, readahead=False)

    def close(self) -> None:
        """Close without touching the records: those not yet uploaded are adopted by the next session."""
        self.env.close()
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._lock_path(self.session))
            os.close(self._lock_fd)
            self._lock_fd = None

    # --- records -----------------------------------------------------------------------------

    def put(self, record: JournalRecord) -> None:
        """Insert or replace `record` (as this session's), synced before returning."""
        record = replace(record, session=self.session, updated=time.time())
        try:
            with self.env.begin(write=True) as txn:
                txn.put(record.id.encode(), record.pack())
        except lmdb.DiskError as exc:
            raise _no_space(exc) from exc

    def remove(self, record_id: str) -> None:
        try:
            with self.env.begin(write=True) as txn:
                txn.delete(record_id.encode())
        except lmdb.DiskError as exc:
            raise _no_space(exc) from exc

    def get(self, record_id: str) -> JournalRecord | None:
        with self.env.begin() as txn:
            raw = txn.get(record_id.encode())
        return None if raw is None else JournalRecord.unpack(raw)

    def records(self) -> list[JournalRecord]:
        """Every record, of every session."""
        return list(self._iter())

    def _iter(self) -> Iterator[JournalRecord]:
        with self.env.begin() as txn:
            for _, raw in txn.cursor():
                yield JournalRecord.unpack(raw)

    # --- sessions ----------------------------------------------------------------------------

    def _lock_path(self, session: str) -> str:
        return os.path.join(self._sessions, f"{session}.lock")

    def _hold(self, session: str) -> int | None:
        """An fd holding `session`'s lock, or None if a live process holds it."""
        fd = os.open(self._lock_path(session), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None
            raise
        return fd

    def alive(self, session: str) -> bool:
        """Whether a live process holds `session` (this one included)."""
        if session == self.session:
            return True
        try:
            fd = os.open(self._lock_path(session), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False  # closed, or adopted after its process died
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return True
            raise
        finally:
            os.close(fd)  # (and with it the shared lock, if it was taken)
        return False

    def adopt_orphans(self) -> list[JournalRecord]:
        """Take over the records of every dead session (their process is gone) and return them.

        The records are rewritten as this session's in one transaction while the dead session's lock
        is held, so two processes adopting at once never both get the same record.
        """
        adopted: list[JournalRecord] = []
        lock_files = {name.removesuffix(".lock") for name in os.listdir(self._sessions)
                      if name.endswith(".lock")}
        dead = ({r.session for r in self._iter()} | lock_files) - {self.session}
        for session in sorted(dead):
            fd = self._hold(session)
            if fd is None:
                continue  # alive: its owner uploads them
            try:
                with self.env.begin(write=True) as txn:
                    for raw_key, raw in list(txn.cursor()):
                        record = JournalRecord.unpack(raw)
                        if record.session == session:
                            record = replace(record, session=self.session)
                            txn.put(raw_key, record.pack())
                            adopted.append(record)
                with contextlib.suppress(OSError):
                    os.unlink(self._lock_path(session))
            except lmdb.DiskError as exc:
                raise _no_space(exc) from exc
            finally:
                os.close(fd)
        return adopted
