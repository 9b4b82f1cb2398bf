"""A TCP proxy in front of a real S3 server that can answer 503 Slow Down (or any other reply) on demand.

Real servers do not throttle when asked to, so tests put this between mountfs and the server to
produce real throttling responses and reset connections over the wire, with no SDK mocked.
"""

from __future__ import annotations

import contextlib
import socket
import threading

SLOW_DOWN = (b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nConnection: close\r\n"
             b"Content-Length: %d\r\n\r\n%s")
SLOW_DOWN_BODY = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
                  b"<Message>Please reduce your request rate.</Message></Error>")


def error_reply(status: str, code: str, message: str) -> bytes:
    """A whole S3 error answer, as a server sends it (e.g. SeaweedFS's 400 KeyTooLongError)."""
    body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
            f"<Message>{message}</Message></Error>").encode()
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nConnection: close\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


class FaultProxy:
    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.upstream = (host, upstream_port)
        self.listener = socket.create_server((host, 0))
        self.port = self.listener.getsockname()[1]
        self.host_port = f"{host}:{self.port}"
        self.failures_left = 0
        self.failures_served = 0
        self.reply = SLOW_DOWN % (len(SLOW_DOWN_BODY), SLOW_DOWN_BODY)
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def fail_next(self, count: int, reply: bytes | None = None) -> None:
        """Answer the next `count` requests with 503 (or `reply`); cut pooled connections so they
        reconnect."""
        with self._lock:
            self.failures_left = count
            if reply is not None:
                self.reply = reply
            pooled, self._open = self._open, set()
        for sock in pooled:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def close(self) -> None:
        self._closed = True
        self.fail_next(0)
        with contextlib.suppress(OSError):
            self.listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _take_failure(self) -> bool:
        with self._lock:
            if self.failures_left > 0:
                self.failures_left -= 1
                self.failures_served += 1
                return True
            return False

    def _serve(self, client: socket.socket) -> None:
        if self._take_failure():
            with contextlib.suppress(OSError), client:
                client.settimeout(5)
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = client.recv(65536)
                    if not chunk:
                        break
                    head += chunk
                client.sendall(self.reply)
            return
        try:
            upstream = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        with self._lock:
            self._open.update((client, upstream))
        threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()
        self._pipe(client, upstream)

    def _pipe(self, source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(262144):
                target.sendall(chunk)
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._open.discard(sock)
