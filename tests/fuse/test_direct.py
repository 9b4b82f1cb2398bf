"""Direct access and path substitution (issue 7, points 5 and 6) through real mounts.

Direct access: a file:// mount (the default glob is `file://*`, as in ClearML) passes reads and
writes straight to the folder: no block is cached, no store GET is made, attributes are the file's.
Path substitution: a mount whose URL is under a registered prefix is served from the local prefix;
the original store is never contacted (its endpoint here is a port nobody listens on). A registered
prefix inside a mount's URL is grafted at its directory: the rest of the mount stays on the store.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.servers import S3Server, free_port

if TYPE_CHECKING:
    from conftest import Mounter

MiB = 1 << 20


def block_files(cache_dir: str) -> list[str]:
    root = os.path.join(cache_dir, "blocks")
    return [os.path.join(d, n) for d, _, names in os.walk(root) for n in names if d != root]  # not CHECKSUM


def assert_nothing_cached(mounter: Mounter, mnt: str, cache_dir: str) -> None:
    status = mounter.run.status(mnt)
    assert status["cache"]["blocks"] == 0 and status["cache"]["bytes"] == 0, status["cache"]
    assert status["cache"]["hits"] == 0 and status["cache"]["misses"] == 0, status["cache"]
    assert status["store"]["gets"] == 0 and status["store"]["bytes_fetched"] == 0, status["store"]
    assert block_files(cache_dir) == []


def make_folder(root: Path) -> dict[str, bytes]:
    files = {"small.txt": b"hello direct\n", "sub/big.bin": os.urandom(3 * MiB + 17), "empty": b""}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def test_file_mounts_are_direct_by_default(mounter: Mounter, tmp_path: Path) -> None:
    folder = tmp_path / "local"
    files = make_folder(folder)
    mnt = mounter.mount(f"file://{folder}", cache_local=False)
    for rel, data in files.items():
        with open(mnt.join(rel), "rb") as f:
            assert f.read() == data
    with open(mnt.join("sub/big.bin"), "rb") as f:  # random reads too
        f.seek(MiB + 5)
        assert f.read(1000) == files["sub/big.bin"][MiB + 5:MiB + 1005]

    # writes land in the folder at once (no staging): even before the file is closed
    with open(mnt.join("sub/new.bin"), "wb") as f:
        f.write(b"x" * 5000)
        f.flush()
        assert (folder / "sub/new.bin").read_bytes() == b"x" * 5000
        os.fsync(f.fileno())
    # an overwrite in place changes the very file (same inode), not a new copy renamed over it
    inode = (folder / "small.txt").stat().st_ino
    with open(mnt.join("small.txt"), "r+b") as f:
        f.seek(6)
        f.write(b"DIRECT")
    assert (folder / "small.txt").read_bytes() == b"hello DIRECT\n"
    assert (folder / "small.txt").stat().st_ino == inode
    os.truncate(mnt.join("sub/big.bin"), 10)
    assert (folder / "sub/big.bin").read_bytes() == files["sub/big.bin"][:10]
    with open(mnt.join("small.txt"), "ab") as f:
        f.write(b"more\n")
    assert (folder / "small.txt").read_bytes() == b"hello DIRECT\nmore\n"

    # attributes are the file's own: a change made beside the mount shows within a second
    (folder / "empty").write_bytes(b"12345")
    os.utime(folder / "empty", ns=(1_600_000_000_000_000_000,) * 2)
    time.sleep(1.1)
    st = os.stat(mnt.join("empty"))
    assert (st.st_size, st.st_mtime_ns) == (5, 1_600_000_000_000_000_000)
    with open(mnt.join("empty"), "rb") as f:
        assert f.read() == b"12345"
    assert os.stat(mnt.join("sub/new.bin")).st_size == 5000

    assert_nothing_cached(mounter, mnt.path, mnt.cache_dir)
    assert mounter.run.status(mnt.path)["uploads"]["completed"] == 0


def test_renames_in_a_direct_mount_are_the_folder_s_own(mounter: Mounter, tmp_path: Path) -> None:
    """A rename is os.rename: the same file (inode), and a descriptor open across it still writes to it."""
    folder = tmp_path / "local"
    files = make_folder(folder)
    mnt = mounter.mount(f"file://{folder}", cache_local=False)
    inode = (folder / "sub/big.bin").stat().st_ino
    with open(mnt.join("sub/big.bin"), "r+b") as f:
        os.rename(mnt.join("sub/big.bin"), mnt.join("moved.bin"))
        f.write(b"ABC")
    assert (folder / "moved.bin").stat().st_ino == inode and not (folder / "sub/big.bin").exists()
    assert (folder / "moved.bin").read_bytes() == b"ABC" + files["sub/big.bin"][3:]
    os.rename(mnt.join("sub"), mnt.join("sub2"))
    assert sorted(os.listdir(mnt.path)) == ["empty", "moved.bin", "small.txt", "sub2"]
    assert sorted(os.listdir(folder)) == ["empty", "moved.bin", "small.txt", "sub2"]
    os.rename(mnt.join("small.txt"), mnt.join("empty"))  # over an existing file
    assert (folder / "empty").read_bytes() == files["small.txt"]
    assert Path(mnt.join("empty")).read_bytes() == files["small.txt"]
    assert_nothing_cached(mounter, mnt.path, mnt.cache_dir)


def test_read_only_direct_mount_refuses_writes(mounter: Mounter, tmp_path: Path) -> None:
    folder = tmp_path / "local"
    files = make_folder(folder)
    mnt = mounter.mount(f"file://{folder}", "ro", cache_local=False)
    with open(mnt.join("small.txt"), "rb") as f:
        assert f.read() == files["small.txt"]
    with pytest.raises(OSError) as info:
        os.open(mnt.join("small.txt"), os.O_RDWR)
    assert info.value.errno == errno.EROFS
    assert_nothing_cached(mounter, mnt.path, mnt.cache_dir)


@pytest.mark.parametrize("opt_out", ["-o cache_local", "direct_access = []"])
def test_the_opt_outs_put_local_files_through_the_cache(mounter: Mounter, tmp_path: Path,
                                                        opt_out: str) -> None:
    folder = tmp_path / "local"
    files = make_folder(folder)
    if opt_out == "-o cache_local":
        mnt = mounter.mount(f"file://{folder}", "cache_local", cache_local=False)
    else:
        config = tmp_path / "c.toml"
        config.write_text(f'direct_access = []\n[[mount]]\npath = ""\nurl = "file://{folder}"\n')
        mnt = mounter.mount(str(config), cache_local=False)
    with open(mnt.join("sub/big.bin"), "rb") as f:
        assert f.read() == files["sub/big.bin"]
    status = mounter.run.status(mnt.path)
    assert status["cache"]["blocks"] >= 4 and status["store"]["gets"] > 0, status
    assert block_files(mnt.cache_dir)


def test_a_glob_deeper_than_the_mount_makes_only_its_files_direct(mounter: Mounter, tmp_path: Path) -> None:
    folder = tmp_path / "local"
    files = make_folder(folder)
    config = tmp_path / "c.toml"
    config.write_text(f'[[direct_access]]\nurl = "file://{folder}/sub/*"\n'
                      f'[[mount]]\npath = "data"\nurl = "file://{folder}"\n')
    mnt = mounter.mount(str(config), cache_local=False)
    with open(mnt.join("data/sub/big.bin"), "rb") as f:
        assert f.read() == files["sub/big.bin"]
    assert_nothing_cached(mounter, mnt.path, mnt.cache_dir)
    with open(mnt.join("data/small.txt"), "rb") as f:
        assert f.read() == files["small.txt"]
    assert mounter.run.status(mnt.path)["cache"]["blocks"] == 1


def test_a_content_type_glob_makes_only_files_of_that_type_direct(mounter: Mounter, tmp_path: Path) -> None:
    """ClearML's direct_access by content_type: .bin files (application/octet-stream) straight from
    the folder, the text file through the cache."""
    folder = tmp_path / "local"
    files = make_folder(folder)
    config = tmp_path / "c.toml"
    config.write_text('[[direct_access]]\ncontent_type = "application/*"\n'
                      f'[[mount]]\npath = "data"\nurl = "file://{folder}"\n')
    mnt = mounter.mount(str(config), cache_local=False)
    with open(mnt.join("data/sub/big.bin"), "rb") as f:
        assert f.read() == files["sub/big.bin"]
    assert_nothing_cached(mounter, mnt.path, mnt.cache_dir)
    with open(mnt.join("data/small.txt"), "rb") as f:
        assert f.read() == files["small.txt"]
    assert mounter.run.status(mnt.path)["cache"]["blocks"] == 1


def substitution_config(tmp_path: Path, local: Path, extra: str = "") -> str:
    """Two mounts under a registered prefix of an S3 endpoint nobody listens on: the store is
    "stopped" for the whole test, so every byte read comes from the local copy."""
    dead = f"127.0.0.1:{free_port()}"
    config = tmp_path / "subst.toml"
    config.write_text(
        f'{extra}\n[[path_substitution]]\nregistered_prefix = "s3://{dead}/datasets/research"\n'
        f'local_prefix = "file://{local}"\n'
        f'[[mount]]\npath = "research"\nurl = "s3://{dead}/datasets/research"\n'
        f'[[mount]]\npath = "sub"\nurl = "s3://{dead}/datasets/research/sub"\n'
        f'[s3]\nkey = "k"\nsecret = "s"\n')
    return str(config)


def test_path_substitution_serves_the_local_copy_directly(mounter: Mounter, tmp_path: Path) -> None:
    local = tmp_path / "nfs-research"
    files = make_folder(local)
    mnt = mounter.mount(substitution_config(tmp_path, local), cache_local=False)
    assert sorted(os.listdir(mnt.join("research"))) == ["empty", "small.txt", "sub"]
    assert Path(mnt.join("research/small.txt")).read_bytes() == files["small.txt"]
    assert Path(mnt.join("sub/big.bin")).read_bytes() == files["sub/big.bin"]  # a URL under the prefix
    with open(mnt.join("research/written.txt"), "wb") as f:
        f.write(b"to the local copy")
    assert (local / "written.txt").read_bytes() == b"to the local copy"
    assert_nothing_cached(mounter, mnt.path, mnt.cache_dir)
    urls = {s["path"]: s["url"] for s in mounter.run.status(mnt.path)["stores"]}
    assert urls == {"research": f"file://{local}", "sub": f"file://{local}/sub"}


def test_path_substitution_without_direct_access_is_cached(mounter: Mounter, tmp_path: Path) -> None:
    local = tmp_path / "nfs-research"
    files = make_folder(local)
    mnt = mounter.mount(substitution_config(tmp_path, local, "direct_access = []"), cache_local=False)
    assert Path(mnt.join("sub/big.bin")).read_bytes() == files["sub/big.bin"]
    status = mounter.run.status(mnt.path)
    assert status["cache"]["blocks"] >= 4, status["cache"]


def test_a_registered_prefix_inside_a_mount_is_served_from_the_local_copy(
        mounter: Mounter, seaweedfs: S3Server, tmp_path: Path) -> None:
    bucket = "graft"
    seaweedfs.create_bucket(bucket)
    client = seaweedfs.client()
    client.put_object(Bucket=bucket, Key="top.txt", Body=b"from the store")
    client.put_object(Bucket=bucket, Key="research/small.txt", Body=b"the store's stale copy")
    client.put_object(Bucket=bucket, Key="research/only-in-store.txt", Body=b"hidden")
    local = tmp_path / "nfs-research"
    files = make_folder(local)
    config = tmp_path / "graft.toml"
    config.write_text(
        f'[[path_substitution]]\nregistered_prefix = "s3://{seaweedfs.host_port}/{bucket}/research"\n'
        f'local_prefix = "file://{local}"\n'
        f'[[mount]]\npath = "ds"\nurl = "s3://{seaweedfs.host_port}/{bucket}"\n'
        f'[[s3.credentials]]\nhost = "{seaweedfs.host_port}"\nkey = "{seaweedfs.access_key}"\n'
        f'secret = "{seaweedfs.secret_key}"\nsecure = false\n')
    mnt = mounter.mount(str(config), cache_local=False)
    assert sorted(os.listdir(mnt.join("ds"))) == ["research", "top.txt"]
    assert sorted(os.listdir(mnt.join("ds/research"))) == ["empty", "small.txt", "sub"]
    assert Path(mnt.join("ds/research/small.txt")).read_bytes() == files["small.txt"]
    assert Path(mnt.join("ds/research/sub/big.bin")).read_bytes() == files["sub/big.bin"]
    assert not os.path.exists(mnt.join("ds/research/only-in-store.txt"))
    assert Path(mnt.join("ds/top.txt")).read_bytes() == b"from the store"
    with open(mnt.join("ds/research/written.txt"), "wb") as f:
        f.write(b"to the local copy")
    assert (local / "written.txt").read_bytes() == b"to the local copy"
    assert "research/written.txt" not in {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    for refused in (lambda: os.rmdir(mnt.join("ds/research")),
                    lambda: os.rename(mnt.join("ds/research"), mnt.join("ds/elsewhere"))):
        with pytest.raises(PermissionError):
            refused()
    with pytest.raises(OSError) as crossing:
        os.rename(mnt.join("ds/top.txt"), mnt.join("ds/research/top.txt"))
    assert crossing.value.errno == errno.EXDEV
    status = mounter.run.status(mnt.path)
    fetched = {s["path"]: (s["url"], s["bytes_fetched"]) for s in status["stores"]}
    assert fetched == {"ds": (f"s3://{seaweedfs.host_port}/{bucket}", len(b"from the store")),
                       "ds/research": (f"file://{local}", 0)}
    assert status["cache"]["blocks"] == 1, status["cache"]  # top.txt only
