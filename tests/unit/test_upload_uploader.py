"""The uploader against MemoryStore: PUT or multipart, bounded parallel parts, streaming while a
sequential writer writes, only dirty parts again, truncate, append, failures kept and retried,
a full disk, multipart switched off. Parallelism and streaming are counted, never timed."""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from mountfs.backends.async_store import AsyncStore
from mountfs.backends.base import ObjectMeta, UploadPart
from mountfs.backends.memory import MemoryStore
from mountfs.config import WriteConfig
from mountfs.errors import (
    NoSpace,
    NotFound,
    Offline,
    Rejected,
    StoreUnavailable,
    Unsupported,
    UploadFailed,
    errno_for,
)
from mountfs.upload.journal import CLEAN, FAILED, REJECTED, STAGING, UploadJournal
from mountfs.upload.staging import Reader
from mountfs.upload.uploader import PendingUpload, StagedUpload, Uploader
from tests.unit.conftest import GatedStore

PART = 1024
DATA = bytes(range(251)) * 25  # 6275 bytes: six full parts and a tail


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[UploadJournal]:
    j = UploadJournal(str(tmp_path))
    yield j
    j.close()


def make_uploader(store: MemoryStore, journal: UploadJournal, *, concurrency: int = 3,
                  multipart: bool = True, retry_delay: float = 1.0) -> Uploader:
    return Uploader(AsyncStore(store, 16), journal, WriteConfig(part_size=PART, max_concurrency=concurrency),
                    supports_multipart=multipart, retry_delay=retry_delay)


@pytest.fixture
def uploader(store: MemoryStore, journal: UploadJournal) -> Uploader:
    return make_uploader(store, journal)


@pytest.fixture
async def running(uploader: Uploader) -> AsyncIterator[Uploader]:
    """The uploader with its background task (streaming, retries), as a mount runs it."""
    async with trio.open_nursery() as nursery:
        await nursery.start(uploader.run)
        yield uploader
        nursery.cancel_scope.cancel()


async def wait_for(condition: Callable[[], bool]) -> None:
    """Until `condition()` holds. Background work runs in threads, so this polls in real time (it
    works under a MockClock that only moves when a test jumps it); the limit is a hang guard."""
    give_up = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < give_up, "condition never became true"
        await trio.to_thread.run_sync(time.sleep, 0.001)


def staged_files(journal: UploadJournal) -> list[str]:
    return os.listdir(journal.staging_dir) if os.path.isdir(journal.staging_dir) else []


async def write_all(uploader: Uploader, staged: StagedUpload, data: bytes, chunk: int = 300,
                    start: int = 0) -> None:
    for offset in range(0, len(data), chunk):
        assert await uploader.write(staged, start + offset, data[offset:offset + chunk]) == len(
            data[offset:offset + chunk])


def stored(store: MemoryStore, key: str) -> bytes:
    meta = store.head(key)
    return store.get_range(key, 0, meta.size)


# --- one PUT or multipart ---------------------------------------------------------------------


async def test_small_file_is_one_put(uploader: Uploader, store: MemoryStore, journal: UploadJournal) -> None:
    staged = await uploader.open_staged("small.txt", None)
    assert journal.get(staged.id) is not None and journal.get(staged.id).state == STAGING  # type: ignore[union-attr]
    await uploader.write(staged, 0, b"hello ")
    await uploader.write(staged, 6, b"world")
    assert staged.size == 11 and await uploader.read(staged, 0, 100) == b"hello world"
    meta = await uploader.flush(staged)
    assert meta == store.head("small.txt") and meta.size == 11
    assert stored(store, "small.txt") == b"hello world"
    assert store.calls["put"] == 1 and store.calls["create_multipart"] == 0
    assert journal.get(staged.id).state == CLEAN  # type: ignore[union-attr]
    assert await uploader.flush(staged) == meta and store.calls["put"] == 1, "nothing new: no request"
    await uploader.release(staged)
    assert journal.records() == [] and staged_files(journal) == [] and uploader.pending() == []
    assert uploader.store.stats.requests["put"] == 1 and uploader.store.stats.bytes_uploaded == 11


