"""`make chaos`: network faults between mountfs and its store while readers and writers run.

A SeaweedFS sits behind the fault proxy (tests/faultproxy.py) and a bucket is mounted through it.
Each phase has a fresh mount; a feeder puts new objects straight into the server, readers read them
through the mount (every read is a store GET), and writers write new files (small ones and ones in
several parts) and close or fsync them. After a quiet start the proxy's fault of the phase is on for
a while, then off. For each phase:

- wrong bytes: every byte read is compared with what the object holds (a short read counts);
- every call that failed (open, read, write, fsync, close) returned within the configured timeouts;
- recovery: from the end of the fault, how long until a new read and a new write both succeed;
- every write whose close or fsync succeeded is in the store, whole (checked straight on the server
  after the mount drained and unmounted); a write that failed may arrive later, but whole or not at all;
- throughput before and during the fault: MB/s read through the mount plus MB/s of acknowledged
  writes (counted when their close or fsync succeeds).

`--full` is the issue's run (longer phases, 20-40 s stalls); the defaults are short, for development.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import os
import random
import shlex
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tests.faultproxy import FaultProxy
from tests.reliability import report
from tests.reliability.s3mount import MiB, create_bucket, mount, seaweedfs, session, write_config
from tests.servers import S3Server

T = TypeVar("T")
PART_SIZE = 5 * MiB


def content(name: str, size: int) -> bytes:
    return random.Random(name).randbytes(size)


@dataclass(frozen=True)
class Settings:
    """How long each part of a phase lasts and how patient mountfs is told to be."""

    before: float = 3.0  # quiet seconds before the fault
    during: float = 8.0  # seconds of fault
    after: float = 3.0  # workload seconds after recovery
    stall: tuple[float, float] = (3.0, 5.0)
    request_timeout: float = 2.0
    budget: float = 6.0
    attempts: int = 5
    recover_limit: float = 120.0

    @property
    def call_limit(self) -> float:
        """The longest a failing call may take: a close may wait on three store calls in a row
        (create, parts, complete), each with the whole retry budget and one more request."""
        return 3 * (self.budget + self.request_timeout) + 5.0

    def config(self) -> str:
        return (f'[retry]\nattempts = {self.attempts}\nbase_delay = "50ms"\nmax_delay = "1s"\n'
                f'budget = "{self.budget}s"\nrequest_timeout = "{self.request_timeout}s"\n'
                f'[write]\npart_size = "{PART_SIZE}"\ndrain_timeout = "120s"\n'
                f'[read]\nmetadata_ttl = "1s"\nnegative_ttl = "0s"\n')


FULL = Settings(before=5.0, during=45.0, after=5.0, stall=(20.0, 40.0), request_timeout=10.0,
                budget=30.0, attempts=6, recover_limit=180.0)


def _faults(settings: Settings) -> dict[str, Callable[[FaultProxy, bool], None]]:
    """Each phase's fault, switched on (True) or off (False) on the proxy."""
    def fraction(attribute: str, value: float) -> Callable[[FaultProxy, bool], None]:
        def switch(proxy: FaultProxy, on: bool) -> None:
            setattr(proxy, attribute, value if on else 0.0)
        return switch

    def endless(proxy: FaultProxy, on: bool) -> None:
        proxy.endless_bodies = 0.2 if on else 0.0  # GET bodies
        proxy.endless_answers = 0.2 if on else 0.0  # and the answers to uploads, copies, deletes

    def stalls(proxy: FaultProxy, on: bool) -> None:
        proxy.stall_seconds = settings.stall
        proxy.stall_answers = 0.2 if on else 0.0

    return {
        "resets": fraction("reset_bodies", 0.3),
        "truncated bodies": fraction("truncate_bodies", 0.3),
        "stalls": stalls,
        "503 SlowDown": fraction("slow_down", 0.5),
        "refused connections": lambda proxy, on: proxy.refuse(on),
        "endless bodies": endless,
    }


PHASES = ("resets", "truncated bodies", "stalls", "503 SlowDown", "refused connections", "endless bodies")


# --- the workload -------------------------------------------------------------------------------

