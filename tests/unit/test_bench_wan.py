"""The bench's WAN proxy (bench/wan.py) and the random-access helpers: a transfer through the proxy
takes at least its round trip and its bytes at the capped rate, arrives intact, and is counted; the
link spec parses and refuses nonsense; the pure helpers of the random-access workloads agree with
the readers."""

from __future__ import annotations

import os
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench import ra_reader, wan
from bench.harness import Metric


@pytest.fixture
def echo_server() -> Iterator[str]:
    """A TCP server that sends back what it gets, until the client half-closes."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)  # so the thread sees `stop` soon
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(20)
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()
        thread.join(5)


def _exchange(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        sender = threading.Thread(target=lambda: (s.sendall(payload), s.shutdown(socket.SHUT_WR)))
        sender.start()
        got = bytearray()
        while chunk := s.recv(65536):
            got += chunk
        sender.join()
    return bytes(got)


def test_transfer_takes_the_round_trip_and_the_rate_and_is_intact(echo_server: str) -> None:
    payload = os.urandom(128 * 1024)
    spec = wan.parse_link("100ms,8Mbit")  # 1 MB/s each way: 128 KiB takes 0.13 s per direction
    with wan.running(echo_server, spec) as proxy:
        start = time.monotonic()
        got = _exchange(proxy.port, payload)
        elapsed = time.monotonic() - start
        counters = proxy.counters()
    assert got == payload
    # a lower bound only: the handshake's round trip, half a round trip each way, the bytes each way
    assert elapsed >= 0.1 + 0.1 + 2 * len(payload) / 1_000_000 * 0.9
    assert counters["bytes_up"] == counters["bytes_down"] == len(payload)
    assert counters["connections"] == 1


def test_counting_only_proxy_passes_bytes_through(echo_server: str) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 7)
    with wan.running(echo_server, wan.parse_link("0")) as proxy:
        assert _exchange(proxy.port, payload) == payload
        assert _exchange(proxy.port, b"x") == b"x"
        counters = proxy.counters()
    assert counters["bytes_down"] == len(payload) + 1
    assert counters["connections"] == 2


def test_parse_link() -> None:
    spec = wan.parse_link("20ms,1Gbit")
    assert spec == wan.LinkSpec(0.02, 125e6)
    assert spec.shaped and "20 ms round trip" in spec.describe()
    assert wan.parse_link(spec.arg()) == spec
    assert wan.parse_link("500us").rtt == pytest.approx(0.0005)
    assert wan.parse_link("100Mbit") == wan.LinkSpec(0.0, 12.5e6)
    assert not wan.parse_link("0").shaped and not wan.parse_link("").shaped
    assert wan.parse_link(wan.parse_link("0").arg()) == wan.LinkSpec()
    for bad in ("20", "fast", "20ms,1Gbps", "0Gbit", "11s", "-5ms"):
        with pytest.raises(ValueError):
            wan.parse_link(bad)


def test_delta_and_bytes_read() -> None:
    assert wan.delta({"bytes_down": 10, "spec": "x", "cpu_ms": 5}, {"bytes_down": 4}) == {
        "bytes_down": 6, "cpu_ms": 5}
    d = {"value": 100.0, "seconds": 2.0}
    assert wan.bytes_read("cold-seq", "MB/s", d, 0) == 200_000_000
    assert wan.bytes_read("random-4k-cold", "ops/s", d, 0) == 200 * 4096
    assert wan.bytes_read("random-1m-warm", "ops/s", d, 0) == 200 * 2**20
    assert wan.bytes_read("small-files", "files/s", d, 1024) == 200 * 1024
    assert wan.bytes_read("metadata", "s", d, 0) is None
    assert wan.bytes_read("zip", "s", {**d, "app_bytes": 77}, 0) == 77


def test_link_table_shows_the_ratio_per_tool() -> None:
    metric = Metric("zip", "t", "s", False)
    metric.row("mountfs", "mountfs").details.append(
        {"value": 1.0, "seconds": 1.0, "app_bytes": 2 * 2**20,
         wan.LINK_KEY: {"bytes_down": 6 * 2**20, "cpu_ms": 250}, "counters": {"daemon.cpu_ms": 1500}})
    metric.row("local", "local file").details.append({"value": 1.0, "app_bytes": 2**20})
    run = SimpleNamespace(metrics={"zip": metric}, settings={"link": "20 ms round trip"})
    table = wan.link_table(run)
    assert "| zip | mountfs | 6.0 | 2.0 | 3.00 | 1.50 | 0.25 |" in table
    assert "local file" not in table  # no link sample, no row
    assert wan.link_note(run).startswith("**Every tool reached SeaweedFS through a shaped link: 20 ms")
    assert wan.link_note(SimpleNamespace(settings={"link": None})) == ""


def test_reader_picks_are_seeded_and_spread() -> None:
    names = [f"d/m{i}" for i in range(1000)] + ["d/"]
    picks = ra_reader.zip_members(names, 50, 23)
    assert picks == ra_reader.zip_members(list(reversed(names)), 50, 23)
    assert len(set(picks)) == 50 and "d/" not in picks
    ids = ra_reader.sqlite_ids(10_000, 200, 23)
    assert ids == ra_reader.sqlite_ids(10_000, 200, 23)
    assert min(ids) >= 1 and max(ids) <= 10_000 and max(ids) - min(ids) > 5_000


def test_zip_and_sqlite_readers_on_small_local_files(tmp_path: Path) -> None:
    from bench import random_access as ra

    archive = tmp_path / "a.zip"
    ra.make_zip(archive, 20 * ra.ZIP_MEMBER)
    with zipfile.ZipFile(archive) as z:
        assert len(z.namelist()) == 20
    assert ra_reader.zipped(str(archive), {"members": 5, "seed": 1}) == [20, 5 * ra.ZIP_MEMBER]

    db = tmp_path / "t.sqlite"
    ra.make_sqlite(db, 300 * 1100)
    params = ra.reader_params(ra.SQLITE, 300 * 1100)
    total, n, size = ra_reader.sqlite(str(db), params)
    assert n == min(params["scan"], params["rows"] - ra_reader.sqlite_ids(params["rows"], 1, 25)[0] + 1)
    assert size == n * ra.SQLITE_BLOB and total > params["lookups"] * ra.SQLITE_BLOB


def test_parquet_needed_bytes_counts_footer_and_chosen_chunks(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    from bench import random_access as ra

    path = tmp_path / "t.parquet"
    group = 1600 * 1024  # 10,240 rows of 20 int64 columns
    ra.make_parquet(path, 2 * group, row_group=group)
    needed = ra.parquet_needed_bytes(path, ra.PARQUET_READ)
    chunk_bytes = group // ra.PARQUET_COLUMNS
    assert 2 * 2 * chunk_bytes < needed < 2 * 2 * chunk_bytes * 1.05 + 64 * 1024
    rows, _checksum = ra_reader.parquet(str(path), {"columns": ra.PARQUET_READ})
    assert rows == 2 * group // (8 * ra.PARQUET_COLUMNS)


def test_a_client_that_leaves_mid_answer_frees_the_server_connection() -> None:
    """rclone and s3fs abandon ranged reads: the proxy must then close the server's side too, or
    every abandoned answer holds a server connection for the rest of the run."""
    listener = socket.create_server(("127.0.0.1", 0))
    freed = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            try:
                for _ in range(1024):
                    conn.sendall(b"x" * 1024 * 1024)
            except OSError:
                freed.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with wan.running(f"127.0.0.1:{listener.getsockname()[1]}", wan.parse_link("0")) as proxy:
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=20) as s:
                assert s.recv(1)  # then a plain close (FIN): the proxy learns it when it writes
            assert freed.wait(20), "the server's connection stayed open after its client left"
    finally:
        listener.close()
        thread.join(1)


def test_reader_python_and_missing_reason(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    import sys

    from bench import random_access as ra

    assert ra.reader_python("pyarrow") == sys.executable
    assert ra.missing_reason("mountfs") is None and ra.missing_reason("pyarrow") is None
    monkeypatch.setattr(ra, "DEFAULT_FSSPEC_VENV", tmp_path / "none")
    monkeypatch.setenv(ra.FSSPEC_PYTHON_ENV, str(tmp_path / "missing-python"))
    if ra.reader_python("fsspec") is None:  # no s3fs in this Python either
        assert ra.FSSPEC_PYTHON_ENV in (ra.missing_reason("fsspec") or "")
