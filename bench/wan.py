"""A TCP proxy that makes loopback look like a WAN link, and counts the bytes that cross it.

Why: on loopback a tool that fetches 100x what it reads costs nothing and even looks fast; over a
real link every request pays a round trip and every byte pays bandwidth. `python -m bench --wan`
(or `--link 20ms,1Gbit`) puts this proxy between every tool and SeaweedFS: the latency is a ROUND
TRIP (half of it delays each direction, and a new connection waits one round trip before its first
byte, as a TCP handshake does), the rate caps each direction of the link as a whole (all
connections share it, as they share one uplink). It runs in its own process (`python -m bench.wan`),
so the bench's own Python threads never slow it down, and serves its byte counters as JSON on a
control port, so every tool's bytes are counted in the same place. Without a shaping spec it only
counts (the random-access workloads always run behind it for that).

Why not `tc qdisc netem` on lo: it needs root and would shape SeaweedFS's own internal traffic
(filer <-> volume server on loopback) too; a veth pair needs a network namespace per tool.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WAN = "20ms,1Gbit"
CHUNK = 1024 * 1024  # bigger reads, fewer Python steps per byte: the proxy must not be the bottleneck
QUEUE_CHUNKS = 8  # per connection and direction: up to 8 MiB in flight, above 1 Gbit/s x 20 ms
STREAM_LIMIT = 4 * CHUNK  # asyncio's stream buffer (default 64 KiB) so reads return whole chunks
LINK_KEY = "link"  # in a measurement's details: the bytes that crossed the proxy meanwhile

_TIME_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
_RATE_UNITS = {"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9}


@dataclass(frozen=True)
class LinkSpec:
    """rtt: round-trip seconds; rate: bytes per second each way (None: not capped)."""

    rtt: float = 0.0
    rate: float | None = None

    @property
    def shaped(self) -> bool:
        return self.rtt > 0 or self.rate is not None

    def describe(self) -> str:
        if not self.shaped:
            return "loopback (counting only)"
        parts = [f"{self.rtt * 1000:g} ms round trip"] if self.rtt else []
        if self.rate is not None:
            parts.append(f"{self.rate * 8 / 1e9:g} Gbit/s each way")
        return ", ".join(parts)

    def arg(self) -> str:
        parts = [f"{self.rtt * 1000:g}ms"]
        if self.rate is not None:
            parts.append(f"{round(self.rate * 8)}bit")
        return ",".join(parts)


def parse_link(text: str) -> LinkSpec:
    """"20ms,1Gbit" -> LinkSpec(0.02, 125e6); either part alone; "0" or "" for no shaping.
    ValueError with the reason on anything else."""
    rtt, rate = 0.0, None
    for part in (p.strip().lower() for p in text.split(",")):
        if part in ("", "0"):
            continue
        m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([a-z]+)", part)
        if m and m.group(2) in _TIME_UNITS:
            rtt = float(m.group(1)) * _TIME_UNITS[m.group(2)]
        elif m and m.group(2) in _RATE_UNITS:
            bits = float(m.group(1)) * _RATE_UNITS[m.group(2)]
            if bits <= 0:
                raise ValueError(f"link rate must be above 0: {part!r}")
            rate = bits / 8
        else:
            raise ValueError(f"link part {part!r}: want a round-trip time (20ms, 0.1s, 500us) "
                             "or a rate (1Gbit, 100Mbit, 500kbit)")
    if rtt > 10:
        raise ValueError(f"link round trip {rtt:g} s: at most 10 s")
    return LinkSpec(rtt, rate)


class _Direction:
    """One direction of the link: when it is free again, and the bytes it delivered."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.free_at = 0.0
        self.bytes = 0

    def reserve(self, now: float, n: int) -> float:
        """When `n` bytes handed over at `now` have left the sender (serialised behind the others)."""
        if self.rate is None:
            return now
        self.free_at = max(now, self.free_at) + n / self.rate
        return self.free_at


