"""`make soak`: SeaweedFS, GCS and Azure emulators in one mount under load for minutes, every byte checked.

Readers and writers are threads doing plain file I/O on the mount. Each writer owns its files, so
the reference copy it keeps in memory is exactly what the file must hold once closed; readers read
files whose content is known (objects put into the stores before mounting, and writers' closed
files), holding a shared lock on the name while the owner takes it exclusively to change it. The
cache is small (`max_size`), so eviction runs all the time. The daemon's RSS, open files and threads
are sampled. At the end the mount is unmounted (which uploads what is pending) and every object is
read back through the stores' own SDKs and compared with the reference, byte for byte; objects that
should not be there are counted too. Any wrong byte, lost byte, unexpected errno, stray object,
traceback in the daemon's log or failed unmount makes the run fail (exit 1). A failed run keeps its
work dir: servers' data, the daemon's log, ops.log (what each writer did, in order) and samples.json.

    python -m tests.reliability.soak --seconds 60 [--readers 12 --writers 4] [--report RELIABILITY.md]
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO, TypeVar

from tests.reliability import report
from tests.servers import (
    AZURITE_ACCOUNT,
    AZURITE_KEY,
    Emulator,
    S3Server,
    start_azurite,
    start_fake_gcs,
    start_seaweedfs,
)

KiB = 1024
MiB = 1024 * KiB
BLOCK = 256 * KiB  # small blocks: many per file, so reads cross block edges and eviction has work
MAX_SIZE = "4MiB"  # far below what the files hold together: eviction runs all the time
MAX_MEMORY = "4MiB"  # blocks held in the daemon's memory, so reads go through the disk cache
PART_SIZE = 5 * MiB  # the smallest: larger files are multipart uploads (composite on GCS, blocks on Azure)
STORES = ("s3", "gcs", "azure")
SEED_DIR = "seed"
SEED_SIZES = (0, 1, 4095, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK + 17, 5 * BLOCK + 333, 9 * BLOCK + 5,
              13 * BLOCK)
# Errnos an operation is expected to meet: a rename across two stores is EXDEV (`mv` then copies).
EXPECTED = {"rename-across": {errno.EXDEV}}
MOUNT_TIMEOUT = 60.0
T = TypeVar("T")
UMOUNT_TIMEOUT = 600.0


# --- shared state ------------------------------------------------------------------------------------

class RWLock:
    """Many readers or one writer of a name: a reader never sees a file its owner is changing."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._writer:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._readers:
                self._cond.wait()
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


@dataclass
class State:
    """What every file must hold (mount-relative path -> bytes) and what the run counted."""

    files: dict[str, bytes] = field(default_factory=dict)
    uncertain: set[str] = field(default_factory=set)  # an operation on it failed: its content is unknown
    ops: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # "ENOENT" -> count (unexpected ones)
    expected: Counter[str] = field(default_factory=Counter)  # errnos an operation was meant to meet
    bytes_verified: int = 0
    bytes_written: int = 0
    wrong_bytes: int = 0
    failures: list[str] = field(default_factory=list)
    mutex: threading.Lock = field(default_factory=threading.Lock)
    journal: TextIO | None = None  # what each writer did, in order: the way to reproduce a failure
    began: float = field(default_factory=time.monotonic)
    _locks: dict[str, RWLock] = field(default_factory=dict)

    def note(self, text: str) -> None:
        if self.journal is not None:
            line = f"{time.monotonic() - self.began:9.3f} {threading.current_thread().name} {text}\n"
            with self.mutex:
                self.journal.write(line)

    def lock(self, path: str) -> RWLock:
        with self.mutex:
            return self._locks.setdefault(path, RWLock())

    def names(self) -> list[str]:
        with self.mutex:
            return list(self.files)

    def get(self, path: str) -> bytes | None:
        with self.mutex:
            return self.files.get(path)

    def put(self, path: str, data: bytes | None) -> None:
        with self.mutex:
            if data is None:
                self.files.pop(path, None)
            else:
                self.files[path] = data

    def count(self, op: str, verified: int = 0, written: int = 0, what: str = "") -> None:
        if what:
            self.note(f"{op} {what}")
        with self.mutex:
            self.ops[op] += 1
            self.bytes_verified += verified
            self.bytes_written += written

    def fail(self, message: str) -> None:
        with self.mutex:
            if len(self.failures) < 50:
                self.failures.append(message)
        print(f"soak: FAILURE: {message}", file=sys.stderr, flush=True)

    def error(self, op: str, path: str, exc: OSError) -> None:
        name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        self.note(f"{op} {path} -> {name}")
        if exc.errno in EXPECTED.get(op, set()):
            with self.mutex:
                self.expected[name] += 1
            return
        with self.mutex:
            self.errors[name] += 1
        self.fail(f"{op} {path}: unexpected {name} ({exc})")

    def compare(self, what: str, got: bytes, want: bytes, offset: int = 0) -> None:
        """Count the bytes checked; every byte that differs (or is missing or extra) is a wrong byte."""
        if got == want:
            with self.mutex:
                self.bytes_verified += len(want)
            return
        wrong = sum(a != b for a, b in zip(got, want, strict=False)) + abs(len(got) - len(want))
        first = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
                     min(len(got), len(want)))
        with self.mutex:
            self.bytes_verified += len(want)
            self.wrong_bytes += wrong
        self.fail(f"{what}: {wrong} wrong bytes (got {len(got)}, want {len(want)}; first difference at "
                  f"offset {offset + first})")


