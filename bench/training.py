"""The training workloads: `dataloader`, a PyTorch DataLoader over many 128 KiB samples (one cold
epoch, one warm), and `checkpoint`, torch.save of a state dict then torch.load of it; each through
the mounts and through what a PyTorch user picks instead of a mount: s3torchconnector
(S3MapDataset, S3Checkpoint) and fsspec's s3fs.

Why a module of its own that imports torch only inside the workloads: torch and the SDK peers are
optional (`pip install -e '.[bench]'`, `make bench`), so the rest of the bench and the unit tests
of the helpers here run without them, and a missing package becomes a skipped row saying why.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import os
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, cast

from bench import peers
from bench.harness import BenchError, GiB, KiB, MiB, human_size, timed
from bench.workloads import BUCKET, Context, Scale, _delta

DATALOADER = "dataloader"
CHECKPOINT = "checkpoint"
WORKLOADS = (DATALOADER, CHECKPOINT)
OWN_DATA = frozenset(WORKLOADS)  # they fill their own prefixes, not the shared data set
SAMPLE_PREFIX = "train"
SAMPLE_BYTES = 128 * KiB
BATCH = 64
WORKERS = 4
SHUFFLE_SEED = 0  # the same sample order for every tool and every epoch
CHECKPOINT_PREFIX = "ckpt"
TENSOR_BYTES = 64 * MiB  # the state dict: tensors of this size (the last one smaller), as a model's layers
BUCKET_WAIT = 600.0  # seconds a closed checkpoint may take to appear in the bucket (rclone writes back later)
REGION = "us-east-1"

SDK_TOOLS = ("s3torchconnector", "fsspec")
DATALOADER_TOOLS = ("mountfs", "s3torchconnector", "fsspec", "rclone", "s3fs")
CHECKPOINT_TOOLS = ("mountfs", "s3torchconnector", "rclone", "s3fs")
DATALOADER_METRICS = ("dataloader-cold", "dataloader-warm")
CHECKPOINT_METRICS = ("checkpoint-save", "checkpoint-load")
PACKAGES = {"s3torchconnector": "s3torchconnector", "fsspec": "s3fs"}  # tool -> module it needs


@dataclass(frozen=True)
class TrainingScale:
    samples: int
    checkpoint_bytes: int


TRAINING_SCALES = {
    "full": TrainingScale(samples=10_000, checkpoint_bytes=2 * GiB),
    "quick": TrainingScale(samples=1_000, checkpoint_bytes=256 * MiB),
}


def training_scale(scale: Scale) -> TrainingScale:
    return TRAINING_SCALES.get(scale.name, TRAINING_SCALES["full"])


def specs(scale: Scale) -> dict[str, tuple[str, str, str, bool, tuple[str, ...]]]:
    """metric -> (workload, title, unit, higher is better, tools), as `workloads.metric_specs`."""
    t = training_scale(scale)
    loader = (f"PyTorch DataLoader ({WORKERS} workers, batch {BATCH}, shuffled) over {t.samples:,} x "
              f"{human_size(SAMPLE_BYTES)} files")
    size = human_size(t.checkpoint_bytes)
    return {
        "dataloader-cold": (DATALOADER, f"{loader}, first epoch, cold (1 sample/s = "
                            f"{human_size(SAMPLE_BYTES)}/s)", "samples/s", True, DATALOADER_TOOLS),
        "dataloader-warm": (DATALOADER, f"{loader}, second epoch (page cache dropped: each tool's own "
                            "cache)", "samples/s", True, DATALOADER_TOOLS),
        "checkpoint-save": (CHECKPOINT, f"torch.save of a {size} state dict until it is in the bucket",
                            "GiB/s", True, CHECKPOINT_TOOLS),
        "checkpoint-load": (CHECKPOINT, f"torch.load of the {size} checkpoint, cold (fresh mount, page "
                            "cache dropped)", "GiB/s", True, CHECKPOINT_TOOLS),
    }


# --- pure helpers ------------------------------------------------------------------------------

def module_missing(module: str) -> str | None:
    """Why `module` cannot be imported here (a row's skip reason), or None."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    return None if found else f"{module} is not installed (pip install -e '.[bench]', or make bench)"


def skip_reason(tool: str) -> str | None:
    """Why a training workload cannot measure `tool`: torch first, then the SDK the tool is."""
    return module_missing("torch") or (module_missing(PACKAGES[tool]) if tool in PACKAGES else None)


def sample_key(i: int) -> str:
    return f"{SAMPLE_PREFIX}/s{i:05d}.bin"


def tensor_sizes(total_bytes: int, tensor_bytes: int = TENSOR_BYTES) -> list[int]:
    """float32 element counts of the state dict's tensors: as many of `tensor_bytes` as fit, and the
    rest in a last one; their bytes add up to `total_bytes` (a multiple of 4)."""
    if total_bytes <= 0 or total_bytes % 4 or tensor_bytes <= 0 or tensor_bytes % 4:
        raise ValueError(f"sizes must be positive multiples of 4 bytes: {total_bytes}, {tensor_bytes}")
    full, rest = divmod(total_bytes, tensor_bytes)
    return [tensor_bytes // 4] * full + ([rest // 4] if rest else [])


def epoch_figures(samples: int, nbytes: int, seconds: float) -> dict[str, float]:
    """samples/s and GiB/s of one epoch."""
    if seconds <= 0:
        raise ValueError(f"an epoch takes time: {seconds}")
    return {"samples_per_s": samples / seconds, "gib_per_s": nbytes / GiB / seconds}


def wait_until(probe: Callable[[], bool], limit: float, what: str, interval: float = 0.05,
               clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep
               ) -> None:
    """Call `probe` until it says yes; BenchError after `limit` seconds."""
    deadline = clock() + limit
    while not probe():
        if clock() > deadline:
            raise BenchError(f"{what}: not done after {limit:g} s")
        sleep(interval)


# --- the data set --------------------------------------------------------------------------

_filled: set[tuple[str, int]] = set()


def fill_samples(ctx: Context) -> None:
    """SAMPLE_PREFIX/ holds the scale's samples, random bytes each; once a run."""
    count = training_scale(ctx.scale).samples
    if (ctx.target.endpoint, count) in _filled:
        return
    start = time.perf_counter()
    client = ctx.client

    def put(i: int) -> None:
        client.put_object(Bucket=BUCKET, Key=sample_key(i), Body=os.urandom(SAMPLE_BYTES))

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(count)))
    _filled.add((ctx.target.endpoint, count))
    ctx.log(f"  {SAMPLE_PREFIX}/: {count:,} x {human_size(SAMPLE_BYTES)} in "
            f"{time.perf_counter() - start:.1f} s")


