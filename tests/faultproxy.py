"""An HTTP/1.1 proxy in front of a real S3 server that injects faults request by request.

Real servers do not throttle or drop connections when asked to, so tests put this between mountfs
and the server to produce real throttling answers and connections reset mid-body over the wire,
with no SDK mocked. It reads each request and each answer on kept-alive connections, so a fault
hits one request, not a whole connection:

- `fail_next(n[, reply])`: the next n requests are answered 503 SlowDown (or `reply`, a whole
  answer such as `error_reply(...)`);
- `slow_down`: that fraction of requests is answered 503 SlowDown;
- `reset_bodies`: that fraction of GET answers with a body is cut after half of the body, and the
  connection reset (RST), as a flaky network or load balancer does;
- `corrupt_bodies`: that fraction of GET answers with a body has its middle byte flipped, as a bad
  NIC or a broken middlebox does (only a checksum can tell);
- `truncate_bodies`: that fraction of GET answers with a body is cut after half of the body and the
  connection closed cleanly (FIN): the client sees fewer bytes than Content-Length said;
- `stall_answers`: that fraction of answers is held `stall_seconds` (a number, or a (min, max)
  range drawn from) before it is passed on, as an overloaded server or a lost packet does;
- `endless_bodies`: that fraction of GET answers with a body sends half of the body, then one byte
  every `trickle_interval` seconds (None: nothing more), so the body never ends while the
  connection stays alive; a per-read socket timeout never fires on such a trickle;
- `endless_answers`: that fraction of answers to other requests than GET (HEAD, PUT, POST, DELETE:
  uploads, their parts and completion, copies, deletes) sends half of its head, then one byte every
  `trickle_interval` seconds, never the rest;
- `refuse(True)`: the listener is closed and every open connection reset, so connects are refused
  (ECONNREFUSED) until `refuse(False)` listens again on the same port.

The random draws come from a `random.Random(seed)`, so a test sees the same mix run after run (the
order in which concurrent requests draw still varies).
"""

from __future__ import annotations

import contextlib
import io
import random
import socket
import struct
import threading
from typing import cast

SLOW_DOWN = (b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
             b"Content-Length: %d\r\n\r\n%s")
SLOW_DOWN_BODY = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
                  b"<Message>Please reduce your request rate.</Message></Error>")
CHUNK = 262144


def error_reply(status: str, code: str, message: str) -> bytes:
    """A whole S3 error answer, as a server sends it (e.g. SeaweedFS's 400 KeyTooLongError)."""
    body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
            f"<Message>{message}</Message></Error>").encode()
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/xml\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


class _Closed(Exception):
    """One side of the exchange went away: drop the pair of connections."""


