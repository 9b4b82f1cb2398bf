"""Writing through real mounts of S3 buckets (SeaweedFS): cp, dd, rsync -a, tar x, random writes,
overwrite, truncate, rename, rmdir, each object then compared byte for byte through boto3; a big
file going up as multipart parts while it is written; kill -9 in mid-upload and recovery at the next
mount; a server stopped mid-upload (EIO, then the data arrives); unmount and `mountfs recover`
with uploads left.

The big write is 2 GiB in 16 MiB parts, as the issue asks; the parts are counted on the server while
the file is still open, and the object is deleted afterwards to give the disk back."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import lmdb
import pytest

from mountfs import control
from mountfs.upload.journal import JournalRecord
from tests.faultproxy import FaultProxy, error_reply
from tests.servers import S3Server, start_seaweedfs

if TYPE_CHECKING:
    from conftest import Mount, Mounter

MiB = 1 << 20
FAST_RETRY = '[retry]\nattempts = 2\nbase_delay = "10ms"\nmax_delay = "50ms"\nbudget = "3s"\n'
BIG = 2048 * MiB
PART = 16 * MiB


def s3_mount(mounter: Mounter, server: S3Server, bucket: str, tmp_path: Path, extra: str = "",
             credentials: str = "", cache_dir: str | None = None) -> Mount:
    """`bucket` (created if new) mounted at the mount point's root."""
    try:
        server.create_bucket(bucket)
    except Exception as exc:  # already there (a remount)
        if "BucketAlreadyOwnedByYou" not in str(exc) and "BucketAlreadyExists" not in str(exc):
            raise
    config = tmp_path / f"{bucket}.toml"
    config.write_text(f'{extra}\n[[mount]]\npath = ""\nurl = "s3://{server.host_port}/{bucket}"\n\n'
                      f'[[s3.credentials]]\nhost = "{server.host_port}"\nkey = "{server.access_key}"\n'
                      f'secret = "{server.secret_key}"\nsecure = false\n{credentials}\n')
    return mounter.mount(str(config), cache_dir=cache_dir)


def objects(server: S3Server, bucket: str, prefix: str = "") -> dict[str, bytes]:
    client = server.client()
    found: dict[str, bytes] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            found[item["Key"]] = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
    return found


def sha256_object(server: S3Server, bucket: str, key: str) -> str:
    body = server.client().get_object(Bucket=bucket, Key=key)["Body"]
    digest = hashlib.sha256()
    for chunk in iter(lambda: body.read(4 * MiB), b""):
        digest.update(chunk)
    return digest.hexdigest()


def make_tree(root: Path) -> dict[str, bytes]:
    """A small tree of files: empty, tiny, a few KiB, a few MiB; spaces and non-ASCII in names."""
    rng = random.Random(5)
    files = {
        "empty": b"",
        "one": b"1",
        "notes/readme.txt": b"hello from a tree\n" * 100,
        "notes/données été.txt": "l'été\n".encode(),
        "data/blob.bin": rng.randbytes(3 * MiB + 17),
        "data/deep/er/small.bin": rng.randbytes(4097),
        "with space/x": rng.randbytes(100_000),
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (1_600_000_000, 1_600_000_000))
    return files