# --- the stores, read and written behind the mount's back -------------------------------------------

class Store:
    """One bucket through its SDK: put before mounting, get while writers check what they closed,
    list and get after unmounting. The emulators now and then reset a connection of these clients
    too (Azurite under load): such a call is tried again, and counted, before it counts as a failure."""

    ATTEMPTS = 4

    def __init__(self, name: str, put: Callable[[str, bytes], None], get: Callable[[str], bytes],
                 keys: Callable[[], list[str]]) -> None:
        self.name, self._put, self._get, self._keys = name, put, get, keys
        self.retries = 0

    def _again(self, call: Callable[[], T]) -> T:
        for attempt in range(1, self.ATTEMPTS + 1):
            try:
                return call()
            except Exception:
                if attempt == self.ATTEMPTS:
                    raise
                self.retries += 1
                time.sleep(0.1 * 2 ** attempt)
        raise AssertionError("unreachable")

    def put(self, key: str, data: bytes) -> None:
        self._again(lambda: self._put(key, data))

    def get(self, key: str) -> bytes:
        return self._again(lambda: self._get(key))

    def keys(self) -> list[str]:
        return self._again(self._keys)


def s3_store(server: S3Server, bucket: str, create: bool = False) -> Store:
    client = server.client()
    if create:
        server.create_bucket(bucket)

    def keys() -> list[str]:
        found: list[str] = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            found += [o["Key"] for o in page.get("Contents", [])]
        return found
    return Store("s3", lambda k, d: client.put_object(Bucket=bucket, Key=k, Body=d) and None,
                 lambda k: client.get_object(Bucket=bucket, Key=k)["Body"].read(), keys)


def gcs_store(server: Emulator, bucket: str, create: bool = False) -> Store:
    client = server.gcs_client()
    if create:
        server.create_bucket(bucket)
    b = client.bucket(bucket)
    return Store("gcs", lambda k, d: b.blob(k).upload_from_string(d), lambda k: b.blob(k).download_as_bytes(),
                 lambda: [blob.name for blob in client.list_blobs(bucket)])


def azure_store(server: Emulator, container: str, create: bool = False) -> Store:
    if create:
        server.create_bucket(container)
    c = server.azure_client().get_container_client(container)
    return Store("azure", lambda k, d: c.upload_blob(k, d, overwrite=True) and None,
                 lambda k: c.download_blob(k).readall(), lambda: [b.name for b in c.list_blobs()])


# --- the daemon ---------------------------------------------------------------------------------------

def config_text(seaweedfs: S3Server, fake_gcs: Emulator, azurite: Emulator, bucket: str) -> str:
    """One config, three [[mount]] entries (one per store), a small cache and memory so eviction runs."""
    return f"""
[cache]
max_size = "{MAX_SIZE}"

[read]
max_memory = "{MAX_MEMORY}"

[write]
part_size = "{PART_SIZE // MiB}MiB"

[gcs]
endpoint = "{fake_gcs.endpoint}"

[[azure.containers]]
account_name = "{AZURITE_ACCOUNT}"
container_name = "{bucket}"
account_key = "{AZURITE_KEY}"
endpoint = "{azurite.endpoint}"

[[s3.credentials]]
host = "{seaweedfs.host_port}"
key = "{seaweedfs.access_key}"
secret = "{seaweedfs.secret_key}"
secure = false

[[mount]]
path = "s3"
url = "s3://{seaweedfs.host_port}/{bucket}"

[[mount]]
path = "gcs"
url = "gs://{bucket}"

[[mount]]
path = "azure"
url = "az://{bucket}@{AZURITE_ACCOUNT}"
"""


