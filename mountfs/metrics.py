"""Prometheus text at /metrics: the figures `mountfs status` shows, plus latency histograms.

Nothing is counted twice: a custom collector reads the counters the layers already keep (cache,
stores, uploads, FUSE handlers). The HTTP server runs in its own threads; each scrape asks the
event loop for one copy of the figures (`trio.from_thread.run`), so no counter is read while the
loop changes it, and the loop never waits on a scrape. Labels are bounded: a mount's path (from
the config), a store kind, an operation, an errno; never a file path or a key.

The address is bound before the daemon forks, so a bad or busy one fails the mount with a clear
message; the threads serving it start in the daemon.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import socketserver
import stat
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import trio
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from mountfs.backends.retry import RETRIES
from mountfs.config.metrics import split_listen
from mountfs.latency import Histogram

if TYPE_CHECKING:
    from mountfs.mount import Daemon

# Store operations by the names operators know from the stores' own metrics.
_KINDS = {"get": "GET", "list": "LIST", "head": "HEAD", "put": "PUT", "upload_part": "PART",
          "copy": "COPY", "delete": "DELETE"}


def kind_of(op: str) -> str:
    return _KINDS.get(op, op.upper())


def store_kind(store_id: str) -> str:
    """"s3", "gs", "az", "file", "memory": the kind of store, not its address (bounded labels)."""
    return store_id.split(":", 1)[0]


async def figures(daemon: Daemon) -> dict[str, Any]:
    """One consistent copy of every figure, taken on the event loop's thread."""
    status = await daemon.status()
    requests = daemon.operations.requests
    status["fuse"] = {"latency": requests.latency.snapshot(), "errors": dict(requests.errors)}
    for root, store in zip(daemon.operations.namespace.mounts, status["stores"], strict=True):
        store["kind"] = store_kind(root.store.store_id)
        store["latency"] = root.store.stats.latency.snapshot()
        store["bytes_uploaded"] = root.store.stats.bytes_uploaded
        store["retries"] = root.store.stats.retries.value
    status["retries"] = RETRIES.value
    prefetch = daemon.operations.prefetch
    status["prefetch_in_flight"] = prefetch.bytes_in_flight if prefetch is not None else 0
    status["prefetch_windows"] = daemon.operations.readahead_windows()
    return status


class MountfsCollector(Collector):
    """Turns the figures of one daemon into metric families at each scrape."""

    def __init__(self, fetch: Callable[[], dict[str, Any] | None]) -> None:
        self.fetch = fetch

    def collect(self) -> Iterator[Metric]:
        data = self.fetch()
        if data is None:  # not serving yet, or unmounting
            return
        yield from _fuse(data)
        yield from _stores(data)
        yield from _cache(data)
        yield from _uploads(data)
        threads = GaugeMetricFamily("mountfs_threads", "Threads of the daemon (worker threads included)")
        threads.add_metric([], _os_threads())
        yield threads


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _histogram(family: HistogramMetricFamily, labels: list[str], h: Histogram) -> None:
    family.add_metric(labels, [(bound, float(count)) for bound, count in h.cumulative()], h.total)


def _fuse(data: dict[str, Any]) -> Iterable[Metric]:
    latency = HistogramMetricFamily("mountfs_fuse_request_duration_seconds",
                                    "FUSE requests by operation: how long each took to answer",
                                    labels=["operation"])
    for op, h in sorted(data["fuse"]["latency"].items()):
        _histogram(latency, [op], h)
    yield latency
    errors = CounterMetricFamily("mountfs_fuse_errors", "FUSE requests answered with an error, by errno",
                                 labels=["operation", "errno"])
    for (op, code), count in sorted(data["fuse"]["errors"].items()):
        errors.add_metric([op, errno.errorcode.get(code, str(code))], count)
    yield errors
    reads, writes = data["reads"], data["writes"]
    yield _counter("mountfs_opens", "Files opened", reads["opens"])
    yield _counter("mountfs_read_bytes", "Bytes served to readers", reads["bytes_served"])
    yield _counter("mountfs_written_bytes", "Bytes written by applications", writes["bytes_written"])
    yield _gauge("mountfs_inodes", "Inodes the kernel may ask about", data["inodes"])
    yield _counter("mountfs_stale_metadata_served",
                   "Lookups answered from expired metadata while a store was offline",
                   data["stale_metadata_served"])


