"""What the crash and chaos suites share: a SeaweedFS, real mounts of its buckets, and store checks.

The suites run as plain programs (`python -m tests.reliability.crash`), so they make their mounts with
the FUSE tests' `Mounter` (tests/fuse/conftest.py) outside pytest, with a runtime dir of their own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.fuse.conftest import NO_FUSE, Mount, Mounter, Runner
from tests.servers import S3Server, start_seaweedfs

os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

MiB = 1 << 20


@contextlib.contextmanager
def session(name: str, workdir: str | None = None) -> Iterator[tuple[Mounter, Path]]:
    """A Mounter with its own runtime dir under a fresh work dir; everything unmounted and removed
    at the end (the work dir kept when given)."""
    if NO_FUSE:
        raise SystemExit(f"{name}: {NO_FUSE}")
    base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=f"mountfs-{name}-"))
    base.mkdir(parents=True, exist_ok=True)
    runtime = base / "run"
    runtime.mkdir(exist_ok=True)
    env = dict(os.environ, MOUNTFS_RUNTIME_DIR=str(runtime), LC_ALL="C.UTF-8")
    env.pop("LANGUAGE", None)
    mounter = Mounter(Runner(env), base / "mounts")
    try:
        yield mounter, base
    finally:
        problems = mounter.cleanup()
        if problems:
            print(f"{name}: teardown had to force: {problems}")
        if workdir is None:
            shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def seaweedfs(base: Path) -> Iterator[S3Server]:
    server = start_seaweedfs(str(base / "seaweedfs"))
    try:
        yield server
    finally:
        server.stop()


def create_bucket(server: S3Server, bucket: str) -> None:
    try:
        server.create_bucket(bucket)
    except Exception as exc:  # already there (a remount)
        if "BucketAlreadyOwnedByYou" not in str(exc) and "BucketAlreadyExists" not in str(exc):
            raise


def write_config(path: Path, host_port: str, server: S3Server, bucket: str, extra: str = "") -> str:
    """A config mounting `bucket` at the root, reached at `host_port` (the server or a proxy)."""
    path.write_text(f'{extra}\n[[mount]]\npath = ""\nurl = "s3://{host_port}/{bucket}"\n\n'
                    f'[[s3.credentials]]\nhost = "{host_port}"\nkey = "{server.access_key}"\n'
                    f'secret = "{server.secret_key}"\nsecure = false\n')
    return str(path)


def mount(mounter: Mounter, config: str, cache_dir: str | None = None) -> Mount:
    return mounter.mount(config, cache_dir=cache_dir)


def objects(server: S3Server, bucket: str) -> dict[str, bytes]:
    """Every object of `bucket` with its bytes (read straight from the server, no proxy)."""
    client = server.client()
    found: dict[str, bytes] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            if item["Key"].endswith("/"):
                continue  # directory markers
            found[item["Key"]] = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
    return found


def open_uploads(server: S3Server, bucket: str) -> list[dict[str, Any]]:
    uploads: list[dict[str, Any]] = list(
        server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []))
    return uploads


def staged_files(cache_dir: str) -> list[str]:
    staging = os.path.join(cache_dir, "staging")
    try:
        return sorted(os.listdir(staging))
    except FileNotFoundError:
        return []