@contextlib.contextmanager
def aws_env(ctx: Context) -> Iterator[None]:
    """The bucket's keys in AWS_* variables for the duration (s3torchconnector's CRT client reads
    them, and DataLoader workers inherit them)."""
    names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")
    saved = {n: os.environ.get(n) for n in names}
    os.environ.update({"AWS_ACCESS_KEY_ID": ctx.target.access_key,
                       "AWS_SECRET_ACCESS_KEY": ctx.target.secret_key, "AWS_REGION": REGION})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# --- rows: labels and skips --------------------------------------------------------------------

def _declare(ctx: Context, metrics: tuple[str, ...], tools: tuple[str, ...]) -> list[str]:
    """Mark every row whose tool cannot run here skipped, with the reason (torch or the SDK is
    missing); returns the tools to run, those of --tools in table order."""
    runnable = []
    for tool in tools:
        if tool not in ctx.tools:
            continue
        reason = ctx.skipped.get(tool) or skip_reason(tool)
        for metric in metrics:
            row = ctx.metric(metric).row(tool, ctx.label(tool, metric))
            row.skipped = row.skipped or reason
        if reason is None:
            runnable.append(tool)
    return runnable


def _runs(ctx: Context, tools: list[str], label: str) -> Iterator[str]:
    for n in range(1, ctx.repeat + 1):
        for tool in tools:
            ctx.log(f"[{label}] repeat {n}/{ctx.repeat}: {tool}")
            yield tool


# --- dataloader ----------------------------------------------------------------------------

def run_dataloader(ctx: Context) -> None:
    tools = _declare(ctx, DATALOADER_METRICS, DATALOADER_TOOLS)
    if not tools:
        return
    fill_samples(ctx)
    for tool in _runs(ctx, tools, DATALOADER):
        if tool in SDK_TOOLS:
            ctx.attempt(tool, list(DATALOADER_METRICS), partial(_loader_sdk, ctx, tool))
        else:
            ctx.attempt(tool, list(DATALOADER_METRICS), partial(_loader_mount, ctx, tool))


def _epoch(ctx: Context, dataset: Any) -> tuple[int, int]:
    """One pass of a DataLoader as a training loop builds it: (samples, bytes)."""
    import torch
    from torch.utils.data import DataLoader

    samples = nbytes = 0
    with warnings.catch_warnings():  # "4 workers on 2 CPUs": the workload asks for what a trainer runs
        warnings.filterwarnings("ignore", message=".*worker processes in total", category=UserWarning)
        loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=WORKERS,
                            generator=torch.Generator().manual_seed(SHUFFLE_SEED), timeout=ctx.timeout)
        for batch in loader:
            samples += int(batch.shape[0])
            nbytes += int(batch.numel())
    return samples, nbytes