def _stores(data: dict[str, Any]) -> Iterable[Metric]:
    labels = ["mount", "store"]
    requests = CounterMetricFamily("mountfs_store_requests", "Requests sent to the stores, by kind",
                                   labels=[*labels, "kind"])
    errors = CounterMetricFamily("mountfs_store_errors", "Store requests that failed (retries used up, "
                                 "or an answer such as not found), by kind", labels=[*labels, "kind"])
    latency = HistogramMetricFamily("mountfs_store_request_duration_seconds",
                                    "Store requests by kind: how long each took, its retries included",
                                    labels=[*labels, "kind"])
    fetched = CounterMetricFamily("mountfs_store_fetched_bytes", "Bytes read from the stores", labels=labels)
    uploaded = CounterMetricFamily("mountfs_store_uploaded_bytes", "Bytes sent to the stores", labels=labels)
    retries = CounterMetricFamily("mountfs_store_retries", "Store requests sent again after a transient "
                                  "failure", labels=labels)
    failed_fast = CounterMetricFamily("mountfs_store_failed_fast",
                                      "Calls refused at once because the store was offline", labels=labels)
    offline = GaugeMetricFamily("mountfs_store_offline", "1 while the store is offline", labels=labels)
    lifetime_fetched = CounterMetricFamily(
        "mountfs_cache_lifetime_fetched_bytes", "Bytes the cache fetched from the store, for the cache "
        "dir's whole life", labels=labels)
    lifetime_served = CounterMetricFamily(
        "mountfs_cache_lifetime_served_bytes", "Bytes served from the store's objects, for the cache "
        "dir's whole life", labels=labels)
    for store in data["stores"]:
        key = [store["path"], store["kind"]]
        for op, count in sorted(store["requests"].items()):
            requests.add_metric([*key, kind_of(op)], count)
        for op, count in sorted(store["errors"].items()):
            errors.add_metric([*key, kind_of(op)], count)
        for op, h in sorted(store["latency"].items()):
            _histogram(latency, [*key, kind_of(op)], h)
        fetched.add_metric(key, store["bytes_fetched"])
        uploaded.add_metric(key, store["bytes_uploaded"])
        failed_fast.add_metric(key, store["failed_fast"])
        retries.add_metric(key, store["retries"])
        offline.add_metric(key, 1.0 if store["offline"] else 0.0)
        traffic = store.get("traffic", {})
        lifetime_fetched.add_metric(key, traffic.get("fetched", 0))
        lifetime_served.add_metric(key, traffic.get("served", 0))
    yield from (requests, errors, latency, fetched, uploaded, retries, failed_fast, offline,
                lifetime_fetched, lifetime_served)
    yield _counter("mountfs_retries", "Store requests sent again after a transient failure, all stores "
                   "of this daemon (the shared cache's too)", data["retries"])


def _cache(data: dict[str, Any]) -> Iterable[Metric]:
    cache, reads = data["cache"], data["reads"]
    yield _counter("mountfs_cache_hits", "Block requests answered from memory or the cache disk",
                   cache["hits"])
    yield _counter("mountfs_cache_misses", "Block requests that went to the store", cache["misses"])
    yield _counter("mountfs_cache_shared", "Block requests that joined a fetch already in flight",
                   cache["shared"])
    yield _counter("mountfs_cache_evictions", "Blocks this daemon evicted", cache["evicted"])
    yield _counter("mountfs_cache_room_made", "Blocks evicted at once for a write that found the disk full",
                   cache["room_made"])
    yield _counter("mountfs_cache_checksum_failures", "Block files dropped for failing their checksum",
                   cache["corrupt"])
    yield _gauge("mountfs_cache_resident_bytes", "Bytes of block files in the cache dir", cache["bytes"])
    yield _gauge("mountfs_cache_resident_blocks", "Block files in the cache dir", cache["blocks"])
    yield _gauge("mountfs_cache_block_size_bytes", "Block size of this mount", cache["block_size"])
    yield _counter("mountfs_prefetch_blocks", "Blocks fetched ahead of readers", reads["prefetched_blocks"])
    yield _gauge("mountfs_prefetch_in_flight_bytes", "Bytes being fetched ahead of readers right now",
                 data["prefetch_in_flight"])
    windows = data["prefetch_windows"]
    yield _gauge("mountfs_prefetch_windows", "Open files read as a stream, with a window fetched ahead",
                 len(windows))
    yield _gauge("mountfs_prefetch_window_bytes", "Bytes ahead of their readers that those windows span, "
                 "all together", sum(windows))
    yield _counter("mountfs_prefetch_unread_blocks", "Blocks fetched ahead that left the cache unread",
                   reads["prefetched_unread"])
    yield _counter("mountfs_prefetch_unread_bytes", "Bytes fetched ahead that left the cache unread "
                   "(whole blocks)", reads["prefetched_unread"] * cache["block_size"])


def _uploads(data: dict[str, Any]) -> Iterable[Metric]:
    uploads = data["uploads"]
    pending = uploads["pending"]
    yield _gauge("mountfs_uploads_pending", "Files whose staged data is not in the store yet", len(pending))
    yield _gauge("mountfs_uploads_pending_bytes", "Bytes staged and not in the store yet",
                 uploads["pending_bytes"])
    yield _gauge("mountfs_uploads_in_flight", "Uploads under way",
                 sum(1 for item in pending if item["state"] == "uploading"))
    yield _gauge("mountfs_uploads_failing", "Pending uploads whose last attempt failed",
                 sum(1 for item in pending if item["state"] in ("failed", "rejected")))
    yield _counter("mountfs_uploads_completed", "Uploads that reached the store", uploads["completed"])
    yield _counter("mountfs_uploads_failed", "Upload attempts that failed after the store's retries",
                   uploads["failed_attempts"])
    yield _counter("mountfs_uploaded_bytes", "Bytes uploaded", uploads["bytes_uploaded"])


