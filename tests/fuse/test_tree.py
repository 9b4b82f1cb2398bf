"""What the mounted tree looks like: names, types, sizes, mtimes, owners and modes, seen by plain tools."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Bucket, Mount, Mounter


def run(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(list(args), capture_output=True, cwd=cwd, timeout=120,
                            env={**os.environ, "LC_ALL": "C.UTF-8"})
    assert result.returncode == 0, f"{args} failed: {result.stderr.decode(errors='replace')}"
    return result


def test_find_lists_the_same_tree(sample_mount: Mount, bucket: Bucket) -> None:
    out = run("find", ".", "-mindepth", "1", "-print0", cwd=sample_mount.path).stdout
    found = [os.fsdecode(p)[2:] for p in out.split(b"\0") if p]
    assert len(found) == len(set(found)), "find printed some paths twice"
    expected = set(bucket.files) | bucket.dirs
    assert set(found) == expected, (
        f"missing: {sorted(expected - set(found))[:10]}, extra: {sorted(set(found) - expected)[:10]}")
    files = run("find", ".", "-type", "f", "-print0", cwd=sample_mount.path).stdout
    assert {os.fsdecode(p)[2:] for p in files.split(b"\0") if p} == set(bucket.files)
    dirs = run("find", ".", "-mindepth", "1", "-type", "d", "-print0", cwd=sample_mount.path).stdout
    assert {os.fsdecode(p)[2:] for p in dirs.split(b"\0") if p} == bucket.dirs


def parse_ls(output: bytes) -> dict[str, tuple[str, int, int]]:
    """`ls -ln --time-style=+%s --quoting-style=literal` lines -> name: (mode string, size, mtime)."""
    entries = {}
    for line in output.decode().splitlines():
        if line.startswith("total "):
            continue
        mode, _links, _uid, _gid, size, mtime, name = line.split(None, 6)
        entries[name] = (mode, int(size), int(mtime))
    return entries


def test_ls_l_shows_sizes_and_mtimes(sample_mount: Mount, bucket: Bucket) -> None:
    folders = sorted({os.path.dirname(r) for r in bucket.files} | {""})
    assert bucket.MANY_DIR in folders and "données" in folders and "with space" in folders
    for folder in folders:
        out = run("ls", "-ln", "--time-style=+%s", "--quoting-style=literal",
                  sample_mount.join(folder)).stdout
        listed = parse_ls(out)
        source_dir = bucket.path(folder)
        assert set(listed) == set(os.listdir(source_dir)), folder
        for name, (mode, size, mtime) in listed.items():
            st = os.stat(os.path.join(source_dir, name))
            if stat.S_ISDIR(st.st_mode):
                assert mode.startswith("d"), (folder, name, mode)
            else:
                assert mode.startswith("-"), (folder, name, mode)
                assert size == st.st_size, (folder, name)
                assert mtime == int(st.st_mtime), (folder, name)


STAT_FORMAT = "%s|%F|%a|%u|%g|%Y|%h|%n"


def stat_tool(paths: list[str]) -> dict[str, tuple[int, str, int, int, int, int]]:
    """coreutils `stat` of many paths in one run -> path: (size, type, mode, uid, gid, mtime)."""
    out = run("stat", "-c", STAT_FORMAT, "--", *paths).stdout.decode()
    result = {}
    for line in out.splitlines():
        size, kind, mode, uid, gid, mtime, _links, name = line.split("|", 7)
        result[name] = (int(size), kind, int(mode, 8), int(uid), int(gid), int(mtime))
    return result


def some_files(bucket: Bucket) -> list[str]:
    special = ["empty", "blocks/exactly-one-block.bin", "blocks/one-block-plus-one.bin",
               bucket.SPACE_NAME, bucket.FRENCH_NAME, bucket.JAPANESE_NAME,
               f"{bucket.MANY_DIR}/entry-00000.txt", f"{bucket.MANY_DIR}/entry-09999.txt"]
    return special + bucket.sample_files[::7]


def test_stat_of_files(sample_mount: Mount, bucket: Bucket) -> None:
    rels = some_files(bucket)
    seen = stat_tool([sample_mount.join(r) for r in rels])
    for rel in rels:
        st = os.stat(bucket.path(rel))
        size, kind, mode, uid, gid, mtime = seen[sample_mount.join(rel)]
        assert size == st.st_size, rel
        assert kind == ("regular empty file" if st.st_size == 0 else "regular file"), rel
        assert mtime == int(st.st_mtime), rel
        assert (uid, gid) == (os.getuid(), os.getgid()), rel
        assert mode & 0o555 == 0o444, f"{rel}: mode {mode:o}, read bits must follow umask 022"
        # the same through the syscall, to the nanosecond as the source has it
        mst = os.stat(sample_mount.join(rel))
        assert stat.S_ISREG(mst.st_mode) and mst.st_size == st.st_size
        assert int(mst.st_mtime) == int(st.st_mtime), rel
    assert seen[sample_mount.join(bucket.SPACE_NAME)][5] == 1_600_000_000


def test_stat_of_dirs(sample_mount: Mount, bucket: Bucket) -> None:
    rels = sorted(bucket.dirs)
    seen = stat_tool([sample_mount.path] + [sample_mount.join(r) for r in rels])
    for path, (_size, kind, mode, uid, gid, _mtime) in seen.items():
        assert kind == "directory", path
        assert mode & 0o555 == 0o555, f"{path}: mode {mode:o}"
        assert (uid, gid) == (os.getuid(), os.getgid()), path
    assert len(seen) == len(rels) + 1


def test_read_only_mounts_show_no_write_bits(sample_mount: Mount, bucket: Bucket) -> None:
    """The sample mount is read-only (every write is EROFS), so with the default umask 022 files
    must show 0444 and directories 0555, as `attributes` does for a read-only mount: write bits
    that no write can use mislead `test -w`, `ls -l`, rsync and cp."""
    file_mode = stat.S_IMODE(os.stat(sample_mount.join(bucket.sample_files[0])).st_mode)
    dir_mode = stat.S_IMODE(os.stat(sample_mount.join("a")).st_mode)
    root_mode = stat.S_IMODE(os.stat(sample_mount.path).st_mode)
    assert (oct(file_mode), oct(dir_mode), oct(root_mode)) == (oct(0o444), oct(0o555), oct(0o555))


def test_ro_option_modes(mounter: Mounter, bucket: Bucket) -> None:
    mnt = mounter.mount(bucket.url, "ro")
    assert stat.S_IMODE(os.stat(mnt.join(bucket.SPACE_NAME)).st_mode) == 0o444
    assert stat.S_IMODE(os.stat(mnt.join("a")).st_mode) == 0o555
    assert stat.S_IMODE(os.stat(mnt.path).st_mode) == 0o555
    assert os.statvfs(mnt.path).f_flag & os.ST_RDONLY


def test_uid_gid_umask_options(mounter: Mounter, bucket: Bucket) -> None:
    mnt = mounter.mount(bucket.url, "uid=1234,gid=2345,umask=027")
    seen = stat_tool([mnt.join(bucket.SPACE_NAME), mnt.join("a/b"), mnt.path, mnt.join("empty")])
    for path in (mnt.join(bucket.SPACE_NAME), mnt.join("empty")):
        _size, _kind, mode, uid, gid, _ = seen[path]
        assert (uid, gid) == (1234, 2345), path
        # umask 027: no group write, nothing for others; owner-write depends on read-only (tested above)
        assert mode & 0o577 == 0o440, f"{path}: mode {mode:o}"
    for path in (mnt.join("a/b"), mnt.path):
        _size, _kind, mode, uid, gid, _ = seen[path]
        assert (uid, gid) == (1234, 2345), path
        assert mode & 0o577 == 0o550, f"{path}: mode {mode:o}"
    # listing (readdirplus attributes) agrees with lookups
    out = run("ls", "-ln", "--time-style=+%s", "--quoting-style=literal", mnt.join("blocks")).stdout.decode()
    for line in out.splitlines()[1:]:
        assert line.split()[2:4] == ["1234", "2345"], line


def test_names_with_spaces_and_non_ascii(sample_mount: Mount, bucket: Bucket) -> None:
    root_listing = run("ls", "-1", "--quoting-style=literal", sample_mount.path).stdout.decode().splitlines()
    assert {"with space", "données", bucket.JAPANESE_NAME} <= set(root_listing)
    assert "été.txt" in run("ls", "-1", "--quoting-style=literal",
                            sample_mount.join("données")).stdout.decode().splitlines()
    assert "file with spaces.txt" in run("ls", "-1", "--quoting-style=literal",
                                         sample_mount.join("with space")).stdout.decode().splitlines()
    for rel in (bucket.SPACE_NAME, bucket.FRENCH_NAME, bucket.JAPANESE_NAME):
        assert run("cat", sample_mount.join(rel)).stdout == bucket.read(rel), rel
        out = run("stat", "-c", "%s|%n", sample_mount.join(rel)).stdout.decode().strip()
        assert out == f"{bucket.files[rel]}|{sample_mount.join(rel)}"
    assert run("cat", sample_mount.join(bucket.FRENCH_NAME)).stdout.decode() == "l'été est chaud\n"
    # the same names through the syscalls, as str and as bytes
    assert "été.txt" in os.listdir(sample_mount.join("données"))
    assert "été.txt".encode() in os.listdir(os.fsencode(sample_mount.join("données")))


def test_empty_file_reads_as_empty(sample_mount: Mount) -> None:
    path = sample_mount.join("empty")
    assert os.stat(path).st_size == 0
    with open(path, "rb") as f:
        assert f.read() == b""
        assert f.read(10) == b""
    fd = os.open(path, os.O_RDONLY)
    try:
        assert os.pread(fd, 4096, 0) == b""
        assert os.pread(fd, 1, 100) == b""
    finally:
        os.close(fd)
    assert run("cat", path).stdout == b""
    assert run("wc", "-c", path).stdout.split()[0] == b"0"


def test_missing_names_are_enoent(sample_mount: Mount) -> None:
    expected = {"no-such-file": errno.ENOENT, "a/no-such": errno.ENOENT, "no/such/dir/file": errno.ENOENT,
                "empty/child": errno.ENOTDIR}
    for rel, code in expected.items():
        path = sample_mount.join(rel)
        assert not os.path.exists(path), rel
        with pytest.raises(OSError) as info:
            os.stat(path)
        assert info.value.errno == code, (rel, info.value)


# --- the 10,000-entry folder ---------------------------------------------------------------------------

def test_listdir_of_10000_entries(sample_mount: Mount, bucket: Bucket) -> None:
    names = os.listdir(sample_mount.join(bucket.MANY_DIR))
    assert len(names) == bucket.MANY_COUNT
    assert set(names) == bucket.many_names


def test_scandir_stopped_early_then_reopened(sample_mount: Mount, bucket: Bucket) -> None:
    folder = sample_mount.join(bucket.MANY_DIR)
    for stop in (1, 999, 1000, 1001, 4321, 9999):
        with os.scandir(folder) as it:
            partial = [next(it).name for _ in range(stop)]
        assert len(partial) == len(set(partial)), f"duplicates in the first {stop} entries"
        assert set(partial) <= bucket.many_names
        with os.scandir(folder) as it:
            full = [entry.name for entry in it]
        assert len(full) == bucket.MANY_COUNT, f"after stopping at {stop}: {len(full)} entries"
        assert set(full) == bucket.many_names, f"after stopping at {stop}"
    # two readers of the same directory interleaved never disturb each other
    with os.scandir(folder) as first, os.scandir(folder) as second:
        a, b = [], []
        for entry in first:
            a.append(entry.name)
            if len(a) % 3 == 0:
                b.append(next(second).name)
        b.extend(entry.name for entry in second)
    assert len(a) == len(b) == bucket.MANY_COUNT and set(a) == set(b) == bucket.many_names
    # entries carry the type: no stat needed to tell files from folders
    with os.scandir(sample_mount.path) as it:
        kinds = {entry.name: entry.is_dir(follow_symlinks=False) for entry in it}
    assert kinds[bucket.MANY_DIR] is True and kinds["empty"] is False


def test_ls_f_counts_10000_entries(sample_mount: Mount, bucket: Bucket) -> None:
    folder = sample_mount.join(bucket.MANY_DIR)
    lines = run("ls", "-f", "--quoting-style=literal", folder).stdout.decode().splitlines()
    dots = {".", ".."} & set(lines)
    assert len(lines) == len(set(lines)), "ls -f printed an entry twice"
    assert set(lines) - dots == bucket.many_names
    count = run("sh", "-c", 'ls -f "$1" | wc -l', "sh", folder).stdout
    assert int(count) == bucket.MANY_COUNT + len(dots)
    # `ls -l` of the whole folder: every size right
    listed = parse_ls(run("ls", "-ln", "--time-style=+%s", "--quoting-style=literal", folder).stdout)
    assert len(listed) == bucket.MANY_COUNT
    for name, (_mode, size, _mtime) in listed.items():
        assert size == bucket.files[f"{bucket.MANY_DIR}/{name}"], name


@pytest.fixture
def public_dir() -> Iterator[str]:
    """A directory other users can reach (pytest's tmp dirs are 0700 root)."""
    path = tempfile.mkdtemp(prefix="mountfs-fuse-test-", dir="/tmp")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "LC_ALL": "C"})


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is missing")
@pytest.mark.parametrize("allow_other", [False, True], ids=["default", "allow_other"])
def test_other_users_need_allow_other(public_dir: str, mounter: Mounter, bucket: Bucket,
                                      allow_other: bool) -> None:
    # public_dir comes first: it is removed after the mounter's teardown has unmounted
    mnt_path = os.path.join(public_dir, "mnt")
    os.mkdir(mnt_path)
    options = ["allow_other"] if allow_other else []
    mnt = mounter.mount(bucket.url, *options, mountpoint=mnt_path)
    result = as_nobody("cat", mnt.join(bucket.SPACE_NAME))
    listing = as_nobody("ls", mnt.path)
    if allow_other:
        assert result.returncode == 0, result.stderr
        assert result.stdout.encode() == bucket.read(bucket.SPACE_NAME)
        assert listing.returncode == 0 and "empty" in listing.stdout.split()
    else:
        assert result.returncode != 0 and "Permission denied" in result.stderr, result
        assert listing.returncode != 0 and "Permission denied" in listing.stderr, listing
    # root always reads
    with open(mnt.join(bucket.SPACE_NAME), "rb") as f:
        assert f.read() == bucket.read(bucket.SPACE_NAME)