async def test_new_empty_file_is_created(uploader: Uploader, store: MemoryStore) -> None:
    staged = await uploader.open_staged("empty", None)
    meta = await uploader.flush(staged)
    assert meta is not None and meta.size == 0 and stored(store, "empty") == b""


async def test_a_file_of_exactly_one_part_is_one_put(uploader: Uploader, store: MemoryStore) -> None:
    staged = await uploader.open_staged("one", None)
    await uploader.write(staged, 0, DATA[:PART])
    await uploader.flush(staged)
    assert store.calls["put"] == 1 and store.calls["upload_part"] == 0


class ConcurrencyStore(MemoryStore):
    """Counts upload_part calls running at once. Each waits until `expected` are running together
    (or gives up after a long guard), so a limit below `expected` shows as a lower peak."""

    def __init__(self, expected: int) -> None:
        super().__init__()
        self.expected = expected
        self.active = 0
        self.peak = 0
        self.reached = threading.Event()
        self.count_lock = threading.Lock()

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> UploadPart:
        with self.count_lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
            if self.active >= self.expected:
                self.reached.set()
        try:
            self.reached.wait(10)
            return super().upload_part(key, upload_id, number, data)
        finally:
            with self.count_lock:
                self.active -= 1


async def test_multipart_parts_go_in_parallel_within_the_limit(journal: UploadJournal) -> None:
    store = ConcurrencyStore(expected=3)
    uploader = make_uploader(store, journal, concurrency=3)
    staged = await uploader.open_staged("big.bin", None)
    await write_all(uploader, staged, DATA)
    meta = await uploader.flush(staged)
    assert stored(store, "big.bin") == DATA and meta is not None and meta.size == len(DATA)
    assert store.calls["create_multipart"] == 1 and store.calls["upload_part"] == 7
    assert store.calls["complete_multipart"] == 1 and store.calls["put"] == 0
    assert store.peak == 3, "three parts at once, never more"


async def test_the_limit_is_shared_by_every_file_of_a_store(journal: UploadJournal) -> None:
    store = ConcurrencyStore(expected=2)
    uploader = make_uploader(store, journal, concurrency=2)
    files = [await uploader.open_staged(f"f{i}", None) for i in range(3)]
    for staged in files:
        await write_all(uploader, staged, DATA[:3 * PART + 1], chunk=PART)
    async with trio.open_nursery() as nursery:
        for staged in files:
            nursery.start_soon(uploader.flush, staged)
    assert store.peak == 2 and store.calls["upload_part"] == 12
    assert all(stored(store, f"f{i}") == DATA[:3 * PART + 1] for i in range(3))


# --- streaming and dirty parts -----------------------------------------------------------------


async def test_sequential_writer_streams_parts_before_flush(running: Uploader, store: MemoryStore,
                                                            journal: UploadJournal) -> None:
    staged = await running.open_staged("stream.bin", None)
    await write_all(running, staged, DATA[:5 * PART], chunk=PART)
    # parts 1-4 have a byte after them; part 5 may still grow into a tail-sized last part
    await wait_for(lambda: store.calls["upload_part"] == 4 and not staged.streaming)
    record = journal.get(staged.id)
    assert record is not None and record.upload_id is not None
    assert [p.number for p in record.parts] == [1, 2, 3, 4], "parts are journalled as they go up"
    await write_all(running, staged, DATA[5 * PART:], chunk=PART, start=5 * PART)
    await wait_for(lambda: store.calls["upload_part"] == 6 and not staged.streaming)
    assert store.calls["complete_multipart"] == 0, "nothing is complete before flush"
    await running.flush(staged)
    assert store.calls["upload_part"] == 7, "flush sent only the last part"
    assert running.stats.streamed_parts == 6
    assert stored(store, "stream.bin") == DATA


