"""The command line without mounting: options, errors before mounting, config check, status."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from mountfs import cli, control
from mountfs.mount import MountSetupError, load_config_with, parse_options, prepare
from mountfs.sizes import human_bytes


def test_options_as_mount_fuse3_passes_them() -> None:
    options = parse_options(["uid=1000,gid=1001,umask=027", "allow_other,_netdev,nofail,x-systemd.after=net",
                             "cache_dir=/tmp/c,block_size=1MiB,ro,defaults,noatime"])
    assert (options.uid, options.gid, options.umask) == (1000, 1001, 0o027)
    assert options.allow_other and options.read_only
    assert options.cache_dir == "/tmp/c" and options.block_size == 1 << 20


def test_unknown_and_bad_options_are_named() -> None:
    with pytest.raises(MountSetupError, match="unknown mount option 'colour=blue'"):
        parse_options(["colour=blue"])
    with pytest.raises(MountSetupError, match="bad mount option uid='alice'"):
        parse_options(["uid=alice"])


@pytest.mark.parametrize("size", ["0", "1", "3MiB", "1TiB", "128MiB", "48KiB"])
def test_a_block_size_option_is_held_to_the_config_keys_rule(size: str) -> None:
    with pytest.raises(MountSetupError, match=f"bad mount option block_size={size}: must be a power "
                                              "of two from 64KiB to 64MiB"):
        parse_options([f"block_size={size}"])


@pytest.mark.parametrize(("size", "value"), [("64KiB", 1 << 16), ("4M", 4 << 20), ("64MiB", 64 << 20)])
def test_block_sizes_the_config_key_takes_are_taken(size: str, value: int) -> None:
    assert parse_options([f"block_size={size}"]).block_size == value


def test_a_block_size_option_must_fit_the_configs_max_size(tmp_path: Path, bucket: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[cache]\nmax_size = "2MiB"\nblock_size = "64KiB"\n\n[[mount]]\npath = "d"\n'
                      f'url = "file://{bucket}"\n')
    with pytest.raises(MountSetupError, match=r"block_size=4MiB: the cache's max_size \(2MiB\) must hold"):
        load_config_with(str(config), parse_options(["block_size=4MiB"]))
    assert load_config_with(str(config), parse_options(["block_size=1MiB"])).cache.block_size == 1 << 20


@pytest.fixture
def bucket(tmp_path: Path) -> Path:
    folder = tmp_path / "bucket"
    folder.mkdir()
    (folder / "f").write_bytes(b"x")
    return folder


def test_prepare_checks_the_mount_point(tmp_path: Path, bucket: Path) -> None:
    options = parse_options([f"cache_dir={tmp_path / 'cache'}"])
    with pytest.raises(MountSetupError, match=r"mount point .*/nope does not exist"):
        prepare(f"file://{bucket}", str(tmp_path / "nope"), options)
    with pytest.raises(MountSetupError, match="is not a directory"):
        prepare(f"file://{bucket}", str(bucket / "f"), options)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").touch()
    with pytest.raises(MountSetupError, match=r"is not empty \(use -o nonempty"):
        prepare(f"file://{bucket}", str(busy), options)
    prepared = prepare(f"file://{bucket}", str(busy), parse_options(["nonempty", f"cache_dir={tmp_path}/c"]))
    assert prepared.mountpoint == str(busy)


def test_prepare_checks_every_bucket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    options = parse_options([f"cache_dir={tmp_path / 'cache'}"])
    with pytest.raises(MountSetupError, match=r"cannot use file:///no/such/folder: .*does not exist"):
        prepare("file:///no/such/folder", str(mnt), options)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "127.0.0.1:1")  # nothing listens on port 1
    with pytest.raises(MountSetupError, match=r"cannot use gs://bucket/prefix: cannot reach gs://bucket at "
                                              r"http://127\.0\.0\.1:1: "):
        prepare("gs://bucket/prefix", str(mnt), options)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING",
                       "DefaultEndpointsProtocol=http;AccountName=acct;AccountKey=a2V5;"
                       "BlobEndpoint=http://127.0.0.1:1/acct")
    with pytest.raises(MountSetupError, match=r"cannot use az://cont@acct: cannot reach az://cont@acct at "
                                              r"http://127\.0\.0\.1:1/acct: "):
        prepare("az://cont@acct", str(mnt), options)


def test_an_s3_bucket_without_credentials_fails_before_mounting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with pytest.raises(MountSetupError, match=r"cannot use s3://127.0.0.1:1/bucket: .*no credentials found"):
        prepare("s3://127.0.0.1:1/bucket", str(mnt), parse_options([f"cache_dir={tmp_path / 'c'}"]))


def test_mount_errors_print_one_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["s4://bucket", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mountfs: s4://bucket") and 'did you mean "s3://"' in err
    config = tmp_path / "bad.toml"
    config.write_text('[cache]\nmax_sise = "1GiB"\n')
    assert cli.main([str(config), str(tmp_path)]) == 1
    assert f"{config}:2: cache.max_sise" in capsys.readouterr().err


def test_config_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.toml"
    good.write_text(f'[[mount]]\npath = "data"\nurl = "file://{tmp_path}"\n')
    assert cli.main(["config", "check", str(good)]) == 0
    assert "ok (1 mount(s))" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text('[[mount]]\npath = "data"\nurl = "file://relative"\nread_only = "yes"\n')
    assert cli.main(["config", "check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:3: mount[0].url" in err and f"{bad}:4: mount[0].read_only" in err
    assert "2 error(s)" in err


def test_status_and_umount_without_a_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MOUNTFS_RUNTIME_DIR", str(tmp_path / "run"))
    assert cli.main(["status"]) == 0
    assert "no mountfs mounts are running" in capsys.readouterr().out
    assert cli.main(["status", str(tmp_path)]) == 1
    assert "no mountfs daemon serves" in capsys.readouterr().err
    assert cli.main(["umount", str(tmp_path)]) == 1
    assert "is not mounted" in capsys.readouterr().err


async def test_control_socket_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOUNTFS_RUNTIME_DIR", str(tmp_path / "run"))
    path = control.socket_path(str(tmp_path / "mnt"))
    seen: list[dict[str, object]] = []

    async def handler(request: dict[str, object]) -> dict[str, object]:
        seen.append(request)
        if request["op"] == "boom":
            raise RuntimeError("handler failed")
        return {"ok": True, "echo": request["op"]}

    async with trio.open_nursery() as nursery:
        await nursery.start(control.serve, path, handler)
        assert oct(os.stat(path).st_mode & 0o777) == "0o600"
        assert control.list_sockets() == [path]
        reply = await trio.to_thread.run_sync(control.request, path, "status")
        assert reply == {"ok": True, "echo": "status"}
        failed = await trio.to_thread.run_sync(control.request, path, "boom")
        assert failed == {"ok": False, "error": "handler failed"}
        nursery.cancel_scope.cancel()
    assert not os.path.exists(path)
    with pytest.raises(control.NotRunning):
        control.request(path, "status")


def test_status_is_readable() -> None:
    text = cli.format_status({
        "mountpoint": "/mnt/x", "source": "file:///data", "pid": 7, "uptime": 3.2,
        "cache": {"hits": 3, "misses": 1, "shared": 0, "hit_ratio": 0.75, "blocks": 4, "bytes": 5 << 20,
                  "dir": "/c"},
        "reads": {"opens": 1, "reads": 4, "bytes_served": 1 << 20},
        "store": {"requests": 6, "gets": 1, "bytes_fetched": 4 << 20}})
    assert "3 hits, 1 misses (hit ratio 75.0%)" in text and "4.0 MiB fetched" in text
    assert human_bytes(0) == "0 B" and human_bytes(1536) == "1.5 KiB"


def test_status_shows_evictions_for_staged_writes_and_blocks_fetched_ahead_in_vain() -> None:
    text = cli.format_status({
        "mountpoint": "/mnt/x", "source": "file:///data", "pid": 7, "uptime": 3.2,
        "cache": {"hits": 3, "misses": 1, "shared": 0, "hit_ratio": 0.75, "blocks": 4, "bytes": 5 << 20,
                  "dir": "/c", "evicted": 9, "room_made": 5},
        "reads": {"opens": 1, "reads": 4, "bytes_served": 1 << 20, "prefetched_unread": 2},
        "store": {"requests": 6, "gets": 1, "bytes_fetched": 4 << 20}})
    assert "9 evicted (5 at once for staged writes)" in text
    assert "2 blocks fetched ahead were evicted unread" in text


def test_status_lists_pending_uploads() -> None:
    pending = [{"path": "ckpt/model.bin", "key": "runs/model.bin", "size": 3 << 20, "state": "failed",
                "error": "StoreUnavailable: 503", "attempts": 2, "staged": "/c/staging/abc"}]
    text = cli.format_status({
        "mountpoint": "/mnt/x", "source": "x.toml", "pid": 7, "uptime": 3.2,
        "cache": {"hits": 0, "misses": 0, "shared": 0, "hit_ratio": None, "blocks": 0, "bytes": 0,
                  "dir": "/c"},
        "reads": {"opens": 1, "reads": 0, "bytes_served": 0},
        "store": {"requests": 6, "gets": 0, "bytes_fetched": 0},
        "uploads": {"pending": pending, "pending_bytes": 3 << 20, "failed": 1, "completed": 4,
                    "bytes_uploaded": 1 << 20, "recovering": False, "draining": False}})
    assert "uploads: 4 done, 1.0 MiB up, 1 pending (3.0 MiB), 1 failing" in text
    assert ("ckpt/model.bin  3.0 MiB  failed after 2 attempt(s): StoreUnavailable: 503  "
            "(staged at /c/staging/abc)") in text


async def test_recover_uploads_what_a_dead_daemon_left(tmp_path: Path, bucket: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from mountfs.backends.async_store import AsyncStore
    from mountfs.backends.local import LocalStore
    from mountfs.config import WriteConfig
    from mountfs.upload.journal import UploadJournal
    from mountfs.upload.uploader import Uploader

    cache = tmp_path / "cache"
    journal = UploadJournal(str(cache))  # a daemon that wrote, then died before uploading
    uploader = Uploader(AsyncStore(LocalStore(str(bucket)), 2), journal, WriteConfig())
    staged = await uploader.open_staged("new/file.txt", None)
    await uploader.write(staged, 0, b"recovered")
    journal.close()
    args = ["recover", f"file://{bucket}", "-o", f"cache_dir={cache}"]
    assert await trio.to_thread.run_sync(cli.main, args) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("uploaded: file/") and "new/file.txt (9 bytes)" in out[0]
    assert (bucket / "new" / "file.txt").read_bytes() == b"recovered"
    assert await trio.to_thread.run_sync(cli.main, args) == 0
    assert capsys.readouterr().out.strip() == f"nothing to recover in {cache}"
