"""The `fleet` workload: N mountfs daemons on one machine (N "nodes", each its own cache dir and mount
point) read the big object and the small files, node 1 first, then the others at once, with a
shared block cache in a bucket of a second SeaweedFS and without it. What it shows: the bytes the
origin sent in all (about one copy of the data set with the shared cache, N without), and how long
node 1 and nodes 2..N took.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from bench import peers
from bench.harness import CPU_MS, MB, BenchError, human_size, timed
from bench.report import FLEET_ALONE, FLEET_SHARED
from bench.workloads import (
    BIG_KEY,
    SMALL_READERS,
    Context,
    Scale,
    read_files_parallel,
    read_sequential,
    small_key,
)

FLEET = "fleet"
NODES = 3
SMALL_FILES = 2_000  # at most: the scale's small files, up to this many
CACHE_BUCKET = "mountfs-fleet-cache"
METRICS = ("fleet-origin", "fleet-first", "fleet-others")
ROWS = ((FLEET_SHARED, "mountfs + shared cache"), (FLEET_ALONE, "mountfs, no shared cache"))
WRITE_WAIT = 300.0  # seconds node 1 may take to write its blocks to the shared cache


def specs(scale: Scale) -> dict[str, tuple[str, str, str, bool, tuple[str, ...]]]:
    """metric -> (workload, title, unit, higher is better, tools), as `workloads.metric_specs`."""
    data = f"one {human_size(scale.big_bytes)} object and {_small_count(scale):,} small files"
    return {
        "fleet-origin": (FLEET, f"bytes the origin sent to {NODES} nodes reading {data}", "MB", False,
                         ("mountfs",)),
        "fleet-first": (FLEET, f"node 1 reading {data}, cold", "s", False, ("mountfs",)),
        "fleet-others": (FLEET, f"nodes 2..{NODES} reading the same at once, after node 1", "s", False,
                         ("mountfs",)),
    }


def rows() -> list[tuple[str, str]]:
    return list(ROWS)


def _small_count(scale: Scale) -> int:
    return min(scale.small_count, SMALL_FILES)


def run_fleet(ctx: Context) -> None:
    """Per repeat, the fleet with the shared cache (a fresh prefix of a second SeaweedFS), then without."""
    if "mountfs" not in ctx.tools or "mountfs" in ctx.skipped:
        return
    from tests.servers import start_seaweedfs

    ctx.log(f"[{FLEET}] starting a second SeaweedFS for the shared cache")
    server = start_seaweedfs(ctx.work / "fleet-seaweedfs")
    try:
        server.create_bucket(CACHE_BUCKET)
        shared = peers.S3Target(server.endpoint, server.host_port, CACHE_BUCKET, server.access_key,
                                server.secret_key)
        for n in range(1, ctx.repeat + 1):
            for key, label in ROWS:
                ctx.log(f"[{FLEET}] repeat {n}/{ctx.repeat}: {label}")
                with_shared = shared if key == FLEET_SHARED else None
                ctx.attempt("mountfs", list(METRICS), partial(_fleet, ctx, with_shared), row_key=key)
    finally:
        server.stop()


def fleet_config(ctx: Context, shared: peers.S3Target | None, prefix: str, cache_dir: Path) -> str:
    """The bench's mountfs config, plus a [shared_cache] under `prefix` (the fleet's own: empty)."""
    text = peers.mountfs_config(ctx.target, cache_dir)
    if shared is not None:
        text += "\n".join([
            "[shared_cache]",
            f'url = "s3://{shared.host_port}/{shared.bucket}/{prefix}"',
            "[[s3.credentials]]",
            f'host = "{shared.host_port}"',
            f'key = "{shared.access_key}"',
            f'secret = "{shared.secret_key}"',
            "secure = false",
            "",
        ])
    return text


@contextlib.contextmanager
def _nodes(ctx: Context, shared: peers.S3Target | None) -> Iterator[list[peers.MountfsMount]]:
    prefix = f"run-{uuid.uuid4().hex[:12]}"  # one per fleet: every node shares it, and it starts empty
    with contextlib.ExitStack() as stack:
        mounts = []
        for i in range(NODES):
            def start(mountpoint: Path, cache_dir: Path, log_path: Path, work: Path, i: int = i
                      ) -> peers.MountfsMount:
                config = work / f"fleet-node{i + 1}.toml"
                config.write_text(fleet_config(ctx, shared, prefix, cache_dir))
                return peers.start_mountfs_source(str(config), mountpoint, cache_dir, log_path, work)
            mounts.append(stack.enter_context(peers._fresh_mount("mountfs", ctx.work, start)))
        yield mounts


def _read_data_set(ctx: Context, mount: peers.MountfsMount) -> int:
    got = read_sequential(mount.mountpoint / BIG_KEY)
    paths = [mount.mountpoint / small_key(i) for i in range(_small_count(ctx.scale))]
    return got + read_files_parallel(paths, SMALL_READERS)


def _fleet(ctx: Context, shared: peers.S3Target | None, record: Callable[..., None]) -> None:
    expected = ctx.scale.big_bytes + _small_count(ctx.scale) * ctx.scale.small_bytes
    with _nodes(ctx, shared) as nodes:
        first, others = nodes[0], nodes[1:]
        ctx.drop_caches()
        before = _cpu_ms(nodes)
        got, first_seconds = timed(partial(_read_data_set, ctx, first), ctx.timeout, first.abort)
        first_cpu = _cpu_ms(nodes)[0] - before[0]
        if got != expected:
            raise BenchError(f"node 1 read {got} bytes of {expected}")
        if shared is not None:
            _wait_written(first)
        written = _cpu_ms(nodes)

        def read_others() -> list[int]:
            with ThreadPoolExecutor(len(others)) as pool:
                return list(pool.map(partial(_read_data_set, ctx), others))

        def abort_others() -> None:
            for mount in others:
                mount.abort()

        ctx.drop_caches()
        counts, others_seconds = timed(read_others, ctx.timeout, abort_others)
        others_cpu = [after - was for after, was in zip(_cpu_ms(nodes)[1:], written[1:], strict=True)]
        if any(count != expected for count in counts):
            raise BenchError(f"nodes 2..{NODES} read {counts} bytes, expected {expected} each")
        statuses = [mount.status() for mount in nodes]
        origin = [int(s["store"]["bytes_fetched"]) for s in statuses]
        shared_stats: list[Any] = [s.get("shared_cache") for s in statuses]
        detail = {"origin_bytes_per_node": origin, "data_set_bytes": expected, "shared_cache": shared_stats}
        record("fleet-origin", sum(origin) / MB, **detail)
        # daemon CPU: node 1's while it read (and while it finished writing), each other node's
        record("fleet-first", first_seconds, mb_per_s=round(expected / first_seconds / MB, 1),
               daemon_cpu_s=round(first_cpu / 1000, 2),
               daemon_cpu_s_writing_after=round((written[0] - before[0] - first_cpu) / 1000, 2))
        record("fleet-others", others_seconds,
               mb_per_s_per_node=round(expected / others_seconds / MB, 1),
               daemon_cpu_s_per_node=[round(ms / 1000, 2) for ms in others_cpu])
        ctx.log(f"  node 1 daemon CPU {first_cpu / 1000:.2f} s reading, "
                f"{(written[0] - before[0] - first_cpu) / 1000:.2f} s writing after; nodes 2..{NODES}: "
                + ", ".join(f"{ms / 1000:.2f} s" for ms in others_cpu)
                + f"; origin sent {sum(origin) / MB:.0f} MB"
                + "".join(f"; node {i + 1} shared: {c['hits']} hits, {c['misses']} misses, {c['writes']} "
                          f"written, {c['dropped']} dropped" for i, c in enumerate(shared_stats) if c))


def _cpu_ms(nodes: list[peers.MountfsMount]) -> list[int]:
    return [mount.counters().get(CPU_MS, 0) for mount in nodes]


def _wait_written(mount: peers.MountfsMount) -> None:
    """Until node 1 has written every block it fetched to the shared cache (or dropped it)."""
    deadline = time.monotonic() + WRITE_WAIT
    while (mount.status().get("shared_cache") or {}).get("queued", 0):
        if time.monotonic() > deadline:
            raise BenchError(f"node 1 still writing to the shared cache after {WRITE_WAIT:.0f} s")
        time.sleep(0.1)
