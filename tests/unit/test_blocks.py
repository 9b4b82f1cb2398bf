"""blocks.py on its own: what a blocks dir is, as several daemons see it."""

import threading
from pathlib import Path

from mountfs.cache.blocks import checksum_of_dir


def _open_together(root: Path, daemons: int) -> list[str]:
    start = threading.Barrier(daemons)
    seen: list[str] = []

    def open_dir() -> None:
        start.wait()
        seen.append(checksum_of_dir(str(root)))

    threads = [threading.Thread(target=open_dir) for _ in range(daemons)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return seen


def test_daemons_starting_together_on_a_new_cache_dir_agree_on_its_checksum(tmp_path: Path) -> None:
    for attempt in range(40):
        root = tmp_path / str(attempt)
        root.mkdir()
        seen = _open_together(root, 6)
        assert len(set(seen)) == 1 and seen[0], seen
        assert sorted(p.name for p in root.iterdir()) == ["CHECKSUM"]  # no temp file left behind
