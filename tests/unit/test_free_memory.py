"""The daemon gives freed block buffers back to the system: its heap is tuned to keep them (one
arena, no trimming below 64 MiB), and a free chunk below one still in use is never trimmed, so
they would stay resident for good, the RSS rising with each new peak far above what is in use."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

MiB = 1024 * 1024

# In a fresh process, so that the heap is the daemon's (tuned before any other thread starts):
# half the blocks freed between others still in use, the RSS before and after returning free memory.
SCRIPT = textwrap.dedent("""
    from mountfs import mount

    def rss():
        with open("/proc/self/status") as f:
            return int(next(line for line in f if line.startswith("VmRSS:")).split()[1]) * 1024

    mount._reuse_block_memory()
    blocks = [bytearray(b"x") * (256 * 1024) for _ in range(800)]  # every page written
    del blocks[::2]  # freed out of order, as blocks are: holes between blocks still in use
    before = rss()
    returned = mount.return_free_memory()
    print(before, rss(), returned)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc")
def test_freed_blocks_leave_the_resident_set() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True,
                         timeout=60).stdout.split()
    before, after, returned = int(out[0]), int(out[1]), out[2] == "True"
    assert returned
    freed = f"RSS {before // MiB} -> {after // MiB} MiB with 100 MiB of blocks freed"
    assert before - after > 64 * MiB, freed