async def test_a_rewrite_of_a_streamed_part_sends_just_that_part_again(running: Uploader,
                                                                       store: MemoryStore) -> None:
    staged = await running.open_staged("rewrite.bin", None)
    await write_all(running, staged, DATA, chunk=PART)
    await wait_for(lambda: store.calls["upload_part"] == 6 and not staged.streaming)
    await running.write(staged, PART + 10, b"REWRITTEN")
    assert not staged.file.sequential
    await running.flush(staged)
    expected = DATA[:PART + 10] + b"REWRITTEN" + DATA[PART + 19:]
    assert stored(store, "rewrite.bin") == expected
    assert store.calls["upload_part"] == 8, "six streamed, then part 2 again and the tail"


async def test_after_a_failed_complete_only_dirty_parts_go_again(uploader: Uploader,
                                                                 store: MemoryStore) -> None:
    staged = await uploader.open_staged("random.bin", None)
    for offset in reversed(range(0, len(DATA), 500)):  # a random writer: no streaming
        await uploader.write(staged, offset, DATA[offset:offset + 500])
    store.inject("complete_multipart", StoreUnavailable("store down"))
    with pytest.raises(UploadFailed):
        await uploader.flush(staged)
    assert store.calls["upload_part"] == 7
    await uploader.write(staged, 3 * PART + 1, b"!!")
    await uploader.flush(staged)
    assert store.calls["upload_part"] == 8, "only part 4 went again"
    assert store.calls["create_multipart"] == 1, "the same multipart upload was completed"
    assert stored(store, "random.bin") == DATA[:3 * PART + 1] + b"!!" + DATA[3 * PART + 3:]


async def test_a_lost_multipart_upload_is_started_again(uploader: Uploader, store: MemoryStore) -> None:
    staged = await uploader.open_staged("lost.bin", None)
    await write_all(uploader, staged, DATA)
    store.inject("complete_multipart", NotFound("NoSuchUpload"))
    await uploader.flush(staged)
    assert store.calls["create_multipart"] == 2 and store.calls["upload_part"] == 14
    assert stored(store, "lost.bin") == DATA


async def test_an_upload_failing_again_and_again_starts_afresh(uploader: Uploader,
                                                               store: MemoryStore) -> None:
    staged = await uploader.open_staged("again.bin", None)
    await write_all(uploader, staged, DATA)
    store.inject("complete_multipart", StoreUnavailable("500 InternalError"), times=3)
    for _ in range(3):
        with pytest.raises(UploadFailed):
            await uploader.flush(staged)
    assert store.calls["upload_part"] == 7 and store.calls["create_multipart"] == 1
    await uploader.flush(staged)
    assert store.calls["abort_multipart"] == 1 and store.calls["create_multipart"] == 2
    assert store.calls["upload_part"] == 14 and stored(store, "again.bin") == DATA


async def test_calls_refused_while_the_store_is_offline_do_not_start_afresh(uploader: Uploader,
                                                                              store: MemoryStore) -> None:
    """A store known to be offline refuses calls without asking it: those failures say nothing
    about the multipart upload, which is kept with its parts however many there are."""
    staged = await uploader.open_staged("offline.bin", None)
    await write_all(uploader, staged, DATA)
    store.inject("complete_multipart", Offline("memory/mem is offline"), times=5)
    for _ in range(5):
        with pytest.raises(UploadFailed):
            await uploader.flush(staged)
    await uploader.flush(staged)
    assert store.calls["create_multipart"] == 1 and store.calls["abort_multipart"] == 0
    assert store.calls["upload_part"] == 7 and stored(store, "offline.bin") == DATA


# --- truncate, overwrite, append ---------------------------------------------------------------


async def test_truncate_shrinks_and_grows(uploader: Uploader, store: MemoryStore) -> None:
    staged = await uploader.open_staged("t.bin", None)
    await write_all(uploader, staged, DATA)
    await uploader.truncate(staged, 2 * PART + 100)
    assert staged.size == 2 * PART + 100
    await uploader.flush(staged)
    assert stored(store, "t.bin") == DATA[:2 * PART + 100]
    await uploader.truncate(staged, 2 * PART + 200)
    await uploader.flush(staged)
    assert stored(store, "t.bin") == DATA[:2 * PART + 100] + b"\0" * 100
    await uploader.truncate(staged, 10)
    meta = await uploader.flush(staged)
    assert stored(store, "t.bin") == DATA[:10] and meta is not None and meta.size == 10