def run(*argv: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{argv}: {result.returncode}\n{result.stderr}"


def inline_status(mount: Mount) -> dict[str, Any]:
    """`mountfs status --json` without starting a process."""
    return control.request(control.socket_path(mount.path), "status", timeout=30)


def requests(mounter: Mounter, mount: Mount) -> dict[str, int]:
    stores = mounter.run.status(mount)["stores"]
    return dict(stores[0]["requests"])


def journalled_parts(cache_dir: str) -> int:
    """How many multipart parts the upload journal of a (live) mount records as in the store: only
    those are known to the next mount after a crash (a request counter counts parts sent, not
    answered, and a part whose answer was never journalled is sent again)."""
    env = lmdb.open(os.path.join(cache_dir, "journal"), readonly=True, max_readers=512)
    try:
        with env.begin() as txn:
            return max((len(JournalRecord.unpack(raw).parts) for _, raw in txn.cursor()), default=0)
    finally:
        env.close()


# --- tools --------------------------------------------------------------------------------------


def test_cp_dd_rsync_and_tar_write_whole_objects(mounter: Mounter, seaweedfs: S3Server,
                                                  tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_tree(src)
    mnt = s3_mount(mounter, seaweedfs, "tools", tmp_path)
    st = os.stat(mnt.path)
    assert stat.S_IMODE(st.st_mode) == 0o755, "a writable mount shows write bits"
    run("cp", "-r", str(src), mnt.join("cp"))
    run("rsync", "-a", f"{src}/", mnt.join("rsync") + "/")
    archive = tmp_path / "tree.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(src, arcname="t")
    os.mkdir(mnt.join("tar"))
    run("tar", "-C", mnt.join("tar"), "-xf", str(archive))
    run("dd", f"if={src / 'data/blob.bin'}", f"of={mnt.join('dd.bin')}", "bs=64k", "status=none")
    stored = objects(seaweedfs, "tools")
    for where in ("cp", "rsync", "tar/t"):
        for rel, data in files.items():
            assert stored.get(f"{where}/{rel}") == data, f"{where}/{rel}"
            with open(mnt.join(where, rel), "rb") as f:
                assert f.read() == data, f"{where}/{rel} read back"
    assert stored["dd.bin"] == files["data/blob.bin"]
    leftovers = [k for k in stored if "/." in k or k.startswith(".")]
    assert leftovers == [], "rsync's temp files are renamed away"
    # rsync -a kept the mtimes: a second run sends nothing
    puts = requests(mounter, mnt).get("put", 0)
    assert os.stat(mnt.join("rsync", "notes", "readme.txt")).st_mtime == 1_600_000_000
    run("rsync", "-a", f"{src}/", mnt.join("rsync") + "/")
    assert requests(mounter, mnt).get("put", 0) == puts


def test_mtimes_set_in_the_mount_are_kept_in_the_objects(mounter: Mounter, seaweedfs: S3Server,
                                                         tmp_path: Path) -> None:
    """touch -d, os.utime, cp -p (a small file, and a big one whose parts went up before its mtime
    was set) and rsync -a: each mtime goes into the object's metadata (X-Amz-Meta-Mtime, in rclone's
    form), so that after a remount with an empty cache stat shows it again."""
    src = tmp_path / "src"
    files = make_tree(src)
    big = src / "big.bin"
    big.write_bytes(random.Random(3).randbytes(12 * MiB + 5))
    os.utime(big, ns=(1_400_000_000_987_654_321, 1_400_000_000_987_654_321))
    mnt = s3_mount(mounter, seaweedfs, "mtimes", tmp_path, extra='[write]\npart_size = "5MiB"\n')
    with open(mnt.join("stored.txt"), "wb") as f:
        f.write(b"in the store before its mtime is set")
    os.utime(mnt.join("stored.txt"), ns=(1_500_000_000_123_456_789, 1_500_000_000_123_456_789))
    with open(mnt.join("touched.txt"), "wb") as f:
        f.write(b"touched")
    run("touch", "-m", "-d", "2001-09-09 01:46:40.5 UTC", mnt.join("touched.txt"))
    run("touch", "-d", "@1234567890", mnt.join("new-by-touch"))
    run("cp", "-p", str(src / "notes" / "readme.txt"), mnt.join("cp-p.txt"))
    run("cp", "-p", str(big), mnt.join("big-cp-p.bin"))
    run("rsync", "-a", f"{src}/", mnt.join("rsync") + "/")
    expected = {"stored.txt": 1_500_000_000_123_456_789, "touched.txt": 1_000_000_000_500_000_000,
                "new-by-touch": 1_234_567_890 * 10**9, "cp-p.txt": 1_600_000_000 * 10**9,
                "big-cp-p.bin": 1_400_000_000_987_654_321, "rsync/big.bin": 1_400_000_000_987_654_321}
    expected.update({f"rsync/{rel}": 1_600_000_000 * 10**9 for rel in files})
    for rel, when in expected.items():
        assert os.stat(mnt.join(rel)).st_mtime_ns == when, rel
    client = seaweedfs.client()
    for rel, when in expected.items():
        head = client.head_object(Bucket="mtimes", Key=rel)
        assert head["Metadata"].get("mtime") == f"{when // 10**9}.{when % 10**9:09d}", rel
    assert client.get_object(Bucket="mtimes", Key="big-cp-p.bin")["Body"].read() == big.read_bytes()
    mounter.umount(mnt)

    again = s3_mount(mounter, seaweedfs, "mtimes", tmp_path)  # a fresh cache dir: nothing remembered
    for rel, when in expected.items():
        assert os.stat(again.join(rel)).st_mtime_ns == when, f"{rel} after the remount"
    for entry in os.scandir(again.join("rsync", "notes")):  # an S3 listing shows LastModified only:
        assert entry.stat().st_mtime_ns == 1_600_000_000 * 10**9, entry.name  # what HEAD showed holds
    with open(again.join("rsync", "notes", "readme.txt"), "rb") as f:
        assert f.read() == files["notes/readme.txt"]


def test_random_writes_overwrite_truncate_rename_rmdir(mounter: Mounter, seaweedfs: S3Server,
                                                       tmp_path: Path) -> None:
    mnt = s3_mount(mounter, seaweedfs, "edits", tmp_path)
    client = seaweedfs.client()
    rng = random.Random(11)
    # random writes, with holes, across parts
    expected = bytearray()
    fd = os.open(mnt.join("random.bin"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        for _ in range(200):
            offset = rng.randrange(0, 6 * MiB)
            data = rng.randbytes(rng.randrange(1, 70_000))
            os.pwrite(fd, data, offset)
            expected.extend(bytes(max(0, offset + len(data) - len(expected))))
            expected[offset:offset + len(data)] = data
        assert os.fstat(fd).st_size == len(expected)
        assert os.stat(mnt.join("random.bin")).st_size == len(expected), "the size shows while writing"
        assert os.pread(fd, 1000, 1234) == expected[1234:2234]
    finally:
        os.close(fd)
    assert objects(seaweedfs, "edits")["random.bin"] == expected
    # overwrite in the middle of an existing object (staged from the cache first)
    client.put_object(Bucket="edits", Key="existing.bin", Body=bytes(range(256)) * 4096)
    old = bytes(range(256)) * 4096
    with open(mnt.join("existing.bin"), "r+b") as f:
        f.seek(300_000)
        f.write(b"PATCHED")
    patched = old[:300_000] + b"PATCHED" + old[300_007:]
    assert objects(seaweedfs, "edits", "existing")["existing.bin"] == patched
    # append
    with open(mnt.join("existing.bin"), "ab") as f:
        f.write(b"tail")
    assert objects(seaweedfs, "edits", "existing")["existing.bin"].endswith(b"PATCHEDtail"[-4:])
    # truncate down and up
    os.truncate(mnt.join("random.bin"), 1000)
    assert objects(seaweedfs, "edits", "random")["random.bin"] == expected[:1000]
    os.truncate(mnt.join("random.bin"), 1500)
    assert objects(seaweedfs, "edits", "random")["random.bin"] == expected[:1000] + bytes(500)
    # rename a file, a directory (every key below it), then remove what is left
    os.rename(mnt.join("random.bin"), mnt.join("renamed.bin"))
    os.makedirs(mnt.join("dir", "sub", "empty"))
    for rel in ("dir/a", "dir/sub/b", "dir/sub/c"):
        with open(mnt.join(rel), "wb") as f:
            f.write(rel.encode())
    os.rename(mnt.join("dir"), mnt.join("moved"))
    stored = objects(seaweedfs, "edits")
    assert "random.bin" not in stored and stored["renamed.bin"] == expected[:1000] + bytes(500)
    assert not [k for k in stored if k.startswith("dir/")]
    assert {k: v for k, v in stored.items() if k.startswith("moved/")} == {
        "moved/": b"", "moved/a": b"dir/a", "moved/sub/": b"", "moved/sub/b": b"dir/sub/b",
        "moved/sub/c": b"dir/sub/c", "moved/sub/empty/": b""}
    assert sorted(os.listdir(mnt.join("moved", "sub"))) == ["b", "c", "empty"]
    with pytest.raises(OSError) as info:
        os.rmdir(mnt.join("moved"))
    assert info.value.errno == errno.ENOTEMPTY
    shutil.rmtree(mnt.join("moved"))
    assert not os.path.exists(mnt.join("moved"))
    assert sorted(objects(seaweedfs, "edits")) == ["existing.bin", "renamed.bin"]
    os.unlink(mnt.join("renamed.bin"))
    assert sorted(os.listdir(mnt.path)) == ["existing.bin"]


def test_close_and_reopen_for_append_at_once_under_read_load(mounter: Mounter, seaweedfs: S3Server,
                                                             tmp_path: Path) -> None:
    """A log written by open(O_APPEND), write, close, again and again, while readers read it: the
    kernel sends the release of a close after close returns, so the next open can come while that
    release is still at work; every write must land, none fail with EIO."""
    mnt = s3_mount(mounter, seaweedfs, "appends", tmp_path)
    path = mnt.join("app.log")
    with open(path, "wb"):
        pass
    stop = threading.Event()
    read_errors: list[BaseException] = []

    def read_load() -> None:
        while not stop.is_set():
            try:
                with open(path, "rb") as f:
                    f.read()
            except OSError as exc:
                read_errors.append(exc)
                return

    readers = [threading.Thread(target=read_load) for _ in range(3)]
    for reader in readers:
        reader.start()
    expected = bytearray()
    try:
        for i in range(200):
            line = f"line {i}\n".encode()
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            try:
                assert os.write(fd, line) == len(line)
            finally:
                os.close(fd)
            expected += line
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert read_errors == []
    with open(path, "rb") as f:
        assert f.read() == expected
    assert objects(seaweedfs, "appends")["app.log"] == expected
    assert "already released" not in Path(mnt.log).read_text()


# --- multipart ----------------------------------------------------------------------------------


def write_pattern(fd: int, size: int, seed: int) -> str:
    """Write `size` bytes of a seeded pattern in 1 MiB writes; their SHA-256."""
    rng = random.Random(seed)
    digest = hashlib.sha256()
    for _ in range(size // MiB):
        chunk = rng.randbytes(MiB)
        digest.update(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view):]
    return digest.hexdigest()


def test_a_big_file_goes_up_in_parts_while_it_is_written(mounter: Mounter, seaweedfs: S3Server,
                                                         tmp_path: Path, tools: Any) -> None:
    mnt = s3_mount(mounter, seaweedfs, "big", tmp_path, extra='[write]\npart_size = "16MiB"\n')
    client = seaweedfs.client()
    fd = os.open(mnt.join("checkpoint.bin"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        digest = write_pattern(fd, BIG, 1)
        # still open: the complete parts are on the server already. (Asked without a subprocess:
        # its close-on-exec copy of `fd` would make the kernel flush the file, and so upload it.)
        streamed = BIG // PART - 1
        assert tools.wait_until(lambda: inline_status(mnt)["uploads"]["streamed_parts"] >= streamed, 60)
        uploads = client.list_multipart_uploads(Bucket="big").get("Uploads", [])
        assert [u["Key"] for u in uploads] == ["checkpoint.bin"]
        parts = client.list_parts(Bucket="big", Key="checkpoint.bin", UploadId=uploads[0]["UploadId"])
        assert len(parts["Parts"]) >= BIG // PART - 1 and parts["Parts"][0]["Size"] == PART
        assert "Contents" not in client.list_objects_v2(Bucket="big"), "nothing is visible before close"
    finally:
        os.close(fd)
    head = client.head_object(Bucket="big", Key="checkpoint.bin")
    assert head["ContentLength"] == BIG and head["ETag"].strip('"').endswith(f"-{BIG // PART}")
    assert sha256_object(seaweedfs, "big", "checkpoint.bin") == digest
    status = mounter.run.status(mnt)
    assert status["uploads"]["streamed_parts"] >= BIG // PART - 1
    assert status["stores"][0]["requests"]["upload_part"] == BIG // PART
    assert status["uploads"]["pending"] == []
    client.delete_object(Bucket="big", Key="checkpoint.bin")


def test_multipart_off_for_the_host_is_one_put(mounter: Mounter, seaweedfs: S3Server, tmp_path: Path) -> None:
    mnt = s3_mount(mounter, seaweedfs, "nomultipart", tmp_path, extra='[write]\npart_size = "8MiB"\n',
                   credentials="multipart = false")
    with open(mnt.join("one-put.bin"), "wb") as f:
        digest = write_pattern(f.fileno(), 20 * MiB, 2)
    head = seaweedfs.client().head_object(Bucket="nomultipart", Key="one-put.bin")
    assert "-" not in head["ETag"].strip('"')
    assert sha256_object(seaweedfs, "nomultipart", "one-put.bin") == digest
    req = requests(mounter, mnt)
    assert req.get("put") == 1 and req.get("upload_part", 0) == 0 and req.get("create_multipart", 0) == 0


# --- crashes and outages ------------------------------------------------------------------------

WRITER = r"""
import hashlib, os, random, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
rng = random.Random(3)
digest = hashlib.sha256()
for _ in range(int(sys.argv[2])):
    chunk = rng.randbytes(1 << 20)
    digest.update(chunk)
    os.write(fd, chunk)
print(digest.hexdigest(), flush=True)
time.sleep(600)  # never closes: killed with its daemon
"""


def test_kill_9_in_mid_upload_and_the_next_mount_finishes_it(mounter: Mounter, seaweedfs: S3Server,
                                                             tmp_path: Path, tools: Any) -> None:
    extra = '[write]\npart_size = "8MiB"\n'
    first = s3_mount(mounter, seaweedfs, "crash", tmp_path, extra=extra)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, first.join("model.ckpt"), "40"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None
        digest = writer.stdout.readline().strip()
        assert len(digest) == 64, "the writer wrote everything"
        assert tools.wait_until(lambda: journalled_parts(first.cache_dir) >= 2, 60)
        assert first.pid is not None
        os.kill(first.pid, signal.SIGKILL)
        assert tools.wait_until(lambda: not tools.pid_alive(first.pid), 10)
    finally:
        writer.kill()
        writer.wait()
    result = mounter.run("umount", first.path)  # detaches the dead mount
    assert result.returncode == 0, result.stderr
    client = seaweedfs.client()
    assert "Contents" not in client.list_objects_v2(Bucket="crash"), "the upload never completed"

    second = s3_mount(mounter, seaweedfs, "crash", tmp_path, extra=extra, cache_dir=first.cache_dir)
    assert tools.wait_until(lambda: not mounter.run.status(second)["uploads"]["recovering"], 60)
    assert sha256_object(seaweedfs, "crash", "model.ckpt") == digest
    status = mounter.run.status(second)
    recovered = status["uploads"]["recovered"]
    assert any(line.startswith("uploaded: ") and "model.ckpt" in line for line in recovered), recovered
    # 5 parts; at least the 2 journalled before the kill are reused
    assert status["stores"][0]["requests"]["upload_part"] <= 3, "parts already on the server were reused"
    with open(second.join("model.ckpt"), "rb") as f:
        assert hashlib.file_digest(f, "sha256").hexdigest() == digest
    assert os.listdir(os.path.join(first.cache_dir, "staging")) == []


@pytest.fixture(scope="module")
def flaky(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A SeaweedFS of its own: these tests stop and restart it."""
    server = start_seaweedfs(str(tmp_path_factory.mktemp("flaky")))
    yield server
    server.stop()


def test_a_stopped_server_gives_eio_and_the_data_arrives_later(mounter: Mounter, flaky: S3Server,
                                                               tmp_path: Path, tools: Any) -> None:
    mnt = s3_mount(mounter, flaky, "outage", tmp_path, extra=FAST_RETRY + '[write]\ndrain_timeout = "30s"\n')
    data = os.urandom(3 * MiB)
    fd = os.open(mnt.join("report.bin"), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        flaky.stop()
        with pytest.raises(OSError) as info:
            os.fsync(fd)
        assert info.value.errno == errno.EIO
    finally:
        with pytest.raises(OSError) as info:
            os.close(fd)  # close flushes again: the server is still down
        assert info.value.errno == errno.EIO
    with open(mnt.join("report.bin"), "rb") as f:
        assert f.read() == data, "the data is still there, staged"
    status = mounter.run.status(mnt)
    pending = status["uploads"]["pending"]
    assert [(p["path"], p["state"]) for p in pending] == [("report.bin", "failed")]
    text = mounter.run("status", mnt.path)
    assert "1 pending" in text.stdout and "report.bin" in text.stdout and "failed" in text.stdout
    assert "report.bin" in Path(mnt.log).read_text()
    flaky.restart()
    assert tools.wait_until(lambda: mounter.run.status(mnt)["uploads"]["pending"] == [], 60)
    assert objects(flaky, "outage")["report.bin"] == data


def test_unmount_says_what_is_left_and_recover_uploads_it(mounter: Mounter, flaky: S3Server,
                                                          tmp_path: Path, tools: Any) -> None:
    mnt = s3_mount(mounter, flaky, "left", tmp_path, extra=FAST_RETRY + '[write]\ndrain_timeout = "2s"\n')
    config = str(tmp_path / "left.toml")
    with open(mnt.join("kept.txt"), "wb") as f:
        f.write(b"x" * 1000)
    late = open(mnt.join("late.txt"), "wb")  # noqa: SIM115 (closed below, while the server is down)
    flaky.stop()
    try:
        late.write(b"staged only")
        with pytest.raises(OSError) as info:
            late.close()
        assert info.value.errno == errno.EIO
        result = mounter.run("umount", mnt.path, timeout=120)
        assert result.returncode == 1
        assert "1 upload(s) did not finish" in result.stderr and "late.txt" in result.stderr
        assert not tools.is_mounted(mnt.path)
        assert "not finished at unmount" in Path(mnt.log).read_text()
        result = mounter.run("recover", config, "-o", f"cache_dir={mnt.cache_dir}", timeout=120)
        assert result.returncode == 1, result.stdout + result.stderr
    finally:
        flaky.restart()
    result = mounter.run("recover", config, "-o", f"cache_dir={mnt.cache_dir}", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("uploaded: ") and "late.txt" in lines[0]
    assert objects(flaky, "left") == {"kept.txt": b"x" * 1000, "late.txt": b"staged only"}
    result = mounter.run("recover", config, "-o", f"cache_dir={mnt.cache_dir}", timeout=120)
    assert (result.returncode, result.stdout.strip()) == (0, f"nothing to recover in {mnt.cache_dir}")


@pytest.mark.parametrize("how", ["umount", "SIGTERM"])
def test_unmount_uploads_what_is_still_open(mounter: Mounter, seaweedfs: S3Server, tmp_path: Path,
                                            tools: Any, how: str) -> None:
    """`mountfs umount --force` (a plain umount refuses a busy mount: tests/fuse/test_umount_busy.py)
    or SIGTERM with a file still open for writing: its data goes up before the daemon exits."""
    bucket = f"drain-{how.lower()}"
    mnt = s3_mount(mounter, seaweedfs, bucket, tmp_path)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, mnt.join("open.bin"), "3"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None
        digest = writer.stdout.readline().strip()
        if how == "umount":
            result = mounter.run("umount", "--force", mnt.path, timeout=120)
            assert result.returncode == 0, result.stderr
        else:
            assert mnt.pid is not None
            os.kill(mnt.pid, signal.SIGTERM)
            assert tools.wait_until(lambda: not tools.pid_alive(mnt.pid), 60)
            assert not tools.is_mounted(mnt.path)
    finally:
        writer.kill()
        writer.wait()
    assert sha256_object(seaweedfs, bucket, "open.bin") == digest
    log = Path(mnt.log).read_text()
    assert "for 1 pending upload(s)" in log and "every pending upload is in the store" in log


def test_a_full_cache_disk_is_enospc_for_the_writer(mounter: Mounter, tmp_path: Path) -> None:
    """The cache dir on a 24 MiB tmpfs: a 64 MiB write fails with ENOSPC part way, what was written
    before is uploaded at close, and the cache keeps serving what it holds."""
    folder = tmp_path / "bucket"
    folder.mkdir()
    kept = os.urandom(2 * MiB)
    (folder / "kept.bin").write_bytes(kept)
    cache = tmp_path / "small-cache"
    cache.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(cache)], check=True)
    try:
        mnt = mounter.mount(f"file://{folder}", cache_dir=str(cache))
        with open(mnt.join("kept.bin"), "rb") as f:
            assert f.read() == kept  # now in the block cache
        written = 0
        fd = os.open(mnt.join("big.bin"), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            with pytest.raises(OSError) as info:
                for _ in range(64):
                    os.write(fd, b"w" * MiB)
                    written += MiB
            assert info.value.errno == errno.ENOSPC
            assert 0 < written < 24 * MiB
        finally:
            os.close(fd)
        assert (folder / "big.bin").read_bytes() == b"w" * written, "what was written is uploaded"
        with open(mnt.join("kept.bin"), "rb") as f:
            assert f.read() == kept
        status = mounter.run.status(mnt)
        assert status["cache"]["corrupt"] == 0 and status["uploads"]["pending"] == []
        assert os.listdir(cache / "staging") == []
        mounter.umount(mnt)
    finally:
        subprocess.run(["umount", "-l", str(cache)], check=False)


# --- what the store cannot take -------------------------------------------------------------------


def test_a_name_over_255_bytes_is_enametoolong_at_create(mounter: Mounter, seaweedfs: S3Server,
                                                         tmp_path: Path) -> None:
    """SeaweedFS refuses such keys (400 KeyTooLongError): the mount says so at once, not at close."""
    mnt = s3_mount(mounter, seaweedfs, "long-names", tmp_path)
    for name in ("n" * 256, "é" * 128):
        for make in (lambda p: os.open(p, os.O_WRONLY | os.O_CREAT, 0o644), os.mkdir):
            with pytest.raises(OSError) as info:
                make(mnt.join(name))
            assert info.value.errno == errno.ENAMETOOLONG
    with open(mnt.join("n" * 255), "wb") as f:
        f.write(b"255 bytes are fine")
    assert objects(seaweedfs, "long-names") == {"n" * 255: b"255 bytes are fine"}
    assert mounter.run.status(mnt)["uploads"]["pending"] == []


def test_an_upload_the_store_refuses_ends_is_kept_and_unmount_does_not_wait(
        mounter: Mounter, seaweedfs: S3Server, tmp_path: Path) -> None:
    """The store answers 400 to the upload (SeaweedFS's KeyTooLongError reply, injected by a proxy):
    close is EIO, the log and `status` say where the data is, nothing retries it, `umount` returns
    at once (exit 1, naming it) although the drain timeout is long, and `recover` reports it
    without sending it again."""
    proxy = FaultProxy(int(seaweedfs.host_port.rsplit(":", 1)[1]))
    try:
        through_proxy = SimpleNamespace(host_port=proxy.host_port, access_key=seaweedfs.access_key,
                                        secret_key=seaweedfs.secret_key,
                                        create_bucket=seaweedfs.create_bucket)
        mnt = s3_mount(mounter, through_proxy, "refused", tmp_path,  # type: ignore[arg-type]
                       extra=FAST_RETRY + '[write]\ndrain_timeout = "10m"\n')
        config = str(tmp_path / "refused.toml")
        f = open(mnt.join("refused.bin"), "wb")  # noqa: SIM115 (closed below, while the store refuses)
        f.write(b"the store will not take this")
        proxy.fail_next(1000, error_reply("400 Bad Request", "KeyTooLongError", "Your key is too long."))
        with pytest.raises(OSError) as info:
            f.close()
        assert info.value.errno == errno.EIO
        served = proxy.failures_served
        proxy.fail_next(0)  # the store would take it now: only a change to the file sends it again
        [pending] = mounter.run.status(mnt)["uploads"]["pending"]
        assert (pending["path"], pending["state"]) == ("refused.bin", "rejected")
        assert "KeyTooLongError" in pending["error"] and os.path.exists(pending["staged"])
        text = mounter.run("status", mnt.path).stdout
        assert "refused.bin" in text and "rejected" in text and pending["staged"] in text
        assert "refused the upload of" in Path(mnt.log).read_text()
        with open(mnt.join("refused.bin"), "rb") as r:
            assert r.read() == b"the store will not take this", "still readable in the mount"
        result = mounter.run("umount", mnt.path, timeout=120)  # far less than the drain timeout
        assert result.returncode == 1 and "refused.bin" in result.stderr and "rejected" in result.stderr
        assert proxy.failures_served == served, "never retried"
        result = mounter.run("recover", config, "-o", f"cache_dir={mnt.cache_dir}", timeout=120)
        assert result.returncode == 1 and result.stdout.startswith("rejected: "), result.stdout
        assert pending["staged"] in result.stdout and os.path.exists(pending["staged"])
        assert "refused.bin" not in objects(seaweedfs, "refused")
    finally:
        proxy.close()
