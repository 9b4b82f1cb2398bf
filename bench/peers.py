"""Mount and unmount mountfs, rclone and s3fs on the benchmark bucket, each the same way every time.

Why one module: every cold figure needs a fresh mount with a fresh cache dir, and every mount must
go away in a `finally` even when its daemon hung or died (then `fusermount3 -u -z`), or the next
mount lands on a dead mount point and the run stops. A tool whose binary is missing is skipped with
the reason printed, never an error.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any, TypeVar

from bench.harness import CPU_MS, BenchError, cpu_seconds, peak_rss_kib
from mountfs import kernel_mounts

MOUNT_TIMEOUT = 60.0  # each tool answers in about a second; a wedged one must not stall the run
UNMOUNT_TIMEOUT = 30.0
MOUNT_TOOLS = ("mountfs", "rclone", "s3fs")
LABELS = {
    "mountfs": "mountfs",
    "rclone": "rclone mount (vfs-cache full)",
    "s3fs": "s3fs (no cache)",
}


@dataclass(frozen=True)
class S3Target:
    """The bucket every tool reads, and how to reach it."""

    endpoint: str  # http://127.0.0.1:PORT
    host_port: str  # 127.0.0.1:PORT
    bucket: str
    access_key: str
    secret_key: str


def missing_reason(tool: str) -> str | None:
    """Why `tool` cannot run here, or None when it can."""
    if tool in MOUNT_TOOLS:
        if not os.path.exists("/dev/fuse"):
            return "/dev/fuse is missing"
        if shutil.which("fusermount3") is None:
            return "fusermount3 is not installed (Debian package fuse3)"
    if tool == "mountfs" and importlib.util.find_spec("mountfs") is None:
        return "the mountfs package is not importable from this Python"
    if tool == "rclone" and shutil.which("rclone") is None:
        return "rclone is not installed (apt-get install -y rclone)"
    if tool == "s3fs" and shutil.which("s3fs") is None:
        return "s3fs is not installed (apt-get install -y s3fs)"
    return None


def mount_entry(path: Path) -> tuple[str, str] | None:
    """(fs type, "MAJ:MIN") of what is mounted at `path`, from mountinfo: never stat a mount point
    whose daemon may be dead or hung."""
    entry = kernel_mounts.mount_entry(path)
    return (entry.fs_type, entry.device) if entry else None


def lazy_unmount(path: Path) -> None:
    """Detach whatever the kernel still holds at `path` (the fallback of every unmount)."""
    if mount_entry(path) is not None:
        subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True, timeout=30, check=False)


def log_tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text.splitlines()[-lines:] if line.strip())


class Mount:
    """One mounted tool. unmount() is idempotent, never raises, and removes the cache dir."""

    tool = "?"

    def __init__(self, mountpoint: Path, cache_dir: Path, log_path: Path) -> None:
        self.mountpoint = mountpoint
        self.cache_dir = cache_dir
        self.log_path = log_path
        self.pid: int | None = None
        self.mount_seconds = 0.0
        self.readahead_kb: int | None = None

    def peak_rss_kib(self) -> int | None:
        return peak_rss_kib(self.pid)

    def counters(self) -> dict[str, int]:
        """What a workload cost the daemon: its CPU time (every tool), and its own counters
        (mountfs only). Sampled before and after a measurement; the report shows the difference."""
        cpu = cpu_seconds(self.pid)
        return {} if cpu is None else {CPU_MS: round(cpu * 1000)}

    def abort(self) -> None:
        """Kill the daemon at once (the watchdog's way to end a read stuck in it)."""
        if self.pid is not None:
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)
        lazy_unmount(self.mountpoint)

    def unmount(self) -> None:
        raise NotImplementedError

    def _note_readahead(self) -> None:
        """The mount's read_ahead_kb: it decides the size of the kernel's read requests."""
        entry = mount_entry(self.mountpoint)
        if entry is None:
            return
        with contextlib.suppress(OSError, ValueError):
            self.readahead_kb = int(Path(f"/sys/class/bdi/{entry[1]}/read_ahead_kb").read_text())


# --- mountfs -------------------------------------------------------------------------------

