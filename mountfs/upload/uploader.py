"""Staged writes to objects: one PUT when small, otherwise a multipart upload, parts in parallel.

The FUSE operations layer calls this: `open_staged` when a file is opened for writing, `write` /
`truncate` / `read` while it is open, `flush` on flush and fsync, `release` on the last close,
`discard` on unlink. Durability rests on the journal: a staged file's record says "staging" before
any byte that differs from the store is accepted, and goes only once the store has the data.

A sequential writer has its complete parts uploaded in the background while it is still writing
(when the mount runs `run()`), so flush waits only for the last parts. Per staged file the version
stamps of `StagedFile` decide which parts are still current: a later write into an uploaded part
makes it go up again before completion, and nothing else is re-sent.

A failed upload (after the store's own retries) makes flush raise `UploadFailed` (EIO), marks the
record failed, keeps the staged file and is retried by `run()` with exponential backoff. One the
store refuses for good (`Rejected`: a 4xx that retrying cannot fix) is not retried: the record says
rejected, the staged file stays where `mountfs status` shows it, and only a change to the file (a
write, a truncate, a rename, an mtime) makes it try again.

An mtime set while the file is staged (`set_mtime`: `cp -p` sets it before close) is journalled and
goes up as the object's metadata with the upload itself. When the upload could not carry it (it
was already under way, or S3 fixed the metadata when its multipart upload was created), a
`set_mtime` of the store follows the upload; until it succeeds the file counts as not uploaded.
A write or truncate after it makes the mtime the write's again, as POSIX says.

A multipart upload exists on the server before its id can be journalled. So the record first says
that one is being created (`creating`), with the uploads of that key already in progress then
(`known_uploads`, another writer's). Should the process die before the id is journalled, or a create
fail after the server made the upload, `abort_orphans` finds it by listing the key's uploads.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

import trio

from mountfs.backends.async_store import AsyncStore
from mountfs.backends.base import ObjectMeta, UploadPart
from mountfs.concurrency import BlockingRunner, gather
from mountfs.config import WriteConfig
from mountfs.errors import (
    AccessDenied,
    MountfsError,
    NotFound,
    Offline,
    Rejected,
    Unsupported,
    UploadFailed,
)
from mountfs.upload.journal import (
    CLEAN,
    FAILED,
    REJECTED,
    STAGING,
    UPLOADING,
    JournalRecord,
    PartRecord,
    UploadJournal,
)
from mountfs.upload.staging import Reader, StagedFile, fill_from, staging_name

log = logging.getLogger(__name__)

MAX_PARTS = 10_000  # S3's limit on parts per multipart upload
RESTART_AFTER_FAILURES = 3
"""Failed attempts on one multipart upload, while the store itself answers, before the upload is
abandoned and started afresh: some servers answer 500, not NoSuchUpload, for an upload they lost,
and retrying it would never succeed. Failures while the store is unreachable do not count."""
CHANGED_RETRIES = 5
CREATE_WINDOW = 30 * 60.0
"""How long after its `creating` mark a multipart upload may have been made by that create, by the
store's clock: S3 refuses requests signed 15 minutes off its time, plus the create's own retries.
An upload of the key made later is another writer's and is left alone."""
MAX_KNOWN_UPLOADS = 100
"""More uploads of one key in progress than this (other writers', abandoned): the create is not
marked, rather than rewrite so long a record with every part (an upload a crash leaves is then left
to the store's lifecycle rules, as before)."""


@dataclass(frozen=True)
class PendingUpload:
    """What `mountfs status` lists: data not yet in the store."""

    key: str
    store_id: str
    bucket: str
    size: int
    state: str
    error: str | None
    staging_path: str
    attempts: int


@dataclass
class UploadStats:
    completed: int = 0  # uploads that reached the store
    failed: int = 0  # upload attempts that failed after the store's retries
    streamed_parts: int = 0  # parts uploaded while the file was still being written


@dataclass(frozen=True)
class _Part:
    number: int
    etag: str
    offset: int
    length: int
    version: int  # of the staged bytes it was read from


class _Changed(Exception):
    """The staged file shrank while a part was read: plan the upload again."""


class _NoMultipart(Exception):
    """The store refuses multipart uploads (e.g. `multipart = false` for its host)."""


