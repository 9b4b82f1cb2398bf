"""One of the processes of the shared-cache-dir test: adds blocks as a daemon does (file, then
record), uses some again, and evicts with the same limits as its sibling, all at once.

usage: cache_load_worker.py CACHE_DIR NAME ROUNDS MAX_SIZE MAX_FILES; prints a JSON summary.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time

from mountfs.cache.blocks import BlockFiles
from mountfs.cache.eviction import CacheLimits, Evictor
from mountfs.cache.index import CacheIndex
from tests.unit.cache_helpers import add_block


def main(cache_dir: str, name: str, rounds: int, max_size: int, max_files: int) -> None:
    index, files = CacheIndex(cache_dir), BlockFiles(cache_dir)
    evictor = Evictor(index, files)
    limits = CacheLimits(max_size=max_size, max_files=max_files)
    rng = random.Random(name)
    added: list[bytes] = []
    evicted = evicted_others = 0
    worst = [0, 0]
    open(os.path.join(cache_dir, f"ready-{name}"), "w").close()
    while not os.path.exists(os.path.join(cache_dir, "go")):  # start together with the sibling
        time.sleep(0.001)
    started = time.time()
    for n in range(rounds):
        added.append(add_block(index, files, f"{name}-{n}", 0, rng.randrange(500, 3000), time.time()))
        if n % 7 == 0:
            index.touch(rng.sample(added, min(5, len(added))))
        if n % 5 == 0:
            report = evictor.evict(limits)
            evicted += report.removed_blocks
            mine = set(added)
            evicted_others += sum(key not in mine for key in report.keys)
            worst = [max(worst[0], report.totals.blocks), max(worst[1], report.totals.bytes)]
    report = evictor.evict(limits)
    evicted += report.removed_blocks
    worst = [max(worst[0], report.totals.blocks), max(worst[1], report.totals.bytes)]
    index.close()
    print(json.dumps({"added": len(added), "evicted": evicted, "evicted_others": evicted_others,
                      "worst_after_eviction": worst, "started": started, "ended": time.time()}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
