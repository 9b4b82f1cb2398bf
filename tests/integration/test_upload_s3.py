"""The uploader against real S3 servers (SeaweedFS and moto): a large file goes up as multipart,
and an upload cut off by a stopped server fails with EIO, then completes once the server is back."""

from __future__ import annotations

import errno
import os
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from mountfs.backends.async_store import AsyncStore
from mountfs.backends.s3 import S3Store
from mountfs.config import RetryConfig, WriteConfig
from mountfs.config.s3 import S3Settings
from mountfs.errors import UploadFailed, errno_for
from mountfs.upload.journal import FAILED, REJECTED, UploadJournal
from mountfs.upload.recovery import UPLOADED, recover
from mountfs.upload.uploader import Uploader
from tests.servers import S3Server

MiB = 1024 * 1024
# Few, quick retries: a stopped server must turn into a failed upload in well under a second.
RETRY = RetryConfig(attempts=2, base_delay=0.05, max_delay=0.1, budget=5, request_timeout=10)


def s3_store(server: S3Server, bucket: str) -> AsyncStore:
    settings = S3Settings(bucket=bucket, endpoint_url=server.endpoint, region="us-east-1",
                          key=server.access_key, secret=server.secret_key, addressing_style="path")
    return AsyncStore(S3Store(settings, RETRY), 16)


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[UploadJournal]:
    j = UploadJournal(str(tmp_path))
    yield j
    j.close()


def server_object(server: S3Server, bucket: str, key: str) -> tuple[str, bytes]:
    reply = server.client().get_object(Bucket=bucket, Key=key)
    return reply["ETag"].strip('"'), reply["Body"].read()


async def wait_for(condition: object, what: str) -> None:
    give_up = time.monotonic() + 30  # a hang guard, not a measurement
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < give_up, f"never: {what}"
        await trio.sleep(0.01)


async def test_64_mib_goes_up_as_8_parts(s3_server: S3Server, s3_bucket: str, journal: UploadJournal) -> None:
    store = s3_store(s3_server, s3_bucket)
    uploader = Uploader(store, journal, WriteConfig(part_size=8 * MiB, max_concurrency=4))
    data = os.urandom(64 * MiB)
    async with trio.open_nursery() as nursery:
        await nursery.start(uploader.run)
        staged = await uploader.open_staged("big/64mib.bin", None)
        for offset in range(0, len(data), MiB):
            await uploader.write(staged, offset, data[offset:offset + MiB])
        meta = await uploader.flush(staged)
        await uploader.release(staged)
        nursery.cancel_scope.cancel()
    etag, body = server_object(s3_server, s3_bucket, "big/64mib.bin")
    assert body == data
    assert etag.endswith("-8"), f"the server saw an 8-part multipart upload (ETag {etag})"
    assert meta is not None and (meta.size, meta.etag) == (64 * MiB, etag)
    requests = store.stats.requests
    assert requests["create_multipart"] == requests["complete_multipart"] == 1
    assert requests["upload_part"] == 8
    assert requests["put"] == 0 and store.stats.errors.total() == 0
    assert uploader.stats.streamed_parts >= 1, "parts went up while the file was being written"
    assert journal.records() == [] and os.listdir(journal.staging_dir) == []


async def test_a_stopped_server_fails_the_flush_and_the_retry_finishes(
        s3_server: S3Server, s3_bucket: str, journal: UploadJournal) -> None:
    store = s3_store(s3_server, s3_bucket)
    uploader = Uploader(store, journal, WriteConfig(part_size=5 * MiB, max_concurrency=4), retry_delay=0.1,
                        max_retry_delay=0.5)
    data = os.urandom(12 * MiB)  # parts of 5, 5 and 2 MiB
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(uploader.run)
            staged = await uploader.open_staged("ckpt/step-100.pt", None)
            await uploader.write(staged, 0, data[:10 * MiB + 1])
            await wait_for(lambda: store.stats.requests["upload_part"] == 2 and not staged.streaming,
                           "the first two parts streamed")
            await trio.to_thread.run_sync(s3_server.stop)
            await uploader.write(staged, 10 * MiB + 1, data[10 * MiB + 1:])
            with pytest.raises(UploadFailed) as caught:
                await uploader.flush(staged)
            assert errno_for(caught.value) == errno.EIO
            [pending] = uploader.pending()
            assert (pending.key, pending.size, pending.state) == ("ckpt/step-100.pt", len(data), FAILED)
            assert os.path.getsize(staged.path) == len(data), "the staged data is kept"
            await uploader.release(staged)

            await trio.to_thread.run_sync(s3_server.restart)
            if s3_server.kind == "moto":  # moto keeps everything in memory: the bucket is gone too
                await trio.to_thread.run_sync(s3_server.create_bucket, s3_bucket)
            await wait_for(lambda: uploader.pending() == [], "the background retry succeeded")
            nursery.cancel_scope.cancel()
    finally:
        if not s3_server.running:
            s3_server.restart()
    etag, body = server_object(s3_server, s3_bucket, "ckpt/step-100.pt")
    assert body == data and etag.endswith("-3")
    if s3_server.kind == "seaweedfs":  # it keeps multipart uploads across a restart: resumed
        assert store.stats.requests["create_multipart"] == 1
    else:  # moto lost the upload and answers 500 for it: abandoned and started again
        assert store.stats.requests["create_multipart"] == 2
    assert journal.records() == [] and os.listdir(journal.staging_dir) == []


