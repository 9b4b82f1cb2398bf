"""Prometheus metrics of a real mount: a workload of known size, then /metrics scraped and parsed with
prometheus_client's own parser, each figure checked against what the workload must cause."""

from __future__ import annotations

import errno
import http.client
import os
import re
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from conftest import Mounter

MiB = 1 << 20
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(address: str) -> str:
    if address.startswith("unix:"):
        conn: http.client.HTTPConnection = _UnixConnection(address[len("unix:"):])
    else:
        host, _, port = address.rpartition(":")
        conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=30)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        assert response.status == 200, response.status
        return response.read().decode()
    finally:
        conn.close()


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self.path)


def samples(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(s: Samples, name: str, **labels: str) -> float:
    return s.get((name, frozenset(labels.items())), 0.0)


def test_metrics_count_what_a_known_workload_does(mounter: Mounter, tmp_path: Path) -> None:
    src = tmp_path / "bucket"
    (src / "data").mkdir(parents=True)
    size = 5 * MiB + 123  # 6 blocks of 1 MiB
    content = os.urandom(size)
    (src / "data" / "big.bin").write_bytes(content)
    (src / "data" / "full").mkdir()
    (src / "data" / "full" / "x").write_bytes(b"x")
    mount = mounter.mount(src, "metrics=127.0.0.1:0")
    status = mounter.run.status(mount)
    address = status["metrics"]
    assert address.startswith("127.0.0.1:") and not address.endswith(":0"), address
    where = {"mount": "", "store": "file"}
    shown = mounter.run("status", mount.path)
    assert f"  metrics: http://{address}/metrics" in shown.stdout.splitlines(), shown.stdout

    # cold: every block fetched once; then the same file again, from the cache
    assert Path(mount.join("data", "big.bin")).read_bytes() == content
    cold = samples(scrape(address))
    gets = value(cold, "mountfs_store_requests_total", kind="GET", **where)
    assert 1 <= gets <= 6, gets  # read-ahead fetches consecutive blocks at once
    assert value(cold, "mountfs_store_fetched_bytes_total", **where) == size
    assert value(cold, "mountfs_cache_misses_total") == 6
    assert value(cold, "mountfs_store_request_duration_seconds_count", kind="GET", **where) == gets
    assert value(cold, "mountfs_read_bytes_total") == size
    assert value(cold, "mountfs_opens_total") == 1
    reads = value(cold, "mountfs_fuse_request_duration_seconds_count", operation="read")
    assert reads >= 1
    assert value(cold, "mountfs_fuse_request_duration_seconds_bucket", operation="read", le="+Inf") == reads

    assert value(cold, "mountfs_prefetch_windows") == 0  # no file open
    with open(mount.join("data", "big.bin"), "rb", buffering=0) as f:  # a stream, still open
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        for offset in range(0, 3 * MiB, 128 * 1024):
            assert os.pread(f.fileno(), 128 * 1024, offset) == content[offset:offset + 128 * 1024]
        streaming = samples(scrape(address))
    assert value(streaming, "mountfs_prefetch_windows") == 1
    assert value(streaming, "mountfs_prefetch_window_bytes") >= MiB

    hits_before = value(cold, "mountfs_cache_hits_total") + value(cold, "mountfs_cache_shared_total")
    with open(mount.join("data", "big.bin"), "rb", buffering=0) as f:
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)  # past the kernel's page cache
        for offset in range(0, size, MiB):
            assert os.pread(f.fileno(), 4096, offset) == content[offset:offset + 4096]

    # a write of known size, and a request refused with a known errno
    Path(mount.join("data", "new.bin")).write_bytes(b"w" * 300_000)
    try:
        os.rmdir(mount.join("data", "full"))
    except OSError as exc:
        assert exc.errno == errno.ENOTEMPTY
    else:
        raise AssertionError("rmdir of a folder with a file in it succeeded")

    text = scrape(address)
    warm = samples(text)
    assert value(warm, "mountfs_store_requests_total", kind="GET", **where) == gets  # nothing fetched again
    assert value(warm, "mountfs_store_fetched_bytes_total", **where) == size
    assert value(warm, "mountfs_cache_misses_total") == 6
    hits = value(warm, "mountfs_cache_hits_total") + value(warm, "mountfs_cache_shared_total")
    assert hits >= hits_before + 6
    assert value(warm, "mountfs_store_requests_total", kind="PUT", **where) == 1
    assert value(warm, "mountfs_store_uploaded_bytes_total", **where) == 300_000
    assert value(warm, "mountfs_uploaded_bytes_total") == 300_000
    assert value(warm, "mountfs_uploads_completed_total") == 1
    assert value(warm, "mountfs_uploads_pending") == 0
    assert value(warm, "mountfs_written_bytes_total") == 300_000
    assert value(warm, "mountfs_fuse_errors_total", operation="rmdir", errno="ENOTEMPTY") == 1
    assert value(warm, "mountfs_store_offline", **where) == 0
    assert value(warm, "mountfs_store_retries_total", **where) == 0  # per store: none on a healthy one
    assert value(warm, "process_resident_memory_bytes") > 0
    assert value(warm, "process_open_fds") > 0
    assert ("mountfs_prefetch_in_flight_bytes", frozenset()) in warm
    assert value(warm, "mountfs_threads") >= 2  # the event loop and the metrics server at least

    # the same figures as `mountfs status`, and no label names a file
    status = mounter.run.status(mount)
    assert value(warm, "mountfs_cache_misses_total") == status["cache"]["misses"]
    assert value(warm, "mountfs_store_fetched_bytes_total", **where) == status["store"]["bytes_fetched"]
    assert value(warm, "mountfs_cache_lifetime_fetched_bytes_total", **where) == size
    assert value(warm, "mountfs_cache_lifetime_served_bytes_total", **where) >= size
    assert "big.bin" not in text and "new.bin" not in text and str(src) not in text

    # every series the Grafana dashboard draws exists
    dashboard = (Path(__file__).parents[2] / "contrib" / "grafana-mountfs.json").read_text()
    names = {name for name, _ in warm}
    drawn = set(re.findall(r"\b((?:mountfs|process)_[a-z_]+)", dashboard))
    assert drawn and drawn <= names, drawn - names


def test_metrics_on_a_unix_socket_and_a_busy_or_bad_address(mounter: Mounter, tmp_path: Path) -> None:
    src = tmp_path / "bucket"
    src.mkdir()
    (src / "f").write_bytes(b"hello")
    sock_path = str(tmp_path / "metrics.sock")
    mount = mounter.mount(src, f"metrics=unix:{sock_path}")
    assert Path(mount.join("f")).read_bytes() == b"hello"
    assert value(samples(scrape("unix:" + sock_path)), "mountfs_read_bytes_total") == 5

    # a second daemon on the same socket, or on a port taken by another process: refused at mount
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        for option, words in ((f"metrics=unix:{sock_path}", "another process serves"),
                              (f"metrics=127.0.0.1:{port}", "in use"),
                              ("metrics=127.0.0.1:99999", "bad mount option metrics="),
                              ("metrics=no such host:1", "bad mount option metrics=")):
            target = mounter.fresh_dir("mnt")
            cache = mounter.fresh_dir("c")
            result = mounter.run(f"file://{src}", target, "-o", f"cache_dir={cache},{option}")
            assert result.returncode != 0, option
            assert words in result.stderr and "Traceback" not in result.stderr, (option, result.stderr)
            assert not os.path.ismount(target)
    mounter.umount(mount)
    assert not os.path.exists(sock_path)  # removed at unmount
