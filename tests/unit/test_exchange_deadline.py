"""Every SDK request has a whole-exchange deadline: a server that trickles its answer (or reads a
request body a byte at a time) makes the request fail within the timeout, not hang the mount."""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from mountfs.backends.deadline import COMPACT_SLACK, Watchdog
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


def test_finished_exchanges_are_not_held_until_their_deadlines() -> None:
    """Hundreds of requests a second, each with a deadline a timeout away: the watchdog holds those
    in flight (and a bounded slack of finished ones), not every request of the last minutes."""
    watchdog = Watchdog()
    a, b = socket.socketpair()
    with a, b:
        in_flight = [watchdog.arm(a, time.monotonic() + 3600) for _ in range(10)]
        for _ in range(20_000):
            assert not watchdog.disarm(watchdog.arm(a, time.monotonic() + 3600))
        assert len(watchdog) <= 2 * len(in_flight) + COMPACT_SLACK + 1
        for token in in_flight:
            assert not watchdog.disarm(token), "an exchange in flight is still watched"


def _stalled_exchange_is_cut_off(watchdog: Watchdog) -> bool:
    a, b = socket.socketpair()
    with a, b:
        watchdog.arm(a, time.monotonic() + 0.2)  # never disarmed: the exchange stalls
        return bool(select.select([a], [], [], 10)[0]) and a.recv(1) == b""  # shut: recv returns at once


@pytest.mark.timeout(60)
def test_a_forked_child_cuts_off_stalled_exchanges() -> None:
    """The daemon forks after the parent checked its buckets (with the watchdog's thread waiting):
    in the child, exchanges are still cut off at their deadlines, the first and every later one."""
    watchdog = Watchdog()
    a, b = socket.socketpair()
    with a, b:
        assert not watchdog.disarm(watchdog.arm(a, time.monotonic() + 0.05))  # the thread starts, waits
        time.sleep(0.3)
    pid = os.fork()
    if pid == 0:  # the child: report by exit code only
        code = 1
        try:
            c, d = socket.socketpair()
            with c, d:
                watchdog.disarm(watchdog.arm(c, time.monotonic() + 0.05))  # the child's thread starts
                time.sleep(0.3)  # its exchange is done: the thread waits for the next one
            both = _stalled_exchange_is_cut_off(watchdog) and _stalled_exchange_is_cut_off(watchdog)
            code = 0 if both else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "a stalled exchange of the child was never cut off"
