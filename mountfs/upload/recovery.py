"""After a crash: finish the uploads a dead process left in the journal, and say what happened.

Run by every mount at start (before it accepts writes) and by `mountfs recover`. Only records of
dead sessions are touched (see `UploadJournal.adopt_orphans`), so a second daemon on the same cache
dir never uploads the first one's files. Each adopted upload goes through the normal `Uploader`
path: a multipart upload in progress is resumed where its parts still match the staged bytes, or
started again; what fails stays journalled and is retried by the uploader in the background.

A record that says a multipart upload was being created (`JournalRecord.creating`) may have left one
on the server that no record names (the process died between the create and journalling its id):
the key's uploads are listed and that one is aborted (`Uploader.abort_orphans`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, replace

from mountfs.concurrency import BlockingRunner
from mountfs.errors import UploadFailed
from mountfs.upload.journal import CLEAN, REJECTED, JournalRecord, UploadJournal
from mountfs.upload.staging import staging_session
from mountfs.upload.uploader import Uploader

log = logging.getLogger(__name__)

UPLOADED = "uploaded"
"""The staged data is now in the store; record and staged file are gone."""
FAILED = "failed"
"""The upload failed again: staged and journalled still, retried in the background."""
MISSING = "missing"
"""The journal named a staged file that is not there: that data is lost; the record is dropped."""
UNCHANGED = "unchanged"
"""Nothing was written after the file was staged: record and staged file dropped."""
NO_STORE = "no-store"
"""No configured store matches the record: kept for a mount that has it."""
REFUSED = "rejected"
"""The store refused this upload for good earlier (a key too long, ...): not tried again; the staged
file stays until the file is renamed or removed in the mount, or the staged file is removed."""
CLEARED = "cleared"
"""A refused upload whose staged file was removed by hand: its record is dropped."""
ORPHAN = "orphan"
"""A staged file with no record (the crash came between dropping the two): removed."""


@dataclass(frozen=True)
class Recovered:
    key: str
    store_id: str
    bucket: str
    size: int
    outcome: str
    detail: str

    def describe(self) -> str:
        if self.key:
            where = f"{self.store_id}/{self.bucket}/{self.key}"
            return f"{self.outcome}: {where} ({self.size} bytes): {self.detail}"
        return f"{self.outcome}: {self.detail} ({self.size} bytes)"


async def recover(journal: UploadJournal, uploaders: Iterable[Uploader],
                  io: BlockingRunner | None = None) -> list[Recovered]:
    """Upload what dead sessions left staged; one `Recovered` per journal record (and per stray
    staged file), for the caller to log or print."""
    run = io or BlockingRunner(2)
    by_store = {(store_id, u.store.bucket): u for u in uploaders
                for store_id in (*u.store.former_ids, u.store.store_id)}
    staged_files = await run(_list_dir, journal.staging_dir)  # before reading records: see _sweep
    records = await run(journal.adopt_orphans)
    everyone = await run(journal.records)
    dead = frozenset(r.id for r in records)
    report: list[Recovered] = []
    for record in sorted(records, key=lambda r: r.created):
        uploader = by_store.get((record.store_id, record.bucket))
        if uploader is not None and record.creating is not None:
            await uploader.abort_orphans(record.key, record.creating, record.known_uploads, record.id,
                                         everyone, dead)
            if record.upload_id is None:  # nothing of that create lives on: the mark goes
                record = replace(record, creating=None, known_uploads=())
        report.append(await _recover_one(journal, uploader, record, run))
    report.extend(await _sweep(journal, staged_files, run))
    for item in report:
        (log.warning if item.outcome in (FAILED, MISSING, NO_STORE, REFUSED) else log.info)(
            "recovery: %s", item.describe())
    return report


async def _recover_one(journal: UploadJournal, uploader: Uploader | None, record: JournalRecord,
                       run: BlockingRunner) -> Recovered:
    def outcome(what: str, detail: str, size: int = 0) -> Recovered:
        return Recovered(record.key, record.store_id, record.bucket, size, what, detail)

    size = await run(_size, record.path)
    if uploader is None:
        return outcome(NO_STORE, f"no mounted store is {record.store_id} bucket {record.bucket}; "
                                 f"kept staged at {record.path}", size or 0)
    if size is None and record.state == REJECTED:
        await run(journal.remove, record.id)
        return outcome(CLEARED, f"the staged file {record.path} of the refused upload was removed")
    if size is None:
        await run(journal.remove, record.id)
        return outcome(MISSING, f"staged file {record.path} is gone; the write is lost")
    if record.state == CLEAN:
        await run(journal.remove, record.id)
        await run(_unlink, record.path)
        return outcome(UNCHANGED, "no changes to upload", size)
    staged = await uploader.adopt(record)
    if record.state == REJECTED:  # the same request would be refused again: kept for the user
        return outcome(REFUSED, f"the store refused it ({record.error}); kept staged at {record.path}: "
                                f"rename the file to a name the store takes, or copy it from there and "
                                f"remove the file", size)
    try:
        meta = await uploader.flush(staged)
    except UploadFailed as exc:
        return outcome(FAILED, f"{exc}", size)
    return outcome(UPLOADED, f"etag {meta.etag if meta else '?'}", size)


async def _sweep(journal: UploadJournal, staged_files: list[str], run: BlockingRunner) -> list[Recovered]:
    """Remove staged files that no record names, but not those of a live session: a file is
    created before its record (and deleted after it), so a live process may hold a file whose
    record it is about to write. A file of a dead session without a record never had its open
    answered, or was being dropped. (Files named before sessions were in their names had their
    record written first: one listed here before the records were read is an orphan.)"""
    known = {os.path.basename(r.path) for r in await run(journal.records)}
    swept: list[Recovered] = []
    for name in staged_files:
        session = staging_session(name)
        if name not in known and (session is None or not await run(journal.alive, session)):
            path = os.path.join(journal.staging_dir, name)
            size = await run(_size, path)
            if size is not None:  # not just uploaded and removed by this recovery
                await run(_unlink, path)
                swept.append(Recovered("", "", "", size, ORPHAN, f"unjournalled staged file {path}"))
    return swept


def _list_dir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []


def _size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return None


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
