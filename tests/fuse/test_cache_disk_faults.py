"""The cache dir turning against a running mount: made read-only under it (a read-only bind mount
over it, as a disk remounted read-only after errors would be), or deleted. New writes fail with
EROFS, the error the application understands, and the log says why in one line."""

from __future__ import annotations

import errno
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Mounter, Runner


def test_a_read_only_cache_disk_makes_creates_erofs_with_one_log_line(
    mounter: Mounter, tmp_path: Path
) -> None:
    folder = tmp_path / "bucket"
    folder.mkdir()
    (folder / "old.txt").write_bytes(b"old\n")
    cache = tmp_path / "cache"
    mount = mounter.mount(f"file://{folder}", cache_dir=str(cache))
    assert Path(mount.join("old.txt")).read_bytes() == b"old\n"
    subprocess.run(["mount", "--bind", str(cache), str(cache)], check=True, timeout=30)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(cache)], check=True, timeout=30)
        with pytest.raises(OSError) as info:
            Path(mount.join("new.txt")).write_bytes(b"new\n")
        assert info.value.errno == errno.EROFS
        assert not (folder / "new.txt").exists()
    finally:
        subprocess.run(["umount", str(cache)], check=True, timeout=30)
    log = Path(mount.log).read_text()
    assert "Traceback" not in log
    assert [line for line in log.splitlines() if "Read-only file system" in line and " ERROR " in line]
    Path(mount.join("after.txt")).write_bytes(b"after\n")  # writable again, as the disk is
    mounter.umount(mount)
    assert (folder / "after.txt").read_bytes() == b"after\n"


def test_a_cache_dir_deleted_while_mounted_is_noticed_and_writes_are_refused(
    mounter: Mounter, mountfs: Runner, tmp_path: Path, tools: SimpleNamespace
) -> None:
    """New writes went on into a cache dir no one could find again (recreated staging, a deleted
    index): the daemon notices, says so in its log and status, and refuses new data with EROFS."""
    folder = tmp_path / "bucket"
    folder.mkdir()
    (folder / "old.txt").write_bytes(b"old\n")
    cache = tmp_path / "cache"
    mount = mounter.mount(f"file://{folder}", cache_dir=str(cache))
    Path(mount.join("before.txt")).write_bytes(b"before\n")
    shutil.rmtree(cache)

    assert tools.wait_until(lambda: mountfs.status(mount)["writes"]["refused"], 30, interval=0.2)
    with pytest.raises(OSError) as info:
        Path(mount.join("new.txt")).write_bytes(b"new\n")
    assert info.value.errno == errno.EROFS
    with pytest.raises(OSError) as info:
        Path(mount.join("before.txt")).write_bytes(b"again\n")
    assert info.value.errno == errno.EROFS
    status = mountfs("status", mount.path)
    assert "writes: refused: the cache dir" in status.stdout and "was deleted while mounted" in status.stdout
    assert Path(mount.join("old.txt")).read_bytes() == b"old\n"  # reads go on
    mounter.umount(mount)
    log = Path(mount.log).read_text()
    assert [line for line in log.splitlines() if " ERROR " in line and "was deleted while mounted" in line]
    assert (folder / "before.txt").read_bytes() == b"before\n"
