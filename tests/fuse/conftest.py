"""Real FUSE mounts of mountfs, driven by plain tools and syscalls.

Everything here mounts for real: it needs /dev/fuse, `fusermount3` and root, and the whole
directory is skipped with the reason when one of them is missing. Every mount made through the
`mounter` fixtures is unmounted in teardown (`mountfs umount`, then `fusermount3 -u -z`, then the
daemon is killed), so a failing test never leaves a mount behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from mountfs.processes import process_alive

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
VENV_BIN = str(Path(sys.executable).parent)

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
BLOCK_SIZE = MiB  # every mount of these tests uses -o block_size=1MiB, so multi-block files stay small
MOUNT_TIMEOUT = 30  # a mount answers within a second or two; a hung one must not stall the session
UMOUNT_TIMEOUT = 60  # `mountfs umount` waits for the daemon to exit


# --- skip the whole directory when real mounts are impossible ---------------------------------------

def _why_no_fuse() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "real-mount tests need /dev/fuse, which is missing"
    if shutil.which("fusermount3") is None:
        return "real-mount tests need fusermount3 (Debian package fuse3), which is not on PATH"
    if os.geteuid() != 0:
        return "real-mount tests run as root (they mount with allow_other, mount -t and other uids)"
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError as exc:
        return f"real-mount tests cannot open /dev/fuse: {exc.strerror}"
    return None


NO_FUSE = _why_no_fuse()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.fuse)
            if NO_FUSE:
                item.add_marker(pytest.mark.skip(reason=NO_FUSE))


# --- helpers -----------------------------------------------------------------------------------------

pid_alive = process_alive  # True while a pid runs; a zombie has exited


def wait_until(predicate: Any, timeout: float = 30.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def is_mounted(path: str | os.PathLike[str]) -> bool:
    """A mount point per /proc/mounts (os.path.ismount stats, which can hang on a dead FUSE mount)."""
    target = os.path.abspath(path)
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            # /proc/mounts escapes spaces and the like as octal: \040
            mnt = fields[1].encode().decode("unicode_escape").encode("latin-1").decode()
            if mnt == target:
                return True
    return False


HUNG_MOUNTS: dict[str, str] = {}  # mount point -> the command that never returned


def daemons_of(mountpoint: str) -> set[int]:
    """Pids of the mountfs processes serving `mountpoint` (a unique tmp path that only we mount)."""
    pids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"mountfs" in b" ".join(argv) and os.fsencode(mountpoint) in argv:
            pids.add(int(entry))
    return pids


def start_time(pid: int) -> str | None:
    """The kernel's start time of `pid`: with the pid it names one process, even if pids are reused."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


class ProcessSet:
    """Daemons this session started; iterating yields those still the same process (never a reused pid)."""

    def __init__(self) -> None:
        self._started: dict[int, str | None] = {}

    def add(self, pid: int) -> None:
        self._started.setdefault(pid, start_time(pid))

    def update(self, pids: Iterator[int] | set[int]) -> None:
        for pid in pids:
            self.add(pid)

    def __iter__(self) -> Iterator[int]:
        for pid, started in list(self._started.items()):
            if started is not None and start_time(pid) == started:
                yield pid


def kernel_stacks(pids: set[int]) -> dict[int, str]:
    out = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stack") as f:
                out[pid] = " < ".join(line.split()[1].split("+")[0] for line in f.readlines()[:4])
        except (OSError, IndexError):
            out[pid] = "?"
    return out


def fuse_mounts() -> list[str]:
    with open("/proc/self/mounts") as f:
        return [line.strip() for line in f if " fuse" in line]


@dataclass
class Runner:
    """`python -m mountfs ...` in a subprocess, with the session's runtime dir in its environment."""

    env: dict[str, str]

    def __call__(self, *args: str, timeout: float = 120, env: dict[str, str] | None = None,
                 cwd: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mountfs", *map(str, args)], capture_output=True,
                              text=True, timeout=timeout, env=env or self.env, cwd=cwd or "/")

    def status(self, mountpoint: str | os.PathLike[str]) -> dict[str, Any]:
        result = self("status", str(mountpoint), "--json", timeout=30)
        assert result.returncode == 0, f"mountfs status failed: {result.stderr}"
        reply: dict[str, Any] = json.loads(result.stdout)
        return reply


