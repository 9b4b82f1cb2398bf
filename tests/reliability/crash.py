"""`make crash`: kill -9 of the daemon at random points of a write workload, then recovery, N trials.

Each trial mounts a fresh SeaweedFS bucket and starts a writer process on it that writes files of
two kinds, small ones and ones above the part size (multipart), some fsync'ed, and says on stdout
what it begins and what the file system acknowledged (an `fsync` or `close` that returned 0):

- `d/<n>`: written in place (`O_TRUNC`), so later versions replace earlier ones;
- `t/<n>.<v>.tmp` then renamed onto `f/<n>`: the save-then-rename pattern, so the keys under `f/`
  (the final keys) must only ever hold a whole version.

After a random delay the daemon gets SIGKILL, wherever it is (writing, uploading parts, completing,
copying or deleting for a rename). The dead mount is detached, and the cache dir is recovered either
by a new mount on it or by `mountfs recover` (trials alternate). Then, straight from the server:

- every acknowledged version is under its key, whole (or a later version the writer began there);
- a final key holds only a whole version; an in-place key may hold a prefix of a version the writer
  had begun but not closed (the bytes it wrote before the crash, uploaded from staging by recovery,
  as a local disk keeps them), counted apart and never as an error;
- no byte in the store is of no version at all (wrong bytes);
- no multipart upload is left open and the staging dir is empty.

Every object's content is derived from its version number, so any object can be told apart from
every other version and from any prefix of one.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from mountfs.processes import process_alive as pid_alive
from tests.reliability import report
from tests.reliability.s3mount import (
    MiB,
    create_bucket,
    mount,
    objects,
    open_uploads,
    seaweedfs,
    session,
    staged_files,
    write_config,
)
from tests.servers import S3Server

PART_SIZE = 5 * MiB
SMALL_MAX = 300 * 1024
BIG_RANGE = (PART_SIZE + 1, 13 * MiB)
KILL_AFTER = (0.2, 4.0)  # seconds after the writer's first file begins
COMMAND = "make crash"
EXTRA_CONFIG = f'[write]\npart_size = "{PART_SIZE}"\ndrain_timeout = "60s"\n'


def content(version: int, size: int) -> bytes:
    """The bytes of `version` (unique in a trial): a prefix of one version is never another's."""
    return random.Random(version).randbytes(size)


# --- the writer (a process of its own: it gets ENOTCONN when the daemon dies) -------------------

def _emit(**event: Any) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def _write_file(path: str, version: int, size: int, sync: bool) -> None:
    data = content(version, size)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    acked = False
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view[:MiB]):]
        _emit(op="flush")  # all written: what follows uploads (the last parts, the complete)
        if sync:
            os.fsync(fd)
            acked = True
            _emit(op="ack", how="fsync")
    finally:
        os.close(fd)
    if not acked:
        _emit(op="ack", how="close")


def writer(root: str, seed: int) -> None:
    """Write until the mount goes away; each line on stdout is an event (see `Model`)."""
    rng = random.Random(seed)
    os.makedirs(os.path.join(root, "d"), exist_ok=True)
    os.makedirs(os.path.join(root, "t"), exist_ok=True)
    os.makedirs(os.path.join(root, "f"), exist_ok=True)
    version = 0
    while True:
        version += 1
        size = rng.randint(0, SMALL_MAX) if rng.random() < 0.7 else rng.randint(*BIG_RANGE)
        sync = rng.random() < 0.5
        if rng.random() < 0.6:
            key = f"d/{rng.randrange(6)}"
            _emit(op="begin", key=key, version=version, size=size)
            _write_file(os.path.join(root, key), version, size, sync)
        else:
            name = rng.randrange(4)
            tmp, final = f"t/{name}.{version}.tmp", f"f/{name}"
            _emit(op="begin", key=tmp, version=version, size=size)
            _write_file(os.path.join(root, tmp), version, size, sync)
            _emit(op="rename", src=tmp, dst=final)
            os.rename(os.path.join(root, tmp), os.path.join(root, final))
            _emit(op="renamed")