class StagedUpload:
    """One object being written: its staged file, its journal record and its multipart progress.

    `size` and `read` (through the uploader) answer readers in the same mount; `meta` is the store's
    version after the last upload, for the caller to put in place of the old one.
    """

    def __init__(self, record: JournalRecord, file: StagedFile, base: ObjectMeta | None,
                 uploaded_clock: int) -> None:
        self.id = record.id
        self.key = record.key
        self.file = file
        self.base = base
        self.meta: ObjectMeta | None = base
        self.uploaded_clock = uploaded_clock  # file.clock when the store last matched; -1: never
        self.writers = 0  # writes past their journal mark, not yet stamped
        self.uploading = False
        self.error: str | None = record.error
        self.attempts = record.attempts
        self.retry_at: float | None = None
        self.rejected = record.state == REJECTED  # refused for good: no retry until it changes
        self.released = False
        self.discarded = False
        self.dropped = False
        self.upload_id: str | None = record.upload_id
        self.creating: float | None = record.creating  # see JournalRecord.creating
        self.known_uploads: tuple[str, ...] = record.known_uploads
        self.create_failed = False  # a create failed since `creating`: the server may have made it
        self.mtime_ns: int | None = record.mtime_ns  # the user's (utimens), for the object to carry
        self.mtime_sent: int | None = None  # the mtime the store's version carries, when it is the user's
        self.mp_part_size = record.part_size or file.part_size
        self.parts: dict[int, _Part] = {}  # part index (number - 1) -> uploaded part
        self.mp_failures = 0
        self.streaming: dict[int, trio.Event] = {}
        self.stream_next = 0
        self.stream_stopped = False
        self.flush_lock = trio.Lock()
        self.mp_lock = trio.Lock()
        self.journal_lock = trio.Lock()
        self.record = record  # the fields that never change (id, path, created, ...)
        self.journalled: JournalRecord | None = record

    @property
    def size(self) -> int:
        return self.file.size

    @property
    def path(self) -> str:
        return self.file.path

    @property
    def data_dirty(self) -> bool:
        """The store does not (yet) hold the bytes the staged file holds."""
        return self.writers > 0 or self.file.clock != self.uploaded_clock

    @property
    def mtime_pending(self) -> bool:
        """The user set an mtime that the store's version does not carry yet."""
        return self.mtime_ns is not None and self.mtime_ns != self.mtime_sent

    @property
    def dirty(self) -> bool:
        """The store does not (yet) hold what the staged file holds: its bytes, or its mtime."""
        return self.data_dirty or self.mtime_pending

    @property
    def state(self) -> str:
        if not self.dirty:
            return CLEAN
        if self.uploading:
            return UPLOADING
        if self.rejected:
            return REJECTED
        return FAILED if self.error else STAGING