def _os_threads() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return threading.active_count()


# --- serving ---------------------------------------------------------------------------------------

# A connection may take this long to send each part of its request before it is closed, and this
# many are served at once; beyond it a connection is answered 503 and closed, so no client, idle or
# slow, can hold more of the daemon's threads and file descriptors than these.
READ_TIMEOUT = 5.0
MAX_CONNECTIONS = 16

_BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
         b"Connection: close\r\n\r\nbusy\n")
_INDEX = (b'<html><head><title>mountfs</title></head><body><h1>mountfs</h1>'
          b'<p><a href="/metrics">Metrics</a></p></body></html>\n')


class _Handler(WSGIRequestHandler):
    def setup(self) -> None:
        self.timeout = self.server.read_timeout  # type: ignore[attr-defined,misc]
        super().setup()
        if not isinstance(self.client_address, tuple) or not self.client_address:
            self.client_address = ("unix", 0)  # a unix socket's peer has no address

    def log_message(self, format: str, *args: Any) -> None:
        """A scrape every few seconds is not news."""


class _TcpServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    request_queue_size = 64  # a burst of connections is accepted (and answered 503) rather than stalled
    read_timeout = READ_TIMEOUT

    def limit(self, read_timeout: float, max_connections: int) -> None:
        self.read_timeout = read_timeout
        self._slots = threading.BoundedSemaphore(max_connections)

    def process_request(self, request: Any, client_address: Any) -> None:
        """A thread for the connection if a slot is free; else a 503 sent without waiting, and close."""
        if not self._slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.setblocking(False)
                request.send(_BUSY)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client too slow or gone is its own business, not a traceback in the daemon's log."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _TcpServer6(_TcpServer):
    address_family = socket.AF_INET6


class _UnixServer(_TcpServer):
    address_family = socket.AF_UNIX

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "localhost", 0
        self.setup_environ()


def _only_metrics(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """/metrics by GET or HEAD, a link to it at /, 404 elsewhere: no other path answers the figures."""
    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        if method not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD"), ("Content-Length", "0")])
            return []
        if path == "/metrics":
            if method == "GET":
                return app(environ, start_response)
            body = app({**environ, "REQUEST_METHOD": "GET"}, start_response)
            close = getattr(body, "close", None)
            if close is not None:
                close()
            return []
        if path == "/":
            status, ctype, text = "200 OK", "text/html; charset=utf-8", _INDEX
        else:
            status, ctype, text = "404 Not Found", "text/plain; charset=utf-8", b"not found: try /metrics\n"
        start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(text)))])
        return [] if method == "HEAD" else [text]
    return serve


class MetricsServer:
    """The /metrics endpoint of one daemon. Binding (in __init__) raises OSError or ValueError with
    the reason; `start` serves from threads of its own, at most `max_connections` at once, each
    closing a connection that sends nothing for `read_timeout` seconds."""

    def __init__(self, address: str, read_timeout: float = READ_TIMEOUT,
                 max_connections: int = MAX_CONNECTIONS) -> None:
        self.address = address
        self.unix_path: str | None = None
        self._thread: threading.Thread | None = None
        server: _TcpServer
        if address.startswith("unix:"):
            self.unix_path = address[len("unix:"):]
            _clear_stale_socket(self.unix_path)
            server = _UnixServer(self.unix_path, _Handler)  # type: ignore[arg-type]
        else:
            host, port = split_listen(address)
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            family, _, _, _, sockaddr = infos[0]
            cls = _TcpServer6 if family == socket.AF_INET6 else _TcpServer
            server = cls((str(sockaddr[0]), int(sockaddr[1])), _Handler)
        server.limit(read_timeout, max_connections)
        self.server = server
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)  # RSS, open files, CPU of this process

    @property
    def bound(self) -> str:
        """The address really listened on (a port 0 becomes the one the kernel picked)."""
        if self.unix_path is not None:
            return "unix:" + self.unix_path
        host, port = str(self.server.server_address[0]), self.server.server_address[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def start(self, fetch: Callable[[], dict[str, Any] | None]) -> None:
        self.registry.register(MountfsCollector(fetch))
        self.server.set_app(_only_metrics(make_wsgi_app(self.registry)))
        self._thread = threading.Thread(target=self.server.serve_forever, name="metrics", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
            self._thread = None
        self.server.server_close()
        if self.unix_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.unix_path)


def _clear_stale_socket(path: str) -> None:
    """A socket left by a killed daemon is removed; one still answered, or any other file, is not."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)
            return
        except OSError:
            return  # let bind say what is wrong
    raise OSError(errno.EADDRINUSE, f"another process serves {path}")


def fetcher(daemon: Daemon, token: trio.lowlevel.TrioToken) -> Callable[[], dict[str, Any] | None]:
    """What a scrape thread calls: the figures, copied on the event loop; None once it has stopped."""
    def fetch() -> dict[str, Any] | None:
        try:
            return trio.from_thread.run(figures, daemon, trio_token=token)
        except trio.RunFinishedError:
            return None
    return fetch