@dataclass
class Mount:
    path: str
    source: str
    cache_dir: str
    log: str
    pid: int | None = None

    def __str__(self) -> str:
        return self.path

    def __fspath__(self) -> str:
        return self.path

    def join(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    def log_text(self) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return f.read()[-8000:]
        except OSError:
            return "(no log)"


@dataclass
class Mounter:
    """Mounts sources on fresh mount points; `cleanup` unmounts every one of them, whatever happened."""

    run: Runner
    base: Path
    mounts: list[Mount] = field(default_factory=list)
    pids: ProcessSet = field(default_factory=ProcessSet)
    counter: int = 0

    def fresh_dir(self, name: str) -> str:
        self.counter += 1
        path = self.base / f"{name}{self.counter}"
        path.mkdir(parents=True)
        return str(path)

    def track(self, mountpoint: str, pid: int | None = None) -> None:
        """Make teardown unmount `mountpoint` (mounted some other way than `mount`)."""
        self._fail_if_hung()
        self.mounts.append(Mount(os.path.abspath(mountpoint), "", "", ""))
        if pid:
            self.pids.add(pid)

    @staticmethod
    def _fail_if_hung() -> None:
        if HUNG_MOUNTS:
            pytest.fail(f"an earlier mount never answered ({next(iter(HUNG_MOUNTS.values()))}): "
                        "not mounting again")

    def _hung(self, mountpoint: str, command: str) -> None:
        HUNG_MOUNTS[mountpoint] = command
        self.pids.update(daemons_of(mountpoint))
        pytest.fail(f"{command} did not return within {MOUNT_TIMEOUT}s: the mount never answered; "
                    f"kernel stacks of its daemon: {kernel_stacks(daemons_of(mountpoint))}")

    def external(self, argv: list[str], mountpoint: str, env: dict[str, str]) -> None:
        """Run a command that mounts `mountpoint` (mount -t, mount.fuse3) and must return once it answers."""
        self.track(mountpoint)
        try:
            result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=MOUNT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._hung(os.path.abspath(mountpoint), " ".join(argv))
        assert result.returncode == 0, f"{argv} failed ({result.returncode}): {result.stderr}"

    def mount(self, source: str | os.PathLike[str], *options: str, mountpoint: str | None = None,
              cache_dir: str | None = None, block_size: str | None = "1MiB",
              cache_local: bool = True) -> Mount:
        """Mount `source` (a folder path or a URL) with its own cache dir; returns once it answers.
        `cache_local` (-o cache_local): local folders go through the block cache, as these tests expect;
        False keeps the default, direct access (file:// served straight from the folder)."""
        source = str(source)
        if not source.startswith(("file://", "s3://")) and os.path.isdir(source):
            source = "file://" + os.path.abspath(source)
        mnt = mountpoint or self.fresh_dir("mnt")
        cache = cache_dir or self.fresh_dir("cache")
        log = os.path.join(self.fresh_dir("log"), "daemon.log")
        opts = [f"cache_dir={cache}", f"log={log}"]
        if block_size:
            opts.append(f"block_size={block_size}")
        if cache_local:
            opts.append("cache_local")
        opts.extend(options)
        self._fail_if_hung()
        mount = Mount(os.path.abspath(mnt), source, cache, log)
        self.mounts.append(mount)
        try:
            result = self.run(source, mnt, "-o", ",".join(opts), timeout=MOUNT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._hung(mount.path, f"mountfs {source} {mnt} -o {','.join(opts)}")
        assert result.returncode == 0, (
            f"mountfs {source} {mnt} failed ({result.returncode}): {result.stderr}\n{mount.log_text()}")
        assert is_mounted(mnt), f"mountfs returned 0 but {mnt} is not mounted"
        mount.pid = int(self.run.status(mnt)["pid"])
        self.pids.add(mount.pid)
        return mount

    def umount(self, mount: Mount | str) -> None:
        """Unmount through `mountfs umount` and check that it worked and the daemon is gone."""
        path = os.fspath(mount)
        result = self.run("umount", path, timeout=UMOUNT_TIMEOUT)
        assert result.returncode == 0, f"mountfs umount {path} failed: {result.stderr}"
        assert not is_mounted(path)
        if isinstance(mount, Mount) and mount.pid:
            assert wait_until(lambda: not pid_alive(mount.pid), 30), f"daemon {mount.pid} still runs"

    def _kill_daemons(self, mountpoint: str) -> None:
        """SIGKILL the daemons of one of our mount points (found by their command line)."""
        for pid in daemons_of(mountpoint):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def cleanup(self) -> list[str]:
        """Unmount everything still mounted; returns what had to be forced (for the report)."""
        problems = []
        for mount in reversed(self.mounts):
            if not is_mounted(mount.path):
                continue
            if mount.path in HUNG_MOUNTS:  # a daemon blocked on its own mount answers nothing: end it
                self._kill_daemons(mount.path)
            try:
                self.run("umount", mount.path, "--timeout", "30", timeout=45)
            except subprocess.TimeoutExpired:
                problems.append(f"{mount.path}: `mountfs umount` hung; SIGKILL to its daemon")
                self._kill_daemons(mount.path)
            if is_mounted(mount.path):
                problems.append(f"{mount.path}: `mountfs umount` left it mounted; fusermount3 -u -z")
                subprocess.run(["fusermount3", "-u", "-z", mount.path], capture_output=True, timeout=30)
        for mount in self.mounts:  # daemons that outlived their mount (e.g. blocked after -z)
            self.pids.update(daemons_of(mount.path))
        for pid in self.pids:  # only processes we started, checked by pid and start time
            if pid_alive(pid) and not wait_until(lambda pid=pid: not pid_alive(pid), 10):
                problems.append(f"daemon {pid} still alive after unmount: SIGKILL")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        # cache dirs hold up to a GiB each: drop the ones no mount uses any more
        if not any(is_mounted(m.path) for m in self.mounts):
            for mount in self.mounts:
                if mount.cache_dir.startswith(str(self.base) + "/"):
                    shutil.rmtree(mount.cache_dir, ignore_errors=True)
        return problems


# --- fixtures ----------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def runtime_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Control sockets of this session's daemons, away from /run/mountfs."""
    path = str(tmp_path_factory.mktemp("run"))
    old = os.environ.get("MOUNTFS_RUNTIME_DIR")
    os.environ["MOUNTFS_RUNTIME_DIR"] = path
    yield path
    if old is None:
        os.environ.pop("MOUNTFS_RUNTIME_DIR", None)
    else:
        os.environ["MOUNTFS_RUNTIME_DIR"] = old


@pytest.fixture(scope="session")
def env(runtime_dir: str) -> dict[str, str]:
    environment = dict(os.environ)
    environment["MOUNTFS_RUNTIME_DIR"] = runtime_dir
    environment["LC_ALL"] = "C.UTF-8"
    environment.pop("LANGUAGE", None)
    return environment


@pytest.fixture(scope="session")
def mountfs(env: dict[str, str]) -> Runner:
    """Run `python -m mountfs ARGS`; returns the CompletedProcess (text, captured)."""
    return Runner(env)


@pytest.fixture
def mounter(mountfs: Runner, tmp_path: Path) -> Iterator[Mounter]:
    """Mount factory for one test: `mounter.mount(source, *options)`; all unmounted in teardown."""
    m = Mounter(mountfs, tmp_path / "mounts")
    try:
        yield m
    finally:
        problems = m.cleanup()
    # a hung mount is reported by the test that made it; forcing it down is expected then
    assert HUNG_MOUNTS or not problems, f"teardown had to force: {problems}"


@pytest.fixture(scope="session")
def session_mounter(mountfs: Runner, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mounter]:
    m = Mounter(mountfs, tmp_path_factory.mktemp("session-mounts"))
    try:
        yield m
    finally:
        problems = m.cleanup()
    assert HUNG_MOUNTS or not problems, f"teardown had to force: {problems}"


@pytest.fixture(scope="session", autouse=True)
def no_mount_left_behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """At the end of the session nothing under this session's tmp dir may still be mounted."""
    yield
    if NO_FUSE:
        return
    base = str(tmp_path_factory.getbasetemp()) + "/"
    left = [line.split()[1] for line in fuse_mounts() if line.split()[1].startswith(base)]
    for path in left:
        subprocess.run(["fusermount3", "-u", "-z", path], capture_output=True, timeout=30)
    assert not left, f"mounts left behind (now lazily unmounted): {left}"


# --- the sample bucket -------------------------------------------------------------------------------

SPARSE_NAME = "sparse/sparse-1g.bin"
SPARSE_SIZE = GiB
# (offset, length) of the non-zero regions of the sparse file: at 0, across block boundaries, at the end
SPARSE_REGIONS = [
    (0, 4096),
    (BLOCK_SIZE - 1000, 3000),                 # across the 1st/2nd block boundary
    (7 * BLOCK_SIZE - 1, 2),                   # one byte each side of a boundary
    (100 * BLOCK_SIZE + 12345, 2 * BLOCK_SIZE + 777),  # spans three blocks
    (512 * MiB - 65536, 131072),               # across the middle
    (SPARSE_SIZE - 5000, 5000),                # the very end
]
MANY_DIR = "many"
MANY_COUNT = 10_000
BIG_NAME = "big/big-64m.bin"
BIG_SIZE = 64 * MiB
MID_FILES = {  # mid-size files for random reads: sizes around block multiples
    "mid/mid-a.bin": 3 * BLOCK_SIZE + 511,
    "mid/mid-b.bin": 5 * BLOCK_SIZE,
    "mid/mid-c.bin": 2 * BLOCK_SIZE - 1,
    "mid/mid-d.bin": 7 * BLOCK_SIZE + 123457,
}
SPECIAL_FILES = {
    "empty": 0,
    "blocks/exactly-one-block.bin": BLOCK_SIZE,
    "blocks/one-block-plus-one.bin": BLOCK_SIZE + 1,
}
SPACE_NAME = "with space/file with spaces.txt"
FRENCH_NAME = "données/été.txt"
JAPANESE_NAME = "日本語.bin"


@dataclass(frozen=True)
class Bucket:
    """The sample bucket; its layout constants are here too, so tests need not import conftest."""

    root: str
    files: dict[str, int]  # relative path -> size, every file
    dirs: frozenset[str]  # relative paths of every folder below the root

    BLOCK_SIZE: ClassVar[int] = BLOCK_SIZE
    SPARSE_NAME: ClassVar[str] = SPARSE_NAME
    SPARSE_SIZE: ClassVar[int] = SPARSE_SIZE
    SPARSE_REGIONS: ClassVar[list[tuple[int, int]]] = SPARSE_REGIONS
    MANY_DIR: ClassVar[str] = MANY_DIR
    MANY_COUNT: ClassVar[int] = MANY_COUNT
    BIG_NAME: ClassVar[str] = BIG_NAME
    BIG_SIZE: ClassVar[int] = BIG_SIZE
    MID_FILES: ClassVar[dict[str, int]] = MID_FILES
    SPACE_NAME: ClassVar[str] = SPACE_NAME
    FRENCH_NAME: ClassVar[str] = FRENCH_NAME
    JAPANESE_NAME: ClassVar[str] = JAPANESE_NAME

    @property
    def url(self) -> str:
        return "file://" + self.root

    def path(self, rel: str) -> str:
        return os.path.join(self.root, rel)

    def read(self, rel: str) -> bytes:
        with open(self.path(rel), "rb") as f:
            return f.read()

    @property
    def sample_files(self) -> list[str]:
        """Every file except the 10,000 of `many/` and the 1 GiB sparse file."""
        return sorted(r for r in self.files if not r.startswith(MANY_DIR + "/") and r != SPARSE_NAME)

    @property
    def many_names(self) -> set[str]:
        return {r.split("/", 1)[1] for r in self.files if r.startswith(MANY_DIR + "/")}


def _write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def build_bucket(root: str) -> None:
    rng = random.Random(20240601)
    folders = ["", "a", "a/b", "a/b/c", "a/b/c/d", "a/b/c/d/e", "x", "x/y", "x/y/z", "z-last",
               "with space", "données", "deep/er/and/deeper/still"]
    for i in range(300):
        folder = folders[i % len(folders)]
        name = f"file-{i:03d}.dat" if i % 7 else f"f {i:03d} spaced.bin"
        size = rng.choice([0, 1, rng.randint(2, 4096), rng.randint(4096, 300 * KiB), 300 * KiB])
        _write(os.path.join(root, folder, name), rng.randbytes(size))
    _write(os.path.join(root, SPACE_NAME), b"a name with spaces\n")
    _write(os.path.join(root, FRENCH_NAME), "l'été est chaud\n".encode())
    _write(os.path.join(root, JAPANESE_NAME), rng.randbytes(12345))
    for rel, size in (SPECIAL_FILES | MID_FILES).items():
        _write(os.path.join(root, rel), rng.randbytes(size))
    # 64 MiB: one random MiB with each block's index in its first bytes, so every block differs
    chunk = rng.randbytes(BLOCK_SIZE)
    os.makedirs(os.path.join(root, os.path.dirname(BIG_NAME)), exist_ok=True)
    with open(os.path.join(root, BIG_NAME), "wb") as f:
        for i in range(BIG_SIZE // BLOCK_SIZE):
            f.write(i.to_bytes(8, "little") + chunk[8:])
    # 1 GiB sparse: holes plus a few regions at known offsets
    sparse = os.path.join(root, SPARSE_NAME)
    os.makedirs(os.path.dirname(sparse), exist_ok=True)
    with open(sparse, "wb") as f:
        f.truncate(SPARSE_SIZE)
        for offset, length in SPARSE_REGIONS:
            f.seek(offset)
            f.write(bytes((offset + j) % 251 + 1 for j in range(length)))
    many = os.path.join(root, MANY_DIR)
    os.makedirs(many)
    for i in range(MANY_COUNT):
        fd = os.open(os.path.join(many, f"entry-{i:05d}.txt"), os.O_WRONLY | os.O_CREAT, 0o644)
        if i % 3:
            os.write(fd, b"%d\n" % i)
        os.close(fd)
    # one known past mtime, to see it through the mount
    os.utime(os.path.join(root, SPACE_NAME), (1_600_000_000, 1_600_000_000))


def scan_bucket(root: str) -> tuple[dict[str, int], frozenset[str]]:
    files: dict[str, int] = {}
    dirs: set[str] = set()
    for folder, subdirs, names in os.walk(root):
        rel_folder = os.path.relpath(folder, root)
        for d in subdirs:
            dirs.add(os.path.normpath(os.path.join(rel_folder, d)))
        for n in names:
            rel = os.path.normpath(os.path.join(rel_folder, n))
            files[rel] = os.stat(os.path.join(folder, n)).st_size
    return files, frozenset(dirs)


@pytest.fixture(scope="session")
def bucket(tmp_path_factory: pytest.TempPathFactory) -> Bucket:
    """The sample bucket, built once per session (a few seconds)."""
    root = str(tmp_path_factory.mktemp("bucket"))
    build_bucket(root)
    files, dirs = scan_bucket(root)
    return Bucket(root, files, dirs)


@pytest.fixture(scope="session")
def sample_mount(session_mounter: Mounter, bucket: Bucket) -> Mount:
    """One mount of the sample bucket shared by the tests that only read and look: read-only (-o ro),
    so that no test can change the bucket the others read."""
    return session_mounter.mount(bucket.url, "ro")


@pytest.fixture(scope="session")
def snapshot_of() -> Any:
    """Everything about a folder a write could change: names, types, sizes, mtimes, modes."""
    def snapshot(root: str) -> dict[str, tuple[int, int, int]]:
        out = {}
        for folder, subdirs, names in os.walk(root):
            for n in subdirs + names:
                p = os.path.join(folder, n)
                st = os.lstat(p)
                out[os.path.relpath(p, root)] = (st.st_mode, st.st_size, st.st_mtime_ns)
        return out
    return snapshot


@pytest.fixture(scope="session")
def tools() -> SimpleNamespace:
    """Helpers for tests (they do not import conftest): pid_alive, wait_until, is_mounted, fuse_mounts."""
    return SimpleNamespace(pid_alive=pid_alive, wait_until=wait_until, is_mounted=is_mounted,
                           fuse_mounts=fuse_mounts, daemons_of=daemons_of, venv_bin=VENV_BIN)
