"""Timing, repeats, summaries, page-cache drops, peak RSS and machine facts.

Why a module of its own: the workloads only say what to do; how a figure is taken (perf_counter
around the work alone, the median of N repeats with min-max, the daemon's VmHWM afterwards, a
watchdog that kills a hung mount) must be the same for every tool or the ratios mean nothing.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
MB = 1_000_000  # throughput is reported in MB/s (10^6 bytes), as dd, fio and the peers' docs do
CPU_MS = "daemon.cpu_ms"  # in a measurement's counters: the daemon's user + system CPU, milliseconds

T = TypeVar("T")


def human_size(n: int) -> str:
    """1073741824 -> "1 GiB"; exact units only."""
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} B"


def fmt(value: float) -> str:
    """Three significant digits without exponent notation."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def cpu_per_op(unit: str, detail: dict[str, Any]) -> tuple[float, str] | None:
    """The daemon CPU one measurement cost per unit of its work, and that unit's name: seconds per
    GiB moved (MB/s and GiB/s figures), ms per file (files/s), us per read (ops/s), ms per sample
    (samples/s), us per file walked (the metadata walk, timed in seconds); None without a CPU sample."""
    cpu_ms = (detail.get("counters") or {}).get(CPU_MS)
    value, seconds = detail.get("value"), detail.get("seconds")
    if cpu_ms is None or not value or not seconds:
        return None
    if unit == "MB/s":
        return cpu_ms / 1000 / (value * seconds * MB / GiB), "s/GiB"
    if unit == "files/s":
        return cpu_ms / (value * seconds), "ms/file"
    if unit == "ops/s":
        return cpu_ms * 1000 / (value * seconds), "us/op"
    if unit == "samples/s":
        return cpu_ms / (value * seconds), "ms/sample"
    if unit == "GiB/s":
        return cpu_ms / 1000 / (value * seconds), "s/GiB"
    if unit == "s" and detail.get("files"):
        return cpu_ms * 1000 / detail["files"], "us/file"
    return None


class BenchError(Exception):
    """A tool failed in a way to report in its table row ("failed: reason"), not to end the run."""


def short_reason(exc: BaseException, limit: int = 160) -> str:
    """One line for a table cell: the first line of the message, type name if there is none."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if not isinstance(exc, BenchError):
        text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class Row:
    """One tool's figures for one metric; every repeat is kept so the JSON has the raw numbers."""

    tool: str
    label: str
    values: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    details: list[dict[str, Any]] = field(default_factory=list)
    skipped: str | None = None

    def summary(self) -> tuple[float, float, float] | None:
        """(median, min, max) of the successful repeats, None when there are none."""
        if not self.values:
            return None
        return statistics.median(self.values), min(self.values), max(self.values)

    @property
    def peak_rss_kib(self) -> int | None:
        return max(self.rss_kib) if self.rss_kib else None


@dataclass
class Metric:
    """One table: a figure (MB/s, files/s, ops/s or seconds) per tool, or with `by_size` one tool's
    figure and peak RSS per file size (rows keyed "mountfs 1 GiB", ...), to show how RSS scales."""

    name: str
    title: str
    unit: str
    higher_is_better: bool
    rows: dict[str, Row] = field(default_factory=dict)
    by_size: bool = False

    def row(self, tool: str, label: str, key: str | None = None) -> Row:
        return self.rows.setdefault(key or tool, Row(tool, label))

    def rss_growth(self) -> float | None:
        """With `by_size`: peak RSS of the last (largest) row / that of the first; None without both."""
        rows = list(self.rows.values())
        if not self.by_size or len(rows) < 2:
            return None
        first, last = rows[0].peak_rss_kib, rows[-1].peak_rss_kib
        if not first or not last:
            return None
        return last / first

    def ratio(self, tool: str, mine_key: str = "mountfs") -> float | None:
        """mountfs (or the row `mine_key`) / tool, oriented so that > 1 always means mine is faster."""
        mine, theirs = self.rows.get(mine_key), self.rows.get(tool)
        if mine is None or theirs is None:
            return None
        a, b = mine.summary(), theirs.summary()
        if a is None or b is None or a[0] <= 0 or b[0] <= 0:
            return None
        return a[0] / b[0] if self.higher_is_better else b[0] / a[0]


@dataclass
class Run:
    """Everything one `python -m bench` produced, as written to latest.json."""

    started: str
    settings: dict[str, Any]
    machine: dict[str, Any]
    metrics: dict[str, Metric] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # metric -> where the mountfs daemon's CPU went (bench/profile.py): samples, rate, top frames
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0
    interrupted: bool = False