async def test_open_with_truncation_replaces_the_object(uploader: Uploader, store: MemoryStore) -> None:
    base = store.put_object("o", b"old content")
    staged = await uploader.open_staged("o", base)  # O_TRUNC: no fill, and the emptying is a change
    assert staged.size == 0 and staged.dirty
    await uploader.flush(staged)
    assert stored(store, "o") == b""


def reader(store: MemoryStore, meta: ObjectMeta) -> Reader:
    async def read(offset: int, length: int) -> bytes:
        return await trio.to_thread.run_sync(store.get_range, meta.key, offset, length, meta.etag)

    return read


async def test_append_to_an_existing_object(running: Uploader, store: MemoryStore,
                                            journal: UploadJournal) -> None:
    old = DATA[:3 * PART + 500]
    base = store.put_object("log.txt", old)
    staged = await running.open_staged("log.txt", base, reader(store, base))
    assert staged.size == len(old) and not staged.dirty
    assert journal.get(staged.id).state == CLEAN  # type: ignore[union-attr]
    assert await running.flush(staged) == base and store.calls["put"] + store.calls["upload_part"] == 0
    await write_all(running, staged, b"appended line\n" * 100, start=len(old))
    assert journal.get(staged.id).state == STAGING  # type: ignore[union-attr]
    meta = await running.flush(staged)
    assert stored(store, "log.txt") == old + b"appended line\n" * 100
    assert meta is not None and meta.etag != base.etag and meta == store.head("log.txt")
    await running.release(staged)
    assert journal.records() == [] and staged_files(journal) == []


async def test_overwrite_in_the_middle(uploader: Uploader, store: MemoryStore) -> None:
    base = store.put_object("mid", DATA)
    staged = await uploader.open_staged("mid", base, reader(store, base))
    await uploader.write(staged, 2000, b"XYZ")
    assert await uploader.read(staged, 1999, 5) == DATA[1999:2000] + b"XYZ" + DATA[2003:2004]
    await uploader.flush(staged)
    assert stored(store, "mid") == DATA[:2000] + b"XYZ" + DATA[2003:]


async def test_opened_and_closed_without_writing_uploads_nothing(uploader: Uploader, store: MemoryStore,
                                                                 journal: UploadJournal) -> None:
    base = store.put_object("ro", b"unchanged")
    store.reset_counters()
    staged = await uploader.open_staged("ro", base, reader(store, base))
    assert await uploader.flush(staged) == base
    await uploader.release(staged)
    assert store.calls["put"] == 0 and journal.records() == [] and staged_files(journal) == []


# --- failures, retries, drain --------------------------------------------------------------------


async def test_failed_upload_keeps_the_data_and_is_retried(running: Uploader, store: MemoryStore,
                                                           journal: UploadJournal,
                                                           mock_clock: trio.testing.MockClock) -> None:
    staged = await running.open_staged("precious", None)
    await running.write(staged, 0, b"do not lose me")
    store.inject("put", StoreUnavailable("store down"), times=3)
    with pytest.raises(UploadFailed) as caught:
        await running.flush(staged)
    assert errno_for(caught.value) == errno.EIO
    assert "precious" in str(caught.value) and staged.path in str(caught.value)
    record = journal.get(staged.id)
    assert record is not None and record.state == FAILED and "store down" in (record.error or "")
    [pending] = running.pending()
    assert (pending.key, pending.size, pending.state, pending.attempts) == ("precious", 14, FAILED, 1)
    await running.release(staged)  # the application closed it anyway
    assert os.path.exists(staged.path), "the staged data stays"
    for attempt, backoff in ((1, 1.0), (2, 2.0), (3, 4.0)):  # retried with exponential backoff
        await wait_for(lambda: staged.attempts == attempt and staged.retry_at is not None)  # noqa: B023
        mock_clock.jump(backoff - 0.01)
        await trio.testing.wait_all_tasks_blocked()
        assert store.calls["put"] == attempt, "not before its time"
        mock_clock.jump(0.01)
    await wait_for(lambda: running.pending() == [] and journal.records() == [] and not staged_files(journal))
    assert store.calls["put"] == 4, "two background retries failed, the third succeeded"
    assert stored(store, "precious") == b"do not lose me"


