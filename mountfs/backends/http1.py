"""A minimal HTTP/1.1 client for the read hot path: GETs over kept-alive connections.

urllib3 (with http.client and the email package parsing every header block) cost about 230 us of
CPU per 128 KiB GET here, this about 30 us: that is a sixth of what the daemon spends per small
file. It speaks only what a GET of an object needs: a status line, headers, a body sized by
Content-Length (chunked and read-to-close bodies are read too, just not as fast). Connection
failures are raised as ConnectionError or TimeoutError, which the retry policy treats as transient.
"""

from __future__ import annotations

import io
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import cast

from mountfs.backends.deadline import WATCHDOG as _WATCHDOG
from mountfs.buffers import DIRECT_MIN, Piece, aligned

MAX_LINE = 65536  # longest status or header line accepted
MAX_HEADERS = 200
IDLE_CONNECTIONS = 32  # kept per endpoint by default; more may be open at once, the rest close after use


class ProtocolError(ConnectionError):
    """The server's answer was not HTTP/1.x as expected, or ended early."""


class _ClosedIdle(ConnectionError):
    """A kept-alive connection the server had closed: the request is sent again on a new one."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # names in lower case
    pieces: list[Piece] = field(default_factory=list)  # the body, in pieces of the size asked for

    @property
    def body(self) -> bytes:
        return b"".join(self.pieces)


class _Connection:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = cast(io.BufferedReader, sock.makefile("rb", buffering=MAX_LINE))

    def close(self) -> None:
        try:
            self.reader.close()
        finally:
            self.sock.close()


class Endpoint:
    """One scheme://host:port and its idle connections, shared by any number of threads (a
    connection serves one request at a time)."""

    def __init__(self, scheme: str, host: str, port: int, *, timeout: float,
                 tls: ssl.SSLContext | None = None, max_idle: int = IDLE_CONNECTIONS) -> None:
        if scheme not in ("http", "https"):
            raise ValueError(f"not an http(s) endpoint: {scheme}://{host}:{port}")
        self.scheme, self.host, self.port = scheme, host, port
        self.timeout = timeout
        self.max_idle = max_idle
        self.tls = tls if scheme == "https" else None
        if scheme == "https" and self.tls is None:
            self.tls = ssl.create_default_context()
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()

    def get(self, target: str, headers: dict[str, str], piece: int) -> Response:
        """GET `target` (an encoded path) with `headers` (Host is added); a 2xx body comes in
        `piece`-sized pieces, any other in one."""
        lines = [f"GET {target} HTTP/1.1", f"Host: {headers.pop('host', self.host)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        deadline = time.monotonic() + self.timeout
        while True:
            connection, reused = self._take()
            token = _WATCHDOG.arm(connection.sock, deadline)
            try:
                response, keep = self._exchange(connection, request, piece, reused)
            except _ClosedIdle:
                connection.close()
                if _WATCHDOG.disarm(token):
                    raise TimeoutError(f"no answer within {self.timeout:g} s") from None
                continue  # nothing was answered: the same request on a fresh connection
            except BaseException as exc:
                connection.close()
                if _WATCHDOG.disarm(token):
                    raise TimeoutError(f"the answer was not whole within {self.timeout:g} s") from exc
                raise
            if _WATCHDOG.disarm(token):
                keep = False  # whole, but the watchdog shut the connection just as it ended
            if keep:
                self._give_back(connection)
            else:
                connection.close()
            return response

    # --- internals -----------------------------------------------------------------------

    def _take(self) -> tuple[_Connection, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return self._connect(), False

    def _give_back(self, connection: _Connection) -> None:
        with self._lock:
            if len(self._idle) < self.max_idle:
                self._idle.append(connection)
                return
        connection.close()

    def _connect(self) -> _Connection:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        return _Connection(sock)

    def _exchange(self, connection: _Connection, request: bytes, piece: int,
                  reused: bool) -> tuple[Response, bool]:
        reader = connection.reader
        try:
            connection.sock.sendall(request)
            line = reader.readline(MAX_LINE + 1)
        except (BrokenPipeError, ConnectionResetError) as exc:
            if reused:
                raise _ClosedIdle() from exc
            raise
        if not line and reused:
            raise _ClosedIdle()
        status, version = _status(line)
        headers = _headers(reader)
        while 100 <= status < 200:  # an interim answer: the real one follows
            status, version = _status(reader.readline(MAX_LINE + 1))
            headers = _headers(reader)
        keep = version != "HTTP/1.0" and headers.get("connection", "").lower() != "close"
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = _chunked(reader)
        elif "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                raise ProtocolError(f"bad Content-Length {headers['content-length']!r}") from None
            if 200 <= status < 300 and piece > 0:
                return Response(status, headers, _aligned_pieces(reader, length, piece)), keep
            body = _exactly(reader, length) if length else b""
        else:
            body, keep = reader.read(), False  # to the end of the connection
        return Response(status, headers, _split(body, piece) if 200 <= status < 300 else [body]), keep




def _status(line: bytes) -> tuple[int, str]:
    if not line:
        raise ProtocolError("the server closed the connection without answering")
    if len(line) > MAX_LINE:
        raise ProtocolError("status line too long")
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError(f"not an HTTP/1.x answer: {line[:80]!r}")
    return int(parts[1]), parts[0].decode("latin-1")


def _headers(reader: io.BufferedReader) -> dict[str, str]:
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS):
        line = reader.readline(MAX_LINE + 1)
        if line in (b"\r\n", b"\n"):
            return headers
        if not line or len(line) > MAX_LINE:
            raise ProtocolError("the answer's headers ended early or a line is too long")
        name, sep, value = line.partition(b":")
        if sep:
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    raise ProtocolError(f"more than {MAX_HEADERS} header lines")


def _exactly(reader: io.BufferedReader, length: int) -> bytes:
    data = reader.read(length)  # a buffered read: all of it, or the end
    if len(data) < length:
        raise ProtocolError(f"the connection closed after {len(data)} of {length} body bytes")
    return data


def _aligned_pieces(reader: io.BufferedReader, length: int, piece: int) -> list[Piece]:
    """`length` body bytes in pieces of `piece` (the last may be shorter), each page-aligned so
    the block cache can write it to disk with O_DIRECT as it is (pieces below DIRECT_MIN are
    plain bytes)."""
    pieces: list[Piece] = []
    done = 0
    while done < length:
        size = min(piece, length - done)
        view: Piece
        if size < DIRECT_MIN:
            view = reader.read(size)  # a buffered read: all of it, or the end
            filled = len(view)
        else:
            view = aligned(size)
            filled = 0
            while filled < size and (got := reader.readinto(view[filled:])):
                filled += got
        if filled < size:
            raise ProtocolError(f"the connection closed after {done + filled} of {length} body bytes")
        pieces.append(view)
        done += size
    return pieces


def _chunked(reader: io.BufferedReader) -> bytes:
    parts: list[bytes] = []
    while True:
        line = reader.readline(MAX_LINE + 1)
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise ProtocolError(f"bad chunk size line {line[:80]!r}") from None
        if size == 0:
            _headers(reader)  # trailers, then the blank line
            return b"".join(parts)
        parts.append(_exactly(reader, size))
        if reader.readline(MAX_LINE + 1) not in (b"\r\n", b"\n"):
            raise ProtocolError("a chunk did not end with CRLF")


def _split(body: bytes, piece: int) -> list[Piece]:
    if not body:
        return []
    if piece <= 0 or len(body) <= piece:
        return [body]
    return [body[i:i + piece] for i in range(0, len(body), piece)]