class MountfsMount(Mount):
    """`python -m mountfs CONFIG MNT -o cache_dir=...` (daemonizes once the mount answers)."""

    tool = "mountfs"

    def __init__(self, mountpoint: Path, cache_dir: Path, log_path: Path, runtime_dir: Path) -> None:
        super().__init__(mountpoint, cache_dir, log_path)
        self.env = {**os.environ, "MOUNTFS_RUNTIME_DIR": str(runtime_dir)}

    def _cli(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mountfs", *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout, check=False)

    def status(self) -> dict[str, Any]:
        done = self._cli("status", str(self.mountpoint), "--json", timeout=30)
        if done.returncode != 0:
            raise BenchError(f"mountfs status failed: {done.stderr.strip() or done.stdout.strip()}")
        reply: dict[str, Any] = json.loads(done.stdout)
        return reply

    def counters(self) -> dict[str, int]:
        out = super().counters()  # the CPU first: the status request below costs a little of it
        try:
            s = self.status()
        except (BenchError, ValueError, OSError, subprocess.TimeoutExpired):
            return out
        for section, keys in (("store", ("gets", "requests", "bytes_fetched")),
                              ("cache", ("hits", "misses", "shared")),
                              ("reads", ("opens", "reads", "bytes_served"))):
            values = s.get(section) or {}
            for key in keys:
                if isinstance(values.get(key), int):
                    out[f"{section}.{key}"] = values[key]
        return out

    def unmount(self) -> None:
        try:
            if mount_entry(self.mountpoint) is not None:
                done = self._cli("umount", str(self.mountpoint), "--timeout", str(UNMOUNT_TIMEOUT),
                                 timeout=UNMOUNT_TIMEOUT + 10)
                if done.returncode != 0 and mount_entry(self.mountpoint) is not None:
                    print(f"bench: mountfs umount failed ({done.stderr.strip()}); detaching lazily")
        except (OSError, subprocess.TimeoutExpired) as exc:
            print(f"bench: mountfs umount failed ({exc}); detaching lazily")
        lazy_unmount(self.mountpoint)
        if self.pid is not None and _is_ours(self.pid, "mountfs"):
            deadline = time.monotonic() + 10
            while _is_ours(self.pid, "mountfs") and time.monotonic() < deadline:
                time.sleep(0.05)
            if _is_ours(self.pid, "mountfs"):
                with contextlib.suppress(OSError):
                    os.kill(self.pid, signal.SIGKILL)
        self.pid = None


def _is_ours(pid: int, word: str) -> bool:
    """Still alive and still the process we started (a reused pid is somebody else's)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, IndexError):
        return False
    return state != "Z" and word.encode() in cmdline


def mountfs_config(target: S3Target, cache_dir: Path) -> str:
    """The TOML for one bucket at the mount root."""
    return "\n".join([
        "[cache]",
        f'dir = "{cache_dir}"',
        "[read]",
        'metadata_ttl = "60s"',
        "[[mount]]",
        'path = ""',
        f'url = "s3://{target.host_port}/{target.bucket}"',
        "[[s3.credentials]]",
        f'host = "{target.host_port}"',
        f'key = "{target.access_key}"',
        f'secret = "{target.secret_key}"',
        "secure = false",
        "",
    ])


def start_mountfs(target: S3Target, mountpoint: Path, cache_dir: Path, log_path: Path,
                  work: Path) -> MountfsMount:
    config = work / "mountfs.toml"
    config.write_text(mountfs_config(target, cache_dir))
    return start_mountfs_source(str(config), mountpoint, cache_dir, log_path, work)


def start_mountfs_source(source: str, mountpoint: Path, cache_dir: Path, log_path: Path,
                         work: Path, extra_options: str = "") -> MountfsMount:
    """`python -m mountfs SOURCE MNT -o cache_dir=...,log=...[,extra_options]`; SOURCE a config file
    or one URL."""
    runtime = work / "mountfs-run"
    runtime.mkdir(exist_ok=True)
    mount = MountfsMount(mountpoint, cache_dir, log_path, runtime)
    start = time.monotonic()
    try:
        options = f"cache_dir={cache_dir},log={log_path}" + (f",{extra_options}" if extra_options else "")
        done = mount._cli(source, str(mountpoint), "-o", options, timeout=MOUNT_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        lazy_unmount(mountpoint)
        raise BenchError(f"mountfs did not mount within {MOUNT_TIMEOUT:.0f} s; log: "
                         f"{log_tail(log_path)}") from exc
    if done.returncode != 0:
        lazy_unmount(mountpoint)
        reason = done.stderr.strip() or done.stdout.strip() or f"exit {done.returncode}"
        raise BenchError(f"mountfs mount failed: {reason} {log_tail(log_path, 3)}".strip())
    mount.mount_seconds = time.monotonic() - start
    try:
        mount.pid = int(mount.status()["pid"])
    except Exception as exc:
        mount.unmount()
        raise BenchError(f"mountfs mounted but its status failed: {exc}") from exc
    mount._note_readahead()
    return mount


# --- rclone and s3fs: foreground processes we own ----------------------------------------

class ProcessMount(Mount):
    """A peer run in the foreground as our child (own session), so its pid is the daemon's."""

    def __init__(self, tool: str, mountpoint: Path, cache_dir: Path, log_path: Path) -> None:
        super().__init__(mountpoint, cache_dir, log_path)
        self.tool = tool
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def spawn(self, argv: list[str], env: dict[str, str], fstype: str) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in unmount()
        start = time.monotonic()
        self.process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.process.pid
        deadline = start + MOUNT_TIMEOUT
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                self._log.flush()
                self.unmount()
                raise BenchError(f"{self.tool} exited with {code} before mounting: {log_tail(self.log_path)}")
            entry = mount_entry(self.mountpoint)
            if entry is not None and entry[0] == fstype:
                os.stat(self.mountpoint)  # answers: the daemon is serving
                self.mount_seconds = time.monotonic() - start
                self._note_readahead()
                return
            time.sleep(0.05)
        self.unmount()
        raise BenchError(f"{self.tool} did not mount within {MOUNT_TIMEOUT:.0f} s: {log_tail(self.log_path)}")

    def abort(self) -> None:
        self._signal(signal.SIGKILL)
        lazy_unmount(self.mountpoint)

    def _signal(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(OSError):
                os.killpg(self.process.pid, sig)

    def unmount(self) -> None:
        process = self.process
        try:
            if mount_entry(self.mountpoint) is not None:
                subprocess.run(["fusermount3", "-u", str(self.mountpoint)], capture_output=True,
                               timeout=UNMOUNT_TIMEOUT, check=False)
            if process is not None:
                try:
                    process.wait(UNMOUNT_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self._signal(signal.SIGTERM)
                    try:
                        process.wait(5)
                    except subprocess.TimeoutExpired:
                        self._signal(signal.SIGKILL)
                        process.wait()
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
        finally:
            lazy_unmount(self.mountpoint)
            if process is not None and process.returncode is None:
                self._signal(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(10)
            if self._log is not None:
                self._log.close()
                self._log = None
            self.pid = None


def rclone_env(target: S3Target) -> dict[str, str]:
    """The remote "bench" from RCLONE_CONFIG_* variables, no config file; rclone 1.60 fails
    with AWS_CA_BUNDLE set (this environment sets it), so it is left out."""
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    env.update({
        "RCLONE_CONFIG": "/dev/null",
        "RCLONE_CONFIG_BENCH_TYPE": "s3",
        "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
        "RCLONE_CONFIG_BENCH_ENDPOINT": target.endpoint,
        "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": target.access_key,
        "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": target.secret_key,
        "RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE": "true",
        "RCLONE_CONFIG_BENCH_REGION": "us-east-1",
    })
    return env


def start_rclone(target: S3Target, mountpoint: Path, cache_dir: Path, log_path: Path,
                 work: Path) -> ProcessMount:
    mount = ProcessMount("rclone", mountpoint, cache_dir, log_path)
    argv = ["rclone", "mount", f"bench:{target.bucket}", str(mountpoint),
            "--vfs-cache-mode", "full", "--cache-dir", str(cache_dir),
            "--use-server-modtime",  # else every stat costs a HEAD
            "--log-level", "NOTICE"]
    mount.spawn(argv, rclone_env(target), "fuse.rclone")
    return mount


def start_s3fs(target: S3Target, mountpoint: Path, cache_dir: Path, log_path: Path,
               work: Path) -> ProcessMount:
    passwd = work / "s3fs.passwd"
    passwd.write_text(f"{target.access_key}:{target.secret_key}\n")
    passwd.chmod(0o600)
    mount = ProcessMount("s3fs", mountpoint, cache_dir, log_path)
    options = ",".join([f"url={target.endpoint}", "use_path_request_style", f"passwd_file={passwd}",
                        "endpoint=us-east-1", "sigv4"])
    mount.spawn(["s3fs", target.bucket, str(mountpoint), "-f", "-o", options], dict(os.environ), "fuse.s3fs")
    return mount


_STARTERS = {"mountfs": start_mountfs, "rclone": start_rclone, "s3fs": start_s3fs}
_counter = 0
M = TypeVar("M", bound=Mount)


@contextlib.contextmanager
def mounted(tool: str, target: S3Target, work: Path) -> Iterator[Mount]:
    """A fresh mount of `tool` with a fresh, empty cache dir; gone again afterwards whatever happens."""
    with _fresh_mount(tool, work, partial(_STARTERS[tool], target)) as mount:
        yield mount


@contextlib.contextmanager
def mounted_folder(folder: Path, work: Path, *, direct: bool = False) -> Iterator[MountfsMount]:
    """mountfs on a local folder as a `file://` bucket (no S3 involved), with a fresh, empty cache
    dir; unmounted and the cache dir deleted afterwards whatever happens. `direct`: served by direct
    access (the default for file:// URLs); else with -o cache_local, through the block cache."""
    source = f"file://{folder.resolve()}"
    start = partial(start_mountfs_source, source, extra_options="" if direct else "cache_local")
    with _fresh_mount("mountfs", work, start) as mount:
        yield mount


@contextlib.contextmanager
def _fresh_mount(tool: str, work: Path, start: Callable[[Path, Path, Path, Path], M]) -> Iterator[M]:
    """Make mnt-TOOL-N (the run's final cleanup unmounts every mnt-*) and cache-TOOL-N, call
    start(mountpoint, cache_dir, log_path, work), and undo all of it in a finally."""
    global _counter
    _counter += 1
    mountpoint = work / f"mnt-{tool}-{_counter}"
    cache_dir = work / f"cache-{tool}-{_counter}"
    log_path = work / f"{tool}-{_counter}.log"
    mountpoint.mkdir()
    cache_dir.mkdir()
    mount: M | None = None
    try:
        mount = start(mountpoint, cache_dir, log_path, work)
        yield mount
    finally:
        try:
            if mount is not None:
                mount.unmount()
            lazy_unmount(mountpoint)
        finally:
            shutil.rmtree(cache_dir, ignore_errors=True)
            with contextlib.suppress(OSError):
                mountpoint.rmdir()
