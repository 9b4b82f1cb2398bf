"""Recovery: what a crashed (or kill -9ed) process left in the journal is uploaded whole by the next."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from mountfs.backends.async_store import AsyncStore
from mountfs.backends.memory import MemoryStore
from mountfs.config import WriteConfig
from mountfs.errors import Rejected, StoreUnavailable, UploadFailed
from mountfs.upload.journal import FAILED, REJECTED, JournalRecord, UploadJournal
from mountfs.upload.recovery import (
    CLEARED,
    MISSING,
    NO_STORE,
    ORPHAN,
    REFUSED,
    UNCHANGED,
    UPLOADED,
    Recovered,
    recover,
)
from mountfs.upload.staging import Reader
from mountfs.upload.uploader import CREATE_WINDOW, Uploader

PART = 1024
DATA = bytes(range(251)) * 25  # six full parts and a tail
REPO = Path(__file__).resolve().parents[2]


def make_uploader(store: MemoryStore, journal: UploadJournal) -> Uploader:
    return Uploader(AsyncStore(store, 8), journal, WriteConfig(part_size=PART, max_concurrency=3))


def outcomes(report: list[Recovered]) -> dict[str, str]:
    return {item.key or item.detail: item.outcome for item in report}


async def test_a_crash_loses_nothing(tmp_path: Path) -> None:
    store = MemoryStore()
    old = store.put_object("kept.txt", b"old bytes")
    journal = UploadJournal(str(tmp_path))
    uploader = make_uploader(store, journal)
    async with trio.open_nursery() as nursery:
        await nursery.start(uploader.run)
        small = await uploader.open_staged("small.txt", None)
        await uploader.write(small, 0, b"not yet flushed")
        big = await uploader.open_staged("big.bin", None)
        for offset in range(0, 4 * PART + 10, PART):  # parts 1-4 stream; the rest never goes up
            await uploader.write(big, offset, DATA[offset:offset + PART])
        with trio.fail_after(30):
            while store.calls["upload_part"] < 4 or big.streaming:
                await trio.sleep(0.001)
        await uploader.write(big, 4 * PART, DATA[4 * PART:])
        await uploader.write(big, 10, b"CHANGED")  # part 1 changes after it went up
        await uploader.open_staged("kept.txt", old, _reader(store, "kept.txt", old.etag))
        lost = await uploader.open_staged("lost.txt", None)
        await uploader.write(lost, 0, b"gone")
        nursery.cancel_scope.cancel()
    os.unlink(lost.path)  # say, someone cleaned the cache dir by hand
    Path(journal.staging_dir, "stray").write_bytes(b"no record")
    journal.close()  # the process dies: no flush, no release, no drain
    assert store.keys() == ["kept.txt"]

    store.reset_counters()
    journal = UploadJournal(str(tmp_path))
    uploader = make_uploader(store, journal)
    report = await recover(journal, [uploader])
    assert outcomes(report) == {
        "small.txt": UPLOADED, "big.bin": UPLOADED, "kept.txt": UNCHANGED, "lost.txt": MISSING,
        f"unjournalled staged file {journal.staging_dir}/stray": ORPHAN,
    }
    assert all(item.describe() for item in report)
    assert store.get_range("small.txt", 0, 100) == b"not yet flushed"
    assert store.get_range("big.bin", 0, len(DATA)) == DATA[:10] + b"CHANGED" + DATA[17:]
    assert store.get_range("kept.txt", 0, 100) == b"old bytes"
    assert store.calls["create_multipart"] == 0, "the multipart upload of the dead process was resumed"
    assert store.calls["upload_part"] == 4, "parts 2-4 still matched their ETags; 1, 5, 6, 7 went up"
    assert journal.records() == [] and os.listdir(journal.staging_dir) == []
    assert await recover(journal, [uploader]) == []
    journal.close()


def _reader(store: MemoryStore, key: str, etag: str) -> Reader:
    async def read(offset: int, length: int) -> bytes:
        return await trio.to_thread.run_sync(store.get_range, key, offset, length, etag)

    return read


async def test_an_mtime_set_before_the_crash_reaches_the_store(tmp_path: Path) -> None:
    """utimens on staged files (a new one, a big one whose multipart upload began without it, one
    whose bytes were already in the store but whose set_mtime failed), then the process dies."""
    when = 1_600_000_000_123_456_789
    store = MemoryStore()
    old = store.put_object("touched.txt", b"old bytes")
    journal = UploadJournal(str(tmp_path))
    uploader = make_uploader(store, journal)
    async with trio.open_nursery() as nursery:
        await nursery.start(uploader.run)
        small = await uploader.open_staged("small.txt", None)
        await uploader.write(small, 0, b"not yet flushed")
        await uploader.set_mtime(small, when)
        big = await uploader.open_staged("big.bin", None)
        for offset in range(0, len(DATA), PART):
            await uploader.write(big, offset, DATA[offset:offset + PART])
        with trio.fail_after(30):
            while store.calls["upload_part"] < 2 or big.streaming:
                await trio.sleep(0.001)
        await uploader.set_mtime(big, when + 1)
        touched = await uploader.open_staged("touched.txt", old, _reader(store, "touched.txt", old.etag))
        store.inject("set_mtime", StoreUnavailable("503 (gave up)"))
        with pytest.raises(UploadFailed):
            await uploader.set_mtime(touched, when + 2)
        nursery.cancel_scope.cancel()
    journal.close()
    assert store.head("touched.txt").mtime_ns != when + 2

    journal = UploadJournal(str(tmp_path))
    report = await recover(journal, [make_uploader(store, journal)])
    assert outcomes(report) == {"small.txt": UPLOADED, "big.bin": UPLOADED, "touched.txt": UPLOADED}
    assert store.head("small.txt").mtime_ns == when
    assert store.head("big.bin").mtime_ns == when + 1
    assert store.get_range("big.bin", 0, len(DATA)) == DATA
    assert store.head("touched.txt").mtime_ns == when + 2
    assert store.get_range("touched.txt", 0, 100) == b"old bytes"
    assert journal.records() == []
    journal.close()


async def test_records_of_a_missing_store_are_kept_and_failures_retried(tmp_path: Path) -> None:
    journal = UploadJournal(str(tmp_path))
    first = make_uploader(MemoryStore("other-bucket"), journal)
    staged = await first.open_staged("elsewhere", None)
    await first.write(staged, 0, b"x")
    mine = make_uploader(MemoryStore(), journal)
    failing = await mine.open_staged("failing", None)
    await mine.write(failing, 0, b"y")
    journal.close()

    journal = UploadJournal(str(tmp_path))
    store = MemoryStore()
    store.inject("put", StoreUnavailable("still down"))
    uploader = make_uploader(store, journal)
    report = await recover(journal, [uploader])
    assert outcomes(report) == {"elsewhere": NO_STORE, "failing": FAILED}
    [pending] = uploader.pending()
    assert (pending.key, pending.state) == ("failing", FAILED), "left to the background retries"
    assert sorted(r.key for r in journal.records()) == ["elsewhere", "failing"]
    await uploader.drain(timeout=5)
    assert store.get_range("failing", 0, 10) == b"y"
    assert [r.key for r in journal.records()] == ["elsewhere"]
    journal.close()


async def test_an_upload_the_store_refused_is_kept_not_retried(tmp_path: Path) -> None:
    """A record the store refused for good: each recovery says where its data is and does not send
    it again; once the staged file is removed by hand, the record goes too."""
    journal = UploadJournal(str(tmp_path))
    store = MemoryStore()
    uploader = make_uploader(store, journal)
    staged = await uploader.open_staged("refused", None)
    await uploader.write(staged, 0, b"kept")
    store.inject("put", Rejected("PUT: refused by the store (KeyTooLongError 400)"))
    with pytest.raises(UploadFailed):
        await uploader.flush(staged)
    journal.close()

    for _ in range(2):
        journal = UploadJournal(str(tmp_path))
        store.reset_counters()
        uploader = make_uploader(store, journal)
        [item] = await recover(journal, [uploader])
        assert (item.key, item.outcome) == ("refused", REFUSED)
        assert staged.path in item.detail and "KeyTooLongError" in item.detail
        assert store.calls["put"] == 0, "not sent again"
        [pending] = uploader.pending()
        assert (pending.key, pending.state, pending.staging_path) == ("refused", REJECTED, staged.path)
        assert await uploader.drain(timeout=5) == uploader.pending()
        journal.close()

    os.unlink(staged.path)
    journal = UploadJournal(str(tmp_path))
    [item] = await recover(journal, [make_uploader(store, journal)])
    assert item.outcome == CLEARED and journal.records() == []
    journal.close()


KILLED = textwrap.dedent("""
    import os, signal, sys
    import trio
    from mountfs.backends.async_store import AsyncStore
    from mountfs.backends.memory import MemoryStore
    from mountfs.config import WriteConfig
    from mountfs.upload.journal import UploadJournal
    from mountfs.upload.uploader import Uploader

    async def main():
        journal = UploadJournal(sys.argv[1])
        uploader = Uploader(AsyncStore(MemoryStore(), 4), journal, WriteConfig(part_size=1024))
        staged = await uploader.open_staged("killed.bin", None)
        for offset in range(0, 5000, 1000):
            await uploader.write(staged, offset, bytes([offset // 1000 + 65]) * 1000)
        os.kill(os.getpid(), signal.SIGKILL)

    trio.run(main)
""")


async def test_kill_9_while_writing(tmp_path: Path) -> None:
    done = await trio.run_process([sys.executable, "-c", KILLED, str(tmp_path)], cwd=REPO, check=False)
    assert done.returncode == -signal.SIGKILL
    journal = UploadJournal(str(tmp_path))
    store = MemoryStore()
    report = await recover(journal, [make_uploader(store, journal)])
    assert [(r.key, r.outcome, r.size) for r in report] == [("killed.bin", UPLOADED, 5000)]
    assert store.get_range("killed.bin", 0, 5000) == b"".join(bytes([c]) * 1000 for c in b"ABCDE")
    journal.close()


class _Died(BaseException):
    """The process ends here (as os._exit would): nothing after it runs, no handler catches it."""


async def test_a_multipart_upload_created_but_never_journalled_is_aborted(tmp_path: Path) -> None:
    """The process dies right after the store made the multipart upload, before its id was
    journalled: recovery finds the upload by listing the key's uploads and aborts it; an upload of
    the same key by another writer, there before, is left alone; the data then goes up."""
    store = MemoryStore()
    foreign = store.create_multipart("big.bin")  # another writer's, in progress
    journal = UploadJournal(str(tmp_path))
    uploader = make_uploader(store, journal)
    created: list[str] = []
    real_create = store.create_multipart

    def create_then_die(key: str, mtime_ns: int | None = None) -> str:
        created.append(real_create(key, mtime_ns))
        raise _Died

    store.create_multipart = create_then_die  # type: ignore[method-assign]
    staged = await uploader.open_staged("big.bin", None)
    await uploader.write(staged, 0, DATA)
    with pytest.raises(_Died):
        await uploader.flush(staged)
    journal.close()
    [orphan] = created
    assert sorted(u for u, _ in store.multipart_uploads("big.bin")) == sorted([foreign, orphan])

    store.create_multipart = real_create  # type: ignore[method-assign]
    journal = UploadJournal(str(tmp_path))
    [left] = journal.records()
    assert left.upload_id is None and left.creating is not None and left.known_uploads == (foreign,)
    report = await recover(journal, [make_uploader(store, journal)])
    assert outcomes(report) == {"big.bin": UPLOADED}
    assert store.get_range("big.bin", 0, len(DATA)) == DATA
    assert [u for u, _ in store.multipart_uploads("big.bin")] == [foreign], "the orphan is aborted"
    assert journal.records() == []
    journal.close()


@pytest.mark.parametrize("listing", ["answers", "fails"])
async def test_parts_on_the_server_whose_answers_were_never_journalled_are_reused(tmp_path: Path,
                                                                                 listing: str) -> None:
    """kill -9 while parts were being sent: the server has them, the journal only the upload id.
    Recovery lists the upload's parts and reuses those whose ETag is the MD5 of the staged bytes;
    the others (a part sent with older bytes, the parts never sent) go up again. A listing that
    fails costs only the parts it would have spared."""
    store = MemoryStore()
    journal = UploadJournal(str(tmp_path))
    uploader = make_uploader(store, journal)
    real_upload_part = store.upload_part

    def die(key: str, upload_id: str, number: int, data: bytes) -> object:
        raise _Died

    store.upload_part = die  # type: ignore[method-assign,assignment]
    staged = await uploader.open_staged("big.bin", None)
    await uploader.write(staged, 0, DATA)
    with pytest.raises(_Died):
        await uploader.flush(staged)
    journal.close()
    store.upload_part = real_upload_part  # type: ignore[method-assign]
    [upload_id] = [u for u, _ in store.multipart_uploads("big.bin")]
    for number in (1, 2, 4):  # what the requests of the dead process left on the server
        real_upload_part("big.bin", upload_id, number, DATA[(number - 1) * PART:number * PART])
    real_upload_part("big.bin", upload_id, 3, bytes(PART))  # older bytes: their MD5 is not the ETag

    journal = UploadJournal(str(tmp_path))
    [left] = journal.records()
    assert left.upload_id == upload_id and left.parts == ()
    store.reset_counters()
    if listing == "fails":
        store.inject("multipart_parts", StoreUnavailable("LIST PARTS: connection reset"))
    report = await recover(journal, [make_uploader(store, journal)])
    assert outcomes(report) == {"big.bin": UPLOADED}
    assert store.get_range("big.bin", 0, len(DATA)) == DATA
    assert store.calls["create_multipart"] == 0, "the dead process's upload was resumed"
    if listing == "answers":
        assert store.calls["upload_part"] == 4, "parts 1, 2 and 4 were reused; 3, 5, 6 and 7 went up"
    else:
        assert store.calls["upload_part"] == 7
    assert journal.records() == [] and store.multipart_uploads("big.bin") == []
    journal.close()


async def test_a_create_whose_answer_was_lost_leaves_no_upload_behind(tmp_path: Path) -> None:
    """The server made the upload but its answer never came (a timeout): the retry makes another;
    once the file is up, the first one is aborted as well."""
    store = MemoryStore()
    journal = UploadJournal(str(tmp_path))
    uploader = make_uploader(store, journal)
    real_create = store.create_multipart
    made: list[str] = []

    def create_answer_lost(key: str, mtime_ns: int | None = None) -> str:
        made.append(real_create(key, mtime_ns))
        raise StoreUnavailable("CREATE MULTIPART: read timeout (gave up after 3 attempt(s))")

    store.create_multipart = create_answer_lost  # type: ignore[method-assign]
    staged = await uploader.open_staged("big.bin", None)
    await uploader.write(staged, 0, DATA)
    with pytest.raises(UploadFailed):
        await uploader.flush(staged)
    store.create_multipart = real_create  # type: ignore[method-assign]
    await uploader.flush(staged)
    assert store.get_range("big.bin", 0, len(DATA)) == DATA
    assert store.multipart_uploads("big.bin") == [] and len(made) == 1
    assert journal.get(staged.id) is not None and journal.get(staged.id).creating is None  # type: ignore[union-attr]
    journal.close()


async def test_orphan_search_leaves_other_writers_uploads_alone(tmp_path: Path) -> None:
    """Only an upload made within the window after the mark, named by no record, goes; none at all
    while another live record of the key is creating one itself (its id not journalled yet)."""
    store = MemoryStore()
    journal = UploadJournal(str(tmp_path))
    uploader = make_uploader(store, journal)
    mark = time.time()
    orphan, named, later = (store.create_multipart("k") for _ in range(3))
    store._uploads[later] = store._uploads[later]._replace(created=mark + CREATE_WINDOW + 60)
    mine = JournalRecord(id="dead", store_id="memory", bucket="mem", key="k", path="p", state=FAILED,
                         creating=mark)
    other = replace(mine, id="other", upload_id=named, creating=None)
    live = replace(mine, id="live", creating=mark)
    assert await uploader.abort_orphans("k", mark, (), "dead", [mine, other, live], frozenset({"dead"})) == 0
    assert len(store.multipart_uploads("k")) == 3, "another writer of the key is creating one"
    assert await uploader.abort_orphans("k", mark, (), "dead", [mine, other], frozenset({"dead"})) == 1
    assert sorted(u for u, _ in store.multipart_uploads("k")) == sorted([named, later])
    assert orphan not in {u for u, _ in store.multipart_uploads("k")}
    journal.close()


KILLED_OPENING = textwrap.dedent("""
    import os, signal, sys
    import trio
    from mountfs.backends.async_store import AsyncStore
    from mountfs.backends.memory import MemoryStore
    from mountfs.config import WriteConfig
    from mountfs.upload import staging
    from mountfs.upload.journal import UploadJournal
    from mountfs.upload.uploader import Uploader

    real_create = staging.StagedFile.create

    def create_and_die(*args, **kwargs):
        if sys.argv[2] == "after":
            real_create(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)

    async def main():
        journal = UploadJournal(sys.argv[1])
        uploader = Uploader(AsyncStore(MemoryStore(), 4), journal, WriteConfig(part_size=1024))
        staging.StagedFile.create = create_and_die
        await uploader.open_staged("never-opened.bin", None)

    trio.run(main)
""")


@pytest.mark.parametrize("when", ["before", "after"])
async def test_kill_9_while_a_file_is_staged_for_an_open_that_never_returned(tmp_path: Path,
                                                                             when: str) -> None:
    """kill -9 before or after the staged file of a create is made, before the create returned:
    nothing was acknowledged, so recovery reports no lost write (`mountfs recover` would exit 1),
    uploads nothing under the name, and leaves no staged file or record behind."""
    done = await trio.run_process([sys.executable, "-c", KILLED_OPENING, str(tmp_path), when], cwd=REPO,
                                  check=False)
    assert done.returncode == -signal.SIGKILL
    journal = UploadJournal(str(tmp_path))
    store = MemoryStore()
    report = await recover(journal, [make_uploader(store, journal)])
    assert [r.outcome for r in report] == ([ORPHAN] if when == "after" else [])
    assert store.keys() == [] and journal.records() == []
    assert not os.path.exists(journal.staging_dir) or os.listdir(journal.staging_dir) == []
    journal.close()


LIVE_STAGING = textwrap.dedent("""
    import os, signal, sys
    from mountfs.upload.journal import UploadJournal
    from mountfs.upload.staging import StagedFile, staging_name

    journal = UploadJournal(sys.argv[1])
    staged = StagedFile.create(journal.staging_dir, 1024, staging_name(journal.session))
    print(staged.path, flush=True)  # made, its record not written yet
    sys.stdin.read()
    os.kill(os.getpid(), signal.SIGKILL)
""")


async def test_recovery_leaves_the_staged_files_of_a_live_session_alone(tmp_path: Path) -> None:
    """A live daemon's staged file whose record is not written yet (the file is made first)
    survives the recovery of another daemon sharing the cache dir; once that daemon is dead, the
    file is an orphan and is swept."""
    live = subprocess.Popen([sys.executable, "-c", LIVE_STAGING, str(tmp_path)], cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert live.stdout is not None and live.stdin is not None
    path = live.stdout.readline().strip()
    try:
        journal = UploadJournal(str(tmp_path))
        assert await recover(journal, [make_uploader(MemoryStore(), journal)]) == []
        assert os.path.exists(path)
    finally:
        live.stdin.close()
        live.wait(10)
    report = await recover(journal, [make_uploader(MemoryStore(), journal)])
    assert [r.outcome for r in report] == [ORPHAN] and not os.path.exists(path)
    journal.close()