class LinkProxy:
    """Forward every connection to `upstream`, delayed and rate-capped per `spec`."""

    def __init__(self, upstream: tuple[str, int], spec: LinkSpec) -> None:
        self.upstream = upstream
        self.spec = spec
        self.up = _Direction(spec.rate)  # client -> server
        self.down = _Direction(spec.rate)  # server -> client
        self.connections = 0
        self.started = time.monotonic()

    def counters(self) -> dict[str, Any]:
        return {"bytes_up": self.up.bytes, "bytes_down": self.down.bytes, "connections": self.connections,
                "cpu_ms": round(sum(os.times()[:2]) * 1000), "spec": self.spec.describe()}

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            server_r, server_w = await asyncio.open_connection(*self.upstream, limit=STREAM_LIMIT)
        except OSError:
            client_w.close()
            return
        if self.spec.rtt:
            await asyncio.sleep(self.spec.rtt)  # the handshake's round trip
        def close_both() -> None:
            for w in (client_w, server_w):
                with contextlib.suppress(Exception):
                    w.close()

        pumps = [asyncio.create_task(self._pump(client_r, server_w, self.up, close_both)),
                 asyncio.create_task(self._pump(server_r, client_w, self.down, close_both))]
        try:
            await asyncio.gather(*pumps)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for task in pumps:
                task.cancel()
            close_both()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    direction: _Direction, close_both: Callable[[], None]) -> None:
        """Read as it comes, deliver each chunk at its due time (departure + one-way delay), in order;
        the bounded queue is the link's window, so a slow receiver slows the sender. A receiver that
        went away closes both sides (the reader then sees its end), never leaves the reader waiting
        on a full queue."""
        loop = asyncio.get_running_loop()
        delay = self.spec.rtt / 2
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUE_CHUNKS)

        async def deliver() -> None:
            broken = False
            while True:
                due, data = await queue.get()
                if broken:
                    if not data:
                        return
                    continue
                try:
                    if not data:
                        if writer.can_write_eof():
                            writer.write_eof()
                        return
                    wait = due - loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    writer.write(data)
                    direction.bytes += len(data)  # counted when passed on: what a client abandons is not
                    await writer.drain()
                except (OSError, RuntimeError):  # reset, broken pipe, a transport already closed
                    broken = True
                    close_both()

        sender = asyncio.create_task(deliver())
        try:
            while True:
                data = await reader.read(CHUNK)
                now = loop.time()
                due = direction.reserve(now, len(data)) + delay if data else now
                await queue.put((due, data))
                if not data:
                    break
            await sender
        finally:
            sender.cancel()


async def serve(upstream: tuple[str, int], spec: LinkSpec, host: str = "127.0.0.1", port: int = 0,
                control_port: int = 0, ready: Any = None) -> None:
    """Serve until cancelled; `ready(port, control_port)` once both listen."""
    proxy = LinkProxy(upstream, spec)

    async def control(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(json.dumps(proxy.counters()).encode() + b"\n")
        with contextlib.suppress(OSError):
            await w.drain()
        w.close()

    main = await asyncio.start_server(proxy.handle, host, port, backlog=512, limit=STREAM_LIMIT)
    ctl = await asyncio.start_server(control, host, control_port)
    ports = (main.sockets[0].getsockname()[1], ctl.sockets[0].getsockname()[1])
    if ready is not None:
        ready(*ports)
    async with main, ctl:
        await asyncio.gather(main.serve_forever(), ctl.serve_forever())


# --- the proxy as a child process of the bench ----------------------------------------------------

class ProxyProcess:
    """`python -m bench.wan` in front of `upstream`; counters() asks its control port."""

    def __init__(self, upstream: str, spec: LinkSpec, log_path: Path | None = None) -> None:
        self.spec = spec
        host, _, port = upstream.rpartition(":")
        argv = [sys.executable, "-m", "bench.wan", "--upstream", f"{host}:{port}", "--link", spec.arg()]
        paths = [str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths))}
        self.log = open(log_path or os.devnull, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.log, env=env,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode().split()
        if len(line) != 3 or line[0] != "listening":
            self.stop()
            raise RuntimeError(f"the link proxy did not start (said {line!r})")
        self.port, self.control_port = int(line[1]), int(line[2])
        self.host_port = f"127.0.0.1:{self.port}"
        self.endpoint = f"http://{self.host_port}"

    def counters(self) -> dict[str, Any]:
        with socket.create_connection(("127.0.0.1", self.control_port), timeout=10) as s:
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        reply: dict[str, Any] = json.loads(data)
        return reply

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.log.close()


@contextlib.contextmanager
def running(upstream: str, spec: LinkSpec, log_path: Path | None = None) -> Iterator[ProxyProcess]:
    proxy = ProxyProcess(upstream, spec, log_path)
    try:
        yield proxy
    finally:
        proxy.stop()


def delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, int]:
    """The counters' growth between two samples (the numeric ones)."""
    return {k: int(v) - int(before.get(k, 0)) for k, v in after.items() if isinstance(v, int)}