async def test_an_upload_the_store_refuses_for_good_ends_and_keeps_the_data(
        running: Uploader, store: MemoryStore, journal: UploadJournal,
        mock_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture) -> None:
    """A 4xx that retrying cannot fix (here SeaweedFS's answer to a key too long): EIO, the record
    says rejected, the staged file stays and shows in `pending`, nothing retries it, and a drain at
    unmount does not wait for it. A change to the file (here a rename) lets it try again."""
    staged = await running.open_staged("refused", None)
    await running.write(staged, 0, b"keep me")
    store.inject("put", Rejected("PUT s3://mem/refused: refused by the store (KeyTooLongError 400 "
                                 "Your key is too long.)"), times=1000)
    with pytest.raises(UploadFailed) as caught:
        await running.flush(staged)
    assert errno_for(caught.value) == errno.EIO and "not retried" in str(caught.value)
    assert "refused the upload of memory/mem/refused for good" in caplog.text and staged.path in caplog.text
    record = journal.get(staged.id)
    assert record is not None and record.state == REJECTED and "KeyTooLongError" in (record.error or "")
    await running.release(staged)
    [pending] = running.pending()
    assert (pending.key, pending.state, pending.staging_path) == ("refused", REJECTED, staged.path)
    assert os.path.exists(staged.path) and staged.retry_at is None
    mock_clock.jump(3600)
    await trio.testing.wait_all_tasks_blocked()
    assert store.calls["put"] == 1, "never retried by itself"
    with trio.fail_after(5):  # (the mock clock only moves when jumped: no time passes in a drain)
        left = await running.drain(timeout=3600)
    assert [(p.key, p.state) for p in left] == [("refused", REJECTED)] and store.calls["put"] == 1
    store.clear_faults()
    await running.rename(staged, "accepted")
    await wait_for(lambda: running.pending() == [] and journal.records() == [] and not staged_files(journal))
    assert stored(store, "accepted") == b"keep me"


async def test_a_refused_multipart_upload_is_aborted(uploader: Uploader, store: MemoryStore) -> None:
    staged = await uploader.open_staged("refused-big", None)
    await write_all(uploader, staged, DATA)
    store.inject("complete_multipart", Rejected("COMPLETE MULTIPART: refused by the store (400)"))
    with pytest.raises(UploadFailed):
        await uploader.flush(staged)
    assert staged.state == REJECTED and staged.upload_id is None
    assert store.calls["abort_multipart"] == 1, "nothing stays open on the server"


async def test_release_of_an_unflushed_file_uploads_it_in_the_background(
        running: Uploader, store: MemoryStore) -> None:
    staged = await running.open_staged("later", None)
    await running.write(staged, 0, b"x")
    await running.release(staged)
    await wait_for(lambda: running.pending() == [])
    assert stored(store, "later") == b"x"


async def test_drain_uploads_what_is_staged_and_reports_what_is_left(
        uploader: Uploader, store: MemoryStore, journal: UploadJournal,
        mock_clock: trio.testing.MockClock) -> None:
    good = await uploader.open_staged("good", None)
    await uploader.write(good, 0, b"ok")
    bad = await uploader.open_staged("bad", None)
    await uploader.write(bad, 0, DATA)
    store.inject("create_multipart", StoreUnavailable("down"), times=1000)
    left: list[PendingUpload] = []

    async def drain() -> None:
        left.extend(await uploader.drain(timeout=30))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain)
        await wait_for(lambda: store.calls["create_multipart"] == 1 and bad.retry_at is not None)
        mock_clock.jump(1)  # the first retry, after the backoff
        await wait_for(lambda: bad.attempts == 2)
        mock_clock.jump(30)  # time is up
    assert stored(store, "good") == b"ok"
    assert [(p.key, p.size, p.state) for p in left] == [("bad", len(DATA), FAILED)]
    assert [r.key for r in journal.records() if r.state != CLEAN] == ["bad"]


