"""Every SDK request has a whole-exchange deadline: a server that trickles its answer (or reads a
request body a byte at a time) makes the request fail within the timeout, not hang the mount."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from mountfs.backends.s3 import S3Store
from mountfs.config import RetryConfig
from mountfs.config.s3 import S3Settings
from mountfs.errors import StoreUnavailable

TIMEOUT = 1.5


class TricklingServer:
    """Answers every request with headers at once, then a byte of body every 0.2 s: each recv
    gets something well within any socket timeout, the answer is never whole."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.requests: list[bytes] = []
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:  # closed
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                head += chunk
            self.requests.append(head.split(b"\r\n", 1)[0])
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            body = len(head.split(b"\r\n\r\n", 1)[1])
            try:
                while body < length:  # the whole request, at once: only the answer trickles
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    body += len(chunk)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nETag: \"x\"\r\n"
                             b"Content-Type: application/xml\r\n\r\n")
                while not self.stop.is_set():
                    conn.sendall(b" ")
                    time.sleep(0.2)
            except OSError:
                return

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.fixture
def trickling() -> Iterator[TricklingServer]:
    server = TricklingServer()
    yield server
    server.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("call", ["put", "delete"])
def test_a_trickled_answer_fails_within_the_timeout(trickling: TricklingServer, call: str) -> None:
    settings = S3Settings(bucket="bucket", endpoint_url=f"http://127.0.0.1:{trickling.port}",
                          region="us-east-1", key="AKID", secret="SECRET-VALUE")
    retry = RetryConfig(attempts=2, base_delay=0.01, max_delay=0.01, budget=30, request_timeout=TIMEOUT)
    store = S3Store(settings, retry)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        if call == "put":
            store.put("dir/file.bin", b"x" * (1 << 20))  # sent at once: the answer gets the timeout only
        else:
            store.delete("dir/file.bin")
    took = time.monotonic() - started
    assert len(trickling.requests) == 2, "each attempt was cut off and the second tried again"
    assert took < 2 * TIMEOUT + 10, f"two attempts of {TIMEOUT} s took {took:.1f} s"