class Uploader:
    """Uploads staged files to one store (one per `AsyncStore`; they may share a journal)."""

    def __init__(self, store: AsyncStore, journal: UploadJournal, config: WriteConfig, *,
                 supports_multipart: bool = True, io: BlockingRunner | None = None,
                 retry_delay: float = 1.0, max_retry_delay: float = 300.0) -> None:
        self.store = store
        self.journal = journal
        self.config = config
        self.part_size = config.part_size
        self.max_concurrency = max(1, store.store.upload_concurrency or config.max_concurrency)
        self.multipart = supports_multipart
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.stats = UploadStats()
        self._io = io or BlockingRunner(4)
        # Parts in flight across every file of this store; a part is read into memory only while it
        # holds a slot, so this also bounds memory to max_concurrency * part_size.
        self._slots = trio.CapacityLimiter(self.max_concurrency)
        self._uploads: dict[str, StagedUpload] = {}
        self._by_key: dict[str, dict[str, StagedUpload]] = {}  # key -> its uploads by id, oldest first
        self._nursery: trio.Nursery | None = None
        self._retry_wanted = trio.Event()
        # Told of every upload that reached the store (flush or background retry), so the mount can
        # put the new version in place of the old.
        self.on_uploaded: Callable[[StagedUpload], None] | None = None

    def _name(self, staged: StagedUpload) -> str:
        return f"{self.store.store_id}/{self.store.bucket}/{staged.key}"

    # --- background --------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Streams parts of sequential writers and retries failed uploads; run it in the mount's
        nursery. Without it, everything is uploaded by flush and nothing is retried by itself."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                task_status.started()
                await self._retry_forever()
            finally:
                self._nursery = None

    async def _retry_forever(self) -> None:
        while True:
            self._retry_wanted = trio.Event()
            now = trio.current_time()
            waiting = [s for s in self._uploads.values()
                       if s.retry_at is not None and s.dirty and not s.discarded]
            due = [s for s in waiting if s.retry_at is not None and s.retry_at <= now]
            if due:
                async with trio.open_nursery() as nursery:
                    for staged in due:
                        staged.retry_at = None
                        nursery.start_soon(self._retry_one, staged)
                continue
            wake = min((s.retry_at for s in waiting if s.retry_at is not None), default=math.inf)
            with trio.move_on_at(wake):
                await self._retry_wanted.wait()

    async def _retry_one(self, staged: StagedUpload) -> None:
        failures = staged.attempts
        try:
            meta = await self.flush(staged)
        except UploadFailed:
            return  # flush logged it and set the next retry
        if meta is not None and failures:
            log.warning("upload of %s succeeded after %d failed attempt(s)", self._name(staged), failures)

    def _schedule_retry(self, staged: StagedUpload, delay: float) -> None:
        staged.retry_at = trio.current_time() + delay
        self._retry_wanted.set()

    # --- opening, reading, writing -----------------------------------------------------------

    async def open_staged(self, key: str, base: ObjectMeta | None,
                          read: Reader | None = None) -> StagedUpload:
        """Stage `key` for writing.

        `base` is the object's current version (None: a new object). With `read`, the staged file
        starts as a copy of it (overwrite, append); without, it starts empty (O_TRUNC) and the
        truncation itself is a change to upload. The file comes first, its journal record second:
        a process killed in between leaves a file without a record, which recovery removes once
        its session is dead (nothing of it was acknowledged), never a record whose file is missing,
        which would stand for a lost write. The file is named after this journal's session, so
        that another daemon's recovery leaves it alone while this one lives.
        """
        staging_id = staging_name(self.journal.session)
        fill = base is not None and read is not None
        record = JournalRecord(
            id=staging_id, store_id=self.store.store_id, bucket=self.store.bucket, key=key,
            path=os.path.join(self.journal.staging_dir, staging_id), state=CLEAN if fill else STAGING,
            base_etag=base.etag if base is not None else None)
        file = await self._io(StagedFile.create, self.journal.staging_dir, self.part_size, staging_id)
        journalled = False
        try:
            await self._io(self.journal.put, record)
            journalled = True
            staged = StagedUpload(record, file, base, uploaded_clock=-1)
            if base is not None and read is not None:
                await fill_from(file, read, base.size, self._io)
                staged.uploaded_clock = file.clock
        except BaseException:
            with trio.CancelScope(shield=True):
                if journalled:
                    await self._io(self.journal.remove, staging_id)
                await self._io(file.remove)
            raise
        self._add(staged)
        return staged

    def staged_for(self, key: str) -> StagedUpload | None:
        """The live staged upload of `key`, if any (for a reader that wants the newest bytes).
        Asked on every lookup and listing entry: by key, not a walk of every pending upload."""
        for staged in self._by_key.get(key, {}).values():
            if not staged.discarded:
                return staged
        return None

    def _add(self, staged: StagedUpload) -> None:
        self._uploads[staged.id] = staged
        self._by_key.setdefault(staged.key, {})[staged.id] = staged

    def _rekey(self, staged: StagedUpload, key: str) -> None:
        same_key = self._by_key.get(staged.key, {})
        known = same_key.pop(staged.id, None) is not None
        if known and not same_key:
            del self._by_key[staged.key]
        staged.key = key
        if known:
            self._by_key.setdefault(key, {})[staged.id] = staged

    def _remove(self, staged: StagedUpload) -> bool:
        """False if it was not there."""
        if self._uploads.pop(staged.id, None) is None:
            return False
        same_key = self._by_key.get(staged.key, {})
        same_key.pop(staged.id, None)
        if not same_key:
            self._by_key.pop(staged.key, None)
        return True

    def staged_uploads(self) -> list[StagedUpload]:
        """Every live staged upload that is not discarded (open files and uploads still pending)."""
        return [s for s in self._uploads.values() if not s.discarded]

    def reopen(self, staged: StagedUpload) -> bool:
        """A released upload (its flush failed, it waits for a retry) is opened again: it stays until
        the next `release`. False when it is already gone (uploaded and dropped, or discarded)."""
        if staged.id not in self._uploads or staged.discarded:
            return False
        staged.released = False
        return True

    def _check_live(self, staged: StagedUpload) -> None:
        if staged.id not in self._uploads:
            raise ValueError(f"{staged.path}: staged upload of {staged.key} already released")

    async def read(self, staged: StagedUpload, offset: int, length: int) -> bytes:
        self._check_live(staged)
        return await self._io(staged.file.pread, offset, length)

    async def write(self, staged: StagedUpload, offset: int, data: bytes | memoryview) -> int:
        """Write at `offset`; the journal says "staging" before the bytes land. NoSpace on a full disk."""
        return await self._change(staged, partial(staged.file.pwrite, offset, data))

    async def truncate(self, staged: StagedUpload, size: int) -> None:
        await self._change(staged, partial(staged.file.truncate, size))

    async def _change(self, staged: StagedUpload, change: Callable[[], int | None]) -> int:
        self._check_live(staged)
        staged.writers += 1
        staged.mtime_ns = None  # a write after utimens: the file's mtime is the write's again
        staged.rejected = False  # changed: the store may take it now
        try:
            journalled = staged.journalled
            if (journalled is None or journalled.state == CLEAN or journalled.mtime_ns is not None
                    or staged.journal_lock.locked()):
                await self._sync(staged)
            result = await self._io(change)
        finally:
            staged.writers -= 1
        self._maybe_stream(staged)
        return result or 0

    async def set_mtime(self, staged: StagedUpload, mtime_ns: int) -> None:
        """utimens on a staged file: journalled, then carried by the upload (a file still being
        written, or one whose upload is under way or waiting for a retry). A file whose bytes are
        already in the store gets it at once, by the store's `set_mtime`: UploadFailed (EIO) when
        that fails, and it is retried in the background like an upload."""
        self._check_live(staged)
        staged.mtime_ns = mtime_ns
        staged.rejected = False
        if staged.discarded:
            return
        await self._sync(staged)
        if staged.uploading:
            return  # the upload under way sets it when it is done (or its retry does)
        if not staged.data_dirty:
            await self.flush(staged)
        elif staged.released and staged.retry_at is None:
            self._schedule_retry(staged, 0.0)

    async def fsync_staged(self, staged: StagedUpload) -> None:
        """The staged bytes to disk (for a caller that wants them to survive power loss before upload)."""
        await self._io(staged.file.fsync)

    # --- journal -----------------------------------------------------------------------------

    def _record(self, staged: StagedUpload) -> JournalRecord:
        multipart = staged.upload_id is not None
        parts = tuple(PartRecord(p.number, p.etag, p.offset, p.length)
                      for _, p in sorted(staged.parts.items())) if multipart else ()
        return replace(staged.record, key=staged.key, state=staged.state, upload_id=staged.upload_id,
                       part_size=staged.mp_part_size if multipart else 0, parts=parts,
                       error=staged.error, attempts=staged.attempts, mtime_ns=staged.mtime_ns,
                       creating=staged.creating, known_uploads=staged.known_uploads)

    async def _sync(self, staged: StagedUpload) -> None:
        """Write the record as it is now, if it changed. Under a lock, and always the current state,
        so the last write wins even when several tasks change the upload at once."""
        async with staged.journal_lock:
            if staged.discarded or staged.dropped:
                return
            record = self._record(staged)
            if record != staged.journalled:
                await self._io(self.journal.put, record)
                staged.journalled = record

    # --- streaming ---------------------------------------------------------------------------

    def _maybe_stream(self, staged: StagedUpload) -> None:
        """Start uploads of complete parts below a sequential writer, at most max_concurrency per file.

        Only parts with at least one byte after them: then the file has more than one part and goes
        up as multipart whatever happens next.
        """
        if (self._nursery is None or not self.multipart or staged.stream_stopped or staged.discarded
                or not staged.file.sequential or not staged.data_dirty or staged.uploading):
            return
        part_size = staged.mp_part_size
        complete = min(MAX_PARTS, (staged.size - 1) // part_size if staged.size else 0)
        while staged.stream_next < complete and len(staged.streaming) < self.max_concurrency:
            index = staged.stream_next
            staged.stream_next += 1
            if self._current(staged, index, part_size):
                continue
            done = trio.Event()
            staged.streaming[index] = done
            self._nursery.start_soon(self._stream_part, staged, index, part_size, done)

    async def _stream_part(self, staged: StagedUpload, index: int, part_size: int, done: trio.Event) -> None:
        try:
            await self._ensure_upload(staged)
            if staged.mp_part_size == part_size and not staged.discarded:
                await self._upload_part(staged, index, part_size)
                self.stats.streamed_parts += 1
        except Exception as exc:
            staged.stream_stopped = True  # flush takes over, with its own error handling
            log.warning("background upload of part %d of %s failed (%s); flush will retry it",
                        index + 1, self._name(staged), exc)
        finally:
            del staged.streaming[index]
            done.set()
        self._maybe_stream(staged)

    async def _wait_streams(self, staged: StagedUpload) -> None:
        while staged.streaming:
            await next(iter(staged.streaming.values())).wait()

    # --- uploading ---------------------------------------------------------------------------

    def _current(self, staged: StagedUpload, index: int, length: int) -> bool:
        """Part `index` (of `length` bytes) is in the store under the current upload id, as staged now."""
        part = staged.parts.get(index)
        return (part is not None and part.offset == index * staged.mp_part_size and part.length == length
                and part.version == staged.file.version(part.offset, part.length))

    async def _ensure_upload(self, staged: StagedUpload) -> str:
        async with staged.mp_lock:
            if staged.upload_id is None:
                if staged.creating is None:
                    await self._mark_creating(staged)
                try:
                    upload_id = await self.store.create_multipart(staged.key, staged.mtime_ns)
                except Unsupported as exc:
                    if self.multipart:
                        log.warning("%s: %s; uploading each file with one PUT", self.store.store_id, exc)
                    self.multipart = False
                    staged.creating, staged.known_uploads = None, ()
                    raise _NoMultipart(str(exc)) from exc
                except BaseException:
                    staged.create_failed = True  # a lost answer may hide an upload the server made
                    raise
                staged.upload_id, staged.parts, staged.mp_failures = upload_id, {}, 0
                await self._sync(staged)  # the id is journalled before any part goes up
            return staged.upload_id

    async def _mark_creating(self, staged: StagedUpload) -> None:
        """Journal that a multipart upload of the key is about to be made, with the uploads of the
        key already in progress, before the create: only then can recovery tell which upload a
        process that died right after the create left behind. Left out where the store cannot list
        uploads; a failed listing never fails the write."""
        if not self.store.store.lists_multipart_uploads:
            return
        try:
            known = await self.store.multipart_uploads(staged.key)
        except (AccessDenied, Rejected, Unsupported) as exc:
            log.warning("%s cannot list multipart uploads (%s): an upload left by a crash is found only "
                        "by a lifecycle rule", self.store.store_id, exc)
            self.store.store.lists_multipart_uploads = False
            return
        except MountfsError as exc:
            log.info("could not list the multipart uploads of %s: %s", self._name(staged), exc)
            return
        if len(known) > MAX_KNOWN_UPLOADS:
            log.info("%d multipart uploads of %s are in progress already; one a crash may leave is not "
                     "looked for", len(known), self._name(staged))
            return
        staged.creating, staged.known_uploads = time.time(), tuple(sorted(u for u, _ in known))
        staged.create_failed = False
        await self._sync(staged)

    async def _settle_creating(self, staged: StagedUpload) -> None:
        """The multipart upload is complete or gone: the mark goes, after an upload a failed create
        may have made is aborted."""
        if staged.creating is None:
            return
        if staged.create_failed:
            records = await self._io(self.journal.records)
            await self.abort_orphans(staged.key, staged.creating, staged.known_uploads, staged.id, records)
        staged.creating, staged.known_uploads, staged.create_failed = None, (), False

    async def abort_orphans(self, key: str, creating: float, known: tuple[str, ...], record_id: str,
                            records: list[JournalRecord], dead: frozenset[str] = frozenset()) -> int:
        """Abort the multipart uploads of `key` that the create marked at `creating` (by record
        `record_id`) may have made without journalling them: in progress now, not in `known`, named by
        no record, made within CREATE_WINDOW. Not while another live record of the key is creating
        one itself (`dead`: records of dead processes, being recovered). How many were aborted."""
        if any(r.key == key and r.id != record_id and r.creating is not None and r.id not in dead
               for r in records):
            log.info("not looking for multipart uploads of %s left by a crash: another writer of the "
                     "key is creating one", key)
            return 0
        try:
            found = await self.store.multipart_uploads(key)
        except MountfsError as exc:
            log.warning("could not list the multipart uploads of %s/%s/%s to abort one left by a crash: "
                        "%s", self.store.store_id, self.store.bucket, key, exc)
            return 0
        named = {r.upload_id for r in records if r.upload_id is not None}
        aborted = 0
        for upload_id, created in found:
            if upload_id in known or upload_id in named or created > creating + CREATE_WINDOW:
                continue
            try:
                await self.store.abort_multipart(key, upload_id)
            except NotFound:
                continue
            except MountfsError as exc:
                log.warning("could not abort multipart upload %s of %s/%s/%s: %s", upload_id,
                            self.store.store_id, self.store.bucket, key, exc)
                continue
            aborted += 1
            log.warning("aborted multipart upload %s of %s/%s/%s: created, but never journalled, by a "
                        "process that died or lost the answer", upload_id, self.store.store_id,
                        self.store.bucket, key)
        return aborted

    async def _reset_multipart(self, staged: StagedUpload, *, abort: bool) -> None:
        upload_id = staged.upload_id
        staged.upload_id, staged.parts, staged.mp_failures = None, {}, 0
        staged.mp_part_size = staged.file.part_size
        staged.stream_next = 0
        if abort and upload_id is not None:
            try:
                await self.store.abort_multipart(staged.key, upload_id)
            except Exception as exc:  # it expires by itself, or a lifecycle rule removes it
                log.info("could not abort multipart upload %s of %s: %s", upload_id, self._name(staged), exc)
        await self._settle_creating(staged)
        await self._sync(staged)

    async def _upload_part(self, staged: StagedUpload, index: int, length: int) -> None:
        offset = index * staged.mp_part_size
        async with self._slots:
            upload_id = staged.upload_id
            if upload_id is None:
                raise _Changed("the multipart upload was reset")
            version = staged.file.version(offset, length)
            data = await self._io(staged.file.pread, offset, length)
            if len(data) != length:
                raise _Changed(f"staged file shrank below {offset + length} bytes")
            part = await self.store.upload_part(staged.key, upload_id, index + 1, data)
            del data
        if staged.upload_id == upload_id:
            staged.parts[index] = _Part(part.number, part.etag, offset, length, version)
            await self._sync(staged)

    async def flush(self, staged: StagedUpload) -> ObjectMeta | None:
        """Upload what is not yet in the store (bytes, and the user's mtime) and return the object's
        new version.

        Nothing to upload: the version already there. Discarded (unlinked): None. Failure after the
        store's retries: UploadFailed (EIO); the data stays staged and is retried in the background.
        """
        if staged.discarded:
            return None
        async with staged.flush_lock:
            if staged.discarded:
                return None
            if not staged.dirty:
                return staged.meta
            staged.uploading = True
            try:
                await self._sync(staged)
                if staged.data_dirty:
                    clock = staged.file.clock
                    uploaded = await self._upload(staged)
                    staged.meta, staged.uploaded_clock = uploaded, clock
                    wanted = staged.mtime_ns  # did the upload carry it? (not if set while it ran)
                    staged.mtime_sent = wanted if wanted is not None and uploaded.mtime_ns == wanted else None
                wanted = staged.mtime_ns
                if wanted is not None and wanted != staged.mtime_sent:  # the bytes are up: only the mtime
                    staged.meta = await self.store.set_mtime(staged.key, wanted)
                    staged.mtime_sent = wanted
                meta = staged.meta
                if meta is None:
                    raise AssertionError(f"{staged.key}: nothing uploaded and no version in the store")
            except Exception as exc:
                staged.uploading = False
                raise await self._failed(staged, exc) from exc
            finally:
                staged.uploading = False
                staged.stream_stopped = False
            staged.error, staged.attempts, staged.retry_at = None, 0, None
            self.stats.completed += 1
            await self._sync(staged)
            log.debug("uploaded %s (%d bytes, etag %s)", self._name(staged), meta.size, meta.etag)
            if self.on_uploaded is not None:
                self.on_uploaded(staged)
            if staged.released:
                if staged.dirty:
                    self._schedule_retry(staged, 0.0)  # written to while it went up
                else:
                    await self._drop(staged)
            return meta

    async def _failed(self, staged: StagedUpload, exc: Exception) -> UploadFailed:
        staged.attempts += 1
        staged.error = f"{type(exc).__name__}: {exc}"
        self.stats.failed += 1
        if isinstance(exc, Rejected):
            return await self._rejected(staged)
        delay = min(self.max_retry_delay, self.retry_delay * 2 ** (staged.attempts - 1))
        self._schedule_retry(staged, delay)
        log.error("upload of %s failed (attempt %d): %s; the data stays staged at %s, retrying in %.0fs",
                  self._name(staged), staged.attempts, staged.error, staged.path, delay,
                  exc_info=not isinstance(exc, MountfsError | OSError))
        try:
            await self._sync(staged)
        except Exception as journal_exc:
            log.error("could not journal the failed upload of %s: %s", self._name(staged), journal_exc)
        return UploadFailed(f"{self._name(staged)}: upload failed ({staged.error}); the data stays "
                            f"staged at {staged.path} and is retried in the background")

    async def _rejected(self, staged: StagedUpload) -> UploadFailed:
        """The store will never take this upload as it is: stop, say so, keep the data."""
        staged.rejected, staged.retry_at = True, None
        log.error("the store refused the upload of %s for good (%s); it is not retried. The data stays "
                  "staged at %s: rename the file to a name the store takes, or copy it from there and "
                  "remove the file", self._name(staged), staged.error, staged.path)
        try:
            if staged.upload_id is not None:  # nothing must stay open on the server for it
                await self._reset_multipart(staged, abort=True)
            await self._sync(staged)
        except Exception as journal_exc:
            log.error("could not journal the refused upload of %s: %s", self._name(staged), journal_exc)
        return UploadFailed(f"{self._name(staged)}: the store refused the upload ({staged.error}); the "
                            f"data stays staged at {staged.path} and is not retried")

    async def _upload(self, staged: StagedUpload) -> ObjectMeta:
        for _ in range(CHANGED_RETRIES):
            size = staged.size
            try:
                if self.multipart and size > self.part_size:
                    try:
                        return await self._multipart_upload(staged, size)
                    except _NoMultipart:
                        pass
                return await self._put(staged, size)
            except _Changed as exc:
                log.info("%s changed while uploading (%s); starting over", self._name(staged), exc)
        raise UploadFailed(f"{self._name(staged)} kept changing while it was uploaded")

    async def _put(self, staged: StagedUpload, size: int) -> ObjectMeta:
        staged.stream_stopped = True
        await self._wait_streams(staged)
        if staged.upload_id is not None:
            await self._reset_multipart(staged, abort=True)
        async with self._slots:
            data = await self._io(staged.file.pread, 0, size)
            return await self.store.put(staged.key, data, staged.mtime_ns)

    async def _multipart_upload(self, staged: StagedUpload, size: int) -> ObjectMeta:
        for attempt in (1, 2):
            staged.stream_stopped = True  # what is in flight still counts; nothing new starts
            await self._wait_streams(staged)
            smallest = -(-size // MAX_PARTS)  # a part size that needs no more than MAX_PARTS parts
            if staged.mp_part_size < smallest or staged.mp_failures >= RESTART_AFTER_FAILURES:
                await self._reset_multipart(staged, abort=True)
            if staged.upload_id is None:  # a multiple of the staged file's part size, so stamps line up
                unit = staged.file.part_size
                staged.mp_part_size = max(1, -(-smallest // unit)) * unit
            upload_id = await self._ensure_upload(staged)
            part_size = staged.mp_part_size
            count = -(-size // part_size)
            lengths = [min(part_size, size - i * part_size) for i in range(count)]
            todo = [i for i in range(count) if not self._current(staged, i, lengths[i])]
            try:
                await gather(*(partial(self._upload_part, staged, i, lengths[i]) for i in todo))
                parts = [UploadPart(staged.parts[i].number, staged.parts[i].etag) for i in range(count)]
                meta = await self.store.complete_multipart(staged.key, upload_id, parts, staged.mtime_ns)
            except NotFound as exc:
                if attempt == 2:
                    raise
                log.warning("multipart upload %s of %s is gone (%s); starting it again",
                            upload_id, self._name(staged), exc)
                await self._reset_multipart(staged, abort=False)
                continue
            except _Changed:
                raise
            except Exception as exc:
                # The store answers, yet this upload keeps failing (a call refused because the store
                # is known to be offline never reached it: that is no failure of the upload).
                if not isinstance(exc, Offline) and await self._reachable():
                    staged.mp_failures += 1
                raise
            staged.upload_id, staged.parts, staged.mp_failures = None, {}, 0
            staged.mp_part_size = staged.file.part_size
            staged.stream_next = 0
            try:
                await self._settle_creating(staged)
            except Exception as exc:  # the object is in the store: never fail the upload now
                log.warning("after uploading %s: %s", self._name(staged), exc)
            return meta
        raise AssertionError("unreachable")

    async def _reachable(self) -> bool:
        """Whether the store answers at all: an upload that fails while it does may be lost on the
        server; one that fails while the store is down is kept, with its parts, for the retry."""
        try:
            await self.store.check_access()
        except Exception:
            return False
        return True

    # --- closing -----------------------------------------------------------------------------

    async def release(self, staged: StagedUpload) -> None:
        """The last handle is closed. Uploaded (or discarded): the staged file goes. Still dirty (its
        flush failed): it stays, journalled, until a background retry gets it into the store."""
        if staged.released:
            return
        staged.released = True
        if staged.discarded or not staged.dirty:
            async with staged.flush_lock:
                # Waiting for the lock let others run: a reopen revived it (its new handle writes
                # on), or a write made it dirty. Only what is still released and clean goes.
                if not staged.released:
                    return
                if staged.discarded or not staged.dirty:
                    await self._drop(staged)
                    return
        if staged.retry_at is None and not staged.rejected:
            self._schedule_retry(staged, 0.0)

    async def _drop(self, staged: StagedUpload) -> None:
        """Forget the upload: record first, file second (a file without a record is swept by
        recovery; a record without a file would be reported as lost data)."""
        if not self._remove(staged):
            return
        staged.dropped = True
        with trio.CancelScope(shield=True):
            async with staged.journal_lock:
                if not staged.discarded:
                    await self._io(self.journal.remove, staged.id)
                staged.journalled = None
            await self._io(staged.file.remove)

    async def discard(self, staged: StagedUpload) -> None:
        """The file was unlinked: nothing of it may reach the store. Aborts a multipart upload in
        progress and drops the record; open handles keep working on the staged file until release."""
        if staged.discarded:
            return
        staged.discarded = True
        staged.stream_stopped = True
        async with staged.flush_lock:
            await self._wait_streams(staged)
            with trio.CancelScope(shield=True):
                async with staged.journal_lock:
                    await self._io(self.journal.remove, staged.id)
                    staged.journalled = None
                upload_id, staged.upload_id, staged.parts = staged.upload_id, None, {}
                if upload_id is not None:
                    try:
                        await self.store.abort_multipart(staged.key, upload_id)
                    except Exception as exc:
                        log.info("could not abort multipart upload %s of %s: %s",
                                 upload_id, self._name(staged), exc)
        if staged.released:
            await self._drop(staged)

    async def rename(self, staged: StagedUpload, key: str) -> bool:
        """The file moves to `key` while staged: its data is uploaded there instead (the caller deals
        with objects already in the store under either name). False, and nothing done, when the
        upload was dropped or discarded while this waited for its flush to end (its last handle
        was closed and its data reached the store under the old name): the caller moves the
        object in the store instead."""
        async with staged.flush_lock:
            if staged.dropped or staged.discarded:
                return False
            staged.stream_stopped = True
            await self._wait_streams(staged)
            if staged.upload_id is not None:
                await self._reset_multipart(staged, abort=True)
            await self._settle_creating(staged)  # (under the old key)
            self._rekey(staged, key)
            staged.rejected = False
            staged.base = staged.meta = None
            staged.uploaded_clock = -1
            staged.mtime_sent = None
            staged.stream_next = 0
            staged.stream_stopped = False
            await self._sync(staged)
        if staged.released:
            self._schedule_retry(staged, 0.0)
        return True

    # --- status, unmount, recovery -----------------------------------------------------------

    def pending(self) -> list[PendingUpload]:
        """Staged data not yet in the store, oldest first."""
        return [PendingUpload(s.key, self.store.store_id, self.store.bucket, s.size, s.state, s.error,
                              s.path, s.attempts)
                for s in sorted(self._uploads.values(), key=lambda s: s.record.created)
                if s.dirty and not s.discarded]

    async def drain(self, timeout: float | None = None) -> list[PendingUpload]:
        """Upload everything staged, for up to `timeout` seconds (default `write.drain_timeout`), at
        unmount or SIGTERM; returns what is left.

        What is left stays journalled and staged: the next mount (or `mountfs recover`) uploads it.
        """
        with trio.move_on_after(self.config.drain_timeout if timeout is None else timeout):
            while True:
                todo = [s for s in self._uploads.values() if s.dirty and not s.discarded and not s.rejected]
                if not todo:
                    break
                async with trio.open_nursery() as nursery:
                    for staged in todo:
                        nursery.start_soon(self._try_flush, staged)
                waiting = [s.retry_at for s in todo if s.dirty and s.retry_at is not None]
                if waiting:
                    await trio.sleep_until(min(waiting))
        left = self.pending()
        for item in left:
            log.warning("upload of %s/%s/%s not finished (%s%s); staged at %s", item.store_id, item.bucket,
                        item.key, item.state, f": {item.error}" if item.error else "", item.staging_path)
        return left

    async def _try_flush(self, staged: StagedUpload) -> None:
        with contextlib.suppress(UploadFailed):
            await self.flush(staged)

    async def adopt(self, record: JournalRecord) -> StagedUpload:
        """Take over a journalled upload of an earlier process (its record already adopted by this
        journal session) as a released file to be uploaded. Parts of its multipart upload are reused
        where the staged bytes still hash to their ETag; the others go up again."""
        file = await self._io(StagedFile.open, record.path, self.part_size)
        staged = StagedUpload(record, file, None, uploaded_clock=file.clock if record.state == CLEAN else -1)
        staged.released = True
        if record.upload_id is not None and record.part_size > 0:
            for part in record.parts:
                if part.offset == (part.number - 1) * record.part_size:
                    await self._reuse_part(staged, UploadPart(part.number, part.etag), part.length)
            if len(staged.parts) < -(-file.size // record.part_size):
                await self._reuse_listed_parts(staged, record.upload_id)
        self._add(staged)
        await self._sync(staged)
        return staged

    async def _reuse_part(self, staged: StagedUpload, part: UploadPart, length: int) -> None:
        """Count `part` (of `length` bytes, in the store under the adopted upload) as uploaded if it
        has the length of that part of the staged file and its ETag is the MD5 of those bytes."""
        index = part.number - 1
        offset = index * staged.mp_part_size
        wanted = min(staged.mp_part_size, staged.file.size - offset)
        if index in staged.parts or index < 0 or wanted <= 0 or length != wanted:
            return
        if await self._io(staged.file.md5, offset, length) == part.etag:
            staged.parts[index] = _Part(part.number, part.etag, offset, length,
                                        staged.file.version(offset, length))

    async def _reuse_listed_parts(self, staged: StagedUpload, upload_id: str) -> None:
        """Parts the store holds under the adopted upload that its journal does not name: the process
        died after sending them, before their answers were journalled. Reused as journalled ones are;
        where the store cannot list them, they simply go up again."""
        try:
            listed = await self.store.multipart_parts(staged.key, upload_id)
        except (Unsupported, NotFound):  # NotFound: the upload is gone, the flush starts another
            return
        except Exception as exc:  # only spares some parts: never fails the recovery
            log.info("could not list the parts of multipart upload %s of %s: %s; they go up again",
                     upload_id, self._name(staged), exc)
            return
        for part, size in listed:
            await self._reuse_part(staged, part, size)
