"""The hot-path HTTP/1.1 client against a raw socket server that answers exactly as scripted."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mountfs.backends.http1 import Endpoint, ProtocolError

Answer = Callable[[socket.socket, bytes], bool]
"""answer(connection, request) -> keep the connection open for another request?"""


class RawServer:
    def __init__(self, answers: list[Answer]) -> None:
        self.answers = answers
        self.requests: list[bytes] = []
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.answers:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        with conn:
            reader = conn.makefile("rb")
            while self.answers:
                request = b""
                while not request.endswith(b"\r\n\r\n"):
                    line = reader.readline()
                    if not line:
                        return
                    request += line
                self.requests.append(request)
                if not self.answers.pop(0)(conn, request):
                    return

    def close(self) -> None:
        self.answers.clear()
        self.listener.close()


@pytest.fixture
def serve() -> Iterator[Callable[[list[Answer]], RawServer]]:
    servers: list[RawServer] = []

    def start(answers: list[Answer]) -> RawServer:
        servers.append(RawServer(answers))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def body_answer(body: bytes, status: str = "206 Partial Content", extra: str = "",
                keep: bool = True) -> Answer:
    def answer(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body)
        return keep
    return answer


def endpoint(server: RawServer, timeout: float = 5.0) -> Endpoint:
    return Endpoint("http", "127.0.0.1", server.port, timeout=timeout)


Serve = Callable[[list[Answer]], RawServer]


def test_bodies_come_in_pieces_over_one_kept_alive_connection(serve: Serve) -> None:
    server = serve([body_answer(b"abcdefghij"), body_answer(b"xyz")])
    client = endpoint(server)
    first = client.get("/b/k%20x", {"host": "h:1", "range": "bytes=0-9"}, 4)
    assert first.status == 206 and first.pieces == [b"abcd", b"efgh", b"ij"]
    assert client.get("/b/k", {}, 1 << 20).pieces == [b"xyz"]
    assert server.connections == 1
    assert server.requests[0].startswith(b"GET /b/k%20x HTTP/1.1\r\nHost: h:1\r\nrange: bytes=0-9\r\n")
    assert b"Host: 127.0.0.1\r\n" in server.requests[1]


def test_large_body_pieces_are_page_aligned_for_direct_writes(serve: Serve) -> None:
    from mountfs.buffers import DIRECT_MIN, is_aligned

    body = os.urandom(3 * DIRECT_MIN + 5)
    server = serve([body_answer(body)])
    pieces = endpoint(server).get("/b/k", {}, DIRECT_MIN).pieces
    assert [bytes(p) for p in pieces] == [body[i:i + DIRECT_MIN] for i in range(0, len(body), DIRECT_MIN)]
    assert [is_aligned(p) for p in pieces] == [True, True, True, False], "a 5-byte tail is plain bytes"


def test_an_idle_connection_the_server_closed_is_replaced_silently(
        serve: Serve) -> None:
    server = serve([body_answer(b"one", keep=False), body_answer(b"two")])
    client = endpoint(server)
    assert client.get("/k", {}, 1024).body == b"one"  # kept: the server said nothing of closing
    assert client.get("/k", {}, 1024).body == b"two"
    assert server.connections == 2 and len(server.requests) == 2


def test_error_answers_chunked_and_read_to_close_bodies(serve: Serve) -> None:
    def chunked(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\nTrailer: x\r\n\r\n")
        return True

    def to_close(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nuntil the end")
        return False

    error = body_answer(b"<Error/>", "404 Not Found", "x-amz-bucket-region: eu\r\n")
    server = serve([error, chunked, to_close])
    client = endpoint(server)
    missing = client.get("/k", {}, 2)
    assert missing.status == 404 and missing.pieces == [b"<Error/>"]
    assert missing.headers["x-amz-bucket-region"] == "eu"
    assert client.get("/k", {}, 2).pieces == [b"ab", b"cd", b"ef", b"g"]
    assert client.get("/k", {}, 100).body == b"until the end"


def test_a_body_cut_short_is_a_connection_error(serve: Serve) -> None:
    def short(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(b"HTTP/1.1 206 Partial Content\r\nContent-Length: 100\r\n\r\nonly this")
        return False

    client = endpoint(serve([short]))
    with pytest.raises(ProtocolError, match="closed after 9 of 100 body bytes"):
        client.get("/k", {}, 64)


def test_garbage_and_silence_are_errors_not_hangs(serve: Serve) -> None:
    def garbage(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(b"SSH-2.0-OpenSSH\r\n\r\n")
        return False

    def silent(conn: socket.socket, request: bytes) -> bool:
        threading.Event().wait(2)
        return False

    with pytest.raises(ProtocolError, match=r"not an HTTP/1\.x answer"):
        endpoint(serve([garbage])).get("/k", {}, 64)
    with pytest.raises(TimeoutError):
        endpoint(serve([silent]), timeout=0.2).get("/k", {}, 64)


def test_nobody_listening_is_a_connection_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ConnectionError):
        Endpoint("http", "127.0.0.1", port, timeout=1).get("/k", {}, 64)


def self_signed(tmp_path: Path) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key, made with openssl."""
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    return cert, key


def test_https_verifies_the_server_against_the_bundle(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        for _ in range(2):
            try:
                conn, _ = listener.accept()
                with server_tls.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(65536)
                    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret")
            except (OSError, ssl.SSLError):
                continue  # the client refused our certificate

    threading.Thread(target=serve, daemon=True).start()
    try:
        with pytest.raises(ssl.SSLCertVerificationError):  # the default bundle does not know it
            Endpoint("https", "127.0.0.1", port, timeout=5).get("/k", {}, 64)
        trusting = Endpoint("https", "127.0.0.1", port, timeout=5,
                            tls=ssl.create_default_context(cafile=cert))
        assert trusting.get("/k", {}, 64).body == b"secret"
    finally:
        listener.close()


def test_a_body_that_trickles_for_ever_times_out_as_a_whole(serve: Serve) -> None:
    """A byte every 0.1 s never trips the socket's per-recv timeout: the request as a whole must
    still give up after `timeout`, as a TimeoutError (transient: retried on a new connection)."""
    stop = threading.Event()

    def trickle(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(b"HTTP/1.1 206 Partial Content\r\nContent-Length: 1000\r\n\r\nfirst")
        while not stop.wait(0.1):
            with contextlib.suppress(OSError):
                conn.sendall(b"x")
        return False

    client = endpoint(serve([trickle, body_answer(b"whole")]), timeout=0.5)
    outcome: list[BaseException | bytes] = []

    def fetch() -> None:
        try:
            outcome.append(client.get("/k", {}, 64).body)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=fetch, daemon=True)
    thread.start()
    thread.join(5)
    stop.set()
    assert not thread.is_alive(), "the request was still reading its body after 5 s (timeout 0.5 s)"
    assert isinstance(outcome[0], TimeoutError), outcome
    assert client.get("/k", {}, 64).body == b"whole", "the endpoint serves the next request"
