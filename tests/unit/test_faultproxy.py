"""The fault proxy's own faults, against a plain HTTP server: what a client sees of each."""

from __future__ import annotations

import errno
import http.server
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.faultproxy import FaultProxy

BODY = bytes(range(256)) * 64  # 16 KiB


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def get(port: int, timeout: float = 5.0) -> tuple[bytes, int, bool]:
    """A raw GET read for at most `timeout` seconds: (the body received, the Content-Length,
    whether the connection closed)."""
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        closed = False
        try:
            while (b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < len(BODY)) \
                    and time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    closed = True
                    break
                data += chunk
        except TimeoutError:
            pass
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    return body, length, closed


def test_no_fault_passes_the_answer(upstream: int) -> None:
    proxy = FaultProxy(upstream)
    try:
        assert get(proxy.port)[0] == BODY
    finally:
        proxy.close()


def test_a_truncated_body_is_half_then_a_clean_close(upstream: int) -> None:
    proxy = FaultProxy(upstream, truncate_bodies=1.0)
    try:
        body, length, closed = get(proxy.port)
        assert (body, length, closed) == (BODY[:len(BODY) // 2], len(BODY), True)
        assert proxy.truncations_served == 1
    finally:
        proxy.close()


def test_a_stalled_answer_comes_late_and_whole(upstream: int) -> None:
    proxy = FaultProxy(upstream, stall_answers=1.0, stall_seconds=(0.3, 0.4))
    try:
        started = time.monotonic()
        assert get(proxy.port)[0] == BODY
        assert time.monotonic() - started >= 0.3
        assert proxy.stalls_served == 1
    finally:
        proxy.close()


def test_an_endless_body_trickles_and_never_ends(upstream: int) -> None:
    proxy = FaultProxy(upstream, endless_bodies=1.0, trickle_interval=0.1)
    try:
        body, length, closed = get(proxy.port, timeout=1.0)  # the recv timeout never fires: 1 byte/0.1 s
        assert not closed and len(BODY) // 2 < len(body) < length and BODY.startswith(body)
        assert proxy.endless_served == 1
    finally:
        proxy.close()


def test_refused_connections_then_listening_again(upstream: int) -> None:
    proxy = FaultProxy(upstream)
    try:
        kept = socket.create_connection(("127.0.0.1", proxy.port))
        time.sleep(0.1)  # accepted
        proxy.refuse(True)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", proxy.port), timeout=2).close()
        kept.settimeout(2)
        with pytest.raises(OSError) as info:
            kept.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
            if not kept.recv(10):
                raise OSError(errno.ECONNRESET, "closed")
        assert info.value.errno in (errno.ECONNRESET, errno.EPIPE)
        kept.close()
        proxy.refuse(False)
        assert get(proxy.port)[0] == BODY
    finally:
        proxy.close()
