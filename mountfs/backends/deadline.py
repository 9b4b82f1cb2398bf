"""Whole-exchange deadlines for HTTP requests. A socket timeout bounds each recv only: a server that
trickles a byte now and then, or reads a request body a byte at a time, would hold a request for ever.

`http1` (our own GET and LIST path) arms the watchdog itself. Every other SDK call (boto3, the GCS and
Azure clients: all on urllib3) runs inside `exchange_deadline`, which makes each connection the calling
thread sends a request on shut at the deadline; the SDK then sees a dropped connection, a transient
failure that the retry policy retries.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

import urllib3.connection

COMPACT_SLACK = 256  # finished exchanges the watchdog may hold beyond twice those in flight


class Watchdog:
    """Shuts the socket of an exchange still running at its deadline. The socket timeout bounds
    each recv only: a server trickling a byte now and then would hold a request for ever, so the
    whole request gets `timeout` at most. One thread for every endpoint; started on first use (and
    again in a forked child, where threads do not survive).

    A forked child starts afresh: the parent's condition still lists the parent's waiting thread,
    which would swallow the child's first wake-up (its thread then sleeps for ever while exchanges
    pile up, none cut off), and the parent's sockets are not the child's to shut."""

    def __init__(self) -> None:
        self._tokens = itertools.count()
        self._start_afresh()
        me = weakref.ref(self)

        def afresh() -> None:
            watchdog = me()
            if watchdog is not None:
                watchdog._start_afresh()

        os.register_at_fork(after_in_child=afresh)

    def _start_afresh(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, socket.socket]] = []
        self._armed: set[int] = set()
        self._thread: threading.Thread | None = None

    def __len__(self) -> int:
        """Exchanges held, finished ones not yet dropped included."""
        with self._cond:
            return len(self._heap)

    def arm(self, sock: socket.socket, deadline: float) -> int:
        token = next(self._tokens)
        with self._cond:
            heapq.heappush(self._heap, (deadline, token, sock))
            self._armed.add(token)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="http1-watchdog", daemon=True)
                self._thread.start()
            elif self._heap[0][1] == token:
                self._cond.notify()
        return token

    def disarm(self, token: int) -> bool:
        """Done with the exchange; True if the deadline had passed and its socket was shut."""
        with self._cond:
            if token in self._armed:
                self._armed.discard(token)
                if len(self._heap) > 2 * len(self._armed) + COMPACT_SLACK:
                    self._compact()
                return False
            return True

    def _compact(self) -> None:
        """Drop finished exchanges (and their sockets) now rather than at their deadlines, which are
        up to a timeout (and a large body's time) away: the heap stays the size of what is in
        flight. Each pass removes more entries than it keeps, so it costs O(1) per exchange."""
        self._heap = [entry for entry in self._heap if entry[1] in self._armed]
        heapq.heapify(self._heap)

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][1] not in self._armed:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline, token, sock = self._heap[0]
                now = time.monotonic()
                if now < deadline:
                    self._cond.wait(deadline - now)
                    continue
                heapq.heappop(self._heap)
                self._armed.discard(token)
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)  # the blocked recv returns at once


WATCHDOG = Watchdog()


MIN_BODY_RATE = 64 * 1024
"""Bytes per second below which sending a request body counts as stalled: a request with a body of
n bytes gets n / MIN_BODY_RATE seconds on top of its timeout, so a large part upload on a slow but
moving link is not cut off, and a server reading a byte at a time still is."""


class _Exchange(threading.local):
    timeout: float | None = None
    tokens: list[int] | None = None


_EXCHANGE = _Exchange()


@contextlib.contextmanager
def exchange_deadline(seconds: float) -> Iterator[None]:
    """Each request this thread sends within the block must be answered, whole, within `seconds` of
    being sent (plus time for its body at MIN_BODY_RATE), or its connection is shut."""
    if _EXCHANGE.timeout is not None:  # nested: the outer block's deadline holds
        yield
        return
    _EXCHANGE.timeout, _EXCHANGE.tokens = seconds, []
    try:
        yield
    finally:
        tokens = _EXCHANGE.tokens
        _EXCHANGE.timeout = _EXCHANGE.tokens = None
        for token in tokens:
            WATCHDOG.disarm(token)


def _body_length(body: Any, headers: Any) -> int:
    with contextlib.suppress(AttributeError, TypeError, ValueError):
        return int(headers.get("Content-Length") or headers.get("content-length") or 0)
    return len(body) if isinstance(body, bytes | bytearray | memoryview) else 0


def _arm_request(original: Any) -> Any:
    """Sending: the timeout, plus time for the body at MIN_BODY_RATE."""

    def request(self: urllib3.connection.HTTPConnection, method: str, url: str, body: Any = None,
                headers: Any = None, *args: Any, **kwargs: Any) -> Any:
        timeout, tokens = _EXCHANGE.timeout, _EXCHANGE.tokens
        if timeout is not None and tokens is not None:
            if self.sock is None:
                self.connect()  # what the request does first: the socket is needed to arm it
            if self.sock is not None:
                extra = _body_length(body, headers or {}) / MIN_BODY_RATE
                token = WATCHDOG.arm(self.sock, time.monotonic() + timeout + extra)
                tokens.append(token)
                self._mountfs_sending = token  # type: ignore[attr-defined]
        return original(self, method, url, body, headers, *args, **kwargs)

    request.__wrapped__ = original  # type: ignore[attr-defined]
    return request


def _arm_response(original: Any) -> Any:
    """Answering: once the request is sent, the timeout again, whatever its body took."""

    def getresponse(self: urllib3.connection.HTTPConnection, *args: Any, **kwargs: Any) -> Any:
        timeout, tokens = _EXCHANGE.timeout, _EXCHANGE.tokens
        sending = getattr(self, "_mountfs_sending", None)
        if timeout is not None and tokens is not None and sending is not None and self.sock is not None:
            self._mountfs_sending = None  # type: ignore[attr-defined]
            if not WATCHDOG.disarm(sending):  # not cut off while sending: a fresh deadline
                tokens.append(WATCHDOG.arm(self.sock, time.monotonic() + timeout))
        return original(self, *args, **kwargs)

    getresponse.__wrapped__ = original  # type: ignore[attr-defined]
    return getresponse


_Connection = urllib3.connection.HTTPConnection
if not hasattr(_Connection.request, "__wrapped__"):
    _Connection.request = _arm_request(_Connection.request)  # type: ignore[method-assign]
    _Connection.getresponse = _arm_response(_Connection.getresponse)  # type: ignore[method-assign]
