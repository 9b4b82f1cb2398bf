"""`getfattr -d` on files of a real mount: where each comes from (user.mountfs.url, after path
substitution), its version, how much of it is cached, whether it is direct, what waits for upload;
and nothing can be set or removed (ENOTSUP)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Mounter

MiB = 1 << 20

pytestmark = pytest.mark.skipif(shutil.which("getfattr") is None,
                                reason="needs getfattr and setfattr (Debian package attr)")


def getfattr(path: str) -> dict[str, str]:
    result = subprocess.run(["getfattr", "-d", "--absolute-names", path], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    out = {}
    for line in result.stdout.splitlines():
        if "=" in line and not line.startswith("#"):
            name, _, value = line.partition("=")
            out[name] = value.strip('"')
    return out


def test_getfattr_on_cached_uncached_direct_substituted_and_pending_files(mounter: Mounter,
                                                                          tmp_path: Path) -> None:
    src, sub = tmp_path / "src", tmp_path / "sub"
    (src / "direct").mkdir(parents=True)
    sub.mkdir()
    cached_size = 2 * MiB + 512 * 1024  # 3 blocks
    (src / "cached.bin").write_bytes(os.urandom(cached_size))
    (src / "uncached.bin").write_bytes(os.urandom(MiB + 5))
    (src / "direct" / "d.bin").write_bytes(b"direct bytes")
    (sub / "s.txt").write_bytes(b"substituted")
    config = tmp_path / "m.toml"
    config.write_text(
        f'[[mount]]\npath = "c"\nurl = "file://{src}"\n\n'
        '[[mount]]\npath = "sub"\nurl = "s3://datasets/research"\n\n'
        f'[[direct_access]]\nurl = "file://{src}/direct/*"\n\n'
        f'[[path_substitution]]\nregistered_prefix = "s3://datasets/research"\nlocal_prefix = "file://{sub}"\n')
    mount = mounter.mount(config, cache_local=False)

    cached_path = mount.join("c", "cached.bin")
    Path(cached_path).read_bytes()
    cached = getfattr(cached_path)
    assert cached["user.mountfs.url"] == f"file://{src}/cached.bin"
    assert cached["user.mountfs.cached"] == str(cached_size)
    assert cached["user.mountfs.direct"] == "false"
    assert cached["user.mountfs.pending"] == "0"
    assert cached["user.mountfs.etag"]

    uncached = getfattr(mount.join("c", "uncached.bin"))
    assert uncached["user.mountfs.cached"] == "0" and uncached["user.mountfs.direct"] == "false"
    assert uncached["user.mountfs.url"] == f"file://{src}/uncached.bin"
    assert uncached["user.mountfs.etag"] and uncached["user.mountfs.etag"] != cached["user.mountfs.etag"]

    direct_path = mount.join("c", "direct", "d.bin")
    assert Path(direct_path).read_bytes() == b"direct bytes"
    direct = getfattr(direct_path)
    assert direct["user.mountfs.direct"] == "true" and direct["user.mountfs.cached"] == "0"
    assert direct["user.mountfs.url"] == f"file://{src}/direct/d.bin"

    substituted_path = mount.join("sub", "s.txt")
    assert Path(substituted_path).read_bytes() == b"substituted"
    substituted = getfattr(substituted_path)
    assert substituted["user.mountfs.url"] == f"file://{sub}/s.txt"  # served from, not registered
    assert substituted["user.mountfs.cached"] == str(len(b"substituted"))
    assert substituted["user.mountfs.direct"] == "false"

    # a file being written: its bytes wait for the upload until close. Asked in this process: a
    # subprocess would close its copy of the descriptor at exec, a flush that uploads the file.
    pending_path = mount.join("c", "new.bin")
    with open(pending_path, "wb") as f:
        f.write(b"p" * 1000)
        f.flush()
        pending = {name: os.getxattr(pending_path, name).decode() for name in os.listxattr(pending_path)}
        assert pending["user.mountfs.pending"] == "1000", pending
        assert "user.mountfs.etag" not in pending  # not in the store yet
    written = getfattr(pending_path)
    assert written["user.mountfs.pending"] == "0" and written["user.mountfs.etag"], written
    assert (src / "new.bin").read_bytes() == b"p" * 1000

    assert getfattr(mount.join("c", "direct")) == {"user.mountfs.url": f"file://{src}/direct/"}  # a prefix
    assert getfattr(mount.path) == {}  # above the mounts: nothing

    # read-only: set and remove are refused with ENOTSUP (not ENOSYS, which the kernel would cache)
    for args in (["setfattr", "-n", "user.mountfs.url", "-v", "x", cached_path],
                 ["setfattr", "-n", "user.other", "-v", "x", cached_path],
                 ["setfattr", "-x", "user.mountfs.etag", cached_path]):
        result = subprocess.run(args, capture_output=True, text=True, timeout=30)
        assert result.returncode != 0 and "Operation not supported" in result.stderr, (args, result.stderr)
    assert getfattr(cached_path)["user.mountfs.url"] == cached["user.mountfs.url"]

    fd = os.open(mount.join("c"), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)  # a directory's fsync (sqlite, rename-over dances) is answered
    finally:
        os.close(fd)
