"""The metrics server under hostile clients: idle connections cannot pile up threads or file
descriptors (a read timeout and a cap on connections served at once), and only /metrics answers
the figures."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mountfs.metrics import MetricsServer

CAP = 4
TIMEOUT = 1.0


@pytest.fixture(params=["tcp", "unix"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetricsServer]:
    address = "127.0.0.1:0" if request.param == "tcp" else f"unix:{tmp_path / 'm.sock'}"
    srv = MetricsServer(address, read_timeout=TIMEOUT, max_connections=CAP)
    srv.start(lambda: None)
    try:
        yield srv
    finally:
        srv.close()


def _connect(srv: MetricsServer) -> socket.socket:
    if srv.unix_path is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(srv.unix_path)
    else:
        sock = socket.create_connection(srv.server.server_address[:2])
    sock.settimeout(30)
    return sock


def _request(srv: MetricsServer, method: str, path: str) -> tuple[int, bytes]:
    with _connect(srv) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        return response.status, response.read()


def _drained(sock: socket.socket) -> bytes:
    """All the server sends until it closes the connection (a reset, for unread bytes, ends it too)."""
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def test_idle_connections_are_capped_and_closed_after_the_timeout(server: MetricsServer) -> None:
    before = threading.active_count()
    idle = []
    try:
        for _ in range(CAP * 5):
            sock = _connect(server)
            sock.sendall(b"GET /metrics HTTP/1.1\r\n")  # and nothing more
            idle.append(sock)
            assert threading.active_count() <= before + CAP
        # Every connection ends without the client doing anything more: those over the cap at once
        # with a 503, the others when the read timeout strikes (recv would block 30 s otherwise).
        answers = [_drained(sock) for sock in idle]
        assert all(a == b"" or a.startswith(b"HTTP/1.0 503") for a in answers), answers
        assert any(a.startswith(b"HTTP/1.0 503") for a in answers), answers
    finally:
        for sock in idle:
            sock.close()
    status, body = _request(server, "GET", "/metrics")
    assert status == 200 and b"process_open_fds" in body


def test_a_scrape_works_while_idle_connections_hold_part_of_the_slots(server: MetricsServer) -> None:
    idle = [_connect(server) for _ in range(CAP - 1)]
    try:
        for sock in idle:
            sock.sendall(b"GET /metrics HTTP/1.1\r\n")
        status, body = _request(server, "GET", "/metrics")
        assert status == 200 and b"process_open_fds" in body
    finally:
        for sock in idle:
            sock.close()


def test_only_metrics_answers_the_figures(server: MetricsServer) -> None:
    for path in ("/metricsX", "/../../etc/passwd", "/metrics/", "/favicon.ico", "/x/metrics"):
        status, body = _request(server, "GET", path)
        assert status == 404 and b"process_" not in body, (path, body)
    status, body = _request(server, "GET", "/")
    assert status == 200 and b'href="/metrics"' in body
    status, body = _request(server, "HEAD", "/metrics")
    assert status == 200 and body == b""
    status, body = _request(server, "GET", "/metrics?debug=1")
    assert status == 200 and b"process_open_fds" in body
    for method in ("POST", "PUT", "OPTIONS", "DELETE"):
        status, _ = _request(server, method, "/metrics")
        assert status == 405, method