class FaultProxy:
    def __init__(self, upstream_port: int, host: str = "127.0.0.1", *, seed: int = 0,
                 slow_down: float = 0.0, reset_bodies: float = 0.0, corrupt_bodies: float = 0.0,
                 truncate_bodies: float = 0.0, stall_answers: float = 0.0,
                 stall_seconds: float | tuple[float, float] = 20.0, endless_bodies: float = 0.0,
                 trickle_interval: float | None = 1.0, endless_answers: float = 0.0) -> None:
        self.upstream = (host, upstream_port)
        self.host = host
        self.listener = socket.create_server((host, 0))
        self.port = self.listener.getsockname()[1]
        self.host_port = f"{host}:{self.port}"
        self.slow_down = slow_down
        self.reset_bodies = reset_bodies
        self.corrupt_bodies = corrupt_bodies
        self.truncate_bodies = truncate_bodies
        self.stall_answers = stall_answers
        self.stall_seconds = stall_seconds
        self.endless_bodies = endless_bodies
        self.endless_answers = endless_answers
        self.trickle_interval = trickle_interval
        self.truncations_served = 0  # answers cut short with a clean close
        self.stalls_served = 0  # answers held back
        self.endless_served = 0  # bodies that never end
        self.refused = 0  # connections reset while refusing
        self._refusing = False
        self._stop = threading.Event()
        self.failures_left = 0
        self.reply = SLOW_DOWN % (len(SLOW_DOWN_BODY), SLOW_DOWN_BODY)  # what fail_next answers
        self.requests = 0
        self.failures_served = 0  # 503 SlowDown answers
        self.resets_served = 0  # answers cut mid-body
        self.corruptions_served = 0  # answers with a byte flipped
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._closed = False
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def fail_next(self, count: int, reply: bytes | None = None) -> None:
        """Answer the next `count` requests with 503 SlowDown, or with `reply`."""
        with self._lock:
            self.failures_left = count
            self.reply = reply or SLOW_DOWN % (len(SLOW_DOWN_BODY), SLOW_DOWN_BODY)

    def refuse(self, on: bool) -> None:
        """Refuse connections (listener closed, open connections reset), or listen again."""
        with self._lock:
            if on == self._refusing or self._closed:
                return
            self._refusing = on
            sockets = set(self._open) if on else set()
        if on:
            with contextlib.suppress(OSError):
                self.listener.shutdown(socket.SHUT_RDWR)  # stops listening even with accept() blocked
            with contextlib.suppress(OSError):
                self.listener.close()
            for sock in sockets:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self.refused += len(sockets)
        else:
            self.listener = socket.create_server((self.host, self.port))
            threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def close(self) -> None:
        self._closed = True
        self._stop.set()
        with self._lock:
            sockets, self._open = self._open, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
                sock.close()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.listener.close()

    # --- internals -------------------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        while not self._closed:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _decide(self, method: str) -> str | None:
        """The fault for the next request: "fail_next", "slow_down", "reset", "corrupt", "truncate"
        or "endless" (if its answer has a body), "stall", or None."""
        with self._lock:
            self.requests += 1
            if self.failures_left > 0:
                self.failures_left -= 1
                self.failures_served += 1
                return "fail_next"
            if self.slow_down and self._rng.random() < self.slow_down:
                self.failures_served += 1
                return "slow_down"
            if method == "GET" and self.reset_bodies and self._rng.random() < self.reset_bodies:
                return "reset"
            if method == "GET" and self.corrupt_bodies and self._rng.random() < self.corrupt_bodies:
                return "corrupt"
            if method == "GET" and self.truncate_bodies and self._rng.random() < self.truncate_bodies:
                return "truncate"
            if method == "GET" and self.endless_bodies and self._rng.random() < self.endless_bodies:
                return "endless"
            if method != "GET" and self.endless_answers and self._rng.random() < self.endless_answers:
                return "endless_head"
            if self.stall_answers and self._rng.random() < self.stall_answers:
                return "stall"
            return None

    def _stall_for(self) -> float:
        with self._lock:
            if isinstance(self.stall_seconds, tuple):
                return self._rng.uniform(*self.stall_seconds)
            return self.stall_seconds

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.add(sock)

    def _drop(self, *socks: socket.socket | None) -> None:
        for sock in socks:
            if sock is None:
                continue
            with self._lock:
                self._open.discard(sock)
            with contextlib.suppress(OSError):
                sock.close()

    def _serve(self, client: socket.socket) -> None:
        self._track(client)
        reader = _reader(client)
        upstream: socket.socket | None = None
        up_reader: io.BufferedReader | None = None
        try:
            while not self._closed:
                head = _read_head(reader)
                if head is None:
                    return
                method = head[0].split(b" ", 1)[0].decode("latin-1")
                headers = _parse_headers(head)
                expect = headers.get("expect", "").lower() == "100-continue"
                fault = self._decide(method)
                if fault in ("slow_down", "fail_next"):
                    if expect:
                        client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                    _copy_body(reader, None, headers)  # read and dropped: the connection stays usable
                    client.sendall(self.reply if fault == "fail_next"
                                   else SLOW_DOWN % (len(SLOW_DOWN_BODY), SLOW_DOWN_BODY))
                    continue
                if upstream is None:
                    upstream = socket.create_connection(self.upstream, timeout=30)
                    self._track(upstream)
                    up_reader = _reader(upstream)
                assert up_reader is not None
                upstream.sendall(b"".join(line for line in head if not line.lower().startswith(b"expect:")))
                if expect:
                    client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                _copy_body(reader, upstream, headers)
                answer = _read_head(up_reader)
                while answer is not None and _status(answer) in range(100, 200):
                    answer = _read_head(up_reader)  # interim answers: the client got its own
                if answer is None:
                    return  # the server closed: so does the client's connection
                status, answer_headers = _status(answer), _parse_headers(answer)
                bodyless = method == "HEAD" or status in (204, 304)
                length = 0 if bodyless else _length(answer_headers)
                if fault == "stall":
                    with self._lock:
                        self.stalls_served += 1
                    if self._stop.wait(self._stall_for()):
                        return
                if fault == "endless_head":
                    whole = b"".join(answer)
                    client.sendall(whole[:len(whole) // 2])
                    with self._lock:
                        self.endless_served += 1
                    self._trickle(io.BufferedReader(io.BytesIO(whole[len(whole) // 2:])),  # type: ignore[arg-type]
                                  client, len(whole) - len(whole) // 2)
                    return
                if fault in ("truncate", "endless") and 200 <= status < 300 and length is not None \
                        and length > 1:
                    client.sendall(b"".join(answer))
                    _copy_exactly(up_reader, client, length // 2)
                    if fault == "truncate":
                        with self._lock:
                            self.truncations_served += 1
                        client.shutdown(socket.SHUT_WR)  # a clean FIN, the body short
                        return
                    with self._lock:
                        self.endless_served += 1
                    self._trickle(up_reader, client, length - length // 2)
                    return
                if fault == "reset" and 200 <= status < 300 and length is not None and length > 1:
                    client.sendall(b"".join(answer))
                    _copy_exactly(up_reader, client, length // 2)
                    with self._lock:
                        self.resets_served += 1
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return  # closed below: with SO_LINGER 0 that sends RST
                client.sendall(b"".join(answer))
                if fault == "corrupt" and 200 <= status < 300 and length:
                    _copy_exactly(up_reader, client, length // 2)
                    byte = up_reader.read(1)
                    if not byte:
                        raise _Closed()
                    client.sendall(bytes([byte[0] ^ 0xFF]))
                    _copy_exactly(up_reader, client, length - length // 2 - 1)
                    with self._lock:
                        self.corruptions_served += 1
                elif not bodyless:
                    _copy_body(up_reader, client, answer_headers, to_close=True)
                if answer_headers.get("connection", "").lower() == "close" or (
                        not bodyless and length is None and "chunked" not in
                        answer_headers.get("transfer-encoding", "").lower()):
                    return
        except (OSError, _Closed, ValueError):
            return
        finally:
            self._drop(client, upstream)


    def _trickle(self, source: io.BufferedReader, client: socket.socket, left: int) -> None:
        """One byte every `trickle_interval` (or nothing) until the proxy closes: never the end."""
        while not self._stop.wait(self.trickle_interval or 3600.0):
            if self.trickle_interval is None or left <= 1:
                continue  # the last byte is never sent
            client.sendall(source.read(1))
            left -= 1


def _reader(sock: socket.socket) -> io.BufferedReader:
    return cast(io.BufferedReader, sock.makefile("rb", buffering=CHUNK))


def _read_head(reader: io.BufferedReader) -> list[bytes] | None:
    """The request or status line and the header lines (CRLFs kept); None at a clean end."""
    lines: list[bytes] = []
    while True:
        line = reader.readline(65537)
        if not line:
            if lines:
                raise _Closed()
            return None
        lines.append(line)
        if line in (b"\r\n", b"\n"):
            return lines


def _parse_headers(head: list[bytes]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in head[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return headers


def _status(head: list[bytes]) -> int:
    return int(head[0].split()[1])


def _length(headers: dict[str, str]) -> int | None:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return None
    value = headers.get("content-length")
    return None if value is None else int(value)


def _copy_exactly(source: io.BufferedReader, target: socket.socket | None, length: int) -> None:
    while length > 0:
        data = source.read1(min(length, CHUNK))
        if not data:
            raise _Closed()
        if target is not None:
            target.sendall(data)
        length -= len(data)


def _copy_body(source: io.BufferedReader, target: socket.socket | None, headers: dict[str, str],
               to_close: bool = False) -> None:
    """One message body, as it came (chunked, sized, or, for answers, up to the end)."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            line = source.readline(65537)
            if not line:
                raise _Closed()
            if target is not None:
                target.sendall(line)
            size = int(line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                trailer = _read_head_lines(source)
                if target is not None:
                    target.sendall(trailer)
                return
            _copy_exactly(source, target, size + 2)  # the chunk and its CRLF
    length = _length(headers)
    if length is not None:
        _copy_exactly(source, target, length)
    elif to_close:
        while data := source.read1(CHUNK):
            if target is not None:
                target.sendall(data)


def _read_head_lines(source: io.BufferedReader) -> bytes:
    """Trailer lines after the last chunk, up to and including the blank line."""
    out = b""
    while True:
        line = source.readline(65537)
        if not line:
            raise _Closed()
        out += line
        if line in (b"\r\n", b"\n"):
            return out