@contextlib.contextmanager
def watchdog(seconds: float, on_expire: Callable[[], None]) -> Iterator[threading.Event]:
    """Call on_expire (kill the daemon) if the body runs longer than `seconds`: a read stuck in a
    hung FUSE daemon cannot be interrupted any other way, and one hung peer must not stall the run."""
    fired = threading.Event()

    def fire() -> None:
        fired.set()
        with contextlib.suppress(Exception):
            on_expire()

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield fired
    finally:
        timer.cancel()


def timed(fn: Callable[[], T], limit: float, on_expire: Callable[[], None]) -> tuple[T, float]:
    """(fn(), wall seconds); BenchError if the watchdog had to fire."""
    with watchdog(limit, on_expire) as fired:
        start = time.perf_counter()
        try:
            result = fn()
        except Exception as exc:
            if fired.is_set():
                raise BenchError(f"timed out after {limit:g} s (daemon killed)") from exc
            raise
        elapsed = time.perf_counter() - start
    if fired.is_set():
        raise BenchError(f"timed out after {limit:g} s (daemon killed)")
    return result, elapsed


_warned_not_root = False


def drop_caches(keep_warm: Path | None = None) -> bool:
    """sync + drop the page cache, dentries and inodes, so a cold read is cold (root only); then
    read the files under `keep_warm` back in.

    `keep_warm` is the S3 server's data: dropping it too made every mounted tool's cold read wait
    for the server's disk while boto3, which has no cache to drop, read from a warm server (about
    10% of mountfs's cold-seq here). A cloud store's own caches do not depend on the client's page
    cache, so every tool gets a warm server and a cold client."""
    global _warned_not_root
    if os.geteuid() != 0:
        if not _warned_not_root:
            print("bench: not root, so the page cache is not dropped: cold figures may be warm")
            _warned_not_root = True
        return False
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError as exc:
        if not _warned_not_root:
            print(f"bench: cannot drop the page cache ({exc.strerror}): cold figures may be warm")
            _warned_not_root = True
        return False
    if keep_warm is not None:
        read_tree(keep_warm)
    return True


def read_tree(root: Path) -> int:
    """Read every file under `root` (into the page cache); returns the bytes read."""
    total = 0
    buffer = bytearray(1 << 20)
    for folder, _, names in os.walk(root):
        for name in names:
            try:
                with open(os.path.join(folder, name), "rb", buffering=0) as f:
                    while n := f.readinto(buffer):
                        total += n
            except OSError:  # a file the server removed or locked meanwhile
                continue
    return total


def peak_rss_kib(pid: int | None) -> int | None:
    """VmHWM of a live process in KiB: the peak resident set since it started."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of a live process, all its threads, in seconds (clock ticks)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def command_output(argv: list[str], timeout: float = 15.0) -> str | None:
    """First non-empty output line of a version command; None when the binary is missing."""
    if shutil.which(argv[0]) is None and not os.path.isfile(argv[0]):
        return None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    for line in (done.stdout + "\n" + done.stderr).splitlines():
        if line.strip():
            return line.strip()
    return "unknown"


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _meminfo_total_kib() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_revision(repo: str) -> str | None:
    try:
        head = subprocess.run(["git", "-C", repo, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=False).stdout.strip()
        dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--", "mountfs"],
                               capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    if not head:
        return None
    return head + (" (mountfs/ has uncommitted changes)" if dirty else "")


def machine_facts(weed: str | None, repo: str) -> dict[str, Any]:
    """What a reader needs to compare two runs: hardware, kernel, and every tool's version."""
    mem = _meminfo_total_kib()
    load = os.getloadavg()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "hostname": platform.node(),
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_gib": round(mem / MiB, 1) if mem else None,
        "kernel": platform.release(),
        "os": _os_release(),
        "python": sys.version.split()[0],
        "loadavg_at_start": [round(x, 2) for x in load],
        "versions": {
            "mountfs": _package_version("mountfs"),
            "mountfs_git": git_revision(repo),
            "boto3": _package_version("boto3"),
            "botocore": _package_version("botocore"),
            "pyfuse3": _package_version("pyfuse3"),
            "rclone": command_output(["rclone", "version"]),
            "s3fs": command_output(["s3fs", "--version"]),
            "seaweedfs": command_output([weed, "version"]) if weed else None,
            "fusermount3": command_output(["fusermount3", "-V"]),
            "matplotlib": _package_version("matplotlib"),
        },
    }


def _os_release() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.platform()
