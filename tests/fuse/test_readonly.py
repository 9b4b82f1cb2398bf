"""Every way to change the tree fails with EROFS ("Read-only file system"), and the source is untouched:
on a mount made with -o ro (the kernel refuses) and on a `read_only = true` mount entry (mountfs
refuses, the kernel mount being writable)."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Bucket, Mount, Mounter

EROFS_TEXT = "Read-only file system"


@pytest.fixture(scope="module")
def read_only_entry(session_mounter: Mounter, bucket: Bucket,
                    tmp_path_factory: pytest.TempPathFactory) -> Mount:
    """The sample bucket through a config whose mount entry says `read_only = true`."""
    config = tmp_path_factory.mktemp("ro-config") / "ro.toml"
    config.write_text(f'[[mount]]\npath = ""\nurl = "{bucket.url}"\nread_only = true\n')
    return session_mounter.mount(str(config))


@pytest.fixture(params=["-o ro", "read_only = true"])
def unchanged(request: pytest.FixtureRequest, bucket: Bucket, snapshot_of: Any) -> Iterator[Mount]:
    """The mount; after the test, the source folder must be exactly as it was."""
    mount: Mount = request.getfixturevalue("sample_mount" if request.param == "-o ro" else "read_only_entry")
    before = snapshot_of(bucket.root)
    yield mount
    after = snapshot_of(bucket.root)
    assert after == before, {k: (before.get(k), after.get(k)) for k in set(before) ^ set(after)}
    # and the mount still shows the same tree
    assert set(os.listdir(mount.path)) == set(os.listdir(bucket.root))


SHELL_WRITES = [
    ("touch new", 'touch "$M/new-file"'),
    ("touch existing", 'touch "$M/empty"'),
    ("echo > file", 'echo x > "$M/empty"'),
    ("echo >> file", 'echo x >> "$M/with space/file with spaces.txt"'),
    ("echo > new", 'echo x > "$M/a/new.txt"'),
    ("mkdir", 'mkdir "$M/new-dir"'),
    ("mkdir -p nested", 'mkdir -p "$M/a/b/new/deeper"'),
    ("rm", 'rm -f "$M/empty"'),
    ("rm -r", 'rm -rf "$M/x/y/z"'),
    ("rmdir", 'rmdir "$M/x/y/z"'),
    ("mv", 'mv "$M/empty" "$M/empty-moved"'),
    ("mv dir", 'mv "$M/x" "$M/x-moved"'),
    ("ln -s", 'ln -s empty "$M/a-link"'),
    ("ln", 'ln "$M/empty" "$M/hard-link"'),
    ("chmod", 'chmod 600 "$M/empty"'),
    ("truncate", 'truncate -s 0 "$M/blocks/exactly-one-block.bin"'),
    ("cp into", 'cp /etc/passwd "$M/copied"'),
    ("dd", 'dd if=/dev/zero of="$M/blocks/exactly-one-block.bin" bs=1 count=1 conv=notrunc'),
]


@pytest.mark.parametrize("command", [c for _, c in SHELL_WRITES], ids=[i for i, _ in SHELL_WRITES])
def test_shell_writes_fail_with_erofs(unchanged: Mount, command: str) -> None:
    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30,
                            env={**os.environ, "M": unchanged.path, "LC_ALL": "C"})
    assert result.returncode != 0, f"{command} succeeded"
    assert EROFS_TEXT in result.stderr, result.stderr


def _open_write(path: str, mode: str) -> None:
    with open(path, mode) as f:
        f.write(b"x")


PY_WRITES: list[tuple[str, Callable[[str], object]]] = [
    ("open wb existing", lambda m: _open_write(f"{m}/empty", "wb")),
    ("open ab existing", lambda m: _open_write(f"{m}/empty", "ab")),
    ("open r+b existing", lambda m: _open_write(f"{m}/blocks/exactly-one-block.bin", "r+b")),
    ("open wb new", lambda m: _open_write(f"{m}/new.bin", "wb")),
    ("open xb new", lambda m: _open_write(f"{m}/a/new.bin", "xb")),
    ("os.open O_WRONLY", lambda m: os.open(f"{m}/empty", os.O_WRONLY)),
    ("os.open O_RDWR", lambda m: os.open(f"{m}/empty", os.O_RDWR)),
    ("os.open O_CREAT", lambda m: os.open(f"{m}/created", os.O_WRONLY | os.O_CREAT, 0o644)),
    ("os.open O_TRUNC", lambda m: os.open(f"{m}/empty", os.O_RDONLY | os.O_TRUNC)),
    ("mkdir", lambda m: os.mkdir(f"{m}/made")),
    ("mknod fifo", lambda m: os.mkfifo(f"{m}/fifo")),
    ("unlink", lambda m: os.unlink(f"{m}/empty")),
    ("rmdir", lambda m: os.rmdir(f"{m}/x/y/z")),
    ("rename", lambda m: os.rename(f"{m}/empty", f"{m}/renamed")),
    ("rename dir", lambda m: os.rename(f"{m}/a", f"{m}/a2")),
    ("symlink", lambda m: os.symlink("empty", f"{m}/sym")),
    ("link", lambda m: os.link(f"{m}/empty", f"{m}/hard")),
    ("truncate", lambda m: os.truncate(f"{m}/blocks/exactly-one-block.bin", 0)),
    ("chmod", lambda m: os.chmod(f"{m}/empty", 0o600)),
    ("chown", lambda m: os.chown(f"{m}/empty", 1, 1)),
    ("utime", lambda m: os.utime(f"{m}/empty", (1, 1))),
    ("setxattr", lambda m: os.setxattr(f"{m}/empty", "user.test", b"x")),
]


@pytest.mark.parametrize("action", [a for _, a in PY_WRITES], ids=[i for i, _ in PY_WRITES])
def test_syscall_writes_fail_with_erofs(unchanged: Mount, action: Callable[[str], object]) -> None:
    with pytest.raises(OSError) as info:
        fd = action(unchanged.path)
        if isinstance(fd, int):
            os.close(fd)
    assert info.value.errno == errno.EROFS, info.value


def test_reading_still_works_after_failed_writes(unchanged: Mount, bucket: Bucket) -> None:
    for _ in range(3):
        with pytest.raises(OSError):
            _open_write(unchanged.join("empty"), "wb")
    with open(unchanged.join(bucket.SPACE_NAME), "rb") as f:
        assert f.read() == bucket.read(bucket.SPACE_NAME)
    assert os.stat(unchanged.join("blocks/exactly-one-block.bin")).st_size == bucket.BLOCK_SIZE
