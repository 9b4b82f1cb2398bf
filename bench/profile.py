"""Where the daemon's CPU goes during one measurement: py-spy sampling the mountfs daemon.

Why sampling from outside: the daemon runs as it always does (no profiler hooks inside it), and
py-spy's `--nonblocking` reads its stacks without stopping it, so the figure being measured moves
little. Only the thread holding the GIL is sampled (`--gil`): threads waiting on a socket or a lock
looked busy to py-spy's idle test here, and the Python work is what this profile is for (a C call
that releases the GIL, a crc32c or a pread, shows up only as time not sampled). The raw stacks go
to a file per measurement; the report keeps the top frames by own time (where the time is spent)
and by total time (what it is spent for).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

RATE = 200  # samples per second: enough for a measurement of a few seconds, light on the daemon
TOP = 12
_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^():]*)(?::\d+)?\)$")


def available() -> str | None:
    """The py-spy binary (beside this Python, else on PATH), or None. Pinned to 0.3.14 by `make bench`:
    0.4.3 could not attach to a running daemon here ("Failed to find python version")."""
    for folder in (Path(sys.executable).parent, Path(os.path.realpath(sys.executable)).parent):
        if (folder / "py-spy").exists():
            return str(folder / "py-spy")
    return shutil.which("py-spy")


@dataclass(frozen=True)
class Frame:
    name: str  # "function (path/inside/the/package.py)"
    own: float  # share of the samples with this frame on top
    total: float  # share of the samples with this frame anywhere in the stack


def frame_name(raw: str) -> str:
    """"f (/x/lib/python3.11/site-packages/pyfuse3/__init__.py:12)" -> "f (pyfuse3/__init__.py)"."""
    match = _FRAME.match(raw.strip())
    if not match:
        return raw.strip()
    path = match.group("file")
    for marker in ("site-packages/", "/lib/python3", "/mountfs/"):
        if marker in path:
            cut = path.index(marker) + len(marker)
            path = ("mountfs/" if marker == "/mountfs/" else "") + path[cut:]
            if marker == "/lib/python3":
                path = path.split("/", 1)[1] if "/" in path else path
            break
    return f"{match.group('function')} ({path})"


def summarize(raw_stacks: str, top: int = TOP) -> tuple[int, list[Frame]]:
    """(samples, top frames by own time) of py-spy's raw (collapsed) output: one line per distinct
    stack, frames separated by ';', root first, then a space and the sample count."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw_stacks.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame_name(f) for f in stack.split(";") if f.strip()]
        if not frames:
            continue
        frames = [f for f in frames if not f.startswith(("process ", "thread "))] or frames
        samples += count
        own[frames[-1]] += count
        for name in set(frames):
            total[name] += count
    if not samples:
        return 0, []
    return samples, [Frame(name, n / samples, total[name] / samples) for name, n in own.most_common(top)]


@contextlib.contextmanager
def sampling(pid: int | None, out: Path) -> Iterator[None]:
    """py-spy records `pid` while the body runs (nothing if py-spy or the pid is missing)."""
    binary = available()
    if binary is None or pid is None:
        yield
        return
    process = subprocess.Popen(
        [binary, "record", "--pid", str(pid), "--rate", str(RATE), "--format", "raw", "--nonblocking",
         "--gil", "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        process.send_signal(signal.SIGINT)  # py-spy writes its output when interrupted
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