@dataclass
class Tally:
    """What the workload saw, shared by its threads (under `lock`)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    done: list[tuple[float, int]] = field(default_factory=list)  # (when, bytes) of each call that moved data
    failed: list[tuple[str, float, str]] = field(default_factory=list)  # (call, seconds, error)
    slowest_ok: float = 0.0
    wrong_bytes: int = 0
    wrong: list[str] = field(default_factory=list)
    reads: int = 0
    acked: dict[str, int] = field(default_factory=dict)  # written name -> size, close or fsync succeeded
    attempted: dict[str, int] = field(default_factory=dict)  # every name a writer began
    running: dict[int, tuple[str, float]] = field(default_factory=dict)  # thread -> (call, since)

    def moved(self, size: int) -> None:
        with self.lock:
            self.done.append((time.monotonic(), size))

    def throughput(self, start: float, end: float) -> float:
        with self.lock:
            total = sum(size for when, size in self.done if start <= when < end)
        return total / max(end - start, 1e-9) / 1e6


class Workload:
    def __init__(self, mount_root: str, server: S3Server, bucket: str, readers: int, writers: int,
                 seed: int) -> None:
        self.root = mount_root
        self.server = server
        self.bucket = bucket
        self.tally = Tally()
        self.stop = threading.Event()
        self.rng = random.Random(seed)
        self.fed: list[tuple[str, int]] = []  # objects the feeder put, not yet read
        self.fed_cond = threading.Condition()
        self.threads = [threading.Thread(target=self._feeder, daemon=True)]
        self.threads += [threading.Thread(target=self._reader, args=(i,), daemon=True)
                         for i in range(readers)]
        self.threads += [threading.Thread(target=self._writer, args=(i,), daemon=True)
                         for i in range(writers)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def finish(self, timeout: float) -> list[str]:
        """Stop; the calls still running after `timeout` (hung)."""
        self.stop.set()
        with self.fed_cond:
            self.fed_cond.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        now = time.monotonic()
        with self.tally.lock:
            return [f"{call} running for {now - since:.0f} s" for call, since in self.tally.running.values()]

    def call(self, what: str, fn: Callable[[], T]) -> T:
        ident = threading.get_ident()
        started = time.monotonic()
        with self.tally.lock:
            self.tally.running[ident] = (what, started)
        try:
            result = fn()
        except OSError as exc:
            with self.tally.lock:
                self.tally.failed.append((what, time.monotonic() - started,
                                          errno.errorcode.get(exc.errno or 0, str(exc))))
            raise
        finally:
            with self.tally.lock:
                self.tally.running.pop(ident, None)
        with self.tally.lock:
            self.tally.slowest_ok = max(self.tally.slowest_ok, time.monotonic() - started)
        return result

    # the feeder puts objects straight into the server (not through the proxy: not under test)
    def _feeder(self) -> None:
        client = self.server.client()
        rng = random.Random(self.rng.random())
        n = 0
        while not self.stop.is_set():
            with self.fed_cond:
                if len(self.fed) >= 40:
                    self.fed_cond.wait(0.2)
                    continue
            n += 1
            name = f"in/{n:06d}"
            size = rng.choice([rng.randint(1, 256 * 1024), rng.randint(MiB, 3 * MiB)])
            try:
                client.put_object(Bucket=self.bucket, Key=name, Body=content(name, size))
            except Exception:
                time.sleep(0.1)
                continue
            with self.fed_cond:
                self.fed.append((name, size))
                self.fed_cond.notify()

    def next_object(self, timeout: float = 5.0) -> tuple[str, int] | None:
        with self.fed_cond:
            if not self.fed:
                self.fed_cond.wait(timeout)
            return self.fed.pop(0) if self.fed else None

    def read_one(self, name: str, size: int) -> bool:
        """Read `name` whole through the mount; False if a call failed."""
        path = os.path.join(self.root, name)
        try:
            fd = self.call("open (read)", lambda: os.open(path, os.O_RDONLY))
        except OSError:
            return False
        got = bytearray()
        ok = True
        try:
            while True:
                chunk = self.call("read", functools.partial(os.pread, fd, MiB, len(got)))
                if not chunk:
                    break
                got += chunk
                self.tally.moved(len(chunk))
        except OSError:
            ok = False
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)
        expected = content(name, size)
        good = bytes(got) == expected[:len(got)]
        if not good or (ok and len(got) != size):
            wrong = sum(a != b for a, b in zip(got, expected, strict=False)) + abs(size - len(got)) * ok
            with self.tally.lock:
                self.tally.wrong_bytes += wrong
                self.tally.wrong.append(f"{name}: read {len(got)} of {size} bytes, {wrong} wrong")
        with self.tally.lock:
            self.tally.reads += 1
        return ok and good and len(got) == size

    def _reader(self, _index: int) -> None:
        while not self.stop.is_set():
            item = self.next_object()
            if item is not None:
                self.read_one(*item)

    def write_one(self, name: str, size: int, sync: bool) -> bool:
        path = os.path.join(self.root, name)
        data = content(name, size)
        with self.tally.lock:
            self.tally.attempted[name] = size
        try:
            fd = self.call("open (write)",
                           lambda: os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
        except OSError:
            return False
        acked = False
        view = memoryview(data)
        try:
            while view:
                n = self.call("write", functools.partial(os.write, fd, view[:MiB]))
                view = view[n:]
            if sync:
                self.call("fsync", lambda: os.fsync(fd))
                acked = True
        except OSError:
            pass
        finally:
            try:
                self.call("close", lambda: os.close(fd))
                acked = acked or len(view) == 0
            except OSError:
                pass
        if acked:  # written bytes count once in the store: staged bytes that fail to go up do not
            self.tally.moved(size)
            with self.tally.lock:
                self.tally.acked[name] = size
        return acked

    def _writer(self, index: int) -> None:
        rng = random.Random(self.rng.random())
        n = 0
        while not self.stop.is_set():
            n += 1
            size = rng.randint(0, 512 * 1024) if rng.random() < 0.7 else rng.randint(PART_SIZE + 1, 12 * MiB)
            self.write_one(f"out/w{index}-{n:05d}", size, rng.random() < 0.5)


# --- one phase ------------------------------------------------------------------------------------

@dataclass
class PhaseResult:
    name: str
    figures: dict[str, object]
    problems: list[str]


def _wait_recovered(work: Workload, limit: float, phase_end: float) -> float | None:
    """Seconds from the fault's end until a new read and a new write both succeed, in a thread of
    its own so that a probe stuck in a call cannot stall the suite; None if not within `limit`."""
    result: list[float] = []

    def probe() -> None:
        n = 0
        while time.monotonic() - phase_end < limit and not work.stop.is_set():
            n += 1
            item = work.next_object()
            read_ok = item is not None and work.read_one(*item)
            write_ok = work.write_one(f"out/probe-{n:04d}", 100_000, False)
            if read_ok and write_ok:
                result.append(time.monotonic() - phase_end)
                return
            time.sleep(0.1)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(limit + 5)
    return result[0] if result else None


def run_phase(mounter: Any, base: Path, server: S3Server, proxy: FaultProxy, name: str,
              settings: Settings, seed: int, log: Callable[[str], object]) -> PhaseResult:
    bucket = "chaos-" + "".join(c if c.isalnum() else "-" for c in name.lower()) + f"-{seed % 10000:04d}"
    create_bucket(server, bucket)
    config = write_config(base / f"{bucket}.toml", proxy.host_port, server, bucket, settings.config())
    mnt = mount(mounter, config)
    os.makedirs(os.path.join(mnt.path, "out"), exist_ok=True)
    work = Workload(mnt.path, server, bucket, readers=2, writers=2, seed=seed)
    switch = _faults(settings)[name]
    problems: list[str] = []
    work.start()
    time.sleep(settings.before)
    fault_start = time.monotonic()
    switch(proxy, True)
    log(f"  {name}: fault on for {settings.during:.0f} s")
    time.sleep(settings.during)
    switch(proxy, False)
    fault_end = time.monotonic()
    recovered = _wait_recovered(work, settings.recover_limit, fault_end)
    if recovered is None:
        problems.append(f"no read and write succeeded within {settings.recover_limit:.0f} s "
                        "of the fault's end")
    time.sleep(settings.after)
    hung = work.finish(settings.call_limit)
    problems.extend(f"a call hung: {h}" for h in hung)
    tally = work.tally
    result = mounter.run("umount", mnt.path, timeout=300)
    if result.returncode != 0:
        problems.append(f"umount: {result.stderr.strip()}")
    client = server.client()
    lost = 0
    lost_bytes = 0
    for written, size in list(tally.attempted.items()):
        try:
            data = client.get_object(Bucket=bucket, Key=written)["Body"].read()
        except client.exceptions.NoSuchKey:
            data = None
        if written in tally.acked and data != content(written, size):
            lost += 1
            lost_bytes += size
            problems.append(f"{written}: acknowledged ({size} bytes) but "
                            + ("missing" if data is None else f"{len(data)} other bytes") + " in the store")
        elif data is not None and data != content(written, size):
            problems.append(f"{written}: not acknowledged, and in the store with {len(data)} other bytes")
    failed_calls = len(tally.failed)
    slowest_failure = max((seconds for _call, seconds, _err in tally.failed), default=0.0)
    too_slow = [f for f in tally.failed if f[1] > settings.call_limit]
    if too_slow:
        problems.append(f"{len(too_slow)} failed call(s) took longer than {settings.call_limit:.0f} s: "
                        f"{too_slow[:5]}")
    if tally.wrong_bytes:
        problems.append(f"wrong bytes read: {tally.wrong[:5]}")
    errors = sorted({err for _call, _seconds, err in tally.failed})
    figures: dict[str, object] = {
        "fault seconds": round(settings.during),
        "wrong bytes": tally.wrong_bytes,
        "reads": tally.reads,
        "acknowledged writes": len(tally.acked),
        "acknowledged writes lost": lost,
        "bytes lost": lost_bytes,
        "failed calls": failed_calls,
        "slowest failed call s": round(slowest_failure, 1),
        "failed calls over limit": len(too_slow),
        "call limit s": round(settings.call_limit),
        "errors": "/".join(errors) or "none",
        "hung calls": len(hung),
        "recovery s": "never" if recovered is None else round(recovered, 1),
        "MB/s before": round(tally.throughput(fault_start - settings.before, fault_start), 1),
        "MB/s during": round(tally.throughput(fault_start, fault_end), 1),
    }
    if problems:
        problems.append(f"daemon log ({mnt.log}): {mnt.log_text()[-3000:]}")
    return PhaseResult(name, figures, problems)


# --- the suite ---------------------------------------------------------------------------------------

def run(phases: list[str], settings: Settings, seed: int, server: S3Server | None = None,
        workdir: str | None = None, log: Callable[[str], object] = print) -> list[PhaseResult]:
    results: list[PhaseResult] = []
    with session("chaos", workdir) as (mounter, base), contextlib.ExitStack() as stack:
        if server is None:
            server = stack.enter_context(seaweedfs(base))
        for number, name in enumerate(phases):
            proxy = FaultProxy(int(server.host_port.rsplit(":", 1)[1]), seed=seed + number)
            try:
                result = run_phase(mounter, base, server, proxy, name, settings, seed + number, log)
            finally:
                proxy.close()
            results.append(result)
            log(f"chaos: {name}: {report.format_figures(result.figures)}"
                + (" -- PROBLEMS:" if result.problems else ""))
            for problem in result.problems:
                log("    " + problem)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.chaos",
                                     description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--full", action="store_true", help="the issue's run: 45 s phases, 20-40 s stalls")
    parser.add_argument("--phase", action="append", choices=PHASES, help="only these phases (repeatable)")
    parser.add_argument("--during", type=float, help="seconds of fault per phase")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--workdir", help="keep mounts, caches and logs here (default: a temp dir, removed)")
    parser.add_argument("--no-record", action="store_true", help="do not write the rows of RELIABILITY.md")
    args = parser.parse_args(argv)
    settings = FULL if args.full else Settings()
    if args.during:
        settings = Settings(**{**settings.__dict__, "during": args.during})
    seed = args.seed if args.seed is not None else random.randrange(1 << 20)
    phases = args.phase or list(PHASES)
    print(f"chaos: phases {', '.join(phases)}; seed {seed}; {settings}")
    results = run(phases, settings, seed, workdir=args.workdir)
    if not args.no_record:
        command = "make chaos" if args.full and not args.phase and not args.during else \
            "python -m tests.reliability.chaos " + shlex.join(argv if argv is not None else sys.argv[1:])
        for result in results:
            report.record(f"chaos: {result.name}", command, {**result.figures, "seed": seed,
                                                             "problems": len(result.problems)})
    return 1 if any(r.problems for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
