"""The upload journal: records round-trip, survive reopening, and belong to their live session."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from mountfs.upload.journal import CLEAN, FAILED, STAGING, JournalRecord, PartRecord, UploadJournal


def record(rid: str = "id1", key: str = "dir/k\udcff", **kw: object) -> JournalRecord:
    fields: dict[str, object] = {"id": rid, "store_id": "memory", "bucket": "mem", "key": key,
                                 "path": f"/cache/staging/{rid}", "state": STAGING}
    fields.update(kw)
    return JournalRecord(**fields)  # type: ignore[arg-type]


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[UploadJournal]:
    j = UploadJournal(str(tmp_path))
    yield j
    j.close()


def test_paths(tmp_path: Path, journal: UploadJournal) -> None:
    assert journal.path == str(tmp_path / "journal")
    assert journal.staging_dir == str(tmp_path / "staging")


def test_round_trip(journal: UploadJournal) -> None:
    rec = record(upload_id="u1", part_size=5, base_etag="e0", error="boom", attempts=2,
                 parts=(PartRecord(1, "aa", 0, 5), PartRecord(2, "bb", 5, 3)))
    journal.put(rec)
    got = journal.get("id1")
    assert got is not None
    assert got.session == journal.session
    assert got.parts == rec.parts and got.key == rec.key, "parts and a non-UTF-8 key survive"
    assert (got.upload_id, got.part_size, got.base_etag) == ("u1", 5, "e0")
    assert (got.error, got.attempts) == ("boom", 2)
    assert got.updated >= rec.created
    assert JournalRecord.unpack(got.pack()) == got
    assert journal.get("nope") is None


def test_put_replaces_and_remove_deletes(journal: UploadJournal) -> None:
    journal.put(record())
    journal.put(record(state=FAILED, error="x"))
    journal.put(record("id2"))
    assert sorted((r.id, r.state) for r in journal.records()) == [("id1", FAILED), ("id2", STAGING)]
    journal.remove("id1")
    journal.remove("id1")
    assert [r.id for r in journal.records()] == ["id2"]
    assert record(state=CLEAN).needs_upload is False and record().needs_upload


def test_records_survive_reopening_and_are_adopted_once(tmp_path: Path) -> None:
    first = UploadJournal(str(tmp_path))
    first.put(record("a"))
    first.put(record("b"))
    first.close()  # as after a crash: the records stay, the session lock is gone
    second = UploadJournal(str(tmp_path))
    adopted = second.adopt_orphans()
    assert sorted(r.id for r in adopted) == ["a", "b"]
    assert all(r.session == second.session for r in second.records())
    assert second.adopt_orphans() == [], "its own records are not orphans"
    second.close()


def test_a_live_sessions_records_are_not_adopted(journal: UploadJournal, tmp_path: Path) -> None:
    """Another daemon on the same cache dir: its session lock is held (here by this test's own fd,
    since LMDB allows one environment per process)."""
    fd = os.open(tmp_path / "journal" / "sessions" / "live.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    with journal.env.begin(write=True) as txn:
        txn.put(b"theirs", replace(record("theirs"), session="live").pack())
    try:
        assert journal.adopt_orphans() == []
        assert journal.get("theirs").session == "live"  # type: ignore[union-attr]
    finally:
        os.close(fd)  # the other daemon dies
    assert [r.id for r in journal.adopt_orphans()] == ["theirs"]
    assert journal.get("theirs").session == journal.session  # type: ignore[union-attr]


def test_stale_session_lock_files_are_cleaned(tmp_path: Path) -> None:
    j = UploadJournal(str(tmp_path))
    sessions = tmp_path / "journal" / "sessions"
    (sessions / "deadbeef.lock").write_bytes(b"")  # a crashed session that had nothing journalled
    assert j.adopt_orphans() == []
    assert sorted(p.name for p in sessions.iterdir()) == [f"{j.session}.lock"]
    j.close()
    assert list(sessions.iterdir()) == []