# --- what the store may hold after recovery ------------------------------------------------------

@dataclass
class KeyState:
    acked: int | None = None  # the version the file system acknowledged under this key last
    later: list[tuple[int, bool]] = field(default_factory=list)  # (version, a prefix of it is fine)
    may_vanish: bool = False  # a rename away from this key began


@dataclass
class Verdict:
    acknowledged_files: int = 0
    acknowledged_bytes: int = 0
    lost_files: int = 0
    lost_bytes: int = 0
    wrong_bytes: int = 0
    partial_final: int = 0  # final keys holding less than a whole version
    unacked_prefixes: int = 0  # in-place keys holding the prefix a killed writer left (allowed)
    stale_sources: int = 0  # renamed-away keys still there after the rename returned
    problems: list[str] = field(default_factory=list)


class Model:
    """The writer's events, folded into what each key may hold."""

    def __init__(self) -> None:
        self.sizes: dict[int, int] = {}
        self.keys: dict[str, KeyState] = collections.defaultdict(KeyState)
        self.acked_versions: list[int] = []
        self.last_op = "start"
        self._current: tuple[str, int] | None = None
        self._rename: tuple[str, str, int] | None = None

    def apply(self, event: dict[str, Any]) -> None:
        op = event["op"]
        self.last_op = op
        if op == "begin":
            key, version = event["key"], event["version"]
            self.sizes[version] = event["size"]
            self.keys[key].later.append((version, True))
            self._current = (key, version)
        elif op == "ack" and self._current is not None:
            key, version = self._current
            state = self.keys[key]
            if state.acked != version:
                state.acked, state.later = version, []
                self.acked_versions.append(version)
        elif op == "rename" and self._current is not None:
            key, version = self._current
            self._rename = (event["src"], event["dst"], version)
            self.keys[event["dst"]].later.append((version, False))
            self.keys[event["src"]].may_vanish = True
        elif op == "renamed" and self._rename is not None:
            src, dst, version = self._rename
            self.keys[dst].acked, self.keys[dst].later = version, []
            self.keys[src] = KeyState(acked=None, later=[], may_vanish=False)
            self._rename = None

    def kill_point(self) -> str:
        """Where the writer was when the daemon died (its last event)."""
        if self.last_op in ("begin", "flush") and self._current is not None:
            kind = "a multipart file" if self.sizes[self._current[1]] > PART_SIZE else "a small file"
            return f"writing {kind}" if self.last_op == "begin" else f"closing {kind}"
        return {"ack": "after an acknowledgement", "rename": "during a rename",
                "renamed": "after a rename", "start": "before the first file"}[self.last_op]

    def check(self, stored: dict[str, bytes]) -> Verdict:
        verdict = Verdict(acknowledged_files=len(self.acked_versions),
                          acknowledged_bytes=sum(self.sizes[v] for v in self.acked_versions))
        for key in sorted(set(self.keys) | set(stored)):
            state = self.keys.get(key, KeyState())
            data = stored.get(key)
            required = self.sizes[state.acked] if state.acked is not None else None
            if data is None:
                if required is not None and not state.may_vanish:
                    verdict.lost_files += 1
                    verdict.lost_bytes += required
                    verdict.problems.append(f"{key}: acknowledged version {state.acked} "
                                            f"({required} bytes) is missing")
                continue
            candidates = ([state.acked] if state.acked is not None else []) + [v for v, _ in state.later]
            whole = [v for v in candidates if len(data) == self.sizes[v] and data == content(v, len(data))]
            if whole:
                continue
            prefix = [partial_ok for v, partial_ok in state.later
                      if len(data) < self.sizes[v] and data == content(v, len(data))]
            if prefix:
                if key.startswith("f/") or not all(prefix):
                    verdict.partial_final += 1
                    verdict.problems.append(f"{key}: {len(data)} bytes, a partial version under a final key")
                else:
                    verdict.unacked_prefixes += 1
                continue
            if (key not in self.keys or (state.acked is None and not state.later)) and key.startswith(
                    "t/") and any(len(data) == s and data == content(v, s) for v, s in self.sizes.items()):
                    verdict.stale_sources += 1
                    verdict.problems.append(f"{key}: still there after its rename returned")
                    continue
            verdict.wrong_bytes += len(data)
            if required is not None:
                verdict.lost_files += 1
                verdict.lost_bytes += required
            verdict.problems.append(f"{key}: {len(data)} bytes that are no allowed version "
                                    f"(acknowledged {state.acked}, later {state.later})")
        return verdict