async def test_full_disk_is_enospc_for_the_writer_only(uploader: Uploader, store: MemoryStore,
                                                       journal: UploadJournal,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    other = await uploader.open_staged("other", None)
    await uploader.write(other, 0, b"other file")
    staged = await uploader.open_staged("full", None)
    await uploader.write(staged, 0, b"first")
    real = os.pwrite

    def full(fd: int, data: bytes, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(NoSpace) as caught:
        await uploader.write(staged, 5, b" second")
    assert errno_for(caught.value) == errno.ENOSPC
    monkeypatch.setattr(os, "pwrite", real)
    assert staged.size == 5 and await uploader.read(other, 0, 100) == b"other file"
    await uploader.write(staged, 5, b" again")
    await uploader.flush(staged)
    await uploader.flush(other)
    assert stored(store, "full") == b"first again" and stored(store, "other") == b"other file"


# --- multipart off, discard, rename -------------------------------------------------------------


async def test_multipart_off_is_one_put(store: MemoryStore, journal: UploadJournal) -> None:
    uploader = make_uploader(store, journal, multipart=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(uploader.run)
        staged = await uploader.open_staged("whole", None)
        await write_all(uploader, staged, DATA, chunk=PART)
        await uploader.flush(staged)
        nursery.cancel_scope.cancel()
    assert store.calls["put"] == 1
    assert store.calls["create_multipart"] == 0 and store.calls["upload_part"] == 0
    assert stored(store, "whole") == DATA


class NoMultipartStore(MemoryStore):
    def create_multipart(self, key: str, mtime_ns: int | None = None) -> str:
        self.calls["create_multipart"] += 1
        raise Unsupported("multipart uploads are off for this host")


async def test_a_store_refusing_multipart_falls_back_to_put(journal: UploadJournal) -> None:
    store = NoMultipartStore()
    uploader = make_uploader(store, journal)
    for key in ("a", "b"):
        staged = await uploader.open_staged(key, None)
        await write_all(uploader, staged, DATA)
        await uploader.flush(staged)
        assert stored(store, key) == DATA
    assert store.calls["create_multipart"] == 1, "asked once, then remembered"
    assert store.calls["put"] == 2 and not uploader.multipart


async def test_discard_aborts_the_upload_and_keeps_nothing(running: Uploader, store: MemoryStore,
                                                           journal: UploadJournal) -> None:
    staged = await running.open_staged("doomed", None)
    await write_all(running, staged, DATA, chunk=PART)
    await wait_for(lambda: store.calls["upload_part"] == 6 and not staged.streaming)
    await running.discard(staged)
    assert store.calls["abort_multipart"] == 1 and journal.records() == []
    await running.write(staged, 0, b"still writable while open")  # an unlinked file stays usable
    assert await running.flush(staged) is None
    await running.release(staged)
    assert store.keys() == [] and staged_files(journal) == [] and running.pending() == []
    assert store.calls["complete_multipart"] == 0 and store.calls["put"] == 0


async def test_rename_while_staged_uploads_under_the_new_key(uploader: Uploader, store: MemoryStore,
                                                             journal: UploadJournal) -> None:
    staged = await uploader.open_staged("tmp.part", None)
    await write_all(uploader, staged, DATA)
    await uploader.rename(staged, "final.bin")
    assert journal.get(staged.id).key == "final.bin"  # type: ignore[union-attr]
    await uploader.flush(staged)
    assert store.keys() == ["final.bin"] and stored(store, "final.bin") == DATA
    assert uploader.staged_for("final.bin") is staged and uploader.staged_for("tmp.part") is None


async def test_a_write_during_an_upload_leaves_the_file_dirty(journal: UploadJournal) -> None:
    store = GatedStore()
    uploader = make_uploader(store, journal)
    staged = await uploader.open_staged("racy", None)
    await uploader.write(staged, 0, b"first")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(uploader.flush, staged)
        await wait_for(store.entered.is_set)
        await uploader.write(staged, 5, b" second")
        store.gate.set()
    assert stored(store, "racy") == b"first", "the upload read the bytes before the write"
    assert staged.dirty and journal.get(staged.id).state == STAGING  # type: ignore[union-attr]
    await uploader.flush(staged)
    assert stored(store, "racy") == b"first second" and not staged.dirty


async def test_part_size_grows_to_stay_within_the_part_limit(uploader: Uploader, store: MemoryStore,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import mountfs.upload.uploader as module

    monkeypatch.setattr(module, "MAX_PARTS", 4)
    staged = await uploader.open_staged("many-parts", None)
    await write_all(uploader, staged, DATA)  # 7 parts of PART; at most 4 allowed: parts of 2 * PART
    await uploader.flush(staged)
    assert store.calls["upload_part"] == 4 and stored(store, "many-parts") == DATA


async def test_uploads_are_announced_and_a_released_upload_can_be_reopened(uploader: Uploader,
                                                                           store: MemoryStore) -> None:
    """What the mount uses: `on_uploaded` after every upload, `staged_uploads` for listings, and
    `reopen` so that a file whose upload failed after its last close stays the one staged file."""
    announced: list[tuple[str, str]] = []
    uploader.on_uploaded = lambda s: announced.append((s.key, s.meta.etag if s.meta else ""))
    staged = await uploader.open_staged("again", None)
    await uploader.write(staged, 0, b"one")
    store.inject("put", StoreUnavailable("down"))
    with pytest.raises(UploadFailed):
        await uploader.flush(staged)
    assert announced == []
    await uploader.release(staged)
    assert uploader.staged_uploads() == [staged] and staged.released
    assert uploader.reopen(staged) and not staged.released
    await uploader.write(staged, 3, b" two")
    meta = await uploader.flush(staged)
    assert meta is not None and announced == [("again", meta.etag)]
    assert uploader.staged_uploads() == [staged], "opened again: stays until the next release"
    await uploader.release(staged)
    assert uploader.staged_uploads() == [] and not uploader.reopen(staged)
    assert stored(store, "again") == b"one two"


async def test_a_reopen_while_release_waits_for_the_flush_lock_keeps_the_upload(
        uploader: Uploader, store: MemoryStore, journal: UploadJournal) -> None:
    """close, then open(O_APPEND) at once: the release of the clean file waits for the flush lock
    (held here as a flush of another handle would hold it), the open revives it meanwhile; the new
    handle's writes must land, not fail because the release dropped the upload under it."""
    staged = await uploader.open_staged("log", None)
    await uploader.write(staged, 0, b"first\n")
    await uploader.flush(staged)
    async with trio.open_nursery() as nursery:
        await staged.flush_lock.acquire()
        nursery.start_soon(uploader.release, staged)
        await trio.testing.wait_all_tasks_blocked()
        assert staged.released, "the release is waiting for the lock"
        assert uploader.reopen(staged)
        staged.flush_lock.release()
    assert uploader.staged_uploads() == [staged] and os.path.exists(staged.path)
    assert await uploader.write(staged, 6, b"second\n") == 7
    await uploader.flush(staged)
    await uploader.release(staged)
    assert stored(store, "log") == b"first\nsecond\n"
    assert uploader.staged_uploads() == [] and journal.records() == [] and staged_files(journal) == []


# --- the user's mtime (utimens while staged) --------------------------------------------------------

MTIME = 1_600_000_000_123_456_789


async def test_an_mtime_set_while_staged_goes_up_with_the_put(uploader: Uploader, store: MemoryStore,
                                                              journal: UploadJournal) -> None:
    staged = await uploader.open_staged("small", None)
    await uploader.write(staged, 0, b"bytes")
    await uploader.set_mtime(staged, MTIME)
    assert journal.get(staged.id).mtime_ns == MTIME  # type: ignore[union-attr]
    assert store.calls["put"] == 0, "nothing goes up before the close"
    meta = await uploader.flush(staged)
    assert meta is not None and meta.mtime_ns == MTIME == store.head("small").mtime_ns
    assert store.calls["put"] == 1 and store.calls["set_mtime"] == 0, "one request: no copy afterwards"
    assert not staged.dirty and journal.get(staged.id).state == CLEAN  # type: ignore[union-attr]


async def test_an_mtime_set_while_parts_stream_is_set_after_the_upload(
        running: Uploader, store: MemoryStore) -> None:
    """S3 fixes metadata when the multipart upload is created: one created before utimens (cp -p of a
    big file) cannot carry it, so the store's set_mtime follows the upload."""
    staged = await running.open_staged("big", None)
    await write_all(running, staged, DATA, chunk=PART)
    await wait_for(lambda: store.calls["create_multipart"] == 1 and not staged.streaming)
    await running.set_mtime(staged, MTIME)
    await running.flush(staged)
    assert stored(store, "big") == DATA and store.head("big").mtime_ns == MTIME
    assert store.calls["set_mtime"] == 1 and not staged.dirty


async def test_an_mtime_set_during_the_upload_follows_it(journal: UploadJournal) -> None:
    store = GatedStore()
    uploader = make_uploader(store, journal)
    staged = await uploader.open_staged("racy", None)
    await uploader.write(staged, 0, b"data")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(uploader.flush, staged)
        await wait_for(store.entered.is_set)
        await uploader.set_mtime(staged, MTIME)  # the PUT is under way: it does not wait for it
        assert store.calls["set_mtime"] == 0
        store.gate.set()
    assert store.head("racy").mtime_ns == MTIME and store.calls["set_mtime"] == 1
    assert not staged.dirty


async def test_an_mtime_on_unchanged_staged_bytes_is_set_at_once(uploader: Uploader, store: MemoryStore,
                                                                 journal: UploadJournal) -> None:
    old = store.put_object("kept", b"old bytes")
    staged = await uploader.open_staged("kept", old, _reader_of(store, "kept"))
    await uploader.set_mtime(staged, MTIME)
    assert store.head("kept").mtime_ns == MTIME and store.calls["set_mtime"] == 1
    assert store.calls["put"] == 0 and not staged.dirty
    assert staged.meta is not None and staged.meta.etag == store.head("kept").etag


async def test_a_failed_set_mtime_is_eio_and_retried(running: Uploader, store: MemoryStore,
                                                     journal: UploadJournal) -> None:
    old = store.put_object("kept", b"old bytes")
    staged = await running.open_staged("kept", old, _reader_of(store, "kept"))
    store.inject("set_mtime", StoreUnavailable("503 (gave up)"))
    with pytest.raises(UploadFailed):
        await running.set_mtime(staged, MTIME)
    assert staged.dirty and journal.get(staged.id).mtime_ns == MTIME  # type: ignore[union-attr]
    await running.release(staged)
    await wait_for(lambda: store.calls["set_mtime"] == 2 and not staged.dirty)
    assert store.head("kept").mtime_ns == MTIME and store.calls["put"] == 0, "the bytes never went again"


async def test_a_write_after_the_mtime_makes_it_the_writes_again(uploader: Uploader, store: MemoryStore,
                                                                 journal: UploadJournal) -> None:
    staged = await uploader.open_staged("f", None)
    await uploader.write(staged, 0, b"one")
    await uploader.set_mtime(staged, MTIME)
    await uploader.write(staged, 3, b" two")
    assert journal.get(staged.id).mtime_ns is None  # type: ignore[union-attr]
    await uploader.flush(staged)
    assert store.head("f").mtime_ns != MTIME and store.calls["set_mtime"] == 0


def _reader_of(store: MemoryStore, key: str) -> Reader:
    async def read(offset: int, length: int) -> bytes:
        return store.get_range(key, offset, length)

    return read