def mountfs(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mountfs", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd="/")


def is_mounted(path: str) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1].encode().decode("unicode_escape").encode("latin-1").decode() == path
                   for line in f)


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@dataclass
class Samples:
    """Daemon RSS (KiB), open files and threads, sampled every few seconds."""

    rss: list[int] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)
    threads: list[int] = field(default_factory=list)

    def take(self, pid: int) -> None:
        try:
            with open(f"/proc/{pid}/status") as f:
                status = dict(line.split(":", 1) for line in f if ":" in line)
            fds = len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            return
        self.rss.append(int(status["VmRSS"].split()[0]))
        self.threads.append(int(status["Threads"]))
        self.fds.append(fds)

    @staticmethod
    def span(values: list[int]) -> str:
        return f"{min(values)}-{max(values)}" if values else "none"

    def rising(self) -> list[str]:
        """Open files and threads that rose well past their level at a third of the run (warm by
        then): a leak. RSS is left to the figures: the heap keeps its high-water mark."""
        if len(self.fds) < 3:
            return []
        third = len(self.fds) // 3
        found = []
        for what, values, margin in (("open files", self.fds, 32), ("threads", self.threads, 16)):
            if values[-1] > values[third] * 3 // 2 + margin:
                found.append(f"{what} rose from {values[third]} to {values[-1]}")
        return found

    def trend(self) -> str:
        """RSS (MiB), open files and threads at a third, two thirds and the end of the run: flat once
        warm (glibc keeps the heap's high-water mark), rising to the end when something leaks."""
        if len(self.rss) < 3:
            return "too few samples"
        at = [len(self.rss) // 3, 2 * len(self.rss) // 3, len(self.rss) - 1]
        return (f"RSS MiB {', '.join(str(self.rss[i] // 1024) for i in at)}; "
                f"fds {', '.join(str(self.fds[i]) for i in at)}; "
                f"threads {', '.join(str(self.threads[i]) for i in at)}")


# --- the workload -------------------------------------------------------------------------------------

def random_size(rng: random.Random) -> int:
    kind = rng.random()
    if kind < 0.25:
        return rng.randint(0, 4096)
    if kind < 0.97:
        return rng.randint(4096, 3 * BLOCK + 4096)
    return rng.randint(PART_SIZE, PART_SIZE + 2 * BLOCK)  # a multipart upload


def write_all(path: str, data: bytes, mode: str, rng: random.Random) -> bytes:
    """Write `data` in chunks of random sizes, as programs do, now and then with an fsync (an upload)
    half way; returns `data`."""
    sync_at = rng.randint(0, len(data)) if rng.random() < 0.15 else -1
    with open(path, mode) as f:
        pos = 0
        while pos < len(data):
            n = rng.randint(1, 300 * KiB)
            f.write(data[pos:pos + n])
            pos += n
            if 0 <= sync_at <= pos:
                f.flush()
                os.fsync(f.fileno())
                sync_at = -1
    return data


SUBDIRS = ("d", "e")  # a writer's two folders in each store; one is renamed onto the other now and then


class Writer:
    """Owns its names in every store: creates, overwrites, writes at offsets, appends, truncates, renames
    files (some while it holds them open) and folders, deletes, reads back and checks the store itself
    (close and fsync upload), keeping the exact content of each closed file in `state.files`."""

    def __init__(self, n: int, mnt: str, state: State, stop: threading.Event, seed: int,
                 stores: dict[str, Store]) -> None:
        self.n, self.mnt, self.state, self.stop = n, mnt, state, stop
        self.rng = random.Random(seed)
        self.stores = stores
        self.pool = [f"{store}/w{n}/{sub}f{k}.bin"
                     for store in STORES for sub in ("", "d/", "e/") for k in range(3)]
        self.own: dict[str, bytes] = {}
        self.dirs = {f"{store}/w{n}/d" for store in STORES}  # the folders that exist now

    def path(self, name: str) -> str:
        return os.path.join(self.mnt, name)

    def run(self) -> None:
        for folder in self.dirs:
            os.makedirs(self.path(folder), exist_ok=True)
        ops: list[tuple[str, int]] = [("create", 20), ("overwrite", 10), ("write-at", 12), ("append", 14),
                                      ("truncate", 10), ("rename", 10), ("delete", 8), ("read-back", 8),
                                      ("store-check", 6), ("rename-dir", 2), ("rename-across", 2),
                                      ("rename-open", 4)]
        kinds, weights = zip(*ops, strict=True)
        while not self.stop.is_set():
            op = self.rng.choices(kinds, weights)[0]
            try:
                self.step(op)
            except Exception as exc:  # a bug of the soak itself must not pass as a clean run
                self.state.fail(f"writer {self.n} {op}: {exc!r}\n{traceback.format_exc()}")
                return

    def step(self, op: str) -> None:
        rng, state = self.rng, self.state
        existing = sorted(p for p in self.own if p not in state.uncertain)
        absent = [p for p in self.pool if p not in self.own and p not in state.uncertain]
        if op == "rename-dir":
            self.rename_dir()
            return
        if op == "create" or not existing:
            if not absent:
                return
            name = rng.choice(absent)
            data = rng.randbytes(random_size(rng))
            self.make_parent(name)
            self.change("create", name, lambda: write_all(self.path(name), data, "xb", rng),
                        len(data))
            return
        name = rng.choice(existing)
        old = self.own[name]
        if op == "overwrite":
            data = rng.randbytes(random_size(rng))
            self.change(op, name, lambda: write_all(self.path(name), data, "wb", rng), len(data))
        elif op == "write-at":
            offset = rng.randint(0, len(old) + 5000)  # past the end leaves a hole of zeros
            chunk = rng.randbytes(rng.randint(1, 2 * BLOCK))

            def write_at() -> bytes:
                with open(self.path(name), "r+b") as f:
                    f.seek(offset)
                    f.write(chunk)
                padded = old + bytes(max(0, offset - len(old)))
                return padded[:offset] + chunk + padded[offset + len(chunk):]
            self.change(op, name, write_at, len(chunk))
        elif op == "append":
            chunk = rng.randbytes(rng.randint(1, BLOCK + 100))
            self.change(op, name, lambda: old + write_all(self.path(name), chunk, "ab", rng),
                        len(chunk))
        elif op == "truncate":
            size = rng.randint(0, len(old) + BLOCK)

            def truncate() -> bytes:
                os.truncate(self.path(name), size)
                return old[:size] + bytes(max(0, size - len(old)))
            self.change(op, name, truncate)
        elif op == "delete":
            self.change(op, name, lambda: os.unlink(self.path(name)))
        elif op == "read-back":
            with state.lock(name).shared():
                try:
                    with open(self.path(name), "rb") as f:
                        got = f.read()
                except OSError as exc:
                    state.error(op, name, exc)
                    return
            state.compare(f"writer {self.n} read-back {name}", got, old)
            state.count(op)
        elif op == "store-check":  # what a close or fsync acknowledged is in the store already
            store, key = name.split("/", 1)
            with state.lock(name).shared():
                got = self.stores[store].get(key)
            state.compare(f"writer {self.n} store-check {name}", got, old)
            state.count(op)
        elif op == "rename":
            store = name.split("/")[0]
            targets = [p for p in self.pool
                       if p.startswith(store + "/") and p != name and p not in state.uncertain]
            target = rng.choice(targets)
            self.make_parent(target)
            self.rename(name, target, op)  # onto an existing file or a free name
        elif op == "rename-open":
            store = name.split("/")[0]
            targets = [p for p in self.pool
                       if p.startswith(store + "/") and p != name and p not in state.uncertain]
            target = rng.choice(targets)
            self.make_parent(target)
            self.rename_open(name, target)
        elif op == "rename-across":
            store = name.split("/")[0]
            targets = [p for p in self.pool if not p.startswith(store + "/") and p not in self.own
                       and p not in state.uncertain]
            if targets:
                target = rng.choice(targets)
                self.make_parent(target)
                self.rename(name, target, op)

    def make_parent(self, name: str) -> None:
        folder = os.path.dirname(name)
        if os.path.basename(folder) in SUBDIRS and folder not in self.dirs:
            try:
                os.mkdir(self.path(folder))
            except OSError as exc:
                self.state.error("mkdir", folder, exc)
                return
            self.dirs.add(folder)
            self.state.count("mkdir", what=folder)

    def rename_dir(self) -> None:
        """Rename one of the writer's folders onto the other's name (removed first if empty), with
        every file below; skipped while a file in either has unknown content or the target has files."""
        store = self.rng.choice(STORES)
        source = self.rng.choice(sorted(d for d in self.dirs if d.startswith(f"{store}/")) or [""])
        if not source:
            return
        other = next(s for s in SUBDIRS if s != os.path.basename(source))
        target = os.path.join(os.path.dirname(source), other)
        names = [p for p in self.pool if p.startswith((source + "/", target + "/"))]
        if any(p in self.state.uncertain or (p.startswith(target + "/") and p in self.own) for p in names):
            return
        with contextlib.ExitStack() as held:
            for name in sorted(names):
                held.enter_context(self.state.lock(name).exclusive())
            if target in self.dirs:
                try:
                    os.rmdir(self.path(target))
                except OSError as exc:
                    self.state.error("rmdir", target, exc)
                    return
                self.dirs.discard(target)
                self.state.count("rmdir", what=target)
            moving = {p: self.own.pop(p) for p in names if p in self.own}
            for p in moving:
                self.state.put(p, None)
            try:
                os.rename(self.path(source), self.path(target))
            except OSError as exc:
                self.state.error("rename-dir", source, exc)
                self.state.uncertain.update(moving)
                self.state.uncertain.update(target + p[len(source):] for p in moving)
                return
            self.dirs.discard(source)
            self.dirs.add(target)
            for p, data in moving.items():
                moved = target + p[len(source):]
                self.own[moved] = data
                self.state.put(moved, data)
        self.state.count("rename-dir", what=f"{source} {target} moved {sorted(moving)}")

    def change(self, op: str, name: str, action: Callable[[], bytes | None], written: int = 0) -> None:
        """Run `action` on `name` with no reader in it; its result is the file's new content (None: gone)."""
        with self.state.lock(name).exclusive():
            self.state.put(name, None)
            try:
                data = action()
            except OSError as exc:
                self.state.error(op, name, exc)
                self.state.uncertain.add(name)
                self.own.pop(name, None)
                return
            if data is None:
                self.own.pop(name, None)
            else:
                self.own[name] = data
            self.state.put(name, data)
        self.state.count(op, written=written, what=f"{name} size {len(data) if data is not None else '-'}")

    def rename(self, source: str, target: str, op: str) -> None:
        first, second = sorted((source, target))
        with self.state.lock(first).exclusive(), self.state.lock(second).exclusive():
            data = self.own[source]
            self.state.put(source, None)
            self.state.put(target, None)
            try:
                os.rename(self.path(source), self.path(target))
            except OSError as exc:
                if exc.errno in EXPECTED.get(op, set()):
                    self.state.put(source, data)  # untouched
                    self.state.error(op, source, exc)
                    self.state.count(op, what=f"{source} {target}")
                    return
                self.state.error(op, source, exc)
                self.state.uncertain.update((source, target))
                self.own.pop(source, None)
                self.own.pop(target, None)
                return
            if op in EXPECTED:
                self.state.fail(f"{op} {source} -> {target} succeeded (expected {EXPECTED[op]})")
            self.own.pop(source)
            self.own[target] = data
            self.state.put(target, data)
        self.state.count(op, what=f"{source} {target}")

    def rename_open(self, source: str, target: str) -> None:
        """A file open for reading is renamed; the open descriptor still reads all of it, from the
        store once the kernel's pages are dropped (POSIX: a rename does not touch open files)."""
        with self.state.lock(source).shared():
            try:
                fd = os.open(self.path(source), os.O_RDONLY)
            except OSError as exc:
                self.state.error("rename-open", source, exc)
                return
        try:
            os.pread(fd, 1, 0)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            data = self.own[source]
            self.rename(source, target, "rename-open")
            if self.own.get(target) is not data:
                return  # the rename failed, and was counted
            got = bytearray()
            try:
                while chunk := os.pread(fd, 1 << 20, len(got)):
                    got += chunk
            except OSError as exc:
                self.state.error("rename-open read", target, exc)
                return
            self.state.compare(f"writer {self.n} read of {source} open across its rename to {target}",
                               bytes(got), data)
        finally:
            os.close(fd)


class Reader:
    """Reads files whose content is known: whole, in ranges (across block edges and past the end),
    stat and listings, half of the time after dropping the kernel's page cache of the file."""

    def __init__(self, n: int, mnt: str, state: State, stop: threading.Event, seed: int,
                 seed_listing: dict[str, list[str]]) -> None:
        self.n, self.mnt, self.state, self.stop = n, mnt, state, stop
        self.rng = random.Random(seed)
        self.seed_listing = seed_listing

    def run(self) -> None:
        kinds, weights = ("whole", "range", "stat", "list"), (40, 45, 10, 5)
        while not self.stop.is_set():
            op = self.rng.choices(kinds, weights)[0]
            try:
                self.step(op)
            except Exception as exc:
                self.state.fail(f"reader {self.n} {op}: {exc!r}\n{traceback.format_exc()}")
                return

    def step(self, op: str) -> None:
        rng, state = self.rng, self.state
        if op == "list":
            store = rng.choice(STORES)
            try:
                names = sorted(os.listdir(os.path.join(self.mnt, store, SEED_DIR)))
            except OSError as exc:
                state.error(op, f"{store}/{SEED_DIR}", exc)
                return
            if names != self.seed_listing[store]:
                state.fail(f"listing of {store}/{SEED_DIR}: {names} != {self.seed_listing[store]}")
            state.count(op)
            return
        names = state.names()
        if not names:
            time.sleep(0.01)
            return
        name = rng.choice(names)
        with state.lock(name).shared():
            data = state.get(name)
            if data is None:
                return  # changed between the choice and the lock
            path = os.path.join(self.mnt, name)
            try:
                if op == "stat":
                    size = os.stat(path).st_size
                    if size != len(data):
                        state.fail(f"stat {name}: size {size}, want {len(data)}")
                elif op == "whole":
                    with open(path, "rb") as f:
                        if rng.random() < 0.5:
                            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
                        state.compare(f"reader {self.n} read {name}", f.read(), data)
                else:
                    fd = os.open(path, os.O_RDONLY)
                    try:
                        if rng.random() < 0.5:
                            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                        for _ in range(rng.randint(1, 4)):
                            offset = self.offset(len(data))
                            length = rng.randint(1, 2 * BLOCK)
                            state.compare(f"reader {self.n} pread {name} [{offset}, +{length})",
                                          os.pread(fd, length, offset), data[offset:offset + length], offset)
                    finally:
                        os.close(fd)
            except OSError as exc:
                state.error(op, name, exc)
                return
        state.count(op)

    def offset(self, size: int) -> int:
        """Anywhere, a few bytes before a block edge, or at or past the end."""
        kind = self.rng.random()
        if kind < 0.4 and size > BLOCK:
            return max(0, self.rng.randint(1, size // BLOCK) * BLOCK - self.rng.randint(1, 64))
        if kind < 0.5:
            return size + self.rng.randint(0, 10)
        return self.rng.randint(0, size)


# --- one run ------------------------------------------------------------------------------------------

@dataclass
class Settings:
    seconds: float
    readers: int = 12
    writers: int = 4
    workdir: str | None = None
    report: Path | None = report.REPORT  # None: no row written
    command: str = ""
    sample_every: float = 2.0
    seed: int = 19


@dataclass
class Result:
    ok: bool
    figures: dict[str, object]
    failures: list[str]


def run(settings: Settings, seaweedfs: S3Server | None = None, fake_gcs: Emulator | None = None,
        azurite: Emulator | None = None) -> Result:
    """One soak run; starts the servers it is not given (and stops them again)."""
    work = Path(settings.workdir or tempfile.mkdtemp(prefix="mountfs-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    started: list[S3Server | Emulator] = []
    result: Result | None = None
    try:
        if seaweedfs is None:
            seaweedfs = start_seaweedfs(work / "seaweedfs")
            started.append(seaweedfs)
        if fake_gcs is None:
            fake_gcs = start_fake_gcs(work / "fake-gcs")
            started.append(fake_gcs)
        if azurite is None:
            azurite = start_azurite(work / "azurite")
            started.append(azurite)
        result = _run(settings, work, seaweedfs, fake_gcs, azurite)
        return result
    finally:
        for server in started:
            server.stop()
        if result is not None and result.ok and settings.workdir is None:
            shutil.rmtree(work, ignore_errors=True)  # kept (logs, data) when something failed
        else:
            print(f"soak: servers' data, cache and daemon log kept in {work}", file=sys.stderr)


def _run(settings: Settings, work: Path, seaweedfs: S3Server, fake_gcs: Emulator,
         azurite: Emulator) -> Result:
    bucket = f"soak-{uuid.uuid4().hex[:8]}"

    def clients(create: bool = False) -> dict[str, Store]:
        return {"s3": s3_store(seaweedfs, bucket, create), "gcs": gcs_store(fake_gcs, bucket, create),
                "azure": azure_store(azurite, bucket, create)}
    stores = clients(create=True)
    state = State()
    rng = random.Random(settings.seed)
    seed_listing: dict[str, list[str]] = {}
    for store_name, store in stores.items():
        for i, size in enumerate(SEED_SIZES):
            key = f"{SEED_DIR}/s{i:02d}.bin"
            data = rng.randbytes(size)
            store.put(key, data)
            state.files[f"{store_name}/{key}"] = data
        seed_listing[store_name] = sorted(f"s{i:02d}.bin" for i in range(len(SEED_SIZES)))

    mnt, cache, run_dir = work / "mnt", work / "cache", work / "run"
    for d in (mnt, cache, run_dir):
        d.mkdir(exist_ok=True)
    log = work / "daemon.log"
    config = work / "soak.toml"
    config.write_text(config_text(seaweedfs, fake_gcs, azurite, bucket))
    env = dict(os.environ, MOUNTFS_RUNTIME_DIR=str(run_dir), AWS_EC2_METADATA_DISABLED="true",
               NO_GCE_CHECK="true", LC_ALL="C.UTF-8")
    options = f"cache_dir={cache},log={log},block_size={BLOCK // KiB}KiB"
    result = mountfs([str(config), str(mnt), "-o", options], env, MOUNT_TIMEOUT)
    if result.returncode != 0:
        raise RuntimeError(f"mount failed ({result.returncode}): {result.stderr}")
    mounted, pid = True, 0
    stop = threading.Event()
    threads: list[threading.Thread] = []
    samples = Samples()
    figures: dict[str, object] = {}
    try:
        pid = int(json.loads(mountfs(["status", str(mnt), "--json"], env, 30).stdout)["pid"])
        samples.take(pid)
        state.journal = open(work / "ops.log", "w")  # noqa: SIM115 (closed in finally)
        workers: list[Writer | Reader] = [
            Writer(i, str(mnt), state, stop, settings.seed * 1000 + i, clients())
            for i in range(settings.writers)]
        workers += [Reader(i, str(mnt), state, stop, settings.seed * 2000 + i, seed_listing)
                    for i in range(settings.readers)]
        threads = [threading.Thread(target=w.run, name=f"{type(w).__name__}-{w.n}", daemon=True)
                   for w in workers]
        began = state.began = time.monotonic()
        for t in threads:
            t.start()
        deadline = began + settings.seconds
        while time.monotonic() < deadline:
            time.sleep(min(settings.sample_every, max(0.0, deadline - time.monotonic())))
            samples.take(pid)
        stop.set()
        for t in threads:
            t.join(60)
        hung = [t.name for t in threads if t.is_alive()]
        if hung:
            state.fail(f"threads still in a file operation a minute after the end: {hung}")
        elapsed = time.monotonic() - began
        samples.take(pid)
        status = json.loads(mountfs(["status", str(mnt), "--json"], env, 30).stdout)

        umount_began = time.monotonic()
        result = mountfs(["umount", str(mnt)], env, UMOUNT_TIMEOUT)
        umount_seconds = time.monotonic() - umount_began
        if result.returncode != 0:
            state.fail(f"mountfs umount: exit {result.returncode}: {result.stderr.strip()}")
        mounted = is_mounted(str(mnt))
        gone = _wait(lambda: not pid_alive(pid), 30)
        if not gone:
            state.fail(f"daemon {pid} still runs after unmount")

        folders = {os.path.dirname(name) for name in [*state.files, *state.uncertain]} | {
            f"{store}/w{w.n}" for w in workers if isinstance(w, Writer) for store in STORES}
        for w in workers:
            if isinstance(w, Writer):
                folders |= w.dirs
        verified, lost, strays = verify_stores(stores, state, folders)
        sdk_retries = sum(store.retries for store in stores.values()) + sum(
            store.retries for w in workers if isinstance(w, Writer) for store in w.stores.values())
        log_text = log.read_text(errors="replace") if log.exists() else ""
        tracebacks = log_text.count("Traceback (most recent call last)")
        warnings = Counter(re.sub(r"[0-9a-f]{16,}|\d+", "N", line.split(": ", 1)[-1])[:70]
                           for line in log_text.splitlines() if " WARNING " in line or " ERROR " in line)
        (work / "samples.json").write_text(json.dumps(
            {"every_s": settings.sample_every, "rss_kib": samples.rss, "fds": samples.fds,
             "threads": samples.threads}))
        for leak in samples.rising():
            state.fail(f"the daemon's {leak} over the run")
        if tracebacks:
            state.fail(f"{tracebacks} tracebacks in the daemon's log {log}")
        if strays:
            state.fail(f"objects that should not be there: {strays[:10]}")
        corrupt = int(status["cache"].get("corrupt", 0))
        if corrupt:  # nothing here damages block files: a drop is a race of the cache's own
            state.fail(f"{corrupt} cached blocks dropped as corrupt (see the daemon's log {log})")
        errors = ", ".join(f"{k} {v}" for k, v in sorted(state.errors.items())) or "none"
        expected = ", ".join(f"{k} {v}" for k, v in sorted(state.expected.items())) or "none"
        figures = {
            "seconds": round(elapsed),
            "readers/writers": f"{settings.readers}/{settings.writers}",
            "operations": sum(state.ops.values()),
            "by kind": ", ".join(f"{k} {v}" for k, v in sorted(state.ops.items())),
            "bytes written": state.bytes_written,
            "bytes verified (reads)": state.bytes_verified - verified,
            "bytes verified (stores at end)": verified,
            "files at end": len(state.files),
            "wrong bytes": state.wrong_bytes,
            "acknowledged bytes lost": lost,
            "stray objects": len(strays),
            "SDK calls of the soak itself tried again": sdk_retries,
            "errors by errno (unexpected)": errors,
            "expected errnos": expected,
            "blocks evicted": int(status["cache"].get("evicted", 0)),
            "blocks dropped as corrupt": corrupt,
            "daemon log warnings": "; ".join(f"{n}x {text}" for text, n in warnings.most_common(3)) or "none",
            "store requests": int(status["store"]["requests"]),
            "inodes known at end": int(status.get("inodes", 0)),
            "umount s": round(umount_seconds, 1),
            "RSS MiB": f"{min(samples.rss) // 1024}-{max(samples.rss) // 1024}" if samples.rss else "none",
            "open fds": Samples.span(samples.fds),
            "threads": Samples.span(samples.threads),
            "at 1/3, 2/3, end": samples.trend(),
            "tracebacks": tracebacks,
            "failures": len(state.failures),
        }
    finally:
        stop.set()
        if mounted and is_mounted(str(mnt)):
            with contextlib.suppress(subprocess.TimeoutExpired):
                mountfs(["umount", str(mnt), "--timeout", "30"], env, 45)
            if is_mounted(str(mnt)):
                subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True, timeout=30)
        if pid and pid_alive(pid) and not _wait(lambda: not pid_alive(pid), 10):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(cache, ignore_errors=True)
        if state.journal is not None:
            state.journal.close()
    ok = not state.failures
    if settings.report is not None and figures:
        report.record("soak", settings.command or f"make soak SOAK_S={settings.seconds:g}", figures,
                      path=settings.report)
    return Result(ok, figures, list(state.failures))


def verify_stores(stores: dict[str, Store], state: State,
                  dirs: set[str] | None = None) -> tuple[int, int, list[str]]:
    """Every file the reference holds, read through the store's SDK: (bytes verified, acknowledged
    bytes lost, keys that should not be there). A file whose last operation failed is known to
    neither side and is left out. With `dirs` (mount-relative folders that exist), a directory
    marker ("name/") of any other folder is a stray too: that folder would show again."""
    verified = lost = 0
    strays: list[str] = []
    for store_name, store in stores.items():
        keys = set(store.keys())
        want = {name.split("/", 1)[1]: data for name, data in state.files.items()
                if name.startswith(store_name + "/")}
        unknown = {name.split("/", 1)[1] for name in state.uncertain if name.startswith(store_name + "/")}
        for key in sorted(keys - set(want) - unknown):
            if not key.endswith("/") or (dirs is not None and f"{store_name}/{key[:-1]}" not in dirs):
                strays.append(f"{store_name}/{key}")
        for key, data in sorted(want.items()):
            if key not in keys:
                lost += len(data)
                state.fail(f"{store_name}/{key}: missing from the store ({len(data)} bytes)")
                continue
            got = store.get(key)
            before = state.wrong_bytes
            state.compare(f"{store_name}/{key} in the store", got, data)
            if state.wrong_bytes > before:
                lost += len(data)
            verified += len(data)
    return verified, lost, strays


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.soak",
                                     description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_S", "360")),
                        help="how long the load runs (default: $SOAK_S, else 360)")
    parser.add_argument("--readers", type=int, default=12)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--workdir",
                        help="servers' data, cache, mount point and daemon log (default: a temp dir)")
    parser.add_argument("--report", default=str(report.REPORT),
                        help="the RELIABILITY.md to write the row into ('' for none)")
    parser.add_argument("--seed", type=int, default=19)

    args = parser.parse_args(argv)
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    os.environ.setdefault("NO_GCE_CHECK", "true")
    settings = Settings(args.seconds, args.readers, args.writers, args.workdir,
                        Path(args.report) if args.report else None, f"make soak SOAK_S={args.seconds:g}",
                        seed=args.seed)
    result = run(settings)
    print("soak:", "PASS" if result.ok else "FAIL")
    for name, value in result.figures.items():
        print(f"  {name}: {value}")
    for failure in result.failures[:20]:
        print(f"  failure: {failure}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