# --- its report table -----------------------------------------------------------------------------

def bytes_read(metric: str, unit: str, detail: dict[str, Any], small_bytes: int) -> int | None:
    """What the application read in one measurement: given (app_bytes), else from its figure:
    MB/s x seconds, ops/s x seconds x the read size of a random-* metric, files x small_bytes."""
    if isinstance(detail.get("app_bytes"), int):
        return int(detail["app_bytes"])
    value, seconds = float(detail.get("value") or 0), float(detail.get("seconds") or 0)
    if not value or not seconds:
        return None
    if unit == "MB/s":
        return round(value * seconds * 1_000_000)
    if unit == "ops/s" and metric.startswith(("random-4k", "random-1m")):
        return round(value * seconds) * (4096 if metric.startswith("random-4k") else 1 << 20)
    if unit == "files/s" and metric.startswith("small-files"):
        return round(value * seconds) * small_bytes
    return None


def link_table(run: Any) -> str:
    """Per measurement and tool (medians over the repeats): MiB that crossed the link towards the
    tool, MiB the application read, their ratio, and the CPU of the daemon (mounts) or of the
    client process (direct clients)."""
    small = int(run.settings.get("dataset", {}).get("small_bytes") or 0)
    link = run.settings.get("link") or "no shaping"
    lines = [f"### bytes fetched through the proxy ({link}) per measurement (median over repeats)", "",
             "Fetched: bytes the proxy in front of SeaweedFS passed to the tool (HTTP heads included), "
             "from its start of a measurement (mount included) to its figure. Read: bytes the "
             "application read (parquet: the chosen column chunks and the footer). CPU: the daemon's "
             "(mounts) or the client process's (direct clients); the proxy's own CPU beside it.", "",
             "| measurement | tool | MiB fetched | MiB read | fetched / read | CPU s | proxy CPU s |",
             "|---|---|---:|---:|---:|---:|---:|"]
    any_row = False
    for metric in run.metrics.values():
        for row in metric.rows.values():
            samples = [d for d in row.details if isinstance(d.get(LINK_KEY), dict)]
            if not samples:
                continue
            any_row = True
            fetched = _median([d[LINK_KEY].get("bytes_down", 0) for d in samples])
            reads = [b for d in samples if (b := bytes_read(metric.name, metric.unit, d, small)) is not None]
            read = _median(reads) if reads else None
            cpus = [c for d in samples if (c := (d.get("counters") or {}).get("daemon.cpu_ms")) is not None]
            cpu = f"{_median(cpus) / 1000:.2f}" if cpus else "-"
            proxy_cpu = _median([d[LINK_KEY].get("cpu_ms", 0) for d in samples]) / 1000
            ratio = f"{fetched / read:.2f}" if read and fetched else "-"
            read_text = f"{read / 2**20:,.1f}" if read is not None else "-"
            lines.append(f"| {metric.name} | {row.label} | {fetched / 2**20:,.1f} | {read_text} | "
                         f"{ratio} | {cpu} | {proxy_cpu:.2f} |")
    return "\n".join(lines) if any_row else ""


def link_note(run: Any) -> str:
    """A line above the tables when every figure was taken over a shaped link."""
    link = run.settings.get("link")
    if not link:
        return ""
    return f"**Every tool reached SeaweedFS through a shaped link: {link} (bench/wan.py).**"


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.wan",
                                     description="A latency/bandwidth-shaping, byte-counting TCP proxy.")
    parser.add_argument("--upstream", required=True, help="HOST:PORT to forward to")
    parser.add_argument("--link", default=WAN, help=f"round trip and rate, e.g. {WAN} (\"0\": counting only)")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        spec = parse_link(args.link)
    except ValueError as exc:
        parser.error(str(exc))
    host, _, port = args.upstream.rpartition(":")

    def ready(port: int, control: int) -> None:
        print(f"listening {port} {control}", flush=True)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve((host, int(port)), spec, port=args.port, ready=ready))
    return 0


if __name__ == "__main__":
    sys.exit(main())