# --- one trial -------------------------------------------------------------------------------------

@dataclass
class Trial:
    number: int
    how: str  # "remount" or "recover"
    kill_point: str
    killed_after: float
    verdict: Verdict
    uploads_left: int
    staging_left: int
    recovered: list[str]
    problems: list[str]


def _read_events(stream: IO[str], model: Model) -> None:
    for line in stream:
        with contextlib.suppress(json.JSONDecodeError):
            model.apply(json.loads(line))


def run_trial(mounter: Any, base: Path, server: S3Server, number: int, rng: random.Random,
              how: str) -> Trial:
    bucket = f"crash-{number:03d}-{rng.randrange(1 << 30):08x}"
    create_bucket(server, bucket)
    config = write_config(base / f"{bucket}.toml", server.host_port, server, bucket, EXTRA_CONFIG)
    first = mount(mounter, config)
    model = Model()
    problems: list[str] = []
    delay = rng.uniform(*KILL_AFTER)
    writer_proc = subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.crash", "--writer", first.path,
         str(rng.randrange(1 << 30))],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=str(report.ROOT))
    assert writer_proc.stdout is not None
    try:
        first_line = writer_proc.stdout.readline()  # the workload has begun
        if first_line:
            model.apply(json.loads(first_line))
        time.sleep(delay)
        assert first.pid is not None
        os.kill(first.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pid_alive(first.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        try:
            writer_proc.wait(30)
        except subprocess.TimeoutExpired:
            problems.append("the writer still ran 30 s after the daemon died")
            writer_proc.kill()
            writer_proc.wait()
        _read_events(writer_proc.stdout, model)
    finally:
        if writer_proc.poll() is None:
            writer_proc.kill()
            writer_proc.wait()
    kill_point = model.kill_point()
    result = mounter.run("umount", first.path)  # detaches the dead mount
    if result.returncode != 0:
        problems.append(f"umount of the dead mount failed: {result.stderr.strip()}")

    recovered: list[str] = []
    if how == "recover":
        result = mounter.run("recover", config, "-o", f"cache_dir={first.cache_dir}", timeout=300)
        recovered = result.stdout.splitlines()
        if result.returncode != 0:
            problems.append(f"mountfs recover exited {result.returncode}: {result.stdout} {result.stderr}")
        staging_left = len(staged_files(first.cache_dir))
    else:
        second = mount(mounter, config, cache_dir=first.cache_dir)
        deadline = time.monotonic() + 120
        while True:
            uploads = mounter.run.status(second)["uploads"]
            if not uploads["recovering"] and not uploads["pending"]:
                break
            if time.monotonic() > deadline:
                problems.append(f"recovery not done after 120 s: {uploads}")
                break
            time.sleep(0.1)
        recovered = list(uploads.get("recovered", []))
        staging_left = len(staged_files(first.cache_dir))
        result = mounter.run("umount", second.path, timeout=120)
        if result.returncode != 0:
            problems.append(f"umount after recovery failed: {result.stderr.strip()}")
        staging_left = max(staging_left, len(staged_files(first.cache_dir)))
    verdict = model.check(objects(server, bucket))
    uploads_left = len(open_uploads(server, bucket))
    if uploads_left:
        problems.append(f"{uploads_left} multipart upload(s) left open: "
                        f"{[u['Key'] for u in open_uploads(server, bucket)]}")
    if staging_left:
        problems.append(f"{staging_left} staged file(s) left in {first.cache_dir}/staging")
    problems.extend(verdict.problems)
    if problems:
        problems.append(f"daemon log of the killed mount ({first.log}): {first.log_text()[-3000:]}")
    return Trial(number, how, kill_point, delay, verdict, uploads_left, staging_left, recovered, problems)


# --- the suite ---------------------------------------------------------------------------------------

def run(trials: int, seed: int, server: S3Server | None = None, workdir: str | None = None,
        log: Any = print) -> tuple[dict[str, object], list[Trial]]:
    """`trials` trials on `server` (a SeaweedFS of its own if None); the figures and each trial."""
    rng = random.Random(seed)
    done: list[Trial] = []
    with session("crash", workdir) as (mounter, base), contextlib.ExitStack() as stack:
        if server is None:
            server = stack.enter_context(seaweedfs(base))
        for number in range(1, trials + 1):
            how = "remount" if number % 2 else "recover"
            trial = run_trial(mounter, base, server, number, rng, how)
            done.append(trial)
            v = trial.verdict
            log(f"trial {number}/{trials} ({how}, killed {trial.killed_after:.2f} s in, "
                f"{trial.kill_point}): {v.acknowledged_files} acknowledged files, "
                f"{v.acknowledged_bytes} bytes; lost {v.lost_bytes}; wrong {v.wrong_bytes}; "
                f"uploads left {trial.uploads_left}; staging left {trial.staging_left}; "
                f"recovered {len(trial.recovered)}" + ("" if not trial.problems else " -- PROBLEMS:"))
            for problem in trial.problems:
                log("    " + problem)
    points = collections.Counter(t.kill_point for t in done)
    figures: dict[str, object] = {
        "trials": len(done),
        "acknowledged files": sum(t.verdict.acknowledged_files for t in done),
        "acknowledged bytes": sum(t.verdict.acknowledged_bytes for t in done),
        "bytes lost": sum(t.verdict.lost_bytes for t in done),
        "wrong bytes": sum(t.verdict.wrong_bytes for t in done),
        "partial objects under final keys": sum(t.verdict.partial_final for t in done),
        "uploads left open": sum(t.uploads_left for t in done),
        "staged files left": sum(t.staging_left for t in done),
        "trials with problems": sum(1 for t in done if t.problems),
        "unclosed prefixes recovered": sum(t.verdict.unacked_prefixes for t in done),
        "recovered uploads": sum(len(t.recovered) for t in done),
        "kill points": ", ".join(f"{point} {count}" for point, count in sorted(points.items())),
    }
    return figures, done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.crash",
                                     description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--trials", type=int, default=int(os.environ.get("CRASH_TRIALS", "20")))
    parser.add_argument("--seed", type=int, default=int(os.environ.get("CRASH_SEED", "0")) or None)
    parser.add_argument("--workdir", help="keep mounts, caches and logs here (default: a temp dir, removed)")
    parser.add_argument("--no-record", action="store_true", help="do not write the row of RELIABILITY.md")
    parser.add_argument("--writer", nargs=2, metavar=("ROOT", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.writer:
        with contextlib.suppress(OSError):
            writer(args.writer[0], int(args.writer[1]))
        return 0
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    print(f"crash: {args.trials} trials, seed {seed}")
    figures, trials = run(args.trials, seed, workdir=args.workdir)
    figures["seed"] = seed
    print("crash: " + report.format_figures(figures))
    if not args.no_record:
        report.record("crash", COMMAND if args.trials == 20 else f"make crash CRASH_TRIALS={args.trials}",
                      figures)
    return 1 if any(t.problems for t in trials) else 0


if __name__ == "__main__":
    sys.exit(main())