def _check_epoch(ctx: Context, samples: int, nbytes: int) -> None:
    want = training_scale(ctx.scale).samples
    if samples != want or nbytes != want * SAMPLE_BYTES:
        raise BenchError(f"an epoch gave {samples} samples / {nbytes} bytes, expected {want} / "
                         f"{want * SAMPLE_BYTES}")


def _record_epoch(record: Callable[..., None], metric: str, samples: int, nbytes: int, seconds: float,
                  rss_kib: int | None = None, **detail: Any) -> None:
    figures = epoch_figures(samples, nbytes, seconds)
    record(metric, figures["samples_per_s"], rss_kib, seconds=seconds, samples=samples,
           gib_per_s=round(figures["gib_per_s"], 4), **detail)


def to_tensor(data: bytes) -> Any:
    """A sample's bytes as a uint8 tensor (what a decode step would start from)."""
    import torch

    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


class FileDataset:
    """Map-style dataset of files in a folder: what a PyTorch user writes over a mount."""

    def __init__(self, folder: Path) -> None:
        self.paths = [folder / name for name in sorted(os.listdir(folder))]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Any:
        with open(self.paths[i], "rb") as f:
            return to_tensor(f.read())


def _loader_mount(ctx: Context, tool: str, record: Callable[..., None]) -> None:
    with peers.mounted(tool, ctx.target, ctx.work) as mount:
        folder = mount.mountpoint / SAMPLE_PREFIX
        for metric in DATALOADER_METRICS:  # the cold epoch on the fresh mount, then the warm one
            ctx.drop_caches()
            before = mount.counters()
            (samples, nbytes), seconds = timed(lambda: _epoch(ctx, FileDataset(folder)), ctx.timeout,
                                               mount.abort)
            _check_epoch(ctx, samples, nbytes)
            _record_epoch(record, metric, samples, nbytes, seconds, mount.peak_rss_kib(),
                          counters=_delta(mount.counters(), before),
                          mount_seconds=round(mount.mount_seconds, 3), read_ahead_kb=mount.readahead_kb)


class FsspecDataset:
    """Map-style dataset of objects read with fsspec's s3fs, one S3FileSystem per process (a
    DataLoader worker must not share its parent's event loop)."""

    def __init__(self, target: peers.S3Target) -> None:
        self.target = target
        self._fs: Any = None
        self._pid = -1
        self.keys = sorted(self.fs().find(f"{target.bucket}/{SAMPLE_PREFIX}/"))
        # The workers make their own; the lister is collected here first: one inherited and
        # collected in a worker closes its session on a loop not its own.
        self._fs, self._pid = None, -1
        gc.collect()

    def fs(self) -> Any:
        if self._pid != os.getpid():
            import s3fs

            self._fs = s3fs.S3FileSystem(
                key=self.target.access_key, secret=self.target.secret_key, skip_instance_cache=True,
                endpoint_url=self.target.endpoint, client_kwargs={"region_name": REGION},
                config_kwargs={"s3": {"addressing_style": "path"}})
            self._pid = os.getpid()
        return self._fs

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> Any:
        return to_tensor(self.fs().cat_file(self.keys[i]))


def _reader_to_tensor(reader: Any) -> Any:
    return to_tensor(reader.read())


def _s3torch_config() -> Any:
    from s3torchconnector import S3ClientConfig

    return S3ClientConfig(force_path_style=True)


def _s3torch_dataset(ctx: Context) -> Any:
    from s3torchconnector import S3MapDataset

    dataset = S3MapDataset.from_prefix(f"s3://{BUCKET}/{SAMPLE_PREFIX}/", region=REGION,
                                       endpoint=ctx.target.endpoint, transform=_reader_to_tensor,
                                       s3client_config=_s3torch_config())
    len(dataset)  # it lists the prefix on first use: here, inside the timed epoch
    return dataset


def _loader_sdk(ctx: Context, tool: str, record: Callable[..., None]) -> None:
    """No cache of their own: the warm epoch reads the bucket again."""
    make = partial(_s3torch_dataset, ctx) if tool == "s3torchconnector" else partial(FsspecDataset,
                                                                                      ctx.target)
    with aws_env(ctx):
        for metric in DATALOADER_METRICS:
            ctx.drop_caches()
            (samples, nbytes), seconds = timed(lambda: _epoch(ctx, make()), ctx.timeout, lambda: None)
            _check_epoch(ctx, samples, nbytes)
            _record_epoch(record, metric, samples, nbytes, seconds)


# --- checkpoint --------------------------------------------------------------------------------