async def test_a_key_the_server_refuses_ends_the_upload_not_retried(
        seaweedfs: S3Server, journal: UploadJournal) -> None:
    """SeaweedFS answers 400 KeyTooLongError for a path component over 255 bytes (the mount refuses
    such names at create; here the uploader is given one directly): the upload ends at once, as
    rejected, the data staged, and the background retries leave it alone."""
    bucket = f"t-{os.urandom(4).hex()}"
    seaweedfs.create_bucket(bucket)
    store = s3_store(seaweedfs, bucket)
    uploader = Uploader(store, journal, WriteConfig(part_size=8 * MiB), retry_delay=0.01)
    key = "dir/" + "n" * 256
    async with trio.open_nursery() as nursery:
        await nursery.start(uploader.run)
        staged = await uploader.open_staged(key, None)
        await uploader.write(staged, 0, b"refused bytes")
        with pytest.raises(UploadFailed) as caught:
            await uploader.flush(staged)
        assert errno_for(caught.value) == errno.EIO and "KeyTooLongError" in str(caught.value)
        await uploader.release(staged)
        await trio.sleep(0.2)  # several retry delays: none may be spent on it
        assert store.stats.requests["put"] == 1
        [pending] = uploader.pending()
        assert (pending.state, pending.staging_path) == (REJECTED, staged.path)
        with trio.fail_after(10):
            assert [p.key for p in await uploader.drain(timeout=60)] == [key]
        assert journal.records()[0].state == REJECTED and os.path.exists(staged.path)
        nursery.cancel_scope.cancel()


DIES_AFTER_CREATE = textwrap.dedent("""
    import os, sys
    import trio
    from mountfs.backends.async_store import AsyncStore
    from mountfs.backends.s3 import S3Store
    from mountfs.config.s3 import S3Settings
    from mountfs.config import RetryConfig, WriteConfig
    from mountfs.upload.journal import UploadJournal
    from mountfs.upload.uploader import Uploader

    cache_dir, endpoint, bucket, key, secret = sys.argv[1:]
    real_create = S3Store.create_multipart

    def create_then_die(self, name, mtime_ns=None):
        upload_id = real_create(self, name, mtime_ns)
        print(upload_id, flush=True)
        os._exit(9)  # after the server made it, before the uploader could journal its id

    S3Store.create_multipart = create_then_die

    async def main():
        settings = S3Settings(bucket=bucket, endpoint_url=endpoint, region="us-east-1", key=key,
                              secret=secret, addressing_style="path")
        store = AsyncStore(S3Store(settings, RetryConfig(attempts=2, budget=5)), 4)
        uploader = Uploader(store, UploadJournal(cache_dir), WriteConfig(part_size=5 * 1024 * 1024))
        staged = await uploader.open_staged("orphan.bin", None)
        await uploader.write(staged, 0, bytes(range(256)) * (24 * 1024))  # 6 MiB: multipart
        await uploader.flush(staged)

    trio.run(main)
""")


async def test_an_upload_made_by_a_process_that_died_before_journalling_it_is_aborted(
        s3_server: S3Server, s3_bucket: str, tmp_path: Path) -> None:
    """kill at the worst moment: the server has made the multipart upload, the journal does not name
    it. Recovery lists the key's uploads on the server, aborts that one (and not another writer's,
    there before), and uploads the data."""
    client = s3_server.client()
    foreign = client.create_multipart_upload(Bucket=s3_bucket, Key="orphan.bin")["UploadId"]
    cache_dir = str(tmp_path / "cache")
    done = await trio.run_process(
        [sys.executable, "-c", DIES_AFTER_CREATE, cache_dir, s3_server.endpoint, s3_bucket,
         s3_server.access_key, s3_server.secret_key],
        cwd=str(Path(__file__).resolve().parents[2]), capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 9, done.stderr.decode()
    orphan = done.stdout.decode().strip()

    def uploads() -> set[str]:
        reply = client.list_multipart_uploads(Bucket=s3_bucket, Prefix="orphan.bin")
        return {u["UploadId"] for u in reply.get("Uploads", []) if u["Key"] == "orphan.bin"}

    assert uploads() == {foreign, orphan}
    journal = UploadJournal(cache_dir)
    try:
        report = await recover(journal, [Uploader(s3_store(s3_server, s3_bucket), journal,
                                                  WriteConfig(part_size=5 * MiB))])
        assert [(r.key, r.outcome) for r in report] == [("orphan.bin", UPLOADED)]
        assert uploads() == {foreign}, "the orphan is aborted; the other writer's upload stays"
        assert server_object(s3_server, s3_bucket, "orphan.bin")[1] == bytes(range(256)) * (24 * 1024)
        assert journal.records() == []
    finally:
        journal.close()
        client.abort_multipart_upload(Bucket=s3_bucket, Key="orphan.bin", UploadId=foreign)