def run_checkpoint(ctx: Context) -> None:
    tools = _declare(ctx, CHECKPOINT_METRICS, CHECKPOINT_TOOLS)
    if not tools:
        return
    size = training_scale(ctx.scale).checkpoint_bytes
    free = os.statvfs(ctx.work)
    if free.f_bavail * free.f_frsize < 3 * size + GiB:  # staged, cached, and the peers' caches
        for metric in CHECKPOINT_METRICS:
            for row in ctx.metric(metric).rows.values():
                row.skipped = row.skipped or (
                    f"too little room in {ctx.work} for {human_size(size)} checkpoints")
        return
    state = make_state_dict(size)
    for tool in _runs(ctx, tools, CHECKPOINT):
        key = f"{CHECKPOINT_PREFIX}/{tool}-{time.time_ns()}.pt"
        body = partial(_checkpoint_sdk if tool in SDK_TOOLS else _checkpoint_mount, ctx, tool, state, key)
        try:
            ctx.attempt(tool, list(CHECKPOINT_METRICS), body)
        finally:
            with contextlib.suppress(Exception):
                ctx.client.delete_object(Bucket=BUCKET, Key=key)


def make_state_dict(total_bytes: int) -> dict[str, Any]:
    """Random float32 tensors adding up to `total_bytes`, named like a model's layers."""
    import torch

    generator = torch.Generator().manual_seed(0)
    return {f"layers.{i}.weight": torch.rand(n, generator=generator)
            for i, n in enumerate(tensor_sizes(total_bytes))}


def _check_loaded(state: dict[str, Any], loaded: Any) -> None:
    import torch

    if not isinstance(loaded, dict) or loaded.keys() != state.keys():
        raise BenchError("the loaded checkpoint does not have the saved keys")
    for name in (next(iter(state)), next(reversed(state))):
        if not torch.equal(loaded[name], state[name]):
            raise BenchError(f"the loaded checkpoint differs in {name}")


def _object_size(ctx: Context, key: str) -> int | None:
    try:
        return int(ctx.client.head_object(Bucket=BUCKET, Key=key)["ContentLength"])
    except ctx.client.exceptions.ClientError:
        return None


def _checkpoint_mount(ctx: Context, tool: str, state: dict[str, Any], key: str,
                      record: Callable[..., None]) -> None:
    """Save, timed until the object is whole in the bucket (rclone's close returns before its
    upload); then load through a fresh mount with an empty cache."""
    import torch

    with peers.mounted(tool, ctx.target, ctx.work) as mount:
        path = mount.mountpoint / key
        path.parent.mkdir(exist_ok=True)
        before = mount.counters()

        def save() -> int:
            torch.save(state, path)
            size = os.stat(path).st_size
            wait_until(lambda: _object_size(ctx, key) == size, BUCKET_WAIT, f"{key} in the bucket")
            return size

        size, seconds = timed(save, ctx.timeout + BUCKET_WAIT, mount.abort)
        record("checkpoint-save", size / GiB / seconds, mount.peak_rss_kib(), seconds=seconds, bytes=size,
               counters=_delta(mount.counters(), before), mount_seconds=round(mount.mount_seconds, 3))
    with peers.mounted(tool, ctx.target, ctx.work) as mount:
        path = mount.mountpoint / key
        ctx.drop_caches()
        before = mount.counters()
        loaded, seconds = timed(lambda: torch.load(path, map_location="cpu", weights_only=True),
                                ctx.timeout, mount.abort)
        record("checkpoint-load", size / GiB / seconds, mount.peak_rss_kib(), seconds=seconds, bytes=size,
               counters=_delta(mount.counters(), before), mount_seconds=round(mount.mount_seconds, 3),
               read_ahead_kb=mount.readahead_kb)
    _check_loaded(state, loaded)


def _checkpoint_sdk(ctx: Context, tool: str, state: dict[str, Any], key: str,
                    record: Callable[..., None]) -> None:
    """S3Checkpoint's writer (a multipart upload as torch.save writes) and reader."""
    import torch
    from s3torchconnector import S3Checkpoint

    uri = f"s3://{BUCKET}/{key}"
    with aws_env(ctx):
        checkpoint = S3Checkpoint(region=REGION, endpoint=ctx.target.endpoint,
                                  s3client_config=_s3torch_config())

        def save() -> None:
            with checkpoint.writer(uri) as writer:
                torch.save(state, writer)

        _, seconds = timed(save, ctx.timeout, lambda: None)
        size = _object_size(ctx, key)
        if size is None:
            raise BenchError(f"{key} is not in the bucket after the writer closed")
        record("checkpoint-save", size / GiB / seconds, seconds=seconds, bytes=size)
        ctx.drop_caches()

        def load() -> Any:
            with checkpoint.reader(uri) as reader:
                return torch.load(cast(Any, reader), map_location="cpu", weights_only=True)

        loaded, seconds = timed(load, ctx.timeout, lambda: None)
        record("checkpoint-load", size / GiB / seconds, seconds=seconds, bytes=size)
    _check_loaded(state, loaded)
